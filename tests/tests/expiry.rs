//! `ttl_seconds` is enforced: a message whose time is up when a worker (or a receive)
//! reaches it is not handled; it goes to dead letters as `expired`, or is dropped when the
//! worker says so, and `queue_status` counts it either way.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::bus::ReceiveOptions;
use fabric_worker::prelude::*;
use serde_json::json;

static HANDLED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

#[handler(message_type = "perishable")]
async fn perishable(ctx: Context) -> Result<(), HandlerError> {
    HANDLED.lock().unwrap().insert(ctx.message_id().to_owned());
    Ok(())
}

fn handled(id: &str) -> bool {
    HANDLED.lock().unwrap().contains(id)
}

/// A message sent `age` ago with `ttl` seconds to live (as a Python sender's would be).
fn aged(agent: &str, age: Duration, ttl: u64) -> Message {
    let mut m = Message::new("sender", agent, "perishable", json!({}));
    m.timestamp = (chrono::Utc::now() - age)
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    m.ttl_seconds = ttl;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dead_lettered_or_dropped_never_handled() {
    init_tracing();
    let server = RedisServer::start();
    for drop in [false, true] {
        let agent = unique_agent("ttl");
        let bus = Bus::connect(server.url()).await.unwrap();
        // Two days old with the default TTL of a day; ten seconds old with a TTL of one; a
        // fresh one; one with no limit (ttl 0) sent a year ago.
        let stale = aged(&agent, Duration::from_secs(2 * 86_400), 86_400);
        let short = aged(&agent, Duration::from_secs(10), 1);
        let fresh = aged(&agent, Duration::ZERO, 86_400);
        let forever = aged(&agent, Duration::from_secs(365 * 86_400), 0);
        for m in [&stale, &short, &fresh, &forever] {
            bus.send(m.clone()).await.unwrap();
        }
        let worker = RunningWorker::start(
            Worker::builder(&agent)
                .url(server.url())
                .drop_expired(drop)
                .block(Duration::from_millis(200)),
        )
        .await;
        assert!(
            wait_until_async(Duration::from_secs(10), || async {
                handled(&fresh.id) && handled(&forever.id)
            })
            .await
        );
        let status = bus.queue_status(&agent, None).await.unwrap();
        assert!(
            wait_until_async(Duration::from_secs(5), || async {
                let s = bus.queue_status(&agent, None).await.unwrap();
                s.queue_depth == 0 && s.expired == 2
            })
            .await,
            "{status:?}"
        );
        assert!(
            !handled(&stale.id) && !handled(&short.id),
            "an expired message was handled"
        );
        let dead = bus.dead_letters(&agent, 10).await.unwrap();
        if drop {
            assert!(dead.is_empty(), "{dead:?}");
        } else {
            let ids: HashSet<String> = dead
                .iter()
                .map(|d| {
                    assert_eq!(d.reason.as_str(), "expired");
                    assert!(d.error.contains("ttl_seconds"), "{}", d.error);
                    d.message.as_ref().unwrap().id.clone()
                })
                .collect();
            assert_eq!(ids, HashSet::from([stale.id.clone(), short.id.clone()]));
        }
        worker.stop().await;
    }
}

#[tokio::test]
async fn a_receive_does_not_hand_out_an_expired_message() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("ttl-receive");
    let bus = Bus::connect(server.url()).await.unwrap();
    let stale = aged(&agent, Duration::from_secs(120), 60);
    let fresh = aged(&agent, Duration::ZERO, 60);
    bus.send(stale.clone()).await.unwrap();
    bus.send(fresh.clone()).await.unwrap();
    let got = bus
        .receive(&agent, ReceiveOptions::default().count(10))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.id, fresh.id);
    let dead = bus.dead_letters(&agent, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason.as_str(), "expired");
    assert_eq!(bus.queue_status(&agent, None).await.unwrap().expired, 1);
}
