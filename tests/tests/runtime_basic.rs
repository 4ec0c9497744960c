//! In-process worker against a real redis-server: handle → reply → ack, dead letters,
//! request/reply, and the wire format the Python bus reads and writes.

use std::time::Duration;

use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::prelude::*;
use fabric_worker::{Error, keys};
use redis::AsyncCommands;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Typed {
    x: u32,
}

#[handler(message_type = "echo")]
async fn echo(ctx: Context, payload: Value) -> Result<Value, HandlerError> {
    Ok(json!({
        "echo": payload,
        "trace": ctx.header("trace"),
        "attempt": ctx.attempt(),
        "delivery": ctx.delivery_count(),
    }))
}

#[handler(message_type = "typed")]
async fn typed(t: Typed) -> Result<u32, HandlerError> {
    Ok(t.x * 2)
}

#[handler(message_type = "never_works")]
async fn never_works(_ctx: Context) -> Result<(), HandlerError> {
    Err(HandlerError::permanent("this task is impossible"))
}

/// Starts an in-process worker for `agent`.
async fn start_worker(url: &str, agent: &str) -> RunningWorker {
    RunningWorker::start(
        Worker::builder(agent)
            .url(url)
            .block(Duration::from_millis(500)),
    )
    .await
}

async fn entries(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Vec<(String, Vec<(String, String)>)> {
    let v: redis::streams::StreamRangeReply = conn.xrange_all(key).await.expect("XRANGE");
    v.ids
        .into_iter()
        .map(|e| {
            let mut f: Vec<(String, String)> = e
                .map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        redis::from_redis_value_ref::<String>(v).unwrap_or_default(),
                    )
                })
                .collect();
            f.sort();
            (e.id, f)
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_handle_reply_ack_with_headers() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("echo");
    let sender = unique_agent("sender");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = start_worker(&server.url(), &agent).await;

    let reply_to = keys::results(&sender);
    let msg = Message::new(&sender, &agent, "echo", json!({"x": 1}))
        .with_reply_to(&reply_to)
        .with_header("trace", "abc-123");
    let correlation = msg.correlation_id.clone().unwrap();
    let receipt = bus.send(msg.clone()).await.unwrap();
    assert_eq!(receipt.status, "queued");
    assert_eq!(receipt.message_id, msg.id);

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ok = wait_until_async(Duration::from_secs(10), || {
        let mut c = conn.clone();
        let key = reply_to.clone();
        async move { c.xlen::<_, u64>(&key).await.unwrap_or(0) >= 1 }
    })
    .await;
    assert!(ok, "no reply reached {reply_to}");
    let replies = entries(&mut conn, &reply_to).await;
    assert_eq!(replies.len(), 1);
    let fields = &replies[0].1;
    assert_eq!(field(fields, "in_reply_to"), Some(msg.id.as_str()));
    let reply: Value = serde_json::from_str(field(fields, "data").unwrap()).unwrap();
    assert_eq!(reply["message_type"], "response");
    assert_eq!(reply["from_agent"], agent.as_str());
    assert_eq!(reply["to_agent"], sender.as_str());
    assert_eq!(reply["correlation_id"], correlation.as_str());
    assert_eq!(reply["payload"]["echo"], json!({"x": 1}));
    assert_eq!(
        reply["payload"]["trace"], "abc-123",
        "headers must reach the handler"
    );
    assert_eq!(reply["payload"]["attempt"], 1);
    assert_eq!(reply["payload"]["delivery"], 1);

    // Acknowledged: nothing pending, nothing left to do.
    let ok = wait_until_async(Duration::from_secs(5), || {
        let bus = bus.clone();
        let agent = agent.clone();
        async move {
            let st = bus.queue_status(&agent, None).await.unwrap();
            st.pending == 0 && st.queue_depth == 0
        }
    })
    .await;
    assert!(
        ok,
        "entry not acknowledged: {:?}",
        bus.queue_status(&agent, None).await.unwrap()
    );
    // The headers travel in their own stream field, never inside `data`.
    let inbox = entries(&mut conn, &keys::inbox(&agent)).await;
    let data: Value = serde_json::from_str(field(&inbox[0].1, "data").unwrap()).unwrap();
    assert!(data.get("headers").is_none());
    assert_eq!(
        field(&inbox[0].1, "headers"),
        Some(r#"{"trace":"abc-123"}"#)
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhandleable_messages_go_to_dead_letters_and_the_worker_goes_on() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("typed");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = start_worker(&server.url(), &agent).await;

    bus.send(Message::new(
        "tester",
        &agent,
        "no_such_type",
        json!({"a": 1}),
    ))
    .await
    .unwrap();
    bus.send(Message::new(
        "tester",
        &agent,
        "typed",
        json!({"x": "not a number"}),
    ))
    .await
    .unwrap();
    let mut conn = server.async_conn().await;
    let _: String = conn
        .xadd(keys::inbox(&agent), "*", &[("data", "this is not json")])
        .await
        .unwrap();
    let _: String = conn
        .xadd(keys::inbox(&agent), "*", &[("other", "no data field")])
        .await
        .unwrap();
    let good = Message::new("tester", &agent, "typed", json!({"x": 21}))
        .with_reply_to("agent:tester:results");
    bus.send(good.clone()).await.unwrap();

    let ok = wait_until_async(Duration::from_secs(10), || {
        let bus = bus.clone();
        let agent = agent.clone();
        async move { bus.dead_letters(&agent, 100).await.unwrap().len() >= 4 }
    })
    .await;
    let dead = bus.dead_letters(&agent, 100).await.unwrap();
    assert!(ok, "dead letters: {dead:?}");
    let mut reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "bad_payload",
            "invalid_envelope",
            "invalid_envelope",
            "no_handler"
        ]
    );
    let no_handler = dead.iter().find(|d| d.reason == "no_handler").unwrap();
    assert!(
        no_handler.error.contains("no_such_type"),
        "{}",
        no_handler.error
    );
    assert_eq!(
        no_handler.message.as_ref().unwrap().payload,
        json!({"a": 1})
    );
    let bad = dead.iter().find(|d| d.reason == "bad_payload").unwrap();
    assert!(bad.error.contains("invalid type"), "{}", bad.error);
    assert!(
        dead.iter()
            .any(|d| d.raw_data.as_deref() == Some("this is not json"))
    );
    for d in &dead {
        assert_eq!(d.stream, keys::inbox(&agent));
        assert!(!d.dead_at.is_empty());
    }

    // The good message after them is handled: the worker kept going.
    let ok = wait_until_async(Duration::from_secs(10), || {
        let mut c = conn.clone();
        async move { c.xlen::<_, u64>("agent:tester:results").await.unwrap_or(0) >= 1 }
    })
    .await;
    assert!(ok, "the valid message was not handled");
    let replies = entries(&mut conn, "agent:tester:results").await;
    let reply: Value = serde_json::from_str(field(&replies[0].1, "data").unwrap()).unwrap();
    assert_eq!(reply["payload"], json!({"result": 42}));
    // Dead-lettered entries were acknowledged, nothing is stuck.
    let st = bus.queue_status(&agent, None).await.unwrap();
    assert_eq!(st.dead_letters, 4);
    assert!(
        wait_until_async(Duration::from_secs(5), || {
            let bus = bus.clone();
            let agent = agent.clone();
            async move { bus.queue_status(&agent, None).await.unwrap().pending == 0 }
        })
        .await
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_reply() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("calc");
    let caller = unique_agent("caller");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = start_worker(&server.url(), &agent).await;

    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let bus = bus.clone();
        let (agent, caller) = (agent.clone(), caller.clone());
        tasks.push(tokio::spawn(async move {
            let reply = bus
                .request(
                    Message::new(caller, agent, "typed", json!({"x": i})),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            (i, reply)
        }));
    }
    for t in tasks {
        let (i, reply) = t.await.unwrap();
        assert_eq!(reply.message_type, "response");
        assert_eq!(
            reply.payload,
            json!({"result": i * 2}),
            "request {i} got someone else's reply"
        );
    }

    // A handler that fails for good answers the request with an error.
    let err = bus
        .request(
            Message::new(&caller, &agent, "never_works", json!({})),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    match err {
        Error::RequestFailed { error, .. } => assert!(error.contains("impossible"), "{error}"),
        other => panic!("expected RequestFailed, got {other:?}"),
    }
    // Nobody serves this agent: the request times out with a clear error.
    let lonely = unique_agent("nobody");
    let t0 = std::time::Instant::now();
    let err = bus
        .request(
            Message::new(&caller, &lonely, "typed", json!({"x": 1})),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, Error::RequestTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("is a worker for"), "{err}");
    worker.stop().await;
}

/// An entry written exactly as the Python bus writes it is handled, and the reply is one
/// the Python bus can load (`Message(**data)` with its dataclass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_bus_wire_compatibility() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("py");
    let worker = start_worker(&server.url(), &agent).await;

    // What fabric_message_bus.py's send_task puts on the wire (json.dumps default separators).
    let data = format!(
        r#"{{"id": "msg:4f1c2d3e-1111-4222-8333-944455566677", "from_agent": "pycoder", "to_agent": "{agent}", "message_type": "echo", "payload": {{"task_type": "code_review", "pr_id": "123"}}, "timestamp": "2026-11-25T20:15:56.123456", "priority": 3, "ttl_seconds": 86400, "reply_to": "agent:pycoder:results", "correlation_id": "0b9f4c1e-2222-4333-8444-955566677788"}}"#
    );
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port,
            "XADD",
            &keys::inbox(&agent),
            "MAXLEN",
            "10000",
            "*",
            "data",
            &data,
        ])
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut conn = server.async_conn().await;
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            async move { c.xlen::<_, u64>("agent:pycoder:results").await.unwrap_or(0) >= 1 }
        })
        .await,
        "no reply in agent:pycoder:results"
    );
    let replies = entries(&mut conn, "agent:pycoder:results").await;
    let reply_data = field(&replies[0].1, "data").unwrap().to_owned();
    let reply: Value = serde_json::from_str(&reply_data).unwrap();
    assert_eq!(
        reply["correlation_id"],
        "0b9f4c1e-2222-4333-8444-955566677788"
    );
    assert_eq!(
        reply["payload"]["echo"],
        json!({"task_type": "code_review", "pr_id": "123"})
    );
    assert_eq!(reply["priority"], 3);

    // The Python bus's dataclass, loaded the way its from_dict does.
    let script = r#"
