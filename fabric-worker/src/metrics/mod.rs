//! Metrics and health of a worker process.
//!
//! The runtime records its counters, gauges and histograms through the
//! [`metrics`](https://docs.rs/metrics) facade, so any exporter works (Prometheus, StatsD,
//! OpenTelemetry…). Nothing is recorded, and no recorder is installed, unless metrics are
//! enabled:
//!
//! * [`WorkerBuilder::metrics_addr`](crate::runtime::WorkerBuilder::metrics_addr) (env
//!   `FABRIC_METRICS_ADDR`, feature `prometheus`) installs a Prometheus recorder and serves
//!   `/metrics`, `/healthz` and `/readyz` at that address;
//! * [`WorkerBuilder::metrics`](crate::runtime::WorkerBuilder::metrics)`(true)` records into
//!   whatever recorder the application installed itself (no server, no recorder installed).
//!
//! The metric names are the constants of [`names`]; `docs/observability.md` describes each.
//!
//! | file | what |
//! | --- | --- |
//! | `record.rs` | the recording calls the runtime makes at its event points |
//! | `health.rs` | liveness (read loops completing reads) and readiness (Redis answering `PING`) |
//! | `sampler.rs` | the loop sampling queue depth, pending, lag and oldest-pending age |
//! | `server.rs` | the Prometheus recorder and the HTTP server (feature `prometheus`) |
//! | `buckets.rs` | the per-message histograms under that recorder, counted into buckets |

#[cfg(feature = "prometheus")]
mod buckets;
mod health;
mod record;
mod sampler;
#[cfg(feature = "prometheus")]
mod server;

use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use health::{Beat, liveness_bound};
pub use health::{Probe, READY_PING_TIMEOUT, liveness, readiness};
pub(crate) use record::*;
pub use sampler::sample_queues;
#[cfg(feature = "prometheus")]
pub(crate) use server::{MetricsListener, bind};
#[cfg(feature = "prometheus")]
pub use server::{PrometheusExporter, install_prometheus};

/// Whether the runtime records metrics in this process (set once a worker enables them).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns recording on for this process (the runtime calls it when a worker is built with
/// metrics; a binary that installed its own recorder may call it too). There is no turning
/// it off: a recorder, once installed, stays.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether the runtime records metrics in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The metric names (Prometheus conventions: `_total` counters, `_seconds` and `_bytes`
/// units). Labels: `agent` on every one; `message_type` on the per-message ones (the
/// handler's registered type, or `other` for a type no handler of the agent registered, so
/// that senders cannot grow the number of series); `reason` on dead letters; `operation`
/// on Redis errors.
pub mod names {
    /// Counter: messages handled successfully (acknowledged after their handler succeeded).
    pub const HANDLED: &str = "fabric_messages_handled_total";
    /// Counter: handler attempts that failed (error, panic, timeout, bad payload).
    pub const FAILED: &str = "fabric_messages_failed_total";
    /// Counter: retries scheduled after a failed attempt.
    pub const RETRIED: &str = "fabric_messages_retried_total";
    /// Counter: messages moved to dead letters, by `reason`.
    pub const DEAD_LETTERED: &str = "fabric_messages_dead_lettered_total";
    /// Counter: stalled entries taken over from another consumer (`XAUTOCLAIM`).
    pub const RECLAIMED: &str = "fabric_messages_reclaimed_total";
    /// Counter: messages whose `ttl_seconds` had passed when reached.
    pub const EXPIRED: &str = "fabric_messages_expired_total";
    /// Histogram: handler run time.
    pub const HANDLER_DURATION: &str = "fabric_handler_duration_seconds";
    /// Histogram: from the entry's enqueue time (its stream id) to its handler's start.
    pub const SEND_TO_START: &str = "fabric_send_to_start_seconds";
    /// Histogram: size of the entries read (field names and values).
    pub const PAYLOAD: &str = "fabric_message_payload_bytes";
    /// Gauge: messages being handled by this process.
    pub const IN_FLIGHT: &str = "fabric_messages_in_flight";
    /// Gauge (sampled): entries of the inbox (and its lanes) not yet handled.
    pub const QUEUE_DEPTH: &str = "fabric_queue_depth";
    /// Gauge (sampled): entries delivered to the group and not acknowledged.
    pub const QUEUE_PENDING: &str = "fabric_queue_pending";
    /// Gauge (sampled): entries not yet delivered to the group.
    pub const QUEUE_LAG: &str = "fabric_queue_lag";
    /// Gauge (sampled): age of the oldest pending entry (0 when none).
    pub const QUEUE_OLDEST_PENDING_AGE: &str = "fabric_queue_oldest_pending_age_seconds";
    /// Counter: Redis commands of the runtime that failed, by `operation`.
    pub const REDIS_ERRORS: &str = "fabric_redis_errors_total";
    /// Counter: read loops that reached Redis again after failing.
    pub const REDIS_RECONNECTS: &str = "fabric_redis_reconnects_total";
}
