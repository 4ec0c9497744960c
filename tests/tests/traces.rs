//! Traces across agents: two `trace_worker` processes (coder and percy) export their spans
//! over OTLP/HTTP to a collector this test hosts; one trace links coder's handler span,
//! percy's handler span (its child, through the `traceparent` header of the task) and
//! coder's handling of the reply (percy's span's child). A message without trace context
//! starts a new trace; a Python-style sender joins a trace with the `traceparent` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fabric_tests::{RedisServer, WorkerProcess, test_bin, unique_agent, wait_until};
use fabric_worker::{Bus, Message};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One exported span: ids in hex, its name and string attributes.
#[derive(Clone, Debug)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    service: String,
    attrs: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Span>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A minimal OTLP/HTTP collector: `POST /v1/traces` with a protobuf body, answered 200.
async fn collector() -> (String, Spans) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans: Spans = Arc::default();
    let store = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let mut rd = BufReader::new(rd);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            assert!(line.starts_with("POST /v1/traces"), "{line}");
                            first = false;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    rd.read_exact(&mut body).await.unwrap();
                    let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                    let mut got = Vec::new();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .map(|a| text(a.value.as_ref()))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                got.push(Span {
                                    trace_id: hex(&s.trace_id),
                                    span_id: hex(&s.span_id),
                                    parent: hex(&s.parent_span_id),
                                    name: s.name.clone(),
                                    service: service.clone(),
                                    attrs: s
                                        .attributes
                                        .iter()
                                        .map(|a| (a.key.clone(), text(a.value.as_ref())))
                                        .collect(),
                                });
                            }
                        }
                    }
                    store.lock().unwrap().extend(got);
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if wr.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), spans)
}

fn start_worker(url: &str, agent: &str, endpoint: &str, service: &str) -> WorkerProcess {
    let mut cmd = std::process::Command::new(test_bin("trace_worker"));
    cmd.env("REDIS_URL", url)
        .env("FABRIC_AGENTS", agent)
        .env("FABRIC_BLOCK_MS", "200")
        .env("RUST_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", service)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(std::process::Stdio::null());
    WorkerProcess {
        child: cmd.spawn().expect("spawn trace_worker"),
    }
}

