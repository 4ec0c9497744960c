//! The recording calls the runtime makes at its event points: one short call each, a no-op
//! (one relaxed load) unless metrics are enabled.
//!
//! The per-message metrics' handles are registered once per (agent, message type) and kept,
//! so a message costs a map lookup and a few atomic operations, not a search of the
//! recorder's registry with freshly allocated labels per metric.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{Counter, Histogram};

use super::{enabled, names};

/// The `message_type` label of a message: its type when the agent registered a handler for
/// it, else `other` (senders choose types; the series must not grow with them).
pub(crate) fn type_label(known: bool, message_type: &str) -> &str {
    if known { message_type } else { "other" }
}

/// The handles of one agent's metrics for one message type.
struct TypeMetrics {
    handled: Counter,
    failed: Counter,
    retried: Counter,
    reclaimed: Counter,
    expired: Counter,
    duration: Hist,
    latency: Hist,
    payload: Hist,
}

/// A per-message histogram: counted into its buckets under our Prometheus exporter
/// (`buckets.rs`), else recorded through the facade into the application's recorder.
enum Hist {
    Facade(Histogram),
    #[cfg(feature = "prometheus")]
    Native(prometheus_client::metrics::histogram::Histogram),
}

impl Hist {
    fn record(&self, v: f64) {
        match self {
            Hist::Facade(h) => h.record(v),
            #[cfg(feature = "prometheus")]
            Hist::Native(h) => h.observe(v),
        }
    }
}

/// The three histograms of `labels`.
fn histograms(l: &[(&'static str, String); 2]) -> (Hist, Hist, Hist) {
    #[cfg(feature = "prometheus")]
    {
        let labels: super::buckets::Labels = l
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        if let Some(n) = super::buckets::handles(&labels) {
            return (
                Hist::Native(n.duration),
                Hist::Native(n.latency),
                Hist::Native(n.payload),
            );
        }
    }
    (
        Hist::Facade(::metrics::histogram!(names::HANDLER_DURATION, l)),
        Hist::Facade(::metrics::histogram!(names::SEND_TO_START, l)),
        Hist::Facade(::metrics::histogram!(names::PAYLOAD, l)),
    )
}

thread_local! {
    /// Handles registered so far by this thread, per agent and message type: a message costs a lookup in a map of this thread (no lock,
    /// no shared reference count) and the metric operations themselves. Filled only while
    /// recording is on, so they belong to the recorder installed then (an application
    /// bringing its own installs it before building its workers).
    static TYPES: RefCell<HashMap<String, HashMap<String, Arc<TypeMetrics>>>> =
        RefCell::new(HashMap::new());
}

/// Runs `f` with the handles of `agent`'s metrics for `message_type`.
fn with<R>(agent: &str, message_type: &str, f: impl FnOnce(&TypeMetrics) -> R) -> R {
    f(&handles(agent, message_type))
}

/// The handles of `agent`'s metrics for `message_type` (registered at first use).
fn handles(agent: &str, message_type: &str) -> Arc<TypeMetrics> {
    let found = TYPES.with_borrow(|t| t.get(agent).and_then(|m| m.get(message_type)).cloned());
    found.unwrap_or_else(|| {
        let l = [
            ("agent", agent.to_owned()),
            ("message_type", message_type.to_owned()),
        ];
        let (duration, latency, payload) = histograms(&l);
        let m = Arc::new(TypeMetrics {
            handled: ::metrics::counter!(names::HANDLED, &l),
            failed: ::metrics::counter!(names::FAILED, &l),
            retried: ::metrics::counter!(names::RETRIED, &l),
            reclaimed: ::metrics::counter!(names::RECLAIMED, &l),
            expired: ::metrics::counter!(names::EXPIRED, &l),
            duration,
            latency,
            payload,
        });
        TYPES.with_borrow_mut(|t| {
            t.entry(agent.to_owned())
                .or_default()
                .insert(message_type.to_owned(), m.clone());
        });
        m
    })
}

/// A retry scheduled.
pub(crate) fn retried(agent: &str, message_type: &str) {
    if enabled() {
        with(agent, message_type, |m| m.retried.increment(1));
    }
}

/// A message moved to dead letters (rare: registered on the spot).
pub(crate) fn dead_lettered(agent: &str, message_type: &str, reason: &str) {
    if enabled() {
        let l = [
            ("agent", agent.to_owned()),
            ("message_type", message_type.to_owned()),
            ("reason", reason.to_owned()),
        ];
        ::metrics::counter!(names::DEAD_LETTERED, &l).increment(1);
    }
}

/// A stalled entry taken over.
pub(crate) fn reclaimed(agent: &str, message_type: &str) {
    if enabled() {
        with(agent, message_type, |m| m.reclaimed.increment(1));
    }
}

/// A message reached after its time to live.
pub(crate) fn expired(agent: &str, message_type: &str) {
    if enabled() {
        with(agent, message_type, |m| m.expired.increment(1));
    }
}

/// The metrics of one message being handled, looked up once when it starts (nothing when
/// recording is off).
pub(crate) struct MessageMetrics(Option<Arc<TypeMetrics>>);

impl MessageMetrics {
    /// Now, when metrics are recorded (the start of its handler); `None` otherwise, without
    /// reading the clock.
    pub(crate) fn clock(&self) -> Option<std::time::Instant> {
        self.0.as_ref().map(|_| std::time::Instant::now())
    }

    /// Its handler ran since `began` (from [`MessageMetrics::clock`]).
    pub(crate) fn handler_ran(&self, began: Option<std::time::Instant>) {
        if let (Some(m), Some(began)) = (&self.0, began) {
            m.duration.record(began.elapsed().as_secs_f64());
        }
    }

    /// It was handled successfully.
    pub(crate) fn handled(&self) {
        if let Some(m) = &self.0 {
            m.handled.increment(1);
        }
    }

    /// Its attempt failed; `retry` when another is scheduled.
    pub(crate) fn failed(&self, retry: bool) {
        if let Some(m) = &self.0 {
            m.failed.increment(1);
            if retry {
                m.retried.increment(1);
            }
        }
    }
}

/// A message's handler starting: records its size and how long it waited since `stream_id`
/// (`<ms>-<seq>`, the time Redis enqueued it) was given, and returns its metrics.
pub(crate) fn started(
    agent: &str,
    message_type: &str,
    stream_id: &str,
    size: usize,
) -> MessageMetrics {
    if !enabled() {
        return MessageMetrics(None);
    }
    let m = handles(agent, message_type);
    m.payload
        .record(as_f64(u64::try_from(size).unwrap_or(u64::MAX)));
    if let Some(enqueued) = stream_id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<u64>().ok())
    {
        let waited = crate::time::now_ms().saturating_sub(enqueued);
        m.latency
            .record(Duration::from_millis(waited).as_secs_f64());
    }
    MessageMetrics(Some(m))
}

/// The messages in flight for `agent` (sampled).
pub(crate) fn in_flight(agent: &str, n: usize) {
    ::metrics::gauge!(names::IN_FLIGHT, "agent" => agent.to_owned())
        .set(as_f64(u64::try_from(n).unwrap_or(u64::MAX)));
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

/// A count as a metric value (exact below 2^53, far beyond any queue or entry size).
#[allow(clippy::cast_precision_loss)]
fn as_f64(n: u64) -> f64 {
    n as f64
}
