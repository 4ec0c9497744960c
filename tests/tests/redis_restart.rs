//! A Redis restart: the worker reconnects and resumes by itself, and `send` fails fast
//! (and clearly) while Redis is down; a worker started before Redis waits for it.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use fabric_tests::{
    RedisServer, RunningWorker, WorkerProcess, init_tracing, records, unique_agent, wait_until,
    wait_until_async,
};
use fabric_worker::Error;
use fabric_worker::keys;
use fabric_worker::prelude::*;
use serde_json::json;

static HANDLED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

#[handler(message_type = "quick")]
async fn quick(ctx: Context) -> Result<(), HandlerError> {
    HANDLED.lock().unwrap().insert(ctx.message_id().to_owned());
    Ok(())
}

fn handled(id: &str) -> bool {
    HANDLED.lock().unwrap().contains(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_resumes_by_itself_after_redis_restarts() {
    init_tracing();
    let mut server = RedisServer::start_own(true);
    let agent = unique_agent("restart");
    let bus = Bus::builder(server.url())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let worker = RunningWorker::fast(&server.url(), &agent, |b| b).await;
    let before: Vec<Message> = (0..10)
        .map(|i| Message::new("tester", &agent, "quick", json!({"i": i})))
        .collect();
    bus.send_batch(before.clone()).await.unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            before.iter().all(|m| handled(&m.id))
        })
        .await
    );

    server.stop();
    // While Redis is down, send fails with a clear error instead of dropping the message.
    let t0 = Instant::now();
    let err = bus
        .send(Message::new("tester", &agent, "quick", json!({})))
        .await
        .unwrap_err();
    assert!(err.is_connection_error(), "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "send must fail fast, took {:?}",
        t0.elapsed()
    );
    assert!(
        matches!(err, Error::Redis { .. } | Error::Connect { .. }),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start_again();

    let after: Vec<Message> = (0..10)
        .map(|i| Message::new("tester", &agent, "quick", json!({"j": i})))
        .collect();
    let sent = wait_until_async(Duration::from_secs(15), || async {
        bus.send_batch(after.clone()).await.is_ok()
    })
    .await;
    assert!(sent, "send works again once Redis is back");
    assert!(
        wait_until_async(Duration::from_secs(30), || async {
            after.iter().all(|m| handled(&m.id))
        })
        .await,
        "the worker did not resume after the restart"
    );
    worker.stop().await;
}

/// A worker started before its Redis (a machine booting, a Redis restarting) waits for it,
/// saying so, instead of exiting; and gives up after `FABRIC_STARTUP_WAIT_MS`.
#[test]
fn a_worker_started_before_redis_waits_for_it() {
    init_tracing();
    let mut server = RedisServer::start_own(false);
    let url = server.url();
    server.stop();
    let agent = unique_agent("early");
    let mut w = WorkerProcess::start(&url, &agent, &[("FABRIC_BLOCK_MS", "200".to_string())]);
    // Redis comes up 1.5 s later: the worker is still there and serves.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        w.wait_timeout(Duration::ZERO),
        None,
        "the worker exited instead of waiting"
    );
    server.start_again();
    let mut conn = server.client();
    let data = json!({"id": "msg:early-1", "from_agent": "t", "to_agent": agent,
        "message_type": "work", "payload": {"n": 1}, "timestamp": "", "priority": 2,
        "ttl_seconds": 0, "reply_to": null, "correlation_id": null});
    let _: String = redis::cmd("XADD")
        .arg(keys::inbox(&agent))
        .arg("*")
        .arg("data")
        .arg(data.to_string())
        .query(&mut conn)
        .unwrap();
    assert!(wait_until(Duration::from_secs(15), || {
        records(&mut conn, "test:done", &agent).len() == 1
    }));
    w.kill();
    // With a short wait and no Redis, it gives up with an error (exit 1).
    server.stop();
    let mut w = WorkerProcess::start(
        &url,
        &agent,
        &[("FABRIC_STARTUP_WAIT_MS", "300".to_string())],
    );
    assert_eq!(w.wait_timeout(Duration::from_secs(10)), Some(1));
}
