//! W3C trace context carried with every message, so that one trace follows a request from
//! agent to agent (coder → percy → reply) in any OpenTelemetry backend.
//!
//! The context travels in the entry's `headers` field (a sibling of `data`, which the Python
//! bus never reads) under the keys [`TRACEPARENT`] and, optionally, [`TRACESTATE`], exactly as
//! the W3C Trace Context recommendation writes them in HTTP headers (`docs/protocol.md` §3.2):
//!
//! ```text
//! headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
//! ```
//!
//! - Every handler runs in a span (`message`, with agent, message id, type, attempt and
//!   delivery count) that is the child of the sender's span named by `traceparent`; a
//!   message without one (or with a malformed one) starts a new trace.
//! - Sends and replies made while a handler runs ([`Bus::send`](crate::Bus::send) from its
//!   task, the reply to `reply_to`, the `error` reply of a dead letter) carry the handler
//!   span's context, unless the message already has a `traceparent` header. Outside a
//!   handler, a send carries the current OpenTelemetry span's context (feature `otel`).
//! - The propagation is plain code and always on; exporting spans to a collector needs the
//!   feature `otel` (see `fabric_worker::otel`).
//!
//! A task spawned by a handler with `tokio::spawn` does not inherit the handler's context:
//! give it explicitly with [`TraceContext::inject`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

/// The header holding the W3C `traceparent`: `00-<trace id>-<parent span id>-<flags>`.
pub const TRACEPARENT: &str = "traceparent";
/// The header holding the W3C `tracestate` (vendor data, carried unchanged).
pub const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` carried (the W3C limit is 32 members; 512 bytes covers them).
const MAX_TRACESTATE: usize = 512;

tokio::task_local! {
    /// The span context of the handler running in this task.
    static CURRENT: TraceContext;
}

/// A position in a trace: the trace, the span, whether it is sampled, and the vendors'
/// `tracestate`.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
    tracestate: Option<String>,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &self.traceparent())
            .field("tracestate", &self.tracestate)
            .finish()
    }
}

impl TraceContext {
    /// The root of a new trace: fresh random trace and span ids, sampled.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: random_id::<16>(),
            span_id: random_id::<8>(),
            flags: 1,
            tracestate: None,
        }
    }

    /// A new span of the same trace (a fresh span id), with the same flags and `tracestate`.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: random_id::<8>(),
            ..self.clone()
        }
    }

    /// Parses a W3C `traceparent` (and `tracestate`). `None` when it is malformed: a wrong
    /// length, upper-case or non-hex digits, version `ff`, or an all-zero trace or span id.
    /// Versions above `00` are read as `00` (their extra fields are ignored), as the
    /// recommendation says.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let tp = traceparent.trim();
        let b = tp.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex::<1>(&tp[0..2])?[0];
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = hex::<16>(&tp[3..35])?;
        let span_id = hex::<8>(&tp[36..52])?;
        let flags = hex::<1>(&tp[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii())
            .map(str::to_owned);
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            tracestate,
        })
    }

    /// The context a message's headers carry, if they carry a valid one.
    pub fn from_headers(headers: &BTreeMap<String, String>) -> Option<TraceContext> {
        let tp = headers.get(TRACEPARENT)?;
        let parsed = TraceContext::parse(tp, headers.get(TRACESTATE).map(String::as_str));
        if parsed.is_none() {
            tracing::debug!(traceparent = %tp, "malformed traceparent header; starting a new trace");
        }
        parsed
    }

    /// Writes this context into `headers` as `traceparent` (and `tracestate` when there is
    /// one), replacing what was there.
    pub fn inject(&self, headers: &mut BTreeMap<String, String>) {
        headers.insert(TRACEPARENT.to_owned(), self.traceparent());
        match &self.tracestate {
            Some(ts) => headers.insert(TRACESTATE.to_owned(), ts.clone()),
            None => headers.remove(TRACESTATE),
        };
    }

    /// The W3C `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        // Written digit by digit: every reply carries one, and `format!` with two hex
        // strings cost 4 % of a drain of tasks.
        let mut b = [b'-'; 55];
        b[..2].copy_from_slice(b"00");
        write_hex(&mut b[3..35], &self.trace_id);
        write_hex(&mut b[36..52], &self.span_id);
        write_hex(&mut b[53..55], &[self.flags]);
        // ASCII throughout; copied at once (a `char` at a time cost ~1,400 instructions).
        String::from_utf8(b.to_vec()).unwrap_or_default()
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id, 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    /// The trace id's bytes.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id's bytes.
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The vendors' `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// A context from its parts (e.g. an OpenTelemetry span context). `None` for all-zero ids.
    pub fn from_parts(
        trace_id: [u8; 16],
        span_id: [u8; 8],
        flags: u8,
        tracestate: Option<String>,
    ) -> Option<TraceContext> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
            tracestate,
        })
    }

    /// The context sends made now carry: with the feature `otel` and an OpenTelemetry layer
    /// installed, the current span's (a span a handler opens inside its own is then the
    /// parent of what it sends); else the running handler's span; else none.
    pub fn current() -> Option<TraceContext> {
        #[cfg(feature = "otel")]
        if let Some(cx) = otel_glue::current_span_context(&tracing::Span::current()) {
            return Some(cx);
        }
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this context as the current one (what sends made in it carry).
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// Adds the current context to `headers` unless they already name a parent.
pub(crate) fn propagate(headers: &mut BTreeMap<String, String>) {
    if headers.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(cx) = TraceContext::current() {
        cx.inject(headers);
    }
}

/// The context of the span a handler runs in, for an entry whose `headers` field is
/// `headers_field` (raw JSON, possibly absent or invalid): a child of the sender's span, or
/// the root of a new trace. With the feature `otel`, `span` is made the child of the sender's
/// span and its own OpenTelemetry ids are used. The span's `trace_id` field is recorded.
pub(crate) fn handler_context(span: &tracing::Span, headers_field: Option<&[u8]>) -> TraceContext {
    let parent = headers_field
        .and_then(|h| serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(h).ok())
        .and_then(|h| {
            let tp = h.get(TRACEPARENT)?.as_str()?;
            let ts = h.get(TRACESTATE).and_then(serde_json::Value::as_str);
            let parsed = TraceContext::parse(tp, ts);
            if parsed.is_none() {
                tracing::debug!(traceparent = %tp, "malformed traceparent header; starting a new trace");
            }
            parsed
        });
    let plain = || match &parent {
        Some(p) => p.child(),
        None => TraceContext::new_root(),
    };
    #[cfg(feature = "otel")]
    let own = otel_glue::adopt_parent(span, parent.as_ref()).unwrap_or_else(plain);
    #[cfg(not(feature = "otel"))]
    let own = plain();
    if !span.is_disabled() {
        span.record("trace_id", tracing::field::display(Hex(&own.trace_id)));
        span.record("span_id", tracing::field::display(Hex(&own.span_id)));
        if let Some(p) = &parent {
            span.record("parent_span_id", tracing::field::display(Hex(&p.span_id)));
        }
    }
    own
}

/// The bridge to `tracing-opentelemetry` (feature `otel`).
#[cfg(feature = "otel")]
mod otel_glue {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    /// The OpenTelemetry context of `span`, when an OpenTelemetry layer records it.
    pub(super) fn current_span_context(span: &tracing::Span) -> Option<TraceContext> {
        let cx = span.context();
        let otel_span = cx.span();
        let sc = otel_span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let state = sc.trace_state().header();
        TraceContext::from_parts(
            sc.trace_id().to_bytes(),
            sc.span_id().to_bytes(),
            sc.trace_flags().to_u8(),
            (!state.is_empty()).then_some(state),
        )
    }

    /// Makes `span` the child of `parent` (the sender's span), or the root of a new trace, and
    /// returns its OpenTelemetry context; `None` when no OpenTelemetry layer records spans.
    pub(super) fn adopt_parent(
        span: &tracing::Span,
        parent: Option<&TraceContext>,
    ) -> Option<TraceContext> {
        let parent_cx = match parent {
            Some(p) => {
                let state = p
                    .tracestate()
                    .and_then(|s| s.parse::<TraceState>().ok())
                    .unwrap_or_default();
                let sc = SpanContext::new(
                    TraceId::from_bytes(p.trace_id()),
                    SpanId::from_bytes(p.span_id()),
                    TraceFlags::new(p.flags()),
                    true,
                    state,
                );
                opentelemetry::Context::new().with_remote_span_context(sc)
            }
            // Not the reader's span (or whatever is current): a new trace.
            None => opentelemetry::Context::new(),
        };
        if let Err(e) = span.set_parent(parent_cx) {
            tracing::debug!(error = %e, "cannot set the handler span's parent");
        }
        current_span_context(span)
    }
}

/// Random ids from a per-thread SplitMix64 generator seeded once from the OS (through
/// `uuid`): ids must be unique and unpredictable enough for tracing, not secret, and a
/// system call per id cost a third of the worker's throughput.
fn random_id<const N: usize>() -> [u8; N] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let seed = uuid::Uuid::new_v4().as_u64_pair();
            seed.0 ^ seed.1
        });
    }
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = STATE.with(|s| {
                let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                s.set(x);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            });
            chunk.copy_from_slice(&r.to_le_bytes()[..chunk.len()]);
        }
        if out != [0; N] {
            return out;
        }
    }
}

