//! `fabric status`, `fabric send` and `fabric mcp` on a 3-node Redis Cluster, given the
//! cluster as comma-separated seed URLs, as the library takes it.

mod common;

use std::process::Output;

use common::{call, fabric, mcp_connect, ok};
use fabric_tests::{RedisCluster, init_tracing, unique_agent};
use fabric_worker::{Bus, Message};
use serde_json::{Value, json};

fn check(o: &Output, code: i32) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_send_and_mcp_work_on_a_cluster() {
    init_tracing();
    let cluster = RedisCluster::start(3);
    let url = cluster.url();
    assert!(url.contains(','), "{url}");

    // Nothing there yet: status says so (it reached every node without failing).
    let o = fabric(&url, &["status"]);
    check(&o, 4);

    // Twelve agents: their inboxes land on more than one node.
    let bus = Bus::connect(&url).await.unwrap();
    let agents: Vec<String> = (0..12).map(|_| unique_agent("cl")).collect();
    for a in &agents {
        bus.send(Message::new("coder", a, "task", json!({"to": a})))
            .await
            .unwrap();
    }
    let nodes_with_keys = cluster
        .nodes()
        .iter()
        .filter(|n| {
            let size: i64 = redis::cmd("DBSIZE").query(&mut n.client()).unwrap();
            size > 0
        })
        .count();
    assert!(
        nodes_with_keys >= 2,
        "all inboxes on one node: the test would prove nothing"
    );

    // `fabric status` discovers every agent, on every node.
    let out = check(&fabric(&url, &["status", "--json"]), 0);
    let statuses: Vec<Value> = serde_json::from_str(&out).unwrap();
    let found: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["agent_id"].as_str())
        .collect();
    for a in &agents {
        assert!(found.contains(&a.as_str()), "{a} missing from {found:?}");
    }
    let one = check(&fabric(&url, &["status", &agents[0], "--json"]), 0);
    assert!(one.contains("\"queue_depth\": 1"), "{one}");

    // `fabric send`.
    let out = check(
        &fabric(&url, &["send", &agents[1], "{\"n\": 2}", "--from", "ops"]),
        0,
    );
    assert!(out.starts_with("queued msg:"), "{out}");
    assert_eq!(
        bus.queue_status(&agents[1], None)
            .await
            .unwrap()
            .queue_depth,
        2
    );

    // `fabric mcp`: an agent sends, then reads and inspects its own inbox.
    let me = &agents[2];
    let client = mcp_connect(&url, &["--agent", me]).await;
    let sent = ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": agents[3], "message_type": "task", "payload": {"via": "mcp"}}),
    )
    .await);
    assert_eq!(sent["status"], "queued");
    let status = ok(&call(&client, "fabric_message_queue_status", json!({})).await);
    assert_eq!(status["agent_id"], me.as_str());
    assert_eq!(status["queue_depth"], 1);
    assert_eq!(status["stream_info"]["length"], 1);
    let got = ok(&call(
        &client,
        "fabric_message_receive",
        json!({"block_ms": 0, "auto_ack": true}),
    )
    .await);
    assert_eq!(got["count"], 1);
    assert_eq!(got["messages"][0]["payload"]["to"], me.as_str());
    client.cancel().await.unwrap();
    assert_eq!(
        bus.queue_status(&agents[3], None)
            .await
            .unwrap()
            .queue_depth,
        2
    );
}
