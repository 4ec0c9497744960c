//! The acker: acknowledges handled entries in batches (whatever has queued up goes in one
//! `XACK`), then clears their in-flight marks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::stream::StreamState;
use crate::error::Error;

/// Most ids in one XACK.
const ACK_BATCH_MAX: usize = 1000;
/// Below this many ids, the acker waits [`ACK_LINGER`] for more before sending.
const ACK_BATCH_TARGET: usize = 50;
/// How long the acker waits for more ids to batch.
const ACK_LINGER: Duration = Duration::from_millis(1);

/// Acknowledges handled entries in batches: whatever has queued up goes in one XACK.
/// Runs until `done` (set once every handler task has finished), then flushes and returns.
pub(super) async fn acker(
    st: Arc<StreamState>,
    mut rx: mpsc::UnboundedReceiver<String>,
    done: CancellationToken,
) {
    let stream = &st.spec.stream;
    let group = &st.spec.group;
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, ACK_BATCH_MAX) => {
                if n == 0 {
                    return;
                }
                if batch.len() < ACK_BATCH_TARGET && !done.is_cancelled() {
                    // Let more handlers finish, so one XACK covers many entries (this
                    // delays only the acknowledgement, never a handler).
                    tokio::time::sleep(ACK_LINGER).await;
                    while batch.len() < ACK_BATCH_MAX {
                        match rx.try_recv() {
                            Ok(id) => batch.push(id),
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = done.cancelled() => {
                while let Ok(id) = rx.try_recv() {
                    batch.push(id);
                }
                if batch.is_empty() {
                    return;
                }
            }
        }
        let ids = std::mem::take(&mut batch);
        let ok = st
            .persist("acknowledging", || async {
                let mut conn = st.broker.conn();
                let _: i64 = redis::cmd("XACK")
                    .arg(stream)
                    .arg(group)
                    .arg(&ids)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XACK", stream, e))?;
                Ok(())
            })
            .await;
        if ok.done() {
            st.acked_since_trim
                .store(true, std::sync::atomic::Ordering::Relaxed);
        } else {
            warn!(
                count = ids.len(),
                "entries not acknowledged; they will be handled again after the reclaim idle time"
            );
        }
        for id in &ids {
            st.done(id);
        }
    }
}
