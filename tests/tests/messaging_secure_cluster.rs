//! Delayed delivery and priorities where it is hardest: in secure mode (the router
//! schedules and picks the lane; the agent's own Redis user promotes and reads), and on a
//! three-node Redis Cluster (every key of an inbox in its slot).

use std::time::Duration;

use fabric_tests::{
    RedisCluster, RunningRouter, RunningWorker, SecureRedis, WorkerProcess, init_tracing, now_ms,
    records, unique_agent, wait_until, wait_until_async,
};
use fabric_worker::keys;
use fabric_worker::message::Priority;
use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_secure_mode_the_router_schedules_delayed_messages_and_fills_lanes() {
    init_tracing();
    let (coder, percy) = (unique_agent("coder"), unique_agent("percy"));
    let redis = SecureRedis::start(&[coder.clone(), percy.clone()], false);
    redis.prepare().await;
    let router = RunningRouter::serve(&redis.router_url()).await;
    let env = [
        ("FABRIC_MODE", "secure".to_owned()),
        ("TEST_RECORD_URL", redis.server.url()),
        ("FABRIC_BLOCK_MS", "200".to_owned()),
        ("FABRIC_TRIM_INTERVAL_MS", "600000".to_owned()),
    ];
    let _w = WorkerProcess::start(&redis.url_of(&percy), &percy, &env);
    let mut admin = redis.server.client();
    let inbox = keys::inbox(&percy);
    assert!(fabric_tests::lanes_created(&mut admin, &percy));
    let bus = redis.agent_bus(&coder).await;
    let work = |n: u64| Message::new(&coder, &percy, "work", json!({ "n": n }));
    let later = bus
        .send(work(1).with_delay(Duration::from_millis(1500)))
        .await
        .unwrap();
    let due = later.deliver_at_ms.unwrap();
    bus.send(work(2).with_priority(Priority::Urgent))
        .await
        .unwrap();
    // The urgent one is handled at once, through the urgent lane, stamped by the router.
    assert!(wait_until(Duration::from_secs(10), || {
        records(&mut admin, "test:done", &percy)
            .iter()
            .any(|r| r["n"] == json!(2))
    }));
    let urgent: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(keys::lane(&inbox, "urgent"))
        .arg("-")
        .arg("+")
        .query(&mut admin)
        .unwrap();
    assert_eq!(urgent.len(), 1);
    // The delayed one waits in percy's schedule, then is handled on time.
    assert!(
        records(&mut admin, "test:started", &percy)
            .iter()
            .all(|r| r["n"] != json!(1))
    );
    assert!(wait_until(Duration::from_secs(10), || {
        records(&mut admin, "test:done", &percy)
            .iter()
            .any(|r| r["n"] == json!(1))
    }));
    let started = records(&mut admin, "test:started", &percy);
    let t = started.iter().find(|r| r["n"] == json!(1)).unwrap()["t_ms"]
        .as_u64()
        .unwrap();
    assert!(t >= due, "handled {} ms early", due - t);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_priority_and_receive_work_on_a_three_node_cluster() {
    init_tracing();
    let cluster = RedisCluster::start(3);
    let bus = Bus::connect(cluster.url()).await.unwrap();
    let mut agents = Vec::new();
    let mut workers = Vec::new();
    for i in 0..4 {
        let a = unique_agent(&format!("cl{i}"));
        workers.push(
            RunningWorker::fast(&cluster.url(), &a, |b| {
                b.retry_poll_interval(Duration::from_secs(30))
            })
            .await,
        );
        agents.push(a);
    }
    let nodes: Vec<String> = cluster.url().split(',').map(str::to_owned).collect();
    let client = redis::cluster::ClusterClient::new(nodes).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    for a in &agents {
        let lane = keys::lane(&keys::inbox(a), "urgent");
        let mut found = false;
        for _ in 0..200 {
            if conn.exists::<_, bool>(&lane).await.unwrap_or(false) {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(found, "the worker of {a} created its lanes");
    }
    // Delayed and urgent messages to agents on every node: all handled, none early.
    let mut due = Vec::new();
    for a in &agents {
        let r = bus
            .send(
                Message::new("cl-test", a, "cluster_echo", json!({}))
                    .with_delay(Duration::from_millis(800)),
            )
            .await
            .unwrap();
        assert_eq!(r.status, "scheduled");
        due.push((a.clone(), r.deliver_at_ms.unwrap()));
        bus.send(
            Message::new("cl-test", a, "cluster_echo", json!({})).with_priority(Priority::Urgent),
        )
        .await
        .unwrap();
    }
    for (a, at) in &due {
        assert!(
            wait_until_async(Duration::from_secs(10), || async {
                handled_at(a).len() == 2
            })
            .await,
            "{a}: both handled"
        );
        let times = handled_at(a);
        // The urgent one at once, the delayed one not before its time.
        assert_eq!(
            times.iter().filter(|t| **t >= *at).count(),
            1,
            "{a}: {times:?} vs {at}"
        );
    }
    for w in workers {
        w.stop().await;
    }
    // Receive (an MCP agent) reads the lanes first and promotes due messages itself.
    let a = &agents[0];
    bus.send(Message::new("cl-test", a, "mcp_only", json!({"n": 1})))
        .await
        .unwrap();
    bus.send(
        Message::new("cl-test", a, "mcp_only", json!({"n": 2})).with_priority(Priority::Urgent),
    )
    .await
    .unwrap();
    bus.send(
        Message::new("cl-test", a, "mcp_only", json!({"n": 3}))
            .with_delay(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = bus
        .receive(a, fabric_worker::bus::ReceiveOptions::default().count(10))
        .await
        .unwrap();
    let ns: Vec<u64> = got
        .iter()
        .map(|r| r.message.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns[0], 2, "urgent first: {ns:?}");
    assert_eq!(ns.len(), 3, "{ns:?}");
    assert!(got[0].stream_id.starts_with("urgent/"));
    let ids: Vec<String> = got.iter().map(|r| r.stream_id.clone()).collect();
    let acked = bus.acknowledge(a, &ids, None).await.unwrap();
    assert!(acked.iter().all(|r| r.acked), "{acked:?}");

    // With every worker gone: a delayed message falls due, a backlog of 2,000 builds up.
    let (b, c) = (&agents[1], &agents[2]);
    let later = bus
        .send(
            Message::new("cl-test", c, "cluster_echo", json!({}))
                .with_delay(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    for chunk in 0..4u64 {
        let batch = (0..500)
            .map(|i| {
                Message::new(
                    "cl-test",
                    b,
                    "cluster_slow",
                    json!({ "n": chunk * 500 + i }),
                )
            })
            .collect();
        bus.send_batch(batch).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New workers: the delayed message is delivered after the restart; an urgent message
    // jumps the backlog.
    let wc = RunningWorker::fast(&cluster.url(), c, |w| w).await;
    let wb = RunningWorker::fast(&cluster.url(), b, |w| w.concurrency(4)).await;
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            handled_at(c).len() == 3
        })
        .await,
        "the delayed message is handled after the restart"
    );
    assert!(
        handled_at(c)
            .iter()
            .any(|t| *t >= later.deliver_at_ms.unwrap())
    );
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            slow_done(b).len() >= 50
        })
        .await
    );
    bus.send(
        Message::new("cl-test", b, "cluster_slow", json!({ "n": 1_000_000 }))
            .with_priority(Priority::Urgent),
    )
    .await
    .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            slow_done(b).contains(&1_000_000)
        })
        .await
    );
    let done = slow_done(b);
    assert!(
        done.len() < 1000,
        "the urgent message waited for {} of the backlog",
        done.len()
    );
    wb.stop().await;
    wc.stop().await;
}

static HANDLED: std::sync::LazyLock<std::sync::Mutex<Vec<(String, u64)>>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(Vec::new()));

fn handled_at(agent: &str) -> Vec<u64> {
    HANDLED
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| a == agent)
        .map(|(_, t)| *t)
        .collect()
}

/// agent → the `n` of each `cluster_slow` message handled, in order.
static SLOW: std::sync::LazyLock<std::sync::Mutex<Vec<(String, u64)>>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(Vec::new()));

fn slow_done(agent: &str) -> Vec<u64> {
    SLOW.lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| a == agent)
        .map(|(_, n)| *n)
        .collect()
}

#[handler(message_type = "cluster_slow")]
async fn cluster_slow(ctx: Context) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    let n = ctx.payload()["n"].as_u64().unwrap_or(0);
    SLOW.lock().unwrap().push((ctx.agent().to_owned(), n));
    Ok(())
}

#[handler(message_type = "cluster_echo")]
async fn cluster_echo(ctx: Context) -> Result<(), HandlerError> {
    HANDLED
        .lock()
        .unwrap()
        .push((ctx.agent().to_owned(), now_ms()));
    Ok(())
}
