//! The leaser: renews the lease (idle time) of the entries being handled here, so that no
//! other consumer reclaims them while their handler runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::stream::StreamState;
use crate::broker::functions::fcall;
use crate::error::Result;

/// Keeps the lease of in-flight entries fresh, so no other consumer reclaims them while
/// their handler runs.
pub(super) async fn leaser(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let mut tick = tokio::time::interval(st.config.lease_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        let ids = st.in_flight_ids();
        if ids.is_empty() {
            continue;
        }
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
}
