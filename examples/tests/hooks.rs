//! The seed plan's telemetry recorder and memory archiver (`src/observe.rs`) as hooks:
//! they record every message of a 1,000-message run (the `observed_worker` process), and
//! hooks that fail, panic or hang lose nothing and do not stall handling.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use examples::observe::{MemoryArchiver, TELEMETRY_STREAM, TelemetryRecorder};
use fabric_tests::{RedisServer, RunningWorker, WorkerProcess, test_bin, wait_until};
use fabric_worker::hooks::{Delivery, Handled, Hook, HookOptions, HookResult, Sent, async_trait};
use fabric_worker::{Bus, Message, Worker};
use redis::Commands;
use serde_json::json;

const N: usize = 1000;

/// The telemetry stream's entries: field → value, one map per entry.
fn telemetry(c: &mut redis::Connection) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = c.xrange_all(TELEMETRY_STREAM).unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap()))
                .collect()
        })
        .collect()
}

fn tasks(n: usize, bad_every: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let payload = if bad_every > 0 && i % bad_every == 0 {
                json!({"pr": i}) // a code_review without pr_id: dead-lettered
            } else {
                json!({"text": format!("message {i} {}", "word ".repeat(i % 7))})
            };
            let kind = if bad_every > 0 && i % bad_every == 0 {
                "code_review"
            } else {
                "summarize"
            };
            Message::task("coder", "percy", kind, payload)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_and_memory_record_every_message_of_a_1000_message_run() {
    let redis = RedisServer::start();
    let mut worker = {
        let mut cmd = std::process::Command::new(test_bin("observed_worker"));
        cmd.env("REDIS_URL", redis.url())
            .env("FABRIC_CONCURRENCY", "50")
            .env("FABRIC_BLOCK_MS", "200")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        WorkerProcess {
            child: cmd.spawn().expect("spawn observed_worker"),
        }
    };
    let bus = Bus::connect(redis.url()).await.unwrap();
    let messages = tasks(N, 100);
    let expected: HashMap<String, Message> =
        messages.iter().map(|m| (m.id.clone(), m.clone())).collect();
    for chunk in messages.chunks(100) {
        bus.send_batch(chunk.to_vec()).await.unwrap();
    }
    let mut c = redis.client();
    let recorded = wait_until(Duration::from_secs(60), || {
        let t: usize = c.xlen(TELEMETRY_STREAM).unwrap();
        let a: usize = c.zcard("memory:timeline").unwrap();
        t >= N && a >= N
    });
    let (t, a): (usize, usize) = (
        c.xlen(TELEMETRY_STREAM).unwrap(),
        c.zcard("memory:timeline").unwrap(),
    );
    assert!(
        recorded,
        "telemetry has {t} events and memory {a} messages of {N}"
    );
    worker.signal("TERM");
    assert_eq!(worker.wait_timeout(Duration::from_secs(20)), Some(0));

    // Telemetry: exactly one a2a.message event per message, with the seed plan's fields.
    let events = telemetry(&mut c);
    assert_eq!(events.len(), N, "one event per message, none twice");
    let mut seen = HashMap::new();
    for e in &events {
        let m = &expected[&e["message_id"]];
        assert_eq!(e["event"], "a2a.message");
        assert_eq!(e["from"], "coder");
        assert_eq!(e["to"], "percy");
        assert_eq!(
            e["payload_size"],
            serde_json::to_vec(&m.payload).unwrap().len().to_string()
        );
        let latency: i64 = e["latency_ms"].parse().unwrap();
        assert!((0..60_000).contains(&latency), "{e:?}");
        *seen.entry(e["outcome"].clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("ok"), Some(&990), "{seen:?}");
    assert_eq!(
        seen.get("dead_letter:permanent_error"),
        Some(&10),
        "{seen:?}"
    );

    // Memory: every message stored with its tags, its envelope intact.
    for tag in ["a2a", "coder", "percy"] {
        let n: usize = c.scard(format!("memory:tag:{tag}")).unwrap();
        assert_eq!(n, N, "tag {tag}");
    }
    for (id, m) in &expected {
        let h: HashMap<String, String> = c.hgetall(format!("memory:message:{id}")).unwrap();
        assert_eq!(h["tags"], "a2a,coder,percy");
        assert_eq!(h["layer"], "short_term");
        let stored: Message = serde_json::from_str(&h["envelope"]).unwrap();
        assert_eq!(stored.id, *id);
        assert_eq!(stored.payload, m.payload);
    }
}

/// Fails every call.
struct Failing(Arc<AtomicU64>);
#[async_trait]
impl Hook for Failing {
    async fn before_handle(&self, _d: &Delivery) -> HookResult {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err("the telemetry backend is down".into())
    }
    async fn after_handle(&self, _d: &Delivery, _h: &Handled) -> HookResult {
        Err("the telemetry backend is down".into())
    }
    async fn on_send(&self, _s: &Sent) -> HookResult {
        Err("the telemetry backend is down".into())
    }
}

/// Panics in every call.
struct Panicking;
#[async_trait]
impl Hook for Panicking {
    async fn before_handle(&self, d: &Delivery) -> HookResult {
        panic!("hook bug on {}", d.message.id);
    }
    async fn after_handle(&self, d: &Delivery, _h: &Handled) -> HookResult {
        panic!("hook bug on {}", d.message.id);
    }
}

/// Keeps every `on_send` event.
#[derive(Clone, Default)]
struct SentLog(Arc<std::sync::Mutex<Vec<Sent>>>);
#[async_trait]
impl Hook for SentLog {
    async fn on_send(&self, s: &Sent) -> HookResult {
        self.0.lock().unwrap().push(s.clone());
        Ok(())
    }
}

/// Hangs far beyond its bound in every call.
struct Hanging;
#[async_trait]
impl Hook for Hanging {
    async fn before_handle(&self, _d: &Delivery) -> HookResult {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
    async fn after_handle(&self, _d: &Delivery, _h: &Handled) -> HookResult {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_panicking_and_hanging_hooks_lose_nothing_and_stall_nothing() {
    fabric_tests::init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let failing_calls = Arc::new(AtomicU64::new(0));
    let replies_sent = SentLog::default();
    let bus = Bus::connect(&url)
        .await
        .unwrap()
        .with_hook(replies_sent.clone())
        .with_hook(Failing(failing_calls.clone()))
        .with_hook(Panicking)
        .with_hook_options(
            Hanging,
            HookOptions::default()
                .timeout(Duration::from_millis(500))
                .queue(100),
        )
        .with_hook(TelemetryRecorder::connect(&url).await.unwrap())
        .with_hook(MemoryArchiver::connect(&url).await.unwrap());
    let worker = RunningWorker::start(
        Worker::builder("percy")
            .bus(bus.clone())
            .concurrency(50)
            .block(Duration::from_millis(200)),
    )
    .await;
    let tasks_sent = SentLog::default();
    let sender = Bus::connect(&url)
        .await
        .unwrap()
        .with_hook(tasks_sent.clone());
    let messages = tasks(N, 0);
    let t0 = Instant::now();
    for chunk in messages.chunks(100) {
        sender.send_batch(chunk.to_vec()).await.unwrap();
    }
    let mut c = redis.client();
    // Every message handled: its reply written and the entry acknowledged.
    let handled = wait_until(Duration::from_secs(30), || {
        let replies: usize = c.xlen("agent:coder:results").unwrap();
        let pending: (usize, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg("agent:percy:inbox")
            .arg("percy_workers")
            .query(&mut c)
            .unwrap();
        replies == N && pending.0 == 0
    });
    let took = t0.elapsed();
    let replies: usize = c.xlen("agent:coder:results").unwrap();
    assert!(handled, "{replies} of {N} handled");
    // Handling 1,000 tasks takes a second or two; a hook in the way (hanging 0.5 s before
    // and after each handler, 50 at a time) would take 20 s.
    assert!(took < Duration::from_secs(8), "handling took {took:?}");
    // The recorders, beside the broken hooks, still record every message.
    let recorded = wait_until(Duration::from_secs(30), || {
        let t: usize = c.xlen(TELEMETRY_STREAM).unwrap();
        let a: usize = c.zcard("memory:timeline").unwrap();
        t == N && a == N
    });
    assert!(recorded, "the recorders missed messages");
    let stop = Instant::now();
    worker.stop().await;
    // Stopping waits for the hooks' queues, but not for a hook timing out.
    assert!(
        stop.elapsed() < Duration::from_secs(3),
        "{:?}",
        stop.elapsed()
    );

    let stats = bus.hook_stats();
    let by: HashMap<&str, &fabric_worker::hooks::HookStats> =
        stats.iter().map(|s| (s.name.as_str(), s)).collect();
    assert_eq!(failing_calls.load(Ordering::Relaxed), N as u64);
    let failing = by["hooks::Failing"];
    // before + after for each message, on_send for each reply.
    assert_eq!(failing.failed, 3 * N as u64, "{failing:?}");
    assert_eq!(failing.dropped, 0);
    let panicking = by["hooks::Panicking"];
    assert_eq!(panicking.panicked, 2 * N as u64, "{panicking:?}");
    let hanging = by["hooks::Hanging"];
    assert!(hanging.timed_out >= 1, "{hanging:?}");
    assert!(
        hanging.dropped > 0,
        "a hook a whole queue behind drops: {hanging:?}"
    );
    for name in ["telemetry", "memory"] {
        let s = by[name];
        assert_eq!(
            (s.failed, s.panicked, s.timed_out, s.dropped),
            (0, 0, 0, 0),
            "{s:?}"
        );
    }
    // on_send: every task the sender queued, every reply the worker wrote (these carry
    // the handler span's trace context).
    let tasks_sent = tasks_sent.0.lock().unwrap().clone();
    assert_eq!(tasks_sent.len(), N);
    for (s, m) in tasks_sent.iter().zip(&messages) {
        assert_eq!(
            (s.message_id.as_str(), s.from.as_str(), s.to.as_str()),
            (m.id.as_str(), "coder", "percy")
        );
        assert_eq!(
            s.payload_size,
            serde_json::to_vec(&m.payload).unwrap().len()
        );
        assert!(!s.stream_id.is_empty());
        assert_eq!(s.traceparent, None, "sent outside any handler or span");
    }
    let replies = replies_sent.0.lock().unwrap().clone();
    assert_eq!(replies.len(), N);
    for r in &replies {
        assert_eq!(
            (r.from.as_str(), r.to.as_str(), r.message_type.as_str()),
            ("percy", "coder", "response")
        );
        assert!(
            r.traceparent.as_deref().is_some_and(|t| t.len() == 55),
            "{r:?}"
        );
    }
    let t = by["telemetry"];
    // after_handle for each message, and the default no-op calls for the rest.
    assert!(t.delivered >= N as u64, "{t:?}");
}
