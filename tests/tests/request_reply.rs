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
