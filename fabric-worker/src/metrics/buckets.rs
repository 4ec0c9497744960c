//! The per-message histograms (handler duration, send→start latency, payload size) under our
//! Prometheus exporter: counted into their buckets where they are recorded, with
//! `prometheus-client`'s histogram (a short lock, a bucket search, a few additions).
//!
//! Through the `metrics` facade, `metrics-exporter-prometheus` queues every sample and buckets
//! them at its upkeep; with three samples per message that was the whole cost of metrics in
//! `fabric-bench --only metrics` (10–15% of a drain's CPU, against none with the three samples
//! left out). Counters and gauges stay on the facade. With
//! [`WorkerBuilder::metrics`](crate::runtime::WorkerBuilder::metrics)`(true)` (the
//! application's own recorder) the histograms go through the facade as well.

use std::sync::OnceLock;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::names;
use super::server::{BYTES_BUCKETS, SECONDS_BUCKETS};

/// `agent` and `message_type`.
pub(crate) type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

struct Native {
    registry: Registry,
    duration: Histograms,
    latency: Histograms,
    payload: Histograms,
}

static NATIVE: OnceLock<Native> = OnceLock::new();

fn seconds() -> Histogram {
    Histogram::new(SECONDS_BUCKETS.iter().copied())
}

fn bytes() -> Histogram {
    Histogram::new(BYTES_BUCKETS.iter().copied())
}

/// Registers the three histograms (once; the exporter's installation calls it).
pub(super) fn install() {
    NATIVE.get_or_init(|| {
        let duration: Histograms = Family::new_with_constructor(seconds);
        let latency: Histograms = Family::new_with_constructor(seconds);
        let payload: Histograms = Family::new_with_constructor(bytes);
        let mut registry = Registry::default();
        registry.register(
            names::HANDLER_DURATION,
            "Handler run time",
            duration.clone(),
        );
        registry.register(
            names::SEND_TO_START,
            "From enqueue (the entry's stream id) to the handler's start",
            latency.clone(),
        );
        registry.register(
            names::PAYLOAD,
            "Size of the entries handled",
            payload.clone(),
        );
        Native {
            registry,
            duration,
            latency,
            payload,
        }
    });
}

/// One agent's three histograms for one message type.
pub(crate) struct NativeHandles {
    pub(crate) duration: Histogram,
    pub(crate) latency: Histogram,
    pub(crate) payload: Histogram,
}

/// The histograms of `labels`, when our exporter is installed.
pub(crate) fn handles(labels: &Labels) -> Option<NativeHandles> {
    let n = NATIVE.get()?;
    Some(NativeHandles {
        duration: n.duration.get_or_create_owned(labels),
        latency: n.latency.get_or_create_owned(labels),
        payload: n.payload.get_or_create_owned(labels),
    })
}

/// Appends the histograms to `out`, in the text format the exporter writes (OpenMetrics'
/// `# EOF` left out: the exporter's text comes first).
pub(super) fn render(out: &mut String) {
    let Some(n) = NATIVE.get() else { return };
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &n.registry).is_err() {
        return;
    }
    for line in text.lines().filter(|l| *l != "# EOF") {
        out.push_str(line);
        out.push('\n');
    }
}
