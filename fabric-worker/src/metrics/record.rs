//! The recording calls the runtime makes at its event points: one short call each, a no-op
//! (one relaxed load) unless metrics are enabled.

use std::time::Duration;

use super::{enabled, names};

/// The `message_type` label of a message: its type when the agent registered a handler for
/// it, else `other` (senders choose types; the series must not grow with them).
pub(crate) fn type_label<'a>(known: bool, message_type: &'a str) -> &'a str {
    if known { message_type } else { "other" }
}

fn labels(agent: &str, message_type: &str) -> [(&'static str, String); 2] {
    [
        ("agent", agent.to_owned()),
        ("message_type", message_type.to_owned()),
    ]
}

/// A message handled successfully.
pub(crate) fn handled(agent: &str, message_type: &str) {
    if enabled() {
        ::metrics::counter!(names::HANDLED, &labels(agent, message_type)).increment(1);
    }
}

/// A handler attempt that failed.
pub(crate) fn failed(agent: &str, message_type: &str) {
    if enabled() {
        ::metrics::counter!(names::FAILED, &labels(agent, message_type)).increment(1);
    }
}

/// A retry scheduled.
pub(crate) fn retried(agent: &str, message_type: &str) {
    if enabled() {
        ::metrics::counter!(names::RETRIED, &labels(agent, message_type)).increment(1);
    }
}

/// A message moved to dead letters.
pub(crate) fn dead_lettered(agent: &str, message_type: &str, reason: &str) {
    if enabled() {
        let [a, t] = labels(agent, message_type);
        ::metrics::counter!(names::DEAD_LETTERED, &[a, t, ("reason", reason.to_owned())])
            .increment(1);
    }
}

/// A stalled entry taken over.
pub(crate) fn reclaimed(agent: &str, message_type: &str) {
    if enabled() {
        ::metrics::counter!(names::RECLAIMED, &labels(agent, message_type)).increment(1);
    }
}

/// A message reached after its time to live.
pub(crate) fn expired(agent: &str, message_type: &str) {
    if enabled() {
        ::metrics::counter!(names::EXPIRED, &labels(agent, message_type)).increment(1);
    }
}

/// A handler's run time.
pub(crate) fn handler_duration(agent: &str, message_type: &str, d: Duration) {
    if enabled() {
        ::metrics::histogram!(names::HANDLER_DURATION, &labels(agent, message_type))
            .record(d.as_secs_f64());
    }
}

/// A message starting: its size, and how long it waited since `stream_id` (`<ms>-<seq>`,
/// the time Redis enqueued it) was given.
pub(crate) fn started(agent: &str, message_type: &str, stream_id: &str, size: usize) {
    if !enabled() {
        return;
    }
    let l = labels(agent, message_type);
    // f64 holds every size a stream entry can have exactly enough for a histogram.
    #[allow(clippy::cast_precision_loss)]
    ::metrics::histogram!(names::PAYLOAD, &l).record(size as f64);
    if let Some(enqueued) = stream_id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
    {
        let waited = crate::time::now_ms().saturating_sub(enqueued);
        ::metrics::histogram!(names::SEND_TO_START, &l)
            .record(Duration::from_millis(waited).as_secs_f64());
    }
}

/// One more (`true`) or one fewer (`false`) message in flight.
pub(crate) fn in_flight(agent: &str, more: bool) {
    if enabled() {
        let g = ::metrics::gauge!(names::IN_FLIGHT, "agent" => agent.to_owned());
        if more {
            g.increment(1.0)
        } else {
            g.decrement(1.0)
        }
    }
}

/// A Redis command of the runtime failed (`operation` says which: `read`, `reclaim`, …).
pub(crate) fn redis_error(agent: &str, operation: &'static str) {
    if enabled() {
        ::metrics::counter!(names::REDIS_ERRORS, "agent" => agent.to_owned(), "operation" => operation)
            .increment(1);
    }
}

/// A read loop reached Redis again after failing.
pub(crate) fn reconnected(agent: &str) {
    if enabled() {
        ::metrics::counter!(names::REDIS_RECONNECTS, "agent" => agent.to_owned()).increment(1);
    }
}

/// The sampled figures of an agent's queue.
pub(crate) fn queue(agent: &str, depth: u64, pending: u64, lag: u64, oldest_age: Duration) {
    let a = || agent.to_owned();
    ::metrics::gauge!(names::QUEUE_DEPTH, "agent" => a()).set(as_f64(depth));
    ::metrics::gauge!(names::QUEUE_PENDING, "agent" => a()).set(as_f64(pending));
    ::metrics::gauge!(names::QUEUE_LAG, "agent" => a()).set(as_f64(lag));
    ::metrics::gauge!(names::QUEUE_OLDEST_PENDING_AGE, "agent" => a())
        .set(oldest_age.as_secs_f64());
}

/// A count as a gauge value (exact below 2^53, far beyond any queue).
#[allow(clippy::cast_precision_loss)]
fn as_f64(n: u64) -> f64 {
    n as f64
}
