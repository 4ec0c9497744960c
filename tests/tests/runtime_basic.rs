//! In-process worker against a real redis-server: handle → reply → ack with headers, and
//! dead letters for what cannot be handled. (Request/reply, the Python bus's wire format,
//! trimming and Redis restarts have files of their own.)

use std::time::Duration;

use fabric_tests::{
    RedisServer, RunningWorker, entry_field, init_tracing, stream_entries, unique_agent,
    wait_until_async,
};
use fabric_worker::keys;
use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_handle_reply_ack_with_headers() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("echo");
    let sender = unique_agent("sender");
    let bus = Bus::connect(server.url()).await.unwrap();

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
    // The headers travel in their own stream field, never inside `data` (read before a
    // worker starts: once handled, the entry may be trimmed at any time).
    let inbox = stream_entries(&mut conn, &keys::inbox(&agent)).await;
    let data: Value = serde_json::from_str(entry_field(&inbox[0].1, "data").unwrap()).unwrap();
    assert!(data.get("headers").is_none());
    assert_eq!(
        entry_field(&inbox[0].1, "headers"),
        Some(r#"{"trace":"abc-123"}"#)
    );
    let worker = RunningWorker::serve(&server.url(), &agent).await;
    let ok = wait_until_async(Duration::from_secs(10), || {
        let mut c = conn.clone();
        let key = reply_to.clone();
        async move { c.xlen::<_, u64>(&key).await.unwrap_or(0) >= 1 }
    })
    .await;
    assert!(ok, "no reply reached {reply_to}");
    let replies = stream_entries(&mut conn, &reply_to).await;
    assert_eq!(replies.len(), 1);
    let fields = &replies[0].1;
    assert_eq!(entry_field(fields, "in_reply_to"), Some(msg.id.as_str()));
    let reply: Value = serde_json::from_str(entry_field(fields, "data").unwrap()).unwrap();
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
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhandleable_messages_go_to_dead_letters_and_the_worker_goes_on() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("typed");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = RunningWorker::serve(&server.url(), &agent).await;

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
    let replies = stream_entries(&mut conn, "agent:tester:results").await;
    let reply: Value = serde_json::from_str(entry_field(&replies[0].1, "data").unwrap()).unwrap();
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

/// An entry Redis handed to the worker's consumer just as it stopped (a read answered while
/// being cancelled) is handled before the worker exits, not left for another's reclaim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_redis_handed_over_as_the_worker_stopped_is_handled_before_exit() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("stopping");
    let sender = unique_agent("sender");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = Worker::builder(&agent)
        .url(server.url())
        .block(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let consumer = worker.consumers()[0].clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stop_rx.await;
    }));
    // Give the worker time to create its group and block in its read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Played by hand: the worker's consumer is handed an entry it never dispatches (one
    // transaction, so the worker's own blocked read cannot take it first).
    let m = Message::new(&sender, &agent, "echo", json!({"n": 1}))
        .with_reply_to(keys::results(&sender));
    let mut conn = server.async_conn().await;
    let _: redis::Value = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(keys::inbox(&agent))
        .arg("*")
        .arg("data")
        .arg(m.to_data().unwrap())
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg(keys::default_group(&agent))
        .arg(&consumer)
        .arg("STREAMS")
        .arg(keys::inbox(&agent))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    // Handled (its reply is there) and acknowledged before the worker returned.
    let replies = stream_entries(&mut conn, &keys::results(&sender)).await;
    assert_eq!(replies.len(), 1, "not handled before exit");
    let groups = bus.groups(&agent).await.unwrap();
    assert_eq!(groups[0].pending, 0, "{groups:?}");
}
