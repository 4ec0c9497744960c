//! Exporting the handlers' spans to an OpenTelemetry collector over OTLP/HTTP (feature
//! `otel`).
//!
//! The trace context itself always travels with messages ([`crate::trace_context`]); this
//! module makes the spans visible: each handler's `message` span becomes an OpenTelemetry
//! span, child of the sender's span, so that a backend (Jaeger, Tempo, Honeycomb, …) shows
//! one trace for coder → percy → reply.
//!
//! Configured by the standard variables of the OpenTelemetry SDKs:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. `http://127.0.0.1:4318`; spans are posted to
//! `<endpoint>/v1/traces` in protobuf) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full
//! URL), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_SERVICE_NAME`.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn demo() -> fabric_worker::Result<()> {
//! // Logs to stderr (RUST_LOG) and, when OTEL_EXPORTER_OTLP_ENDPOINT is set, spans to the
//! // collector. Keep the guard: dropping it flushes the spans not yet exported.
//! let _otel = fabric_worker::otel::init("percy")?;
//! fabric_worker::Worker::builder("percy").from_env()?.run().await
//! # }
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Error, Result};

/// Keeps the span exporter running; dropping it exports the spans still buffered (waiting at
/// most the exporter's timeout) and stops it.
#[must_use = "dropping the guard stops exporting spans"]
pub struct OtelGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelGuard")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("fabric-worker: exporting the last spans failed: {e}");
        }
    }
}

/// Whether an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
pub fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// A `tracing` layer exporting spans over OTLP/HTTP (protobuf) as the `OTEL_*` variables say,
/// for programs composing their own subscriber; `service_name` unless `OTEL_SERVICE_NAME` is
/// set. Call it inside a Tokio runtime or not: the exporter runs on its own thread.
pub fn layer<S>(service_name: &str) -> Result<(OpenTelemetryLayer<S, Tracer>, OtelGuard)>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| {
            Error::Config(format!(
                "cannot set up the OTLP span exporter ({e}); check OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4318)"
            ))
        })?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| service_name.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("fabric-worker");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        layer,
        OtelGuard {
            provider: Some(provider),
        },
    ))
}

/// Installs the global `tracing` subscriber: logs to stderr filtered by `RUST_LOG` (default
/// `info`; colours only on a terminal), plus, when an OTLP endpoint is configured
/// ([`endpoint_configured`]), the spans at level `info` and above exported by [`layer`]
/// (whatever `RUST_LOG` says: the handlers' `message` spans are `info`). Fails when a global
/// subscriber is already set.
pub fn init(service_name: &str) -> Result<OtelGuard> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(fmt);
    let installed = if endpoint_configured() {
        let (otel, guard) = layer(service_name)?;
        registry
            .with(otel.with_filter(LevelFilter::INFO))
            .try_init()
            .map(|()| guard)
    } else {
        registry.try_init().map(|()| OtelGuard { provider: None })
    };
    installed.map_err(|e| Error::Config(format!("cannot install the tracing subscriber: {e}")))
}
