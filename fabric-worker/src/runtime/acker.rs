//! The acker: acknowledges handled entries in batches (whatever has queued up goes in one
//! `XACK`), then clears their in-flight marks. A handled task's reply is handed to it too:
//! it writes the batch's replies first (`reply.rs`), in one pipeline, and acknowledges an
//! entry only once its reply is written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::reply::{Handled, PendingReply, Written};
use super::stream::StreamState;
use crate::error::Error;
use crate::hooks::Outcome;

/// Most entries in one batch.
const ACK_BATCH_MAX: usize = 1000;
/// Below this many ids, the acker waits [`ACK_LINGER`] for more before sending.
const ACK_BATCH_TARGET: usize = 50;
/// How long the acker waits for more ids to batch.
const ACK_LINGER: Duration = Duration::from_millis(1);

/// Acknowledges handled entries in batches: whatever has queued up goes in one XACK.
/// Runs until `done` (set once every handler task has finished), then flushes and returns.
pub(super) async fn acker(
    st: Arc<StreamState>,
    mut rx: mpsc::UnboundedReceiver<Handled>,
    done: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, ACK_BATCH_MAX) => {
                if n == 0 {
                    return;
                }
                let replies = batch.iter().any(|h| matches!(h, Handled::Reply(_)));
                if !replies && batch.len() < ACK_BATCH_TARGET && !done.is_cancelled() {
                    // Let more handlers finish, so one XACK covers many entries (this
                    // delays only the acknowledgement, never a handler; a reply is never
                    // held back).
                    tokio::time::sleep(ACK_LINGER).await;
                    while batch.len() < ACK_BATCH_MAX {
                        match rx.try_recv() {
                            Ok(h) => batch.push(h),
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = done.cancelled() => {
                while let Ok(h) = rx.try_recv() {
                    batch.push(h);
                }
                if batch.is_empty() {
                    return;
                }
            }
        }
        settle(&st, std::mem::take(&mut batch)).await;
    }
}

/// Writes the batch's replies, acknowledges the entries that may be (those without a reply,
/// and those whose reply was written), and clears every entry's in-flight mark.
async fn settle(st: &StreamState, batch: Vec<Handled>) {
    // Replies stay boxed: moving them between these lists moves a pointer, not the reply.
    let mut ids = Vec::with_capacity(batch.len());
    let mut pending: Vec<Box<PendingReply>> = Vec::with_capacity(batch.len());
    for h in batch {
        match h {
            Handled::Ack(id) => ids.push(id),
            Handled::Reply(r) => pending.push(r),
        }
    }
    // Entries whose reply was written (acknowledged with the rest), and the others (their
    // in-flight mark is cleared, nothing acknowledged: handled again after a reclaim, or
    // dead-lettered).
    let mut written = Vec::with_capacity(pending.len());
    let mut unacked = Vec::new();
    if !pending.is_empty() {
        let mut prepared: Vec<_> = pending.iter_mut().map(|p| &mut p.prepared).collect();
        match st.write_replies(&mut prepared).await {
            Written::Stopped => unacked = pending,
            Written::Each(each) => {
                for (p, r) in pending.into_iter().zip(each) {
                    match r {
                        Ok(()) => {
                            ids.push(p.entry.id.clone());
                            written.push(p);
                        }
                        Err(e) => {
                            let (entry, hooked) = (&p.entry, p.hooked.as_ref());
                            let request = p.request.head();
                            let why = super::reply::unwritable(request, &e);
                            let tries = (p.attempt, p.deliveries);
                            st.succeeded_but(entry, request, hooked, tries, why).await;
                            unacked.push(p);
                        }
                    }
                }
            }
        }
    }
    if !ids.is_empty() {
        let ok = ack(st, &ids).await;
        if !ok {
            warn!(
                count = ids.len(),
                "entries not acknowledged; they will be handled again after the reclaim idle time"
            );
        }
        for id in &ids {
            st.done(id);
        }
    }
    for p in written {
        p.metrics.handled();
        st.hook_after(p.hooked.as_ref(), Outcome::Ok);
    }
    for p in unacked {
        st.done(&p.entry.id);
    }
}

/// One `XACK` of `ids` (retried through connection errors). True when it was sent.
async fn ack(st: &StreamState, ids: &[String]) -> bool {
    let (stream, group) = (&st.spec.stream, &st.spec.group);
    let ok = st
        .persist("acknowledging", || async {
            let mut conn = st.broker.conn();
            let _: i64 = redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(ids)
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("XACK", stream, e))?;
            Ok(())
        })
        .await;
    if ok.done() {
        st.acked_since_trim
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    ok.done()
}
