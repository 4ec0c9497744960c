//! Hostile input to the runtime's functions and loops: an entry with thousands of fields, a
//! retry member that cannot be put back, and stream ids past 2^53. None of them may block
//! the other messages, and trimming must never remove an undelivered entry.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::bus::DeadReason;
use fabric_worker::keys;
use fabric_worker::prelude::*;
use serde_json::{Value, json};

static DONE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// Fails on the first attempt, succeeds on the second.
#[handler(message_type = "fails_once")]
async fn fails_once(ctx: Context, _p: Value) -> Result<(), HandlerError> {
    if ctx.attempt() == 1 {
        return Err(HandlerError::new("first attempt fails"));
    }
    DONE.lock().unwrap().insert(ctx.message_id().to_owned());
    Ok(())
}

fn done(id: &str) -> bool {
    DONE.lock().unwrap().contains(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_entry_and_a_broken_retry_block_nothing() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("hostile");
    let inbox = keys::inbox(&agent);
    let bus = Bus::connect(server.url()).await.unwrap();
    let mut conn = server.async_conn().await;

    // An entry with 5,000 extra fields whose handler fails once.
    let huge = Message::new("tester", &agent, "fails_once", json!({}));
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&inbox)
        .arg("*")
        .arg("data")
        .arg(huge.to_data().unwrap());
    for i in 0..5000 {
        cmd.arg(format!("extra{i}")).arg("x");
    }
    let _: String = cmd.query_async(&mut conn).await.unwrap();
    // A retry member that cannot be put back (not even JSON), due now, and one behind it.
    let retries = keys::retries(&inbox);
    let _: () = redis::cmd("ZADD")
        .arg(&retries)
        .arg(0)
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Ordinary messages that fail once: their retries must go through.
    let normal: Vec<Message> = (0..5)
        .map(|i| Message::new("tester", &agent, "fails_once", json!({"i": i})))
        .collect();
    bus.send_batch(normal.clone()).await.unwrap();

    let worker = RunningWorker::fast(&server.url(), &agent, |b| b).await;
    assert!(
        wait_until_async(Duration::from_secs(20), || async {
            normal.iter().all(|m| done(&m.id))
        })
        .await,
        "the ordinary retries were blocked"
    );
    let dead = bus.dead_letters(&agent, 100).await.unwrap();
    let too_large = dead
        .iter()
        .find(|d| d.reason == DeadReason::TooLarge)
        .unwrap_or_else(|| panic!("the huge entry was not dead-lettered: {dead:?}"));
    assert!(too_large.error.contains("fields"), "{}", too_large.error);
    assert!(!done(&huge.id), "the huge entry must not be handled");
    // The broken member went to dead letters (promote_failed), not blocking the others.
    let dead_raw = fabric_tests::stream_entries(&mut conn, &keys::dead_letters(&inbox)).await;
    assert!(
        dead_raw.iter().any(|(_, f)| {
            fabric_tests::entry_field(f, "dead_reason") == Some("promote_failed")
                && fabric_tests::entry_field(f, "retry_member") == Some("{not json")
        }),
        "{dead_raw:?}"
    );
    let left: u64 = redis::cmd("ZCARD")
        .arg(&retries)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
    worker.stop().await;
}

#[tokio::test]
async fn trimming_is_exact_for_ids_past_2_pow_53() {
    init_tracing();
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    bus.setup().await.unwrap();
    let agent = unique_agent("bigids");
    let inbox = keys::inbox(&agent);
    let mut conn = server.async_conn().await;
    // 9007199254740995 is not a double: as a Lua number it rounds up to ...996, and a trim
    // computed with it would delete the undelivered entry ...995-5.
    for id in ["9007199254740995-0", "9007199254740995-5"] {
        let _: String = redis::cmd("XADD")
            .arg(&inbox)
            .arg(id)
            .arg("data")
            .arg("{}")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let group = keys::default_group(&agent);
    bus.create_group(&agent, None).await.unwrap();
    // Deliver and acknowledge the first entry only.
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("c")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&inbox)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(format!("{v:?}").contains("9007199254740995-0"));
    let _: i64 = redis::cmd("XACK")
        .arg(&inbox)
        .arg(&group)
        .arg("9007199254740995-0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let trimmed: i64 = redis::cmd("FCALL")
        .arg("fabric_trim")
        .arg(1)
        .arg(&inbox)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(trimmed, 1, "exactly the delivered and acknowledged entry");
    let left = fabric_tests::stream_entries(&mut conn, &inbox).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].0, "9007199254740995-5",
        "the undelivered entry stays"
    );

    // The last possible id: everything delivered, so everything may go — and nothing wraps.
    let top = unique_agent("top");
    let top_inbox = keys::inbox(&top);
    let _: String = redis::cmd("XADD")
        .arg(&top_inbox)
        .arg("18446744073709551615-18446744073709551615")
        .arg("data")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    bus.create_group(&top, None).await.unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(keys::default_group(&top))
        .arg("c")
        .arg("STREAMS")
        .arg(&top_inbox)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Still pending: nothing trimmed.
    let trimmed = fabric_trim(&mut conn, &top_inbox).await;
    assert_eq!(trimmed, 0);
    let _: i64 = redis::cmd("XACK")
        .arg(&top_inbox)
        .arg(keys::default_group(&top))
        .arg("18446744073709551615-18446744073709551615")
        .query_async(&mut conn)
        .await
        .unwrap();
    let trimmed = fabric_trim(&mut conn, &top_inbox).await;
    assert_eq!(trimmed, 1);
}

/// `FCALL fabric_trim 1 <stream>`: how many entries it removed.
async fn fabric_trim(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> i64 {
    redis::cmd("FCALL")
        .arg("fabric_trim")
        .arg(1)
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap()
}
