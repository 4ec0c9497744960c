//! The receive side of priority lanes and delayed messages: which lanes of an inbox exist
//! (they are read before the inbox, low after it), promoting due delayed messages and
//! retries for an agent served through `receive` only, and the blocking read over lanes.

use std::time::Duration;

use serde::Serialize;

use super::Bus;
use super::delivery::Reader;
use crate::broker::{RawEntry, wire};
use crate::error::{Error, Result};
use crate::keys;

impl Bus {
    /// The lanes of `agent`'s inbox that exist, in read order: urgent, high, (the inbox),
    /// low — as (lane, key). Lanes exist once the agent's workers created them.
    pub(super) async fn existing_lanes(&self, agent: &str) -> Result<Vec<(&'static str, String)>> {
        let inbox = keys::inbox(agent);
        let lanes: Vec<(&'static str, String)> =
            keys::LANES.into_iter().zip(keys::lanes(&inbox)).collect();
        let mut pipe = redis::pipe();
        for (_, k) in &lanes {
            pipe.cmd("EXISTS").arg(k);
        }
        let found: Vec<i64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("EXISTS", &inbox, e))?;
        Ok(lanes
            .into_iter()
            .zip(found)
            .filter(|(_, n)| *n > 0)
            .map(|(l, _)| l)
            .collect())
    }

    /// Moves `agent`'s due delayed messages and retries into its inbox (or their lanes), as
    /// its workers do: an agent read only through `receive` (an MCP agent) gets them too.
    /// Best effort: a failure is logged, the receive goes on.
    pub(super) async fn promote_due(&self, agent: &str) {
        let inbox = keys::inbox(agent);
        let cmd = crate::broker::functions::promote(&inbox);
        let r: Result<(i64, i64, i64)> = self
            .broker()
            .call(&cmd, "FCALL fabric_promote", &inbox)
            .await;
        match r {
            Ok((moved, _, _)) if moved > 0 => {
                tracing::debug!(
                    agent,
                    moved,
                    "delayed messages and retries due; in the inbox"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(agent, error = %e, "could not promote due messages"),
        }
    }
}

/// A priority lane of an inbox in [`QueueStatus`](super::QueueStatus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LaneStatus {
    /// `urgent`, `high` or `low`.
    pub lane: &'static str,
    /// Its stream.
    pub stream: String,
    /// Entries not yet delivered to the group (everything in it without the group).
    pub undelivered: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
}

impl Bus {
    /// The state of `agent`'s lanes for `group` (lanes that do not exist are left out).
    pub(super) async fn lane_statuses(&self, agent: &str, group: &str) -> Result<Vec<LaneStatus>> {
        let mut out = Vec::new();
        for (lane, key) in self.existing_lanes(agent).await? {
            let groups = self.stream_groups(&key).await?;
            let (undelivered, pending) = match groups.iter().find(|g| g.name == group) {
                Some(g) => (g.lag.unwrap_or(0), g.pending),
                None => {
                    let len: u64 = redis::cmd("XLEN")
                        .arg(&key)
                        .query_async(&mut self.conn())
                        .await
                        .map_err(|e| Error::redis("XLEN", &key, e))?;
                    (len, 0)
                }
            };
            out.push(LaneStatus {
                lane,
                stream: key,
                undelivered,
                pending,
            });
        }
        Ok(out)
    }
}

/// One `XREADGROUP … BLOCK` over several streams of one group and consumer (an inbox and
/// its lanes), up to `count` entries from each; entries as (reader index, entries).
pub(super) async fn read_blocking(
    readers: &[Reader<'_>],
    count: usize,
    wait: Duration,
) -> Result<Vec<(usize, Vec<RawEntry>)>> {
    let Some(first) = readers.first() else {
        return Ok(Vec::new());
    };
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(first.group)
        .arg(first.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(crate::time::millis(wait))
        .arg("STREAMS");
    for r in readers {
        cmd.arg(r.stream);
    }
    for _ in readers {
        cmd.arg(">");
    }
    let reply = first
        .bus
        .query_read(&cmd, Some(wait), "XREADGROUP", first.stream)
        .await?;
    Ok(wire::parse_read_reply(&reply)?
        .into_iter()
        .filter_map(|(key, entries)| Some((readers.iter().position(|r| r.stream == key)?, entries)))
        .collect())
}
