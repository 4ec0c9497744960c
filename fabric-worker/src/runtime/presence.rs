//! Presence: each worker process says, in `agent:<id>:workers`, that it is alive and which
//! message types it handles — for discovery (`fabric_agents`), and so that an agent that is
//! partly a Rust worker and partly an LLM behind MCP knows which messages are whose.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::stream::StreamState;
use crate::bus::{PRESENCE_INTERVAL, WorkerPresence};
use crate::error::{Error, Result};
use crate::keys;

/// Records of stopped or vanished workers are dropped after this long.
const FORGET_AFTER_MS: u64 = 3_600_000;

/// The presence record of this worker for the stream it serves.
fn record(st: &StreamState, started_ms: u64, stopped: bool) -> WorkerPresence {
    let now = crate::time::now_ms();
    WorkerPresence {
        consumer: st.spec.consumer.clone(),
        host: super::builder::hostname().unwrap_or_else(|| "unknown".into()),
        pid: std::process::id(),
        group: st.spec.group.clone(),
        message_types: st.spec.handlers.keys().cloned().collect(),
        started_ms,
        seen_ms: now,
        stopped_ms: stopped.then_some(now),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        in_flight: u64::try_from(st.in_flight_len()).unwrap_or(u64::MAX),
    }
}

/// Refreshes between two looks for records to drop: an hour-old record waits at most
/// five minutes more, and an idle agent's refresh is one command.
const PRUNE_EVERY: u64 = 30;

/// Writes the record; with `prune`, also drops records of workers stopped or silent for an
/// hour.
async fn write(st: &StreamState, p: &WorkerPresence, prune: bool) -> Result<()> {
    let key = keys::workers(&st.spec.agent);
    let json =
        serde_json::to_string(p).map_err(|e| Error::protocol("worker presence", e.to_string()))?;
    let mut conn = st.broker.conn();
    let _: i64 = redis::cmd("HSET")
        .arg(&key)
        .arg(&p.consumer)
        .arg(json)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("HSET", &key, e))?;
    if !prune {
        return Ok(());
    }
    let stale: Vec<String> = st
        .bus
        .workers(&st.spec.agent)
        .await?
        .into_iter()
        .filter(|w| {
            w.consumer != p.consumer
                && p.seen_ms.saturating_sub(w.stopped_ms.unwrap_or(w.seen_ms)) > FORGET_AFTER_MS
        })
        .map(|w| w.consumer)
        .collect();
    if !stale.is_empty() {
        let _: i64 = redis::cmd("HDEL")
            .arg(&key)
            .arg(&stale)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("HDEL", &key, e))?;
        debug!(%key, ?stale, "forgot workers gone for an hour");
    }
    Ok(())
}

/// Registers this worker before it reads (so that its message types are the workers' from
/// its first read on).
pub(super) async fn register(st: &StreamState, started_ms: u64) -> Result<()> {
    write(st, &record(st, started_ms, false), true).await
}

/// Marks the record stopped (a worker that registered, then did not start after all).
pub(super) async fn mark_stopped(st: &StreamState, started_ms: u64) {
    if let Err(e) = write(st, &record(st, started_ms, true), false).await {
        warn!(agent = %st.spec.agent, error = %e, "could not mark this worker stopped in its presence record");
    }
}

/// Refreshes the record every [`PRESENCE_INTERVAL`]; marks it stopped when `stop` fires.
/// The record stays (stopped) so that a restart keeps the worker's message types.
pub(super) async fn refresher(st: Arc<StreamState>, started_ms: u64, stop: CancellationToken) {
    // Serving many inboxes: refreshed in phases (see `housekeeping_interval`).
    let shared = st.read_wake.is_some();
    let mut tick = crate::time::housekeeping_interval(PRESENCE_INTERVAL, shared);
    if !shared {
        tick.tick().await; // registered just now
    }
    let mut refreshes: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        refreshes += 1;
        let prune = refreshes.is_multiple_of(PRUNE_EVERY);
        if let Err(e) = write(&st, &record(&st, started_ms, false), prune).await {
            debug!(agent = %st.spec.agent, error = %e, "presence refresh failed");
        }
    }
    mark_stopped(&st, started_ms).await;
}