/// The first handler span (`message`) that `pick` accepts.
fn handler_span(spans: &[Span], pick: impl Fn(&Span) -> bool) -> Option<&Span> {
    spans.iter().find(|s| s.name == "message" && pick(s))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_links_the_sender_percy_and_the_reply_across_processes() {
    let redis = RedisServer::start();
    let (endpoint, spans) = collector().await;
    let coder = unique_agent("tcoder");
    let percy = unique_agent("tpercy");
    let mut coder_p = start_worker(&redis.url(), &coder, &endpoint, "coder-svc");
    let mut percy_p = start_worker(&redis.url(), &percy, &endpoint, "percy-svc");
    let bus = Bus::connect(redis.url()).await.unwrap();

    // Two runs started by a sender without trace context (this test has no current span),
    // and one by a Python-style sender writing the W3C header itself.
    let mut starts = Vec::new();
    for _ in 0..2 {
        let m = Message::new("tester", &coder, "trace_start", json!({"to": percy}));
        assert!(m.headers.is_empty());
        starts.push(bus.send(m).await.unwrap().message_id);
    }
    let py_trace = "0af7651916cd43dd8448eb211c80319c";
    let py_parent = "b7ad6b7169203331";
    let py_id = format!("msg:{}", uuid::Uuid::new_v4());
    // Now, as the Python bus writes it (a fixed date expired a day later: the TTL is a day).
    let now = chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    let env = json!({
        "id": py_id, "from_agent": "python", "to_agent": coder, "message_type": "trace_start",
        "payload": {"to": percy}, "timestamp": now, "priority": 2,
        "ttl_seconds": 86400, "reply_to": null, "correlation_id": null,
    });
    let headers = json!({"traceparent": format!("00-{py_trace}-{py_parent}-01")});
    let mut conn = redis.async_conn().await;
    let _: String = redis::cmd("XADD")
        .arg(fabric_worker::keys::inbox(&coder))
        .arg("*")
        .arg("data")
        .arg(env.to_string())
        .arg("headers")
        .arg(headers.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    starts.push(py_id.clone());

    let mut c = redis.client();
    assert!(
        wait_until(Duration::from_secs(30), || {
            redis::cmd("LLEN")
                .arg("trace:done")
                .query::<usize>(&mut c)
                .unwrap()
                == 3
        }),
        "the three replies were not handled"
    );
    // Stop both gracefully: their last spans are exported on the way out.
    for p in [&mut coder_p, &mut percy_p] {
        p.signal("TERM");
        assert_eq!(p.wait_timeout(Duration::from_secs(20)), Some(0));
    }
    let spans = spans.lock().unwrap().clone();

    let mut traces = Vec::new();
    for start in &starts {
        // coder's handler of trace_start (the sender of the task).
        let sender = handler_span(&spans, |s| s.attrs.get("message_id") == Some(start))
            .unwrap_or_else(|| panic!("no handler span for {start} in {spans:#?}"));
        assert_eq!(sender.service, "coder-svc");
        assert_eq!(sender.attrs["agent"], coder);
        assert_eq!(sender.attrs["message_type"], "trace_start");
        assert_eq!(sender.attrs["attempt"], "1");
        assert_eq!(sender.attrs["delivery"], "1");
        // percy's handler of the task: the sender span's child, in the sender's trace.
        let task = handler_span(&spans, |s| {
            s.attrs.get("message_type").map(String::as_str) == Some("trace_task")
                && s.parent == sender.span_id
        })
        .unwrap_or_else(|| panic!("no percy span child of {sender:?} in {spans:#?}"));
        assert_eq!(task.service, "percy-svc");
        assert_eq!(task.attrs["agent"], percy);
        assert_eq!(task.trace_id, sender.trace_id);
        // coder's handling of percy's reply: percy's span's child, same trace.
        let reply = handler_span(&spans, |s| {
            s.attrs.get("message_type").map(String::as_str) == Some("response")
                && s.parent == task.span_id
        })
        .unwrap_or_else(|| panic!("no reply span child of {task:?} in {spans:#?}"));
        assert_eq!(reply.service, "coder-svc");
        assert_eq!(reply.trace_id, sender.trace_id);
        traces.push((sender.trace_id.clone(), sender.parent.clone()));
    }
    // Without trace context: each run is a new trace, its first span a root.
    assert_eq!(
        traces[0].1, "",
        "a message without traceparent starts a root span"
    );
    assert_eq!(traces[1].1, "");
    assert_ne!(
        traces[0].0, traces[1].0,
        "each message without context is its own trace"
    );
    // The Python sender's header: coder's span joins that trace as its parent's child.
    assert_eq!(traces[2], (py_trace.to_owned(), py_parent.to_owned()));
}

/// Without any OpenTelemetry layer (plain propagation, what every build does): the reply to
/// a Python-style message with a `traceparent` header continues its trace, with the handler
/// span's own id as the parent; a message without one gets a reply in a fresh trace.
#[tokio::test(flavor = "multi_thread")]
async fn replies_continue_the_senders_trace_without_an_exporter() {
    fabric_tests::init_tracing();
    let redis = RedisServer::start();
    let agent = unique_agent("tplain");
    let worker = fabric_tests::RunningWorker::serve(&redis.url(), &agent).await;
    let mut conn = redis.async_conn().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut ids = Vec::new();
    for (i, headers) in [
        Some(json!({"traceparent": format!("00-{trace}-{parent}-01"), "tracestate": "congo=t61rcWkgMzE"})),
        None,
        None,
        // Malformed (upper case): ignored, a new trace.
        Some(json!({"traceparent": format!("00-{}-{parent}-01", trace.to_uppercase())})),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("msg:{}", uuid::Uuid::new_v4());
        let env = json!({
            "id": id, "from_agent": "pycoder", "to_agent": agent, "message_type": "echo",
            "payload": {"i": i}, "timestamp": "2030-01-01T00:00:00.000000", "priority": 2,
            "ttl_seconds": 0, "reply_to": "agent:pycoder:results", "correlation_id": null,
        });
        let mut cmd = redis::cmd("XADD");
        cmd.arg(fabric_worker::keys::inbox(&agent))
            .arg("*")
            .arg("data")
            .arg(env.to_string());
        if let Some(h) = headers {
            cmd.arg("headers").arg(h.to_string());
        }
        let _: String = cmd.query_async(&mut conn).await.unwrap();
        ids.push(id);
    }
    let replied = fabric_tests::wait_until_async(Duration::from_secs(20), || {
        let mut conn = conn.clone();
        async move {
            fabric_tests::stream_entries(&mut conn, "agent:pycoder:results")
                .await
                .len()
                == 4
        }
    })
    .await;
    assert!(replied, "four replies");
    let entries = fabric_tests::stream_entries(&mut conn, "agent:pycoder:results").await;
    let mut by_request = HashMap::new();
    for (_, fields) in &entries {
        let request = fabric_tests::entry_field(fields, "in_reply_to")
            .unwrap()
            .to_owned();
        let headers: HashMap<String, String> =
            serde_json::from_str(fabric_tests::entry_field(fields, "headers").expect("headers"))
                .unwrap();
        by_request.insert(request, headers);
    }
    let parts = |h: &HashMap<String, String>| -> Vec<String> {
        h["traceparent"].split('-').map(str::to_owned).collect()
    };
    let joined = parts(&by_request[&ids[0]]);
    assert_eq!(joined[0], "00");
    assert_eq!(joined[1], trace, "the reply stays in the sender's trace");
    assert_ne!(
        joined[2], parent,
        "its parent is percy's handler span, not the sender's"
    );
    assert_eq!(joined[2].len(), 16);
    assert_eq!(joined[3], "01");
    assert_eq!(by_request[&ids[0]]["tracestate"], "congo=t61rcWkgMzE");
    let fresh: Vec<String> = ids[1..]
        .iter()
        .map(|id| parts(&by_request[id])[1].clone())
        .collect();
    assert!(
        fresh.iter().all(|t| t != trace && t.len() == 32),
        "{fresh:?}"
    );
    assert_ne!(
        fresh[0], fresh[1],
        "each message without context starts its own trace"
    );
    assert_ne!(fresh[1], fresh[2]);
    worker.stop().await;
}
