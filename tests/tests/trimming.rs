//! Trimming: handled entries are removed once every consumer group has acknowledged them,
//! so an inbox stays bounded over 100,000 messages; an unread or pending entry is never
//! removed.

use std::time::Duration;

use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::keys;
use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::{Value, json};

#[handler(message_type = "noop")]
async fn noop(_p: Value) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_bounds_the_inbox_over_100k_messages() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let agent = unique_agent("trim");
    let bus = Bus::builder(server.url())
        .notify(false)
        .connect()
        .await
        .unwrap();
    let mut conn = server.async_conn().await;
    let worker = RunningWorker::fast(&server.url(), &agent, |b| {
        b.trim_interval(Duration::from_millis(200))
    })
    .await;
    let inbox = keys::inbox(&agent);
    let mut max_len = 0u64;
    let mut max_mem = 0u64;
    let total = 100_000;
    for chunk in 0..(total / 1000) {
        let batch: Vec<Message> = (0..1000)
            .map(|i| Message::new("tester", &agent, "noop", json!({"i": chunk * 1000 + i})))
            .collect();
        bus.send_batch(batch).await.unwrap();
        // Keep at most ~5,000 queued so that the test measures trimming, not a backlog.
        loop {
            let st = bus.queue_status(&agent, None).await.unwrap();
            max_len = max_len.max(conn.xlen(&inbox).await.unwrap());
            if st.queue_depth < 5000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if chunk % 10 == 0 {
            max_mem = max_mem.max(used_memory(&mut conn).await);
        }
    }
    assert!(
        wait_until_async(Duration::from_secs(60), || async {
            bus.queue_status(&agent, None).await.unwrap().queue_depth == 0
        })
        .await,
        "not all handled"
    );
    assert!(
        wait_until_async(Duration::from_secs(5), || {
            let mut c = conn.clone();
            let k = inbox.clone();
            async move { c.xlen::<_, u64>(&k).await.unwrap() == 0 }
        })
        .await
    );
    let st = bus.queue_status(&agent, None).await.unwrap();
    println!(
        "100k messages: longest inbox {max_len} entries, peak used_memory {} KiB, final length {}",
        max_mem / 1024,
        st.stream_length
    );
    assert!(
        max_len < 20_000,
        "the inbox grew to {max_len} entries: trimming does not keep up"
    );
    assert!(
        max_mem < 64 * 1024 * 1024,
        "used_memory peaked at {max_mem} bytes"
    );
    worker.stop().await;
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_never_removes_undelivered_or_pending_entries() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("keep");
    let bus = Bus::builder(server.url())
        .notify(false)
        .connect()
        .await
        .unwrap();
    let mut conn = server.async_conn().await;
    let inbox = keys::inbox(&agent);
    // A second consumer group (say, an auditor) on the same inbox.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&inbox)
        .arg("auditor")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..1000)
        .map(|i| Message::new("tester", &agent, "noop", json!({"i": i})))
        .collect();
    bus.send_batch(msgs).await.unwrap();
    // The auditor reads 10 and does not acknowledge them yet.
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("auditor")
        .arg("a1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&inbox)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let read: redis::streams::StreamReadReply = redis::from_redis_value(v).unwrap();
    let ids: Vec<String> = read.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 10);

    let worker = RunningWorker::fast(&server.url(), &agent, |b| {
        b.trim_interval(Duration::from_millis(50))
    })
    .await;
    assert!(
        wait_until_async(Duration::from_secs(20), || async {
            bus.queue_status(&agent, None).await.unwrap().queue_depth == 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await; // several trim rounds
    assert_eq!(
        conn.xlen::<_, u64>(&inbox).await.unwrap(),
        1000,
        "pending (auditor) entries and all after them are kept"
    );

    let _: i64 = conn.xack(&inbox, "auditor", &ids).await.unwrap();
    assert!(
        wait_until_async(Duration::from_secs(5), || {
            let mut c = conn.clone();
            let k = inbox.clone();
            async move { c.xlen::<_, u64>(&k).await.unwrap() == 990 }
        })
        .await,
        "the 10 entries acknowledged by both groups are trimmed, the 990 the auditor has not read are kept"
    );
    let first: redis::streams::StreamRangeReply =
        conn.xrange_count(&inbox, "-", "+", 1).await.unwrap();
    assert!(first.ids[0].id.as_str() > ids[9].as_str() || first.ids[0].id.len() > ids[9].len());
    worker.stop().await;
}
