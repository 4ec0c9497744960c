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
        // An inbox and its lanes: their first step in one call (for an idle agent, the
        // only one: every walk ends at once). Per stream, the steps already taken.
        let taken = if streams.len() == 1 {
            vec![false]
        } else {
            match step_all(&streams, &mut walks, &stop).await {
                Some(taken) => taken,
                None => return,
            }
        };
        for ((st, (cursor, sweeps)), taken) in streams.iter().zip(walks.iter_mut()).zip(taken) {
            let steps = if !taken {
                RECLAIM_CALLS_PER_TICK
            } else if cursor == "0-0" {
                0
            } else {
                RECLAIM_CALLS_PER_TICK - 1
            };
            if !sweep(st, cursor, steps, &stop).await {
                return;
            }
            *sweeps += 1;
            // Every 20th sweep, not the first: a worker's start is busy enough (1,000 agents
            // started at once would ask `XINFO CONSUMERS` of 4,000 streams in their first
            // period), and a consumer is removed only after an hour idle anyway.
            if sweeps.is_multiple_of(20) {
                remove_dead_consumers(st).await;
            }
        }
    }
}

/// The first step of every walk of `streams` (an inbox and its lanes) in one
/// `fabric_reclaim_many` call: for each stream, whether its step was taken (not when the call
/// failed, nor for a stream the call did not reach: those walk alone); `None` when the
/// worker is closing.
async fn step_all(
    streams: &[Arc<StreamState>],
    walks: &mut [(String, u64)],
    stop: &CancellationToken,
) -> Option<Vec<bool>> {
    let none_taken = vec![false; streams.len()];
    let Some(first) = streams.first() else {
        return Some(none_taken);
    };
    let free = first.free_slots().min(first.config.batch_size);
    if free == 0 || stop.is_cancelled() {
        return Some(none_taken);
    }
    let spec = &first.spec;
    let keys: Vec<&str> = streams.iter().map(|s| s.spec.stream.as_str()).collect();
    let mut cmd = fcall("fabric_reclaim_many", &keys);
    cmd.arg(&spec.group)
        .arg(&spec.consumer)
        .arg(crate::time::millis(first.config.reclaim_idle))
        .arg(free);
    for (cursor, _) in walks.iter() {
        cmd.arg(cursor);
    }
    let reply = first
        .broker
        .call::<redis::Value>(&cmd, "FCALL fabric_reclaim_many", &spec.stream)
        .await
        .and_then(|v| {
            let parts = wire::as_array(&v)
                .filter(|p| p.len() == streams.len())
                .ok_or_else(|| Error::protocol("reclaim script", format!("{v:?}")))?;
            // `{}`: a stream the call did not reach (the free slots were all claimed).
            parts
                .iter()
                .map(|p| match wire::as_array(p) {
                    Some([]) => Ok(None),
                    _ => parse_reclaimed(p).map(Some),
                })
                .collect::<Result<Vec<_>>>()
        });
    match reply {
        Ok(steps) => {
            let mut taken = Vec::with_capacity(streams.len());
            for ((st, (cursor, _)), step) in streams.iter().zip(walks.iter_mut()).zip(steps) {
                taken.push(step.is_some());
                if let Some(step) = step
                    && !take(st, cursor, step).await
                {
                    return None;
                }
            }
            Some(taken)
        }
        Err(e) => {
            failed(first, &e);
            Some(none_taken)
        }
    }
}

/// One tick's walk of `st`'s pending list from `cursor`, at most `steps` steps; false when
/// the worker is closing.
async fn sweep(
    st: &Arc<StreamState>,
    cursor: &mut String,
    steps: usize,
    stop: &CancellationToken,
) -> bool {
    for _ in 0..steps {
        let free = st.free_slots().min(st.config.batch_size);
        if free == 0 || stop.is_cancelled() {
            break;
        }
        match reclaim_once(st, cursor, free).await {
            Ok(step) => {
                if !take(st, cursor, step).await {
                    return false;
                }
                if cursor == "0-0" {
                    break;
                }
            }
            Err(e) => {
                failed(st, &e);
                break;
            }
        }
    }
    true
}

/// Hands what one step claimed to handlers and moves the walk's cursor on; false when the
/// worker is closing.
async fn take(st: &Arc<StreamState>, cursor: &mut String, step: Reclaimed) -> bool {
    let spec = &st.spec;
    let (next, claimed, deleted) = step;
    if !deleted.is_empty() {
        warn!(stream = %spec.stream, ids = ?deleted, "pending entries were deleted from the stream before being handled; dropped from the pending list");
    }
    *cursor = next;
    for (entry, deliveries) in claimed {
        info!(stream = %spec.stream, stream_id = %entry.id, deliveries, "reclaimed a stalled entry");
        crate::metrics::reclaimed(&spec.agent, &st.type_label_of(&entry));
        let Some(p) = st.slot().await else {
            return false;
        };
        st.dispatch(entry, deliveries, p);
    }
    true
}

fn failed(st: &StreamState, e: &Error) {
    crate::metrics::redis_error(&st.spec.agent, "reclaim");
    if e.is_connection_error() {
        debug!(stream = %st.spec.stream, error = %e, "reclaim failed");
    } else {
        warn!(stream = %st.spec.stream, error = %e, "reclaim failed");
    }
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
    parse_reclaimed(&v)
}

/// One stream's `{next cursor, entries, deleted ids, delivery counts}`.
fn parse_reclaimed(v: &redis::Value) -> Result<Reclaimed> {
    let parts = wire::as_array(v)
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