/// Ids as lower-case hex, formatted only when a subscriber records them.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        let n = self.0.len().min(32);
        write_hex(&mut buf[..2 * n], &self.0[..n]);
        f.write_str(std::str::from_utf8(&buf[..2 * n]).map_err(|_| fmt::Error)?)
    }
}

/// Writes `bytes` as lower-case hex digits into `out` (two a byte; what does not fit is left).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, x) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(x >> 4)];
        pair[1] = DIGITS[usize::from(x & 0xf)];
    }
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn to_hex(b: &[u8]) -> String {
    Hex(b).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_back_the_w3c_example() {
        let cx = TraceContext::parse(TP, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(cx.traceparent(), TP);
        assert_eq!(cx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(cx.flags(), 1);
        let mut h = BTreeMap::new();
        cx.inject(&mut h);
        assert_eq!(TraceContext::from_headers(&h), Some(cx.clone()));
        let child = cx.child();
        assert_eq!(child.trace_id(), cx.trace_id());
        assert_ne!(child.span_id(), cx.span_id());
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
        // A later version with more fields is read as version 00.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd";
        assert!(TraceContext::parse(v1, None).is_some());
    }

    #[tokio::test]
    async fn the_current_context_is_the_scope_s_and_propagates_into_headers() {
        assert_eq!(TraceContext::current(), None);
        let cx = TraceContext::new_root();
        let seen = cx
            .clone()
            .scope(async {
                let mut h = BTreeMap::new();
                propagate(&mut h);
                h
            })
            .await;
        assert_eq!(seen.get(TRACEPARENT), Some(&cx.traceparent()));
        // A header the sender set wins.
        let mut h = BTreeMap::from([(TRACEPARENT.to_owned(), TP.to_owned())]);
        cx.scope(async { propagate(&mut h) }).await;
        assert_eq!(h[TRACEPARENT], TP);
    }
}
