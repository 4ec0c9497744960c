//! The bus and the worker on a real 3-node Redis Cluster: every multi-key step (dead
//! letters, retries, trimming, reclaim, request/reply) stays in one agent's slot.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use fabric_tests::{RedisCluster, RunningWorker, init_tracing, wait_until_async};
use fabric_worker::bus::ReceiveOptions;
use fabric_worker::keys;
use fabric_worker::prelude::*;
use serde_json::{Value, json};

static DONE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler(message_type = "c_echo")]
async fn c_echo(ctx: Context, p: Value) -> Result<Value, HandlerError> {
    DONE.lock().unwrap().insert(ctx.message_id().to_owned());
    Ok(json!({"echo": p, "agent": ctx.agent()}))
}

#[handler(message_type = "c_flaky")]
async fn c_flaky(ctx: Context) -> Result<(), HandlerError> {
    FLAKY_CALLS.fetch_add(1, Ordering::SeqCst);
    if ctx.attempt() < 2 {
        return Err(HandlerError::new("first attempt fails"));
    }
    DONE.lock().unwrap().insert(ctx.message_id().to_owned());
    Ok(())
}

fn done(id: &str) -> bool {
    DONE.lock().unwrap().contains(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_and_worker_on_a_three_node_cluster() {
    init_tracing();
    let cluster = RedisCluster::start(3);
    let agents: Vec<String> = (0..6).map(|i| format!("clu-agent-{i}")).collect();
    // The agents' inboxes are spread over the nodes (slots differ).
    let bus = Bus::connect(cluster.url()).await.unwrap();
    assert!(bus.is_cluster());

    let mut builder = Worker::builder(&agents[0])
        .url(cluster.url())
        .block(Duration::from_millis(500))
        .reclaim_idle(Duration::from_millis(300))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .retry_poll_interval(Duration::from_millis(50))
        .trim_interval(Duration::from_millis(100));
    for a in &agents[1..] {
        builder = builder.agent(a);
    }
    let worker = RunningWorker::start(builder).await;

    // A batch to all agents at once (one pipeline per slot).
    let batch: Vec<Message> = agents
        .iter()
        .flat_map(|a| (0..20).map(move |i| Message::new("tester", a, "c_echo", json!({"i": i}))))
        .collect();
    let receipts = bus.send_batch(batch.clone()).await.unwrap();
    assert_eq!(receipts.len(), batch.len());
    assert!(
        wait_until_async(Duration::from_secs(20), || async {
            batch.iter().all(|m| done(&m.id))
        })
        .await,
        "not every message was handled on the cluster"
    );

    // Retries (Lua over the inbox and its retry set), then success.
    let flaky = Message::new("tester", &agents[1], "c_flaky", json!({}));
    bus.send(flaky.clone()).await.unwrap();
    assert!(wait_until_async(Duration::from_secs(20), || async { done(&flaky.id) }).await);
    assert!(FLAKY_CALLS.load(Ordering::SeqCst) >= 2);

    // Dead letters (MULTI over the inbox and its dead letters) and requeue.
    bus.send(Message::new(
        "tester",
        &agents[2],
        "nobody_handles_this",
        json!({}),
    ))
    .await
    .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            bus.dead_letters(&agents[2], 10).await.unwrap().len() == 1
        })
        .await
    );
    assert_eq!(bus.requeue_dead_letters(&agents[2], None).await.unwrap(), 1);
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            bus.dead_letters(&agents[2], 10).await.unwrap().len() == 1
        })
        .await,
        "requeued, handled again, dead-lettered again"
    );
    assert_eq!(bus.purge_dead_letters(&agents[2]).await.unwrap(), 1);

    // Request/reply through a private reply stream.
    let reply = bus
        .request(
            Message::new("caller", &agents[3], "c_echo", json!({"q": 1})),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(reply.payload["agent"], agents[3].as_str());

    // Reclaim (Lua XAUTOCLAIM): a consumer takes a message and vanishes; a worker started
    // later for that agent reclaims it.
    let late = "clu-agent-late";
    let stranded = Message::new("tester", late, "c_echo", json!({"stranded": true}));
    bus.send(stranded.clone()).await.unwrap();
    let got = bus
        .receive(late, ReceiveOptions::default().count(10).consumer("ghost"))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "the ghost consumer holds the message");
    let late_worker = RunningWorker::start(
        Worker::builder(late)
            .url(cluster.url())
            .block(Duration::from_millis(500))
            .reclaim_idle(Duration::from_millis(300)),
    )
    .await;
    assert!(
        wait_until_async(Duration::from_secs(10), || async { done(&stranded.id) }).await,
        "a message taken by a consumer that vanished was not reclaimed"
    );
    late_worker.stop().await;

    // Everything handled: nothing pending anywhere, and handled entries trimmed.
    for a in &agents {
        assert!(
            wait_until_async(Duration::from_secs(10), || async {
                let st = bus.queue_status(a, None).await.unwrap();
                st.queue_depth == 0 && st.stream_length == 0
            })
            .await,
            "{a}: {:?}",
            bus.queue_status(a, None).await.unwrap()
        );
    }
    // The inbox's companions share its slot, as the cluster itself computes it.
    let mut node = cluster.nodes()[0].client();
    let mut slot = |key: String| -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut node)
            .unwrap()
    };
    let inbox = keys::inbox(&agents[0]);
    let inbox_slot = slot(inbox.clone());
    assert_eq!(slot(keys::dead_letters(&inbox)), inbox_slot);
    assert_eq!(slot(keys::retries(&inbox)), inbox_slot);
    worker.stop().await;
}
