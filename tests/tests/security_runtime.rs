//! The whole runtime in secure mode, each agent under its own Redis user: request/reply
//! through the router, retries with backoff, dead letters (with the error reply), reclaim
//! after a worker is SIGKILLed, and trimming — with the ACL file `fabric_worker::acl`
//! generates, where an agent has rights on its own keys only.

use std::time::Duration;

use fabric_tests::{
    RunningRouter, SecureRedis, WorkerProcess, init_tracing, records, unique_agent, wait_until,
    wait_until_async,
};
use fabric_worker::bus::DeadReason;
use fabric_worker::{Message, keys};
use serde_json::{Value, json};

fn worker_env(redis: &SecureRedis) -> Vec<(&'static str, String)> {
    vec![
        ("FABRIC_MODE", "secure".to_owned()),
        ("TEST_RECORD_URL", redis.server.url()),
        ("FABRIC_RECLAIM_IDLE_MS", "600".to_owned()),
        ("FABRIC_BACKOFF_BASE_MS", "100".to_owned()),
        ("FABRIC_BACKOFF_MAX_MS", "500".to_owned()),
        ("FABRIC_RETRY_POLL_INTERVAL_MS", "50".to_owned()),
        ("FABRIC_TRIM_INTERVAL_MS", "200".to_owned()),
        ("FABRIC_BLOCK_MS", "500".to_owned()),
    ]
}

fn done_with(records: &[Value], n: u64) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["n"] == json!(n))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_works_as_the_agents_own_user() {
    init_tracing();
    let percy = unique_agent("percy");
    let coder = unique_agent("coder");
    let redis = SecureRedis::start(&[percy.clone(), coder.clone()], false);
    redis.prepare().await;
    let router = RunningRouter::serve(&redis.router_url()).await;
    let percy_url = redis.url_of(&percy);
    let mut w1 = WorkerProcess::start(&percy_url, &percy, &worker_env(&redis));
    let coder_bus = redis.agent_bus(&coder).await;
    let mut admin = redis.server.client();

    // Request/reply through the router, both ways; the reply is percy's, authenticated.
    let reply = coder_bus
        .request(
            Message::new(&coder, &percy, "work", json!({"n": 1})),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(reply.payload["n"], 1);
    assert_eq!(reply.sender.as_deref(), Some(percy.as_str()));
    assert_eq!(reply.from_agent, percy);

    // A handler that fails twice is retried with backoff, as percy, and succeeds.
    coder_bus
        .send(Message::new(
            &coder,
            &percy,
            "work",
            json!({"n": 2, "mode": "fail_times", "fail_times": 2}),
        ))
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        !done_with(&records(&mut admin, "test:done", &percy), 2).is_empty()
    }));
    let done = done_with(&records(&mut admin, "test:done", &percy), 2);
    assert_eq!(done[0]["attempt"], 3);

    // A permanent failure is dead-lettered, and the sender hears of it in its results.
    let doomed = Message::task(&coder, &percy, "doomed", json!({}));
    let mut doomed = doomed;
    doomed.message_type = "work".into();
    doomed.payload = json!({"n": 3, "mode": "permanent"});
    coder_bus.send(doomed.clone()).await.unwrap();
    assert!(
        wait_until_async(Duration::from_secs(20), || async {
            let st = coder_bus.queue_status(&coder, None).await;
            let dead = redis
                .agent_bus(&percy)
                .await
                .dead_letters(&percy, 10)
                .await
                .unwrap_or_default();
            st.is_ok() && dead.iter().any(|d| d.reason == DeadReason::PermanentError)
        })
        .await
    );
    let results = keys::results(&coder);
    let mut conn = redis.server.async_conn().await;
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            let r = results.clone();
            async move {
                redis::cmd("XLEN")
                    .arg(r)
                    .query_async::<u64>(&mut c)
                    .await
                    .unwrap_or(0)
                    >= 1
            }
        })
        .await
    );
    let errors = fabric_tests::stream_entries(&mut conn, &results).await;
    let err: Value =
        serde_json::from_str(fabric_tests::entry_field(&errors[0].1, "data").unwrap()).unwrap();
    assert_eq!(err["message_type"], "error");
    assert_eq!(err["payload"]["reason"], "permanent_error");
    assert_eq!(
        fabric_tests::entry_field(&errors[0].1, "sender"),
        Some(percy.as_str())
    );

    // Reclaim after a SIGKILL: a slow message starts on w1, w1 is killed, w2 finishes it.
    coder_bus
        .send(Message::new(
            &coder,
            &percy,
            "work",
            json!({"n": 4, "sleep_ms": 2000}),
        ))
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        !done_with(&records(&mut admin, "test:started", &percy), 4).is_empty()
    }));
    w1.kill();
    let _w2 = WorkerProcess::start(&percy_url, &percy, &worker_env(&redis));
    assert!(
        wait_until(Duration::from_secs(30), || {
            !done_with(&records(&mut admin, "test:done", &percy), 4).is_empty()
        }),
        "the killed worker's message was not reclaimed"
    );
    let started = done_with(&records(&mut admin, "test:started", &percy), 4);
    assert!(started.len() >= 2, "{started:?}");
    assert!(started.last().unwrap()["delivery"].as_u64().unwrap() >= 2);

    // Everything handled: percy's inbox is trimmed, by percy's own worker.
    let inbox = keys::inbox(&percy);
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            let k = inbox.clone();
            async move {
                redis::cmd("XLEN")
                    .arg(k)
                    .query_async::<u64>(&mut c)
                    .await
                    .unwrap_or(99)
                    == 0
            }
        })
        .await,
        "the inbox was not trimmed"
    );
    router.stop().await;
}
