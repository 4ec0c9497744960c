//! The steps of [`Bus::receive`](super::Bus::receive): the group (the MCP group starts where
//! the workers' group is), redelivery of what was not acknowledged in time, reading new
//! entries, and sorting out what to return, leave to the workers, or dead-letter.

use std::collections::HashSet;
use std::time::Duration;

use super::consume::{ReceiveOptions, Received, Source};
use super::{Bus, Mode};
use crate::broker::{DeadLetterNote, DeadReason, RawEntry, dead_letter, wire};
use crate::error::{Error, Result};
use crate::keys;

/// One `receive` call.
pub(super) struct Reader<'a> {
    pub(super) bus: &'a Bus,
    pub(super) agent: &'a str,
    pub(super) stream: &'a str,
    pub(super) group: &'a str,
    pub(super) consumer: &'a str,
    pub(super) opts: &'a ReceiveOptions,
    /// The priority lane of the inbox this stream is (`None`: the stream itself); received
    /// ids of a lane are `<lane>/<entry id>`.
    pub(super) lane: Option<&'static str>,
}

impl Reader<'_> {
    /// Makes sure the group exists. The MCP group of an inbox is created where the workers'
    /// group is (what the workers already took is theirs, or their dead letters), or at the
    /// start of the stream without one (so nothing sent before the first receive is missed).
    pub(super) async fn ensure_group(&self) -> Result<()> {
        let broker = self.bus.broker();
        if self.group != keys::mcp_group(self.agent) {
            return broker.ensure_group(self.stream, self.group).await;
        }
        let workers = keys::default_group(self.agent);
        broker
            .ensure_group_from(self.stream, self.group, async || {
                Ok(self
                    .bus
                    .stream_groups(self.stream)
                    .await?
                    .into_iter()
                    .find(|g| g.name == workers)
                    .map_or_else(|| "0".to_owned(), |g| g.last_delivered_id))
            })
            .await
    }

    /// New entries (`>`), waiting up to `wait` for the first.
    pub(super) async fn read_new(
        &self,
        count: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<RawEntry>> {
        match self.read_group(count, wait).await {
            Err(Error::Redis { source, .. }) if wire::is_nogroup(&source) => {
                // The stream or group was deleted meanwhile: recreate and read once more.
                self.bus.broker().forget_group(self.stream, self.group);
                self.ensure_group().await?;
                self.read_group(count, wait).await
            }
            other => other,
        }
    }

    async fn read_group(&self, count: usize, wait: Option<Duration>) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(self.group)
            .arg(self.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(b) = wait {
            cmd.arg("BLOCK").arg(crate::time::millis(b));
        }
        cmd.arg("STREAMS").arg(self.stream).arg(">");
        let reply = self
            .bus
            .query_read(&cmd, wait, "XREADGROUP", self.stream)
            .await?;
        Ok(wire::parse_read_reply(&reply)?
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect())
    }

    /// Entries of the group pending for `after` or longer (whoever they were handed to),
    /// claimed for this consumer, with their delivery counts.
    pub(super) async fn redeliver(
        &self,
        after: Duration,
        count: usize,
    ) -> Result<Vec<(RawEntry, u64)>> {
        let v: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(self.stream)
            .arg(self.group)
            .arg(self.consumer)
            .arg(crate::time::millis(after))
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.bus.conn())
            .await
            .map_err(|e| Error::redis("XAUTOCLAIM", self.stream, e))?;
        let parts = wire::as_array(&v).unwrap_or(&[]);
        let claimed = match parts.get(1) {
            Some(entries) => wire::parse_entries(entries)?,
            None => Vec::new(),
        };
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            return Ok(Vec::new());
        };
        // Their delivery counts (XAUTOCLAIM raised them by one).
        let rows: redis::Value = redis::cmd("XPENDING")
            .arg(self.stream)
            .arg(self.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(claimed.len().max(count))
            .arg(self.consumer)
            .query_async(&mut self.bus.conn())
            .await
            .map_err(|e| Error::redis("XPENDING", self.stream, e))?;
        let counts: std::collections::HashMap<String, u64> = wire::as_array(&rows)
            .unwrap_or(&[])
            .iter()
            .filter_map(|row| {
                let row = wire::as_array(row)?;
                Some((wire::as_string(row.first()?)?, wire::as_u64(row.get(3)?)?))
            })
            .collect();
        Ok(claimed
            .into_iter()
            .map(|e| {
                let n = counts.get(&e.id).copied().unwrap_or(2);
                (e, n)
            })
            .collect())
    }

    /// What to return; acknowledges in this group what is the workers', dead-letters what
    /// is not a message or was delivered too often.
    pub(super) async fn sort_out(&self, entries: Vec<(RawEntry, u64)>) -> Result<Vec<Received>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let workers_types: HashSet<String> =
            if self.opts.leave_worker_types && self.opts.source == Source::Inbox {
                self.bus
                    .handled_types(self.agent)
                    .await?
                    .into_iter()
                    .collect()
            } else {
                HashSet::new()
            };
        let stamped = self.bus.inner.mode == Mode::Secure;
        let mut entries = entries;
        if self.lane.is_none() {
            // A plain inbox: what a Python sender wrote with a higher priority first.
            entries.sort_by_cached_key(|(e, _)| std::cmp::Reverse(e.envelope_priority()));
        }
        let mut out = Vec::with_capacity(entries.len());
        let mut theirs = Vec::new();
        for (e, deliveries) in entries {
            if let Some(max) = self.opts.max_deliveries
                && deliveries > max
            {
                let why = format!(
                    "delivered {deliveries} times and never acknowledged (the limit is {max})"
                );
                tracing::warn!(agent = self.agent, stream_id = %e.id, deliveries, "{why}; moved to dead letters");
                self.dead_letter(&e, &DeadReason::DeliveryLimit, &why, deliveries)
                    .await?;
                continue;
            }
            match e.decode_as(stamped) {
                Ok(message) if workers_types.contains(&message.message_type) => theirs.push(e.id),
                Ok(message) if message.is_expired_now() => {
                    let why = format!(
                        "ttl_seconds {} passed (sent {}) before it was received; not delivered",
                        message.ttl_seconds, message.timestamp
                    );
                    tracing::info!(agent = self.agent, stream_id = %e.id, "{why}; moved to dead letters");
                    crate::broker::count_expired(self.bus.broker(), self.stream).await?;
                    self.dead_letter(&e, &DeadReason::Expired, &why, deliveries)
                        .await?;
                }
                Ok(message) => out.push(Received {
                    attempt: e.attempt(),
                    message,
                    stream_id: match self.lane {
                        Some(lane) => format!("{lane}/{}", e.id),
                        None => e.id,
                    },
                    group: self.group.to_owned(),
                    deliveries,
                }),
                // The agent's workers read it too, and dead-letter it themselves.
                Err(_) if !workers_types.is_empty() => theirs.push(e.id),
                Err(reason) => {
                    tracing::warn!(agent = self.agent, stream_id = %e.id, %reason, "invalid entry moved to dead letters");
                    self.dead_letter(&e, &DeadReason::InvalidEnvelope, &reason, deliveries)
                        .await?;
                }
            }
        }
        if !theirs.is_empty() {
            tracing::debug!(agent = self.agent, ids = ?theirs, "left to the agent's workers");
            let _: i64 = redis::cmd("XACK")
                .arg(self.stream)
                .arg(self.group)
                .arg(&theirs)
                .query_async(&mut self.bus.conn())
                .await
                .map_err(|e| Error::redis("XACK", self.stream, e))?;
        }
        Ok(out)
    }

    async fn dead_letter(
        &self,
        e: &RawEntry,
        reason: &DeadReason,
        why: &str,
        deliveries: u64,
    ) -> Result<()> {
        let note = DeadLetterNote {
            reason,
            error: why,
            attempts: e.attempt(),
            deliveries,
        };
        dead_letter(self.bus.broker(), self.stream, self.group, e, &note).await
    }
}
