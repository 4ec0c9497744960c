//! The trimmer: removes entries that every consumer group has been delivered and
//! acknowledged (never an unread or pending one).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::stream::StreamState;
use crate::broker::functions::fcall;
use crate::error::Result;

/// Trims entries every group has been delivered and acknowledged.
pub(super) async fn trimmer(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let mut tick = tokio::time::interval(st.config.trim_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cmd = fcall("fabric_trim", &[&spec.stream]);
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        let r: Result<i64> = st
            .broker
            .call(&cmd, "FCALL fabric_trim", &spec.stream)
            .await;
        match r {
            Ok(n) if n > 0 => debug!(stream = %spec.stream, trimmed = n, "trimmed handled entries"),
            Ok(_) => {}
            Err(e) => debug!(stream = %spec.stream, error = %e, "trim failed"),
        }
    }
}
