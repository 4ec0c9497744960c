//! Pausing an agent (`Bus::pause`, `fabric pause`): its workers start nothing new within a
//! second, also after a restart, and handle everything that waited once resumed.

use std::time::{Duration, Instant};

use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::keys;
use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::json;

async fn replies(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> u64 {
    conn.xlen(stream).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_starts_nothing_until_resumed_also_across_restarts() {
    init_tracing();
    let server = RedisServer::start();
    let url = server.url();
    let agent = unique_agent("paused");
    let sender = unique_agent("sender");
    let results = keys::results(&sender);
    let bus = Bus::connect(&url).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let send = |n: u32| {
        let bus = bus.clone();
        let (agent, sender, results) = (agent.clone(), sender.clone(), results.clone());
        async move {
            for i in 0..n {
                let m =
                    Message::new(&sender, &agent, "echo", json!({"i": i})).with_reply_to(&results);
                bus.send(m).await.unwrap();
            }
        }
    };

    // A running worker handles messages…
    let worker = RunningWorker::fast(&url, &agent, |b| b).await;
    send(1).await;
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            let r = results.clone();
            async move { replies(&mut c, &r).await == 1 }
        })
        .await
    );

    // …until paused: within a second (the worker is blocked in a read meanwhile), it reads
    // nothing more.
    assert!(bus.pause(&agent).await.unwrap(), "newly paused");
    assert!(!bus.pause(&agent).await.unwrap(), "already paused");
    assert!(bus.is_paused(&agent).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    send(5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replies(&mut conn, &results).await,
        1,
        "a paused agent handled a message"
    );
    let st = bus.queue_status(&agent, None).await.unwrap();
    assert!(st.paused);
    assert_eq!(
        (st.queue_depth, st.pending),
        (5, 0),
        "the messages wait undelivered: {st:?}"
    );

    // A worker started while paused starts paused.
    worker.stop().await;
    let worker = RunningWorker::fast(&url, &agent, |b| b).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replies(&mut conn, &results).await,
        1,
        "a new worker ignored the pause"
    );

    // Resumed: everything that waited is handled, within a second or so.
    let resumed = Instant::now();
    assert!(bus.resume(&agent).await.unwrap());
    assert!(!bus.resume(&agent).await.unwrap(), "not paused any more");
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            let r = results.clone();
            async move { replies(&mut c, &r).await == 6 }
        })
        .await,
        "not every waiting message was handled after resume"
    );
    let took = resumed.elapsed();
    assert!(took < Duration::from_secs(3), "resume took {took:?}");
    let st = bus.queue_status(&agent, None).await.unwrap();
    assert!(!st.paused);
    worker.stop().await;
}
