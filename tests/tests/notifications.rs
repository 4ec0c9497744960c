//! New-message notifications of concurrent sends (issue 13): while one send's `PUBLISH` to
//! an agent is in flight, the others to that agent publish nothing of their own, and one
//! more notification covers them once it is answered — every message counted exactly once,
//! and none left to wait for the reader's slow poll.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fabric_tests::{
    RedisServer, RunningWorker, command_calls, init_tracing, unique_agent, wait_until_async,
};
use fabric_worker::prelude::*;
use fabric_worker::{Bus, Message, keys};
use futures::StreamExt;
use serde_json::{Value, json};

static HANDLED: AtomicUsize = AtomicUsize::new(0);

#[handler(message_type = "note_ping")]
async fn note_ping(_ctx: Context) -> Result<(), HandlerError> {
    HANDLED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Sends `per_task` messages of `message_type` to `to` from each of `tasks` tasks at once.
async fn send_from_tasks(bus: &Bus, to: &str, message_type: &str, tasks: usize, per_task: usize) {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (bus, to, kind) = (bus.clone(), to.to_owned(), message_type.to_owned());
            tokio::spawn(async move {
                for i in 0..per_task {
                    let m = Message::new("note-sender", &to, &kind, json!({"t": t, "i": i}));
                    bus.send(m).await.expect("send");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_notifications_and_count_every_message_once() {
    init_tracing();
    let server = RedisServer::start_own(false); // its own: PUBLISH calls are counted
    let url = server.url();
    let to = unique_agent("noted");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(keys::new_message_channel(&to))
        .await
        .unwrap();
    let mut notes = pubsub.into_on_message();
    let mut conn = server.async_conn().await;
    let bus = Bus::connect(&url).await.unwrap();
    let before = command_calls(&mut conn).await;

    const TASKS: usize = 64;
    const EACH: usize = 40;
    const N: usize = TASKS * EACH;
    send_from_tasks(&bus, &to, "note_ping", TASKS, EACH).await;

    // Every message is counted by exactly one notification ("count", 1 when absent).
    let (mut counted, mut received) = (0usize, 0usize);
    let mut ids = std::collections::HashSet::new();
    while counted < N {
        let msg = tokio::time::timeout(Duration::from_secs(10), notes.next())
            .await
            .unwrap_or_else(|_| panic!("only {counted} of {N} messages were announced"))
            .expect("the subscription closed");
        let note: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        assert_eq!(note["from"], "note-sender", "{note}");
        assert_eq!(note["type"], "note_ping", "{note}");
        assert!(ids.insert(note["message_id"].as_str().unwrap().to_owned()));
        let count = note.get("count").and_then(Value::as_u64).unwrap_or(1);
        counted += usize::try_from(count).unwrap();
        received += 1;
    }
    // Nothing more comes: no message was counted twice.
    let extra = tokio::time::timeout(Duration::from_millis(500), notes.next()).await;
    assert!(
        extra.is_err(),
        "a notification beyond the {N} messages: {extra:?}"
    );
    assert_eq!(counted, N);
    let xlen: usize = redis::cmd("XLEN")
        .arg(keys::inbox(&to))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(xlen, N);
    let after = command_calls(&mut conn).await;
    let publishes =
        after.get("publish").copied().unwrap_or(0) - before.get("publish").copied().unwrap_or(0);
    assert_eq!(
        usize::try_from(publishes).unwrap(),
        received,
        "one PUBLISH per notification seen"
    );
    assert!(
        received < N / 2,
        "{received} notifications for {N} messages sent from {TASKS} tasks at once: they were not shared"
    );
    eprintln!("{N} messages from {TASKS} tasks: {received} notifications");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_of_concurrent_sends_waits_for_the_read_poll() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let url = server.url();
    let to = unique_agent("noted-worker");
    let conn = server.async_conn().await;
    // Woken by notifications only: the poll, the safety net, would take a minute.
    let builder = Worker::builder(&to)
        .url(&url)
        .blocking_readers(0)
        .read_poll_interval(Duration::from_secs(60));
    let worker = RunningWorker::start(builder).await;
    let served = wait_until_async(Duration::from_secs(30), || {
        let mut c = conn.clone();
        let to = to.clone();
        async move {
            let n: i64 = redis::cmd("EXISTS")
                .arg(keys::workers(&to))
                .query_async(&mut c)
                .await
                .unwrap();
            n == 1
        }
    })
    .await;
    assert!(served, "the worker never served the inbox");
    tokio::time::sleep(Duration::from_millis(500)).await; // its first read is done

    let bus = Bus::connect(&url).await.unwrap();
    const N: usize = 48 * 25;
    let start = HANDLED.load(Ordering::SeqCst);
    send_from_tasks(&bus, &to, "note_ping", 48, 25).await;
    let all = wait_until_async(Duration::from_secs(15), || async {
        HANDLED.load(Ordering::SeqCst) - start >= N
    })
    .await;
    assert!(
        all,
        "{} of {N} messages handled: the rest wait for the 60 s read poll (a notification was lost)",
        HANDLED.load(Ordering::SeqCst) - start
    );
    worker.stop().await;
}
