//! `/metrics`, `/healthz` and `/readyz` beside `/mcp` (see `docs/observability.md`).
//!
//! On a loopback address they are open (the `Host` and `Origin` checks still apply, as to
//! every path); on any other address they need a bearer token or JWT exactly as `/mcp`
//! does, so that exposing the server exposes nothing more without authentication.
//!
//! `/metrics` has the process's own counters (Redis errors of its sampler) and the queue
//! gauges of every agent with an inbox, sampled every 15 s. `/healthz` is live while the
//! process serves; `/readyz` is ready while Redis answers `PING`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fabric_worker::metrics::{self, Probe, PrometheusExporter};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::tools::BusCell;
use crate::error::{Error, Result};

/// The paths served here.
pub(crate) const PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// How often the queue gauges are sampled (a `SCAN` for inboxes, then a few commands each).
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// What the three endpoints need.
pub(crate) struct Observe {
    exporter: PrometheusExporter,
    bus: BusCell,
}

impl Observe {
    /// Installs the Prometheus recorder and prepares a bus for `redis_url` (connected at
    /// first use, so the server starts while Redis is down).
    pub(crate) fn new(redis_url: &str, mode: fabric_worker::bus::Mode) -> Result<Arc<Observe>> {
        let exporter = metrics::install_prometheus()
            .map_err(|e| Error::Server(format!("cannot serve /metrics: {e}")))?;
        let bus = BusCell::new(redis_url, mode).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(Arc::new(Observe { exporter, bus }))
    }

    /// Samples the queues of every agent until `stop` is cancelled (waiting for Redis first).
    pub(crate) fn spawn_sampler(self: &Arc<Self>, stop: CancellationToken) {
        let o = self.clone();
        tokio::spawn(async move {
            let bus = loop {
                match o.bus.get().await {
                    Ok(b) => break b,
                    Err(_) => tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    },
                }
            };
            metrics::sample_queues(bus, None, None, SAMPLE_EVERY, stop).await;
        });
    }

    async fn ready(&self) -> Probe {
        match self.bus.get().await {
            Ok(bus) => metrics::readiness(&bus).await,
            Err(e) => Probe {
                ok: false,
                body: json!({"status": "unready", "reason": format!("cannot connect to Redis: {e}")}),
            },
        }
    }
}

/// The routes of the three endpoints.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(o: &Arc<Observe>) -> Router<S> {
    let (m, r) = (o.clone(), o.clone());
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.exporter.render(),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { probe(metrics::liveness()) }))
        .route(
            "/readyz",
            get(move || async move { probe(r.ready().await) }),
        )
}

fn probe(p: Probe) -> Response {
    let status = if p.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(p.body)).into_response()
}
