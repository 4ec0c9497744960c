//! Delivery guarantees under handler failure, in-process: retries with growing backoff,
//! panics and timeouts, dead-letter requeue and purge.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::prelude::*;
use serde_json::{Value, json};

/// Per message id: (attempt, when it started).
type AttemptLog = HashMap<String, Vec<(u32, Instant)>>;

static ATTEMPTS: LazyLock<Mutex<AttemptLog>> = LazyLock::new(Default::default);
static HANDLED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
static GATE_OPEN: AtomicBool = AtomicBool::new(false);

#[handler(message_type = "always_fails", max_attempts = 4)]
async fn always_fails(ctx: Context) -> Result<(), HandlerError> {
    ATTEMPTS
        .lock()
        .unwrap()
        .entry(ctx.message_id().to_owned())
        .or_default()
        .push((ctx.attempt(), Instant::now()));
    Err(HandlerError::new(format!(
        "boom on attempt {}",
        ctx.attempt()
    )))
}

#[handler(message_type = "panics", max_attempts = 2)]
async fn panics(_ctx: Context) -> Result<(), HandlerError> {
    panic!("the handler blew up")
}

#[handler(message_type = "too_slow", max_attempts = 2, timeout = "200ms")]
async fn too_slow(_ctx: Context) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

#[handler(message_type = "quick")]
async fn quick(ctx: Context) -> Result<(), HandlerError> {
    HANDLED.lock().unwrap().insert(ctx.message_id().to_owned());
    Ok(())
}

#[handler(message_type = "gated")]
async fn gated(ctx: Context) -> Result<(), HandlerError> {
    if !GATE_OPEN.load(Ordering::SeqCst) {
        return Err(HandlerError::permanent("the gate is closed"));
    }
    assert_eq!(
        ctx.attempt(),
        1,
        "a requeued dead letter starts over at attempt 1"
    );
    HANDLED.lock().unwrap().insert(ctx.message_id().to_owned());
    Ok(())
}

#[handler(message_type = "noop")]
async fn noop(_p: Value) {}

fn handled(id: &str) -> bool {
    HANDLED.lock().unwrap().contains(id)
}

