//! Request/reply: many concurrent requests each get their own reply, a failed handler's
//! error comes back as the request's error, a missing worker is a timeout, and a reply that
//! can never be written dead-letters its message.

use std::time::Duration;

use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::Error;
use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_reply() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("calc");
    let caller = unique_agent("caller");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker = RunningWorker::serve(&server.url(), &agent).await;

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

/// A reply that Redis refuses for good (here: the sender's results key holds a string)
/// dead-letters the message instead of running the handler again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_written_dead_letters_the_message() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("replyfail");
    let bus = Bus::connect(server.url()).await.unwrap();
    let mut conn = server.async_conn().await;
    // The sender's own results stream, but a key of another type: Redis refuses the reply.
    let sender = unique_agent("sender");
    let not_a_stream = format!("agent:{sender}:results");
    let _: () = conn.set(&not_a_stream, "I am a string").await.unwrap();
    let worker = RunningWorker::serve(&server.url(), &agent).await;
    let msg = Message::new(&sender, &agent, "typed", json!({"x": 2})).with_reply_to(&not_a_stream);
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

/// The replies of one read go to Redis in one pipeline: one that Redis refuses
/// dead-letters its own message only, and every other reply is written and its request
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_reply_in_a_batch_does_not_hold_back_the_others() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("replybatch");
    let bus = Bus::connect(server.url()).await.unwrap();
    let mut conn = server.async_conn().await;
    let bad_sender = unique_agent("badsender");
    let not_a_stream = format!("agent:{bad_sender}:results");
    let _: () = conn.set(&not_a_stream, "I am a string").await.unwrap();
    // Queued before the worker starts, so that they are read, handled and replied to
    // together; the refused one in the middle.
    let mut good = Vec::new();
    for i in 0..20u32 {
        let msg = if i == 10 {
            Message::new(&bad_sender, &agent, "typed", json!({"x": i})).with_reply_to(&not_a_stream)
        } else {
            let sender = format!("{agent}-s{}", i % 3);
            let to = format!("agent:{sender}:results");
            good.push((to.clone(), i));
            Message::new(&sender, &agent, "typed", json!({"x": i})).with_reply_to(&to)
        };
        bus.send(msg).await.unwrap();
    }
    let worker = RunningWorker::serve(&server.url(), &agent).await;
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            bus.queue_status(&agent, None).await.unwrap().pending == 0
                && bus.dead_letters(&agent, 10).await.unwrap().len() == 1
        })
        .await,
        "not every request was acknowledged or dead-lettered"
    );
    let dead = bus.dead_letters(&agent, 10).await.unwrap();
    assert_eq!(dead[0].reason, "reply_failed");
    assert_eq!(dead[0].message.as_ref().unwrap().payload, json!({"x": 10}));
    for (to, i) in good {
        let entries: redis::streams::StreamRangeReply = conn.xrange_all(&to).await.unwrap();
        let results: Vec<serde_json::Value> = entries
            .ids
            .iter()
            .filter_map(|e| e.get::<String>("data"))
            .filter_map(|d| serde_json::from_str::<Message>(&d).ok())
            .map(|m| m.payload)
            .collect();
        assert!(
            results.contains(&json!({"result": i * 2})),
            "no reply for request {i} in {to}: {results:?}"
        );
    }
    worker.stop().await;
}

/// With `wait_for_replicas`, a reply no replica confirms leaves its request pending (to be
/// handled again), instead of acknowledging a request whose reply could be lost with its
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_no_replica_confirms_leaves_its_request_pending() {
    init_tracing();
    let server = RedisServer::start(); // no replica: every WAIT says 0
    let agent = unique_agent("replywait");
    let caller = unique_agent("caller");
    let bus = Bus::connect(server.url()).await.unwrap();
    let worker_bus = Bus::builder(server.url())
        .wait_for_replicas(1, Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let worker = RunningWorker::start(Worker::builder(&agent).bus(worker_bus)).await;
    let results = format!("agent:{caller}:results");
    let msg = Message::new(&caller, &agent, "typed", json!({"x": 4})).with_reply_to(&results);
    bus.send(msg).await.unwrap();
    let conn = server.async_conn().await;
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            conn.clone().xlen::<_, u64>(&results).await.unwrap_or(0) >= 1
        })
        .await,
        "the reply was not written"
    );
    // Well past the reply: still pending, never acknowledged.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = bus.queue_status(&agent, None).await.unwrap();
    assert_eq!(status.pending, 1, "{status:?}");
    worker.stop().await;
}