import json, sys
from dataclasses import dataclass
from typing import Any, Dict, Optional
from datetime import datetime

@dataclass
class Message:
    id: str
    from_agent: str
    to_agent: str
    message_type: str
    payload: Dict[str, Any]
    timestamp: str
    priority: int
    ttl_seconds: int
    reply_to: Optional[str]
    correlation_id: Optional[str]

    @classmethod
    def from_dict(cls, data):
        return cls(**data)

m = Message.from_dict(json.loads(sys.stdin.read()))
assert m.message_type == "response", m
assert isinstance(m.payload, dict)
assert isinstance(m.priority, int) and 1 <= m.priority <= 4
datetime.fromisoformat(m.timestamp)
print("loaded", m.id)
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test (apt-get install -y python3)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(reply_data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Python bus cannot load our reply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("loaded msg:"));
    worker.stop().await;
}

/// A reply that Redis refuses for good (here: `reply_to` names a key that is not a stream)
/// dead-letters the message instead of running the handler again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_written_dead_letters_the_message() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("replyfail");
    let bus = Bus::connect(server.url()).await.unwrap();
    let mut conn = server.async_conn().await;
    let not_a_stream = format!("agent:{agent}:plain-string");
    let _: () = conn.set(&not_a_stream, "I am a string").await.unwrap();
    let worker = start_worker(&server.url(), &agent).await;
    let msg = Message::new("tester", &agent, "typed", json!({"x": 2})).with_reply_to(&not_a_stream);
    bus.send(msg.clone()).await.unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            bus.dead_letters(&agent, 10).await.unwrap().len() == 1
        })
        .await,
        "the message was not dead-lettered"
    );
    let dead = bus.dead_letters(&agent, 10).await.unwrap();
    assert_eq!(dead[0].reason, "reply_failed");
    assert!(
        dead[0].error.contains("WRONGTYPE") || dead[0].error.contains("wrong kind"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].message.as_ref().unwrap().id, msg.id);
    assert!(
        wait_until_async(Duration::from_secs(5), || async {
            bus.queue_status(&agent, None).await.unwrap().pending == 0
        })
        .await
    );
    worker.stop().await;
}
