//! Worker processes (the `test_worker` binary) against a real redis-server: load sharing,
//! crash recovery by reclaim, and graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use fabric_tests::{
    RedisServer, WorkerProcess, blocked_clients, records, runtime, unique_agent, wait_until,
};
use fabric_worker::{Bus, Message};
use serde_json::{Value, json};

fn send_work(url: &str, agent: &str, n: usize, payload: impl Fn(usize) -> Value) {
    let rt = runtime();
    rt.block_on(async {
        let bus = Bus::builder(url).notify(false).connect().await.unwrap();
        let msgs: Vec<Message> = (0..n)
            .map(|i| Message::new("tester", agent, "work", payload(i)))
            .collect();
        for chunk in msgs.chunks(500) {
            bus.send_batch(chunk.to_vec()).await.unwrap();
        }
    });
}

fn status(url: &str, agent: &str) -> fabric_worker::bus::QueueStatus {
    runtime().block_on(async {
        Bus::connect(url)
            .await
            .unwrap()
            .queue_status(agent, None)
            .await
            .unwrap()
    })
}

#[test]
fn three_processes_share_3000_messages_each_handled_exactly_once() {
    let server = RedisServer::start();
    let agent = unique_agent("share");
    let mut conn = server.client();
    let workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start(&server.url(), &agent, &[]))
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || blocked_clients(&mut conn) >= 3),
        "the 3 workers did not all join the consumer group"
    );
    send_work(
        &server.url(),
        &agent,
        3000,
        |i| json!({"n": i, "sleep_ms": 1}),
    );
    let ok = wait_until(Duration::from_secs(90), || {
        records(&mut conn, "test:done", &agent).len() >= 3000
    });
    let done = records(&mut conn, "test:done", &agent);
    assert!(ok, "only {} of 3000 handled", done.len());
    std::thread::sleep(Duration::from_millis(500)); // any duplicate would show up by now
    let done = records(&mut conn, "test:done", &agent);
    let ids: HashSet<&str> = done.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let ns: HashSet<u64> = done.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    assert_eq!(
        done.len(),
        3000,
        "duplicates: {} handlings for {} ids",
        done.len(),
        ids.len()
    );
    assert_eq!(ids.len(), 3000);
    assert_eq!(ns, (0..3000).collect::<HashSet<u64>>());
    let mut per_pid: HashMap<u64, usize> = HashMap::new();
    for r in &done {
        *per_pid.entry(r["pid"].as_u64().unwrap()).or_default() += 1;
    }
    println!("handled per worker process: {per_pid:?}");
    assert_eq!(
        per_pid.len(),
        3,
        "all three processes must take part: {per_pid:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = status(&server.url(), &agent);
            st.pending == 0 && st.queue_depth == 0
        }),
        "{:?}",
        status(&server.url(), &agent)
    );
    drop(workers);
}

#[test]
fn a_worker_killed_mid_handling_loses_nothing() {
    let server = RedisServer::start();
    let agent = unique_agent("crash");
    let mut conn = server.client();
    let env = [("FABRIC_RECLAIM_IDLE_MS", "1000".to_string())];
    let mut a = WorkerProcess::start(&server.url(), &agent, &env);
    send_work(
        &server.url(),
        &agent,
        5,
        |i| json!({"n": i, "sleep_ms": 3000}),
    );
    assert!(
        wait_until(Duration::from_secs(20), || records(
            &mut conn,
            "test:started",
            &agent
        )
        .len()
            == 5),
        "worker A did not start all 5 messages"
    );
    let a_pid = u64::from(a.pid());
    a.kill();
    assert_eq!(records(&mut conn, "test:done", &agent).len(), 0);
    let st = status(&server.url(), &agent);
    assert_eq!(
        st.pending, 5,
        "the killed worker's entries stay pending: {st:?}"
    );

    let b = WorkerProcess::start(&server.url(), &agent, &env);
    assert!(
        wait_until(Duration::from_secs(30), || records(
            &mut conn,
            "test:done",
            &agent
        )
        .len()
            >= 5),
        "reclaimed entries were not handled: {:?}",
        records(&mut conn, "test:done", &agent)
    );
    let done = records(&mut conn, "test:done", &agent);
    let ns: HashSet<u64> = done.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (0..5).collect::<HashSet<u64>>());
    for r in &done {
        assert_eq!(r["pid"].as_u64().unwrap(), u64::from(b.pid()));
        assert_ne!(r["pid"].as_u64().unwrap(), a_pid);
        assert!(
            r["delivery"].as_u64().unwrap() >= 2,
            "a reclaimed entry counts its redelivery: {r}"
        );
        assert_eq!(
            r["attempt"].as_u64().unwrap(),
            1,
            "a crash is not a failed handler attempt: {r}"
        );
    }
    assert!(wait_until(Duration::from_secs(10), || status(
        &server.url(),
        &agent
    )
    .pending
        == 0));
}

#[test]
fn sigterm_lets_in_flight_handlers_finish_and_acks_them() {
    let server = RedisServer::start();
    let agent = unique_agent("drain");
    let mut conn = server.client();
    let env = [("FABRIC_CONCURRENCY", "4".to_string())];
    let mut w = WorkerProcess::start(&server.url(), &agent, &env);
    send_work(
        &server.url(),
        &agent,
        10,
        |i| json!({"n": i, "sleep_ms": 1500}),
    );
    assert!(
        wait_until(Duration::from_secs(20), || records(
            &mut conn,
            "test:started",
            &agent
        )
        .len()
            == 4),
        "4 handlers did not start"
    );
    w.signal("TERM");
    let code = w.wait_timeout(Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "the worker must exit 0 after a graceful shutdown"
    );
    let started: HashSet<String> = records(&mut conn, "test:started", &agent)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let done: HashSet<String> = records(&mut conn, "test:done", &agent)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(started.len(), 4, "no new handler starts after SIGTERM");
    assert_eq!(started, done, "every started handler finished");
    let st = status(&server.url(), &agent);
    assert_eq!(st.pending, 0, "finished handlers were acknowledged: {st:?}");
    assert_eq!(
        st.undelivered,
        Some(6),
        "unread messages stay queued: {st:?}"
    );
    assert_eq!(st.queue_depth, 6);
}
