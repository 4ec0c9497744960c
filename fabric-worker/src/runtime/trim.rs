//! The trimmer: removes entries that every consumer group has been delivered and
//! acknowledged (never an unread or pending one).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::stream::StreamState;
use crate::broker::functions::fcall;
use crate::error::Result;

/// With shared reads, a stream this worker acknowledged nothing in is trimmed every this
/// many ticks only.
const SPARSE_TRIM_EVERY: u64 = 6;

/// Trims entries every group has been delivered and acknowledged, in each of `streams` (one
/// stream; or, serving many inboxes, an inbox and its lanes).
pub(super) async fn trimmer(streams: Vec<Arc<StreamState>>, stop: CancellationToken) {
    let Some(first) = streams.first().cloned() else {
        return;
    };
    let shared = first.read_wake.is_some();
    let period = first.config.trim_interval.max(Duration::from_millis(10));
    let mut tick = crate::time::housekeeping_interval(period, shared);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        ticks += 1;
        // Serving many inboxes: trim only after this worker acknowledged something, and
        // every SPARSE_TRIM_EVERY ticks for what other groups (MCP sessions) acknowledged.
        let due: Vec<&str> = streams
            .iter()
            .filter(|st| {
                let acked = st.acked_since_trim.swap(false, Ordering::Relaxed);
                !shared || acked || ticks.is_multiple_of(SPARSE_TRIM_EVERY)
            })
            .map(|st| st.spec.stream.as_str())
            .collect();
        let Some(stream) = due.first() else {
            continue;
        };
        // An inbox and its lanes (one slot) in one call. A shared topic stream: first the
        // groups of subscribers that have none on it yet, and nothing written since then.
        let mut cmd = fcall("fabric_trim", &due);
        match super::topics::adopt_subscribers(&first.bus, stream).await {
            Ok(Some(keep_from)) => {
                cmd.arg(keep_from);
            }
            Ok(None) => {}
            Err(e) => {
                debug!(%stream, error = %e, "cannot look for the topic's other subscribers; not trimming it now");
                continue;
            }
        }
        let r: Result<i64> = first.broker.call(&cmd, "FCALL fabric_trim", stream).await;
        match r {
            Ok(n) if n > 0 => debug!(streams = ?due, trimmed = n, "trimmed handled entries"),
            Ok(_) => {}
            Err(e) => debug!(streams = ?due, error = %e, "trim failed"),
        }
    }
}