async fn wait_dead(
    bus: &Bus,
    agent: &str,
    n: usize,
    secs: u64,
) -> Vec<fabric_worker::bus::DeadLetter> {
    let ok = wait_until_async(Duration::from_secs(secs), || async {
        bus.dead_letters(agent, 1000).await.unwrap().len() >= n
    })
    .await;
    let dead = bus.dead_letters(agent, 1000).await.unwrap();
    assert!(ok, "expected {n} dead letters, got {dead:?}");
    dead
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_is_retried_with_growing_backoff_then_dead_lettered() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("retry");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = RunningWorker::fast(&server.url(), &agent, |b| b).await;
    let msg = Message::new("tester", &agent, "always_fails", json!({"k": "v"}))
        .with_header("tenant", "t1");
    bus.send(msg.clone()).await.unwrap();

    let dead = wait_dead(&bus, &agent, 1, 30).await;
    let d = &dead[0];
    assert_eq!(d.reason, "max_attempts");
    assert_eq!(d.attempts, 4);
    assert_eq!(d.error, "boom on attempt 4");
    let m = d.message.as_ref().unwrap();
    assert_eq!(m.id, msg.id, "the original message is kept");
    assert_eq!(m.payload, json!({"k": "v"}));
    assert_eq!(
        m.headers.get("tenant").map(String::as_str),
        Some("t1"),
        "original fields are kept"
    );

    let attempts = ATTEMPTS.lock().unwrap().get(&msg.id).cloned().unwrap();
    let numbers: Vec<u32> = attempts.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4],
        "exactly max_attempts attempts, in order"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    println!("gaps between attempts: {gaps:?}");
    // base 100 ms doubling, jitter adds up to 100%: [100,200), [200,400), [400,800) + polling.
    assert!(gaps[0] >= Duration::from_millis(100), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(400), "{gaps:?}");
    assert!(
        gaps[1] >= gaps[0] && gaps[2] >= gaps[1] && gaps[2] > gaps[0],
        "spacing must grow: {gaps:?}"
    );

    // Nothing left behind: no pending entry, no scheduled retry.
    let st = bus.queue_status(&agent, None).await.unwrap();
    assert_eq!(
        (st.pending, st.scheduled_retries, st.dead_letters),
        (0, 0, 1),
        "{st:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_timeouts_are_failed_attempts_and_the_worker_keeps_serving() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("panic");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = RunningWorker::fast(&server.url(), &agent, |b| b).await;
    bus.send(Message::new("tester", &agent, "panics", json!({})))
        .await
        .unwrap();
    bus.send(Message::new("tester", &agent, "too_slow", json!({})))
        .await
        .unwrap();
    let quick: Vec<Message> = (0..20)
        .map(|i| Message::new("tester", &agent, "quick", json!({"i": i})))
        .collect();
    bus.send_batch(quick.clone()).await.unwrap();

    let all_quick = wait_until_async(Duration::from_secs(10), || async {
        quick.iter().all(|m| handled(&m.id))
    })
    .await;
    assert!(all_quick, "other messages must be handled meanwhile");
    let dead = wait_dead(&bus, &agent, 2, 30).await;
    let panicked = dead
        .iter()
        .find(|d| d.message.as_ref().unwrap().message_type == "panics")
        .unwrap();
    assert_eq!(panicked.reason, "max_attempts");
    assert_eq!(panicked.attempts, 2);
    assert!(
        panicked
            .error
            .contains("handler panicked: the handler blew up"),
        "{}",
        panicked.error
    );
    let slow = dead
        .iter()
        .find(|d| d.message.as_ref().unwrap().message_type == "too_slow")
        .unwrap();
    assert_eq!(slow.reason, "max_attempts");
    assert!(
        slow.error.contains("timed out after 200 ms"),
        "{}",
        slow.error
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_requeued_and_purged() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("dlq");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = RunningWorker::fast(&server.url(), &agent, |b| b).await;
    let msgs: Vec<Message> = (0..3)
        .map(|i| Message::new("tester", &agent, "gated", json!({"i": i})))
        .collect();
    bus.send_batch(msgs.clone()).await.unwrap();
    let dead = wait_dead(&bus, &agent, 3, 10).await;
    assert!(
        dead.iter()
            .all(|d| d.reason == "permanent_error" && d.attempts == 1),
        "{dead:?}"
    );

    GATE_OPEN.store(true, Ordering::SeqCst);
    // Requeue one by id, then the rest.
    let n = bus
        .requeue_dead_letters(&agent, Some(&[dead[0].dead_id.clone()]))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let first = dead[0].message.as_ref().unwrap().id.clone();
    assert!(wait_until_async(Duration::from_secs(10), || async { handled(&first) }).await);
    assert_eq!(bus.dead_letters(&agent, 10).await.unwrap().len(), 2);
    assert_eq!(bus.requeue_dead_letters(&agent, None).await.unwrap(), 2);
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            msgs.iter().all(|m| handled(&m.id))
        })
        .await
    );
    assert!(bus.dead_letters(&agent, 10).await.unwrap().is_empty());

    // Purge.
    GATE_OPEN.store(false, Ordering::SeqCst);
    let more: Vec<Message> = (0..4)
        .map(|i| Message::new("tester", &agent, "gated", json!({"j": i})))
        .collect();
    bus.send_batch(more).await.unwrap();
    wait_dead(&bus, &agent, 4, 10).await;
    assert_eq!(bus.purge_dead_letters(&agent).await.unwrap(), 4);
    assert!(bus.dead_letters(&agent, 10).await.unwrap().is_empty());
    assert_eq!(
        bus.queue_status(&agent, None).await.unwrap().dead_letters,
        0
    );
    // Bad ids are refused clearly.
    let err = bus
        .requeue_dead_letters(&agent, Some(&["nope".into()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid dead letter id"), "{err}");
    worker.stop().await;
}
