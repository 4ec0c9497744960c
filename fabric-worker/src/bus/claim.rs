//! Stuck pending entries by hand: [`Bus::claim_pending`] gives one to another consumer,
//! [`Bus::ack_pending`] acknowledges one without handling it.

use super::{Bus, PendingEntry, agent_group};
use crate::broker::{Conn, wire};
use crate::error::{Error, Result};
use crate::keys;
use crate::time::now_ms;

impl Bus {
    /// Gives the pending entry `id` of `agent`'s inbox (`urgent/<id>` etc. for a lane) in
    /// `group` (default `<agent>_workers`) to `consumer` (`XCLAIM … 0 <id> JUSTID`: its
    /// delivery count stays, its idle time restarts). The worker that held it notices at its
    /// next lease renewal and stops acknowledging it; `consumer` gets it by reading its own
    /// pending entries, or any worker of the group reclaims it once idle. Returns the entry as
    /// it was (with its former consumer), or `None` when it is not pending in the group.
    pub async fn claim_pending(
        &self,
        agent: &str,
        group: Option<&str>,
        id: &str,
        consumer: &str,
    ) -> Result<Option<PendingEntry>> {
        let group = agent_group(agent, group)?;
        keys::validate_consumer(consumer)?;
        let stream = stream_of(agent, id)?;
        let entry_id = keys::split_received_id(id)?.1;
        let mut conn = self.conn();
        let Some(was) = pending_one(&mut conn, &stream, &group, entry_id).await? else {
            return Ok(None);
        };
        let v: redis::Value = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg(&group)
            .arg(consumer)
            .arg(0)
            .arg(entry_id)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XCLAIM", &stream, e))?;
        if wire::as_array(&v).is_none_or(<[redis::Value]>::is_empty) {
            return Ok(None);
        }
        tracing::info!(agent, stream_id = entry_id, from = %was.consumer, to = consumer, "pending entry claimed");
        Ok(Some(was))
    }

    /// Acknowledges the pending entry `id` of `agent`'s inbox (`urgent/<id>` etc. for a
    /// lane) in `group` (default `<agent>_workers`) without handling it (`XACK`): **the
    /// message will not be processed** by that group (a handler running it may still finish).
    /// Returns the entry as it was, or `None` when it is not pending in the group.
    pub async fn ack_pending(
        &self,
        agent: &str,
        group: Option<&str>,
        id: &str,
    ) -> Result<Option<PendingEntry>> {
        let group = agent_group(agent, group)?;
        let stream = stream_of(agent, id)?;
        let entry_id = keys::split_received_id(id)?.1;
        let mut conn = self.conn();
        let Some(was) = pending_one(&mut conn, &stream, &group, entry_id).await? else {
            return Ok(None);
        };
        let n: i64 = redis::cmd("XACK")
            .arg(&stream)
            .arg(&group)
            .arg(entry_id)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XACK", &stream, e))?;
        if n == 0 {
            return Ok(None);
        }
        tracing::warn!(agent, stream_id = entry_id, consumer = %was.consumer, "pending entry acknowledged by hand; it will not be processed");
        Ok(Some(was))
    }
}

/// The stream of a received id: the inbox, or the lane it names.
fn stream_of(agent: &str, id: &str) -> Result<String> {
    let inbox = keys::inbox(agent);
    Ok(match keys::split_received_id(id)?.0 {
        Some(lane) => keys::lane(&inbox, lane),
        None => inbox,
    })
}

/// `XPENDING stream group id id 1`: the entry, if pending.
async fn pending_one(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    id: &str,
) -> Result<Option<PendingEntry>> {
    let v: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg(id)
        .arg(id)
        .arg(1)
        .query_async(conn)
        .await;
    let v = match v {
        Ok(v) => v,
        Err(e) if wire::is_nogroup(&e) => return Ok(None),
        Err(e) => return Err(Error::redis("XPENDING", stream, e)),
    };
    let Some(row) = wire::as_array(&v)
        .and_then(|a| a.first())
        .and_then(wire::as_array)
    else {
        return Ok(None);
    };
    let stream_id = row.first().and_then(wire::as_string).unwrap_or_default();
    Ok(Some(PendingEntry {
        age_ms: wire::stream_id_ms(&stream_id).map(|ms| now_ms().saturating_sub(ms)),
        consumer: row.get(1).and_then(wire::as_string).unwrap_or_default(),
        idle_ms: row.get(2).and_then(wire::as_u64).unwrap_or(0),
        deliveries: row.get(3).and_then(wire::as_u64).unwrap_or(0),
        stream_id,
    }))
}
