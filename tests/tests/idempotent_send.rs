//! Idempotent sends (`Bus::send_once`): a second send with the same key within its window
//! queues nothing and returns the first receipt — also when processes send the same key at
//! once, as an agent's own Redis user, on a cluster, and (through the router) in secure mode.

use std::time::Duration;

use fabric_tests::{
    RedisCluster, RedisServer, RunningRouter, SecureRedis, init_tracing, unique_agent,
    wait_until_async,
};
use fabric_worker::bus::{DEFAULT_DEDUP_WINDOW, Mode};
use fabric_worker::{Bus, Message, keys};
use serde_json::json;

async fn inbox_len(bus: &Bus, agent: &str) -> u64 {
    bus.stream_info(agent)
        .await
        .unwrap()
        .map_or(0, |i| i.length)
}

fn msg(to: &str, n: u64) -> Message {
    Message::new("coder", to, "task", json!({"n": n}))
}

/// The same key twice, a different key, and the window running out (`observer` counts).
async fn sends_once_per_key(bus: &Bus, observer: &Bus, to: &str) {
    let first = bus
        .send_once(msg(to, 1), "order-1", DEFAULT_DEDUP_WINDOW)
        .await
        .unwrap();
    assert_eq!(first.status, "queued");
    let again = bus
        .send_once(msg(to, 2), "order-1", DEFAULT_DEDUP_WINDOW)
        .await
        .unwrap();
    assert_eq!(again.status, "duplicate");
    assert_eq!(
        (&again.message_id, &again.stream_id, &again.timestamp),
        (&first.message_id, &first.stream_id, &first.timestamp),
        "a duplicate returns the first send's receipt"
    );
    bus.send_once(msg(to, 3), "order-2", DEFAULT_DEDUP_WINDOW)
        .await
        .unwrap();
    assert_eq!(inbox_len(observer, to).await, 2);
    // A short window: once it is over, the same key queues again.
    let w = Duration::from_millis(200);
    assert_eq!(
        bus.send_once(msg(to, 4), "order-3", w)
            .await
            .unwrap()
            .status,
        "queued"
    );
    assert_eq!(
        bus.send_once(msg(to, 5), "order-3", w)
            .await
            .unwrap()
            .status,
        "duplicate"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bus.send_once(msg(to, 6), "order-3", w)
            .await
            .unwrap()
            .status,
        "queued"
    );
    assert_eq!(inbox_len(observer, to).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_queued_once_per_window_even_from_many_processes_at_once() {
    init_tracing();
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    let to = unique_agent("once");
    sends_once_per_key(&bus, &bus, &to).await;

    // Twenty senders, each with its own connections, send the same key at the same moment.
    let racer = unique_agent("race");
    let mut tasks = Vec::new();
    for n in 0..20 {
        let url = server.url();
        let racer = racer.clone();
        tasks.push(tokio::spawn(async move {
            let bus = Bus::connect(url).await.unwrap();
            bus.send_once(msg(&racer, n), "the-one", DEFAULT_DEDUP_WINDOW)
                .await
                .unwrap()
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.push(t.await.unwrap());
    }
    let queued: Vec<_> = receipts.iter().filter(|r| r.status == "queued").collect();
    assert_eq!(queued.len(), 1, "{receipts:?}");
    assert!(receipts.iter().all(|r| r.stream_id == queued[0].stream_id));
    assert_eq!(inbox_len(&bus, &racer).await, 1);
    // Bad keys are refused before anything is sent.
    assert!(
        bus.send_once(msg(&racer, 0), "", DEFAULT_DEDUP_WINDOW)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_may_send_once_with_its_own_direct_mode_user() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let mut admin = server.async_conn().await;
    fabric_tests::set_agent_user(&mut admin, "coder", Mode::Direct, "coder-pw").await;
    let admin_bus = Bus::connect(server.url()).await.unwrap();
    admin_bus.setup().await.unwrap();
    let coder = Bus::connect(format!(
        "redis://coder:coder-pw@127.0.0.1:{}",
        server.port()
    ))
    .await
    .unwrap();
    let to = unique_agent("percy");
    sends_once_per_key(&coder, &admin_bus, &to).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_once_works_on_a_three_node_cluster() {
    init_tracing();
    let cluster = RedisCluster::start(3);
    let bus = Bus::connect(cluster.url()).await.unwrap();
    // Agents whose inboxes land on different nodes.
    for i in 0..6 {
        let to = unique_agent(&format!("c{i}"));
        let a = bus
            .send_once(msg(&to, 1), "k", DEFAULT_DEDUP_WINDOW)
            .await
            .unwrap();
        let b = bus
            .send_once(msg(&to, 2), "k", DEFAULT_DEDUP_WINDOW)
            .await
            .unwrap();
        assert_eq!((a.status, b.status), ("queued", "duplicate"));
        assert_eq!(a.stream_id, b.stream_id);
        assert_eq!(inbox_len(&bus, &to).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_secure_mode_the_router_delivers_a_key_once() {
    init_tracing();
    let (coder, percy) = (unique_agent("coder"), unique_agent("percy"));
    let redis = SecureRedis::start(&[coder.clone(), percy.clone()], false);
    redis.prepare().await;
    let router = RunningRouter::serve(&redis.router_url()).await;
    let bus = redis.agent_bus(&coder).await;
    let m = |n: u64| Message::new(&coder, &percy, "task", json!({"n": n}));
    let a = bus
        .send_once(m(1), "pay-42", DEFAULT_DEDUP_WINDOW)
        .await
        .unwrap();
    let b = bus
        .send_once(m(2), "pay-42", DEFAULT_DEDUP_WINDOW)
        .await
        .unwrap();
    assert_eq!(
        a.message_id, b.message_id,
        "the same key gives the same message id"
    );
    bus.send_once(m(3), "pay-43", DEFAULT_DEDUP_WINDOW)
        .await
        .unwrap();
    let admin = Bus::connect(redis.server.url()).await.unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            inbox_len(&admin, &percy).await == 2
        })
        .await
    );
    // The duplicate is not delivered later either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_len(&admin, &percy).await, 2);
    let entries =
        fabric_tests::stream_entries(&mut redis.server.async_conn().await, &keys::inbox(&percy))
            .await;
    assert_eq!(entries.len(), 2);
    router.stop().await;
}
