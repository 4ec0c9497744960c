//! The Prometheus recorder (installed once per process, only when asked) and the worker's
//! small HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::names;
use crate::bus::Bus;
use crate::error::{Error, Result};

/// Buckets of the `_seconds` histograms: 1 ms to 10 min.
pub(super) const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];
/// Buckets of the `_bytes` histograms: 64 B to 1 MiB (the default entry size limit).
pub(super) const BYTES_BUCKETS: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
];

/// The recorder this crate installed, if it did.
static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();

/// The Prometheus recorder installed by [`install_prometheus`]: renders every metric of the
/// process in the Prometheus text format.
#[derive(Clone, Debug)]
pub struct PrometheusExporter {
    handle: PrometheusHandle,
}

impl PrometheusExporter {
    /// The metrics, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        super::buckets::render(&mut text);
        text
    }
}

/// Installs a Prometheus recorder as the process's global `metrics` recorder (once: a second
/// call returns the same) and turns recording on. Fails if the application installed
/// another recorder: then build workers with `metrics(true)` and serve that exporter.
pub fn install_prometheus() -> Result<PrometheusExporter> {
    // One installation at a time: two racing callers (two servers started at once) would
    // otherwise see the loser's install fail before the winner has recorded its handle.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = INSTALLED.get() {
        return Ok(PrometheusExporter { handle: h.clone() });
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS))
        .map_err(|e| Error::Config(format!("cannot configure the Prometheus recorder: {e}")))?;
    let handle = match builder.install_recorder() {
        Ok(h) => h,
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot install the Prometheus metrics recorder: {e}; another `metrics` recorder is already installed in this process (by the application?): build the worker with `metrics(true)` instead of a metrics address, and serve that recorder's exporter"
            )));
        }
    };
    let handle = INSTALLED.get_or_init(|| handle).clone();
    super::buckets::install();
    describe();
    super::enable();
    Ok(PrometheusExporter { handle })
}

/// The help text of each metric (`# HELP` lines).
fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(names::HANDLED, "Messages handled successfully");
    describe_counter!(names::FAILED, "Handler attempts that failed");
    describe_counter!(names::RETRIED, "Retries scheduled after a failed attempt");
    describe_counter!(
        names::DEAD_LETTERED,
        "Messages moved to dead letters, by reason"
    );
    describe_counter!(
        names::RECLAIMED,
        "Stalled entries taken over from another consumer"
    );
    describe_counter!(names::EXPIRED, "Messages reached after their ttl_seconds");
    // The per-message histograms are described where they are kept (buckets.rs).
    describe_gauge!(names::IN_FLIGHT, "Messages being handled by this process");
    describe_gauge!(
        names::QUEUE_DEPTH,
        "Inbox entries not yet handled (sampled)"
    );
    describe_gauge!(
        names::QUEUE_PENDING,
        "Entries delivered and not acknowledged (sampled)"
    );
    describe_gauge!(
        names::QUEUE_LAG,
        "Entries not yet delivered to the group (sampled)"
    );
    describe_gauge!(
        names::QUEUE_OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest pending entry (sampled)"
    );
    describe_counter!(
        names::REDIS_ERRORS,
        "Redis commands of the runtime that failed"
    );
    describe_counter!(
        names::REDIS_RECONNECTS,
        "Read loops that reached Redis again after failing"
    );
}

/// A bound metrics address, not yet serving.
#[derive(Debug)]
pub(crate) struct MetricsListener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    exporter: PrometheusExporter,
}

/// Installs the recorder and binds `addr` (`Error::MetricsListen` when it is taken).
pub(crate) async fn bind(addr: SocketAddr) -> Result<MetricsListener> {
    let exporter = install_prometheus()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::MetricsListen {
            addr: addr.to_string(),
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(addr);
    Ok(MetricsListener {
        listener,
        addr,
        exporter,
    })
}

struct Served {
    exporter: PrometheusExporter,
    bus: Bus,
}

impl MetricsListener {
    /// Serves `/metrics`, `/healthz` and `/readyz` until `stop` is cancelled.
    pub(crate) async fn serve(self, bus: Bus, stop: CancellationToken) {
        let state = std::sync::Arc::new(Served {
            exporter: self.exporter.clone(),
            bus,
        });
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(state);
        info!(addr = %self.addr, "serving /metrics, /healthz and /readyz");
        let handle = self.exporter.handle.clone();
        let upkeep_stop = stop.clone();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! { _ = upkeep_stop.cancelled() => return, _ = tick.tick() => handle.run_upkeep() }
            }
        });
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            warn!(addr = %self.addr, error = %e, "the metrics server stopped");
        }
        upkeep.abort();
    }
}

async fn metrics(State(s): State<std::sync::Arc<Served>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.exporter.render(),
    )
        .into_response()
}

fn probe(p: super::Probe) -> Response {
    let status = if p.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(p.body)).into_response()
}

async fn healthz() -> Response {
    probe(super::liveness())
}

async fn readyz(State(s): State<std::sync::Arc<Served>>) -> Response {
    probe(super::readiness(&s.bus).await)
}
