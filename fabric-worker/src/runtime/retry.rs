//! Retries: a failed entry is parked in the sorted set `<stream>:retry{<stream>}` (scored by
//! its due time, by the server's clock) and acknowledged, atomically; the promoter moves due
//! retries — and messages sent for later (`<stream>:delayed{<stream>}`) — into the stream,
//! or into the priority lane they name.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::stream::{Persisted, StreamState};
use crate::broker::RawEntry;
use crate::broker::functions::fcall;
use crate::error::Result;
use crate::keys;
use crate::message::fields;

impl StreamState {
    /// Boxed, so that the per-message task stays small.
    pub(super) fn schedule_retry<'a>(
        &'a self,
        entry: &'a RawEntry,
        next_attempt: u32,
        delay: Duration,
        error: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.schedule_retry_now(entry, next_attempt, delay, error))
    }

    async fn schedule_retry_now(
        &self,
        entry: &RawEntry,
        next_attempt: u32,
        delay: Duration,
        error: &str,
    ) {
        let set = [
            (fields::ATTEMPT, next_attempt.to_string()),
            (fields::TARGET_GROUP, self.spec.group.clone()),
            (fields::LAST_ERROR, error.chars().take(2000).collect()),
        ];
        // The next attempt takes a new turn from its rate limits.
        let replaced = [
            fields::ATTEMPT,
            fields::TARGET_GROUP,
            fields::LAST_ERROR,
            super::rate_limit::RATE_RESERVED,
        ];
        self.park(entry, delay, &replaced, &set, "scheduling a retry")
            .await;
    }

    /// Parks `entry` in the retry set for `delay` and acknowledges it, in one atomic call
    /// (`fabric_schedule_retry`): its fields without those named in `replaced`, then the
    /// `set` pairs; promoted back into the lane it came from, if any. Wakes the promoter
    /// once parked. Retries and rate-limited messages both wait this way.
    pub(super) async fn park(
        &self,
        entry: &RawEntry,
        delay: Duration,
        replaced: &[&str],
        set: &[(&str, String)],
        what: &'static str,
    ) -> Persisted {
        let spec = &self.spec;
        let mut flat: Vec<String> = Vec::new();
        for (k, v) in &entry.fields {
            if replaced.contains(&k.as_str()) {
                continue;
            }
            flat.push(k.clone());
            flat.push(String::from_utf8_lossy(v).into_owned());
        }
        for (k, v) in set {
            flat.push((*k).to_owned());
            flat.push(v.clone());
        }
        let home = keys::home(&spec.stream);
        let mut member = json!({ "fields": flat, "from": entry.id });
        if let Some(lane) = keys::lane_of(home, &spec.stream) {
            // Back into the lane it came from.
            member["lane"] = json!(lane);
        }
        let member = member.to_string();
        let retries = keys::retries(home);
        let ok = self
            .persist(what, || async {
                let mut cmd = fcall("fabric_schedule_retry", &[&spec.stream, &retries]);
                cmd.arg(&spec.group)
                    .arg(&entry.id)
                    .arg(crate::time::millis(delay))
                    .arg(&member);
                let _: i64 = self
                    .broker
                    .call(&cmd, "FCALL fabric_schedule_retry", &spec.stream)
                    .await?;
                Ok(())
            })
            .await;
        if ok.done() {
            self.retry_notify.notify_one();
        }
        ok
    }
}

/// Moves due retries and delayed messages into the stream (or their lane). Sleeps until the
/// next is due (at most `retry_poll_interval`); woken early when this worker schedules a
/// retry or a sender announces a delayed message (`deliver_at_ms` in a notification).
pub(super) async fn promoter(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let poll = st.config.retry_poll_interval.max(Duration::from_millis(5));
    // Nothing scheduled: what is announced (delayed messages) or scheduled here (retries,
    // rate-limited parks) wakes the promoter. Serving many inboxes, the poll for the rest
    // (another worker's retries when it died, a lost notification) is the reclaim cadence,
    // at which a dead worker's pending entries are taken over too.
    let shared = st.read_wake.is_some();
    let empty_poll = if shared {
        poll.max(st.config.reclaim_every())
    } else {
        poll
    };
    // Serving many inboxes, their promoters poll in phases (see `housekeeping_interval`).
    let mut idle_tick = crate::time::housekeeping_interval(empty_poll, true);
    let cmd = crate::broker::functions::promote(&spec.stream);
    loop {
        let r: Result<(i64, i64, i64)> = st
            .broker
            .call(&cmd, "FCALL fabric_promote", &spec.stream)
            .await;
        let wait = match r {
            Ok((moved, next, failed)) => {
                if moved > 0 {
                    debug!(stream = %spec.stream, moved, "retries and delayed messages due; in the stream");
                    if let Some(r) = &st.read_wake {
                        r.notify_one();
                    }
                }
                if failed > 0 {
                    warn!(stream = %spec.stream, failed, "retries that could not be put back in the stream were moved to dead letters (reason promote_failed)");
                }
                if moved >= 100 {
                    Duration::ZERO
                } else if next >= 0 {
                    Duration::from_millis(u64::try_from(next).unwrap_or(0)).min(poll)
                } else {
                    empty_poll
                }
            }
            Err(e) if e.is_connection_error() => {
                debug!(stream = %spec.stream, error = %e, "retry promotion failed");
                poll
            }
            Err(e) => {
                warn!(stream = %spec.stream, error = %e, "retry promotion failed; trying again");
                poll
            }
        };
        let idle = shared && wait == empty_poll;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait), if !idle => {}
            _ = idle_tick.tick(), if idle => {}
            _ = st.retry_notify.notified() => {}
        }
    }
}
