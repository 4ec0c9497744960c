//! The reclaimer: takes over entries whose consumer stopped renewing their lease (crashed,
//! killed, stuck), walking the whole pending list with `XAUTOCLAIM` a bounded step per tick.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::janitor::remove_dead_consumers;
use super::stream::StreamState;
use crate::broker::functions::fcall;
use crate::broker::{RawEntry, wire};
use crate::error::{Error, Result};

/// Most `XAUTOCLAIM` steps per reclaim tick.
const RECLAIM_CALLS_PER_TICK: usize = 10;

/// Reclaims entries whose consumer stopped renewing their lease (crashed, killed, stuck),
/// walking the whole pending list with `XAUTOCLAIM`, and removes long-gone consumers: for
/// each of `streams` in turn at every tick (one stream; or, serving many inboxes, an inbox
/// and its lanes, so that a process has one such loop per agent, not per stream).
pub(super) async fn reclaimer(streams: Vec<Arc<StreamState>>, stop: CancellationToken) {
    let Some(first) = streams.first().cloned() else {
        return;
    };
    let period = first.config.reclaim_every();
    let mut tick = crate::time::housekeeping_interval(period, first.read_wake.is_some());
    // Per stream: the cursor survives across ticks: each tick walks at most
    // RECLAIM_CALLS_PER_TICK steps (each scans up to 10 x COUNT pending entries), so a huge
    // pending list costs a bounded amount per tick, and the walk starts over once it
    // reaches the end; and the sweeps done.
    let mut walks: Vec<(String, u64)> = vec![("0-0".to_string(), 0); streams.len()];
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        if *first.pause.borrow() {
            // Paused by an operator: take nothing over either.
            continue;
        }
        for (st, (cursor, sweeps)) in streams.iter().zip(walks.iter_mut()) {
            if !sweep(st, cursor, &stop).await {
                return;
            }
            *sweeps += 1;
            if *sweeps % 20 == 1 {
                remove_dead_consumers(st).await;
            }
        }
    }
}

/// One tick's walk of `st`'s pending list from `cursor`; false when the worker is closing.
async fn sweep(st: &Arc<StreamState>, cursor: &mut String, stop: &CancellationToken) -> bool {
    let spec = &st.spec;
    for _ in 0..RECLAIM_CALLS_PER_TICK {
        let free = st.free_slots().min(st.config.batch_size);
        if free == 0 || stop.is_cancelled() {
            break;
        }
        match reclaim_once(st, cursor, free).await {
            Ok((next, claimed, deleted)) => {
                if !deleted.is_empty() {
                    warn!(stream = %spec.stream, ids = ?deleted, "pending entries were deleted from the stream before being handled; dropped from the pending list");
                }
                for (entry, deliveries) in claimed {
                    info!(stream = %spec.stream, stream_id = %entry.id, deliveries, "reclaimed a stalled entry");
                    crate::metrics::reclaimed(&spec.agent, &st.type_label_of(&entry));
                    let Some(p) = st.slot().await else {
                        return false;
                    };
                    st.dispatch(entry, deliveries, p);
                }
                let at_end = next == "0-0";
                *cursor = next;
                if at_end {
                    break;
                }
            }
            Err(e) => {
                crate::metrics::redis_error(&spec.agent, "reclaim");
                if e.is_connection_error() {
                    debug!(stream = %spec.stream, error = %e, "reclaim failed");
                } else {
                    warn!(stream = %spec.stream, error = %e, "reclaim failed");
                }
                break;
            }
        }
    }
    true
}

type Reclaimed = (String, Vec<(RawEntry, u64)>, Vec<String>);

async fn reclaim_once(st: &StreamState, cursor: &str, count: usize) -> Result<Reclaimed> {
    let spec = &st.spec;
    let mut cmd = fcall("fabric_reclaim", &[&spec.stream]);
    cmd.arg(&spec.group)
        .arg(&spec.consumer)
        .arg(crate::time::millis(st.config.reclaim_idle))
        .arg(cursor)
        .arg(count);
    let v: redis::Value = st
        .broker
        .call(&cmd, "FCALL fabric_reclaim", &spec.stream)
        .await
        .inspect_err(|e| {
            if let Error::Redis { source, .. } = e
                && wire::is_nogroup(source)
            {
                st.broker.forget_group(&spec.stream, &spec.group);
            }
        })?;
    let parts = wire::as_array(&v)
        .filter(|p| p.len() == 4)
        .ok_or_else(|| Error::protocol("reclaim script", format!("{v:?}")))?;
    let next = wire::as_string(&parts[0]).unwrap_or_else(|| "0-0".into());
    let entries = wire::parse_entries(&parts[1])?;
    let deleted = wire::as_array(&parts[2])
        .unwrap_or(&[])
        .iter()
        .filter_map(wire::as_string)
        .collect();
    let counts: Vec<u64> = wire::as_array(&parts[3])
        .unwrap_or(&[])
        .iter()
        .map(|c| wire::as_u64(c).unwrap_or(1).max(1))
        .collect();
    let claimed = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let d = counts.get(i).copied().unwrap_or(1);
            (e, d)
        })
        .collect();
    Ok((next, claimed, deleted))
}
