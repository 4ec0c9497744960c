//! The reader: `XREADGROUP … BLOCK` for new entries, on a connection of its own, taking a
//! permit per entry so that no more are read than can start at once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::stream::StreamState;
use crate::broker::{Conn, reconnect_backoff, wire};

/// Reads new entries and dispatches them, on a connection of its own.
pub(super) async fn reader(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let block = st.config.block;
    let mut conn: Option<Conn> = None;
    let mut backoff = reconnect_backoff();
    let mut failing = false;
    loop {
        // Wait for capacity before reading, and read no more than can start at once.
        // Permits are taken per entry after the read, so a blocked read holds none (the
        // reclaimer needs them too).
        tokio::select! {
            _ = stop.cancelled() => return,
            p = st.sem.acquire() => match p { Ok(p) => drop(p), Err(_) => return },
        }
        let count = st.sem.available_permits().clamp(1, st.config.batch_size);
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match st.broker.dedicated(block).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    if !failing {
                        warn!(agent = %spec.agent, stream = %spec.stream, error = %e, "cannot reach Redis; retrying with backoff");
                        failing = true;
                    }
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
                    continue;
                }
            },
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&spec.group)
            .arg(&spec.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(crate::time::millis(block))
            .arg("STREAMS")
            .arg(&spec.stream)
            .arg(">");
        let read = cmd.query_async::<redis::Value>(c);
        let reply = tokio::select! {
            // Dropping a blocked read: drop the connection too, so the server unblocks it.
            _ = stop.cancelled() => return,
            r = read => r,
        };
        match reply {
            Ok(v) => {
                if failing {
                    info!(agent = %spec.agent, stream = %spec.stream, "reconnected to Redis; reading again");
                    failing = false;
                }
                backoff = reconnect_backoff();
                match wire::parse_read_reply(&v) {
                    Ok(streams) => {
                        for entry in streams.into_iter().flat_map(|(_, e)| e) {
                            // Normally free at once (we read no more than were available).
                            let Ok(p) = st.sem.clone().acquire_owned().await else {
                                return;
                            };
                            st.dispatch(entry, 1, p);
                        }
                    }
                    Err(e) => {
                        error!(stream = %spec.stream, error = %e, "unreadable XREADGROUP reply");
                    }
                }
            }
            Err(e) if wire::is_nogroup(&e) => {
                warn!(stream = %spec.stream, group = %spec.group, "consumer group missing (stream deleted?); recreating it");
                st.broker.forget_group(&spec.stream, &spec.group);
                if let Err(e) = st.broker.ensure_group(&spec.stream, &spec.group).await {
                    warn!(error = %e, "cannot recreate the consumer group");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                }
            }
            Err(e) => {
                conn = None;
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                if !failing {
                    warn!(agent = %spec.agent, stream = %spec.stream, error = %e, retry_in_ms = crate::time::millis(d), "read failed; reconnecting with backoff");
                    failing = true;
                }
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
            }
        }
    }
}

/// At shutdown, after the reader stopped: handles what Redis already handed to this
/// consumer and nobody is handling — entries of a read that was answered just as it was
/// cancelled. Without this they would wait for another worker's reclaim (`reclaim_idle`).
pub(super) async fn drain_own(st: &Arc<StreamState>) {
    let spec = &st.spec;
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&spec.group)
        .arg(&spec.consumer)
        .arg("COUNT")
        .arg(st.config.batch_size)
        .arg("STREAMS")
        .arg(&spec.stream)
        .arg("0");
    let reply = cmd.query_async::<redis::Value>(&mut st.broker.conn()).await;
    let entries = match reply
        .map_err(|e| e.to_string())
        .and_then(|v| wire::parse_read_reply(&v).map_err(|e| e.to_string()))
    {
        Ok(streams) => streams.into_iter().flat_map(|(_, e)| e).collect::<Vec<_>>(),
        Err(e) => {
            warn!(stream = %spec.stream, error = %e, "could not look for entries handed to this worker as it stopped; another worker reclaims them");
            return;
        }
    };
    for entry in entries {
        // An entry of our own history: a running handler, one whose acknowledgement is
        // queued, or (the case here) one read and never dispatched.
        if st.is_in_flight(&entry.id) || entry.fields.is_empty() {
            continue;
        }
        info!(stream = %spec.stream, stream_id = %entry.id, "handling an entry read as the worker stopped");
        let Ok(p) = st.sem.clone().acquire_owned().await else {
            return;
        };
        st.dispatch(entry, 1, p);
    }
}
