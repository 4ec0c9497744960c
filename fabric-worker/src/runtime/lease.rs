//! The leaser: renews the lease (idle time) of the entries being handled here, so that no
//! other consumer reclaims them while their handler runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::stream::StreamState;
use crate::broker::functions::fcall;
use crate::error::Result;

/// Keeps the lease of in-flight entries fresh, so no other consumer reclaims them while
/// their handler runs: for each of `streams` (one stream; or, serving many inboxes, an inbox
/// and its lanes). Ticks only while something is in flight: an idle stream costs no wake-up.
pub(super) async fn leaser(streams: Vec<Arc<StreamState>>, stop: CancellationToken) {
    let Some(first) = streams.first().cloned() else {
        return;
    };
    let period = first.config.lease_interval();
    loop {
        // Nothing in flight: wait for the first entry (a handler that started between the
        // check and the wait is seen: the notification is kept).
        if streams.iter().all(|s| s.in_flight_len() == 0) {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = first.started.notified() => {}
            }
        }
        // The first renewal a period after the first entry, then every period.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
            let mut any = false;
            for st in &streams {
                let ids = st.in_flight_ids();
                any |= !ids.is_empty();
                renew(st, &ids).await;
            }
            if !any {
                break;
            }
        }
    }
}

/// Renews the lease of `ids` in `st`'s pending list.
async fn renew(st: &StreamState, ids: &[String]) {
    let spec = &st.spec;
    for chunk in ids.chunks(500) {
        let mut cmd = fcall("fabric_lease", &[&spec.stream]);
        cmd.arg(&spec.group).arg(&spec.consumer).arg(chunk);
        let r: Result<Vec<String>> = st
            .broker
            .call(&cmd, "FCALL fabric_lease", &spec.stream)
            .await;
        match r {
            Ok(lost) => {
                let still: Vec<_> = lost.into_iter().filter(|id| st.is_in_flight(id)).collect();
                if !still.is_empty() {
                    warn!(stream = %spec.stream, ids = ?still, "lease lost: another consumer claimed these entries while they were being handled here");
                }
            }
            Err(e) if e.is_connection_error() => {
                debug!(stream = %spec.stream, error = %e, "lease renewal failed");
            }
            Err(e) => warn!(stream = %spec.stream, error = %e, "lease renewal failed"),
        }
    }
}
