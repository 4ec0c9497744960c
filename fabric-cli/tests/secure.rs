//! Secure mode with the `fabric` command: `fabric setup` (as the admin), `fabric router`
//! (as the router), `fabric mcp --mode secure` (as the MCP server, sending for the agent it
//! authenticated) and `fabric status` (as the read-only monitor), on a redis-server running
//! the ACL file `fabric_worker::acl` generates.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{FABRIC, call, fabric, mcp_connect, ok, tool_error};
use fabric_tests::{RunningWorker, SecureRedis, init_tracing, unique_agent};
use fabric_worker::acl;
use fabric_worker::{Bus, Worker, keys};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_router_mcp_and_status_in_secure_mode() {
    init_tracing();
    let coder = unique_agent("coder");
    let percy = unique_agent("percy");
    let redis = SecureRedis::start(&[coder.clone(), percy.clone()], false);

    // The admin step.
    let o = fabric(
        &redis.server.url(),
        &["setup", "--agent", &coder, "--agent", &percy],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("loaded the fabric function library (version 6)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("registered {coder}, {percy}")),
        "{out}"
    );
    // An agent may not do it.
    let o = fabric(&redis.url_of(&coder), &["setup"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused by the server's ACL"));

    // The router, as its own user (killed by its pid when the test ends, however it ends).
    let router = KillOnDrop(
        Command::new(FABRIC)
            .arg("router")
            .env("REDIS_URL", redis.router_url())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fabric router"),
    );

    // percy's worker, as percy, in secure mode.
    let percy_bus = redis.agent_bus(&percy).await;
    let worker = RunningWorker::start(
        Worker::builder(&percy)
            .bus(percy_bus)
            .block(Duration::from_millis(300)),
    )
    .await;

    // The MCP server, as fabric-mcp, acting for coder.
    let client = mcp_connect(
        &redis.url_of(acl::MCP_USER),
        &["--agent", &coder, "--mode", "secure"],
    )
    .await;
    let reply = ok(&call(
        &client,
        "fabric_message_request",
        json!({"to_agent": percy, "message_type": "mcp_echo", "payload": {"q": "secure"}, "timeout_ms": 15000}),
    )
    .await);
    assert_eq!(reply["payload"]["echo"], json!({"q": "secure"}));
    assert_eq!(reply["from_agent"], percy.as_str());
    let sent = ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": percy, "message_type": "event", "payload": {"n": 1}}),
    )
    .await);
    assert_eq!(sent["status"], "queued");
    let e = tool_error(
        &call(
            &client,
            "fabric_message_send",
            json!({"to_agent": percy, "from_agent": percy, "message_type": "event", "payload": {}}),
        )
        .await,
    );
    assert!(e.starts_with("refused: from_agent"), "{e}");
    // A reply read through MCP alone, and discovery, under fabric-mcp's rights.
    ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": percy, "message_type": "mcp_echo", "payload": {"q": "later"}, "reply_to": format!("agent:{coder}:results")}),
    )
    .await);
    let got = ok(&call(
        &client,
        "fabric_message_receive",
        json!({"source": "replies", "block_ms": 15000}),
    )
    .await);
    assert_eq!(got["count"], 1, "{got}");
    let reply = &got["messages"][0];
    assert_eq!(reply["payload"]["echo"], json!({"q": "later"}));
    let acked = ok(&call(
        &client,
        "fabric_message_acknowledge",
        json!({"message_ids": [reply["_stream_id"]], "source": "replies"}),
    )
    .await);
    assert_eq!(acked["acknowledged"][0]["acked"], true, "{acked}");
    let listed = ok(&call(&client, "fabric_agents", json!({"agent_id": percy})).await);
    let p = &listed["agents"][0];
    assert_eq!(p["worker_live"], true, "{p}");
    assert!(
        p["handles"]
            .as_array()
            .unwrap()
            .contains(&json!("mcp_echo")),
        "{p}"
    );
    let inbox = ok(&call(&client, "fabric_message_receive", json!({"block_ms": 0})).await);
    assert_eq!(inbox["count"], 0, "{inbox}");
    client.cancel().await.unwrap();

    // The event reached percy's inbox stamped with coder, the identity MCP authenticated
    // (percy's worker has no handler for it: a dead letter that keeps the stamp).
    let admin = Bus::connect(redis.server.url()).await.unwrap();
    assert!(
        fabric_tests::wait_until_async(Duration::from_secs(10), || async {
            !admin.dead_letters(&percy, 10).await.unwrap().is_empty()
        })
        .await
    );
    let dead = admin.dead_letters(&percy, 10).await.unwrap();
    let mut conn = redis.server.async_conn().await;
    let raw =
        fabric_tests::stream_entries(&mut conn, &keys::dead_letters(&keys::inbox(&percy))).await;
    assert_eq!(dead[0].message.as_ref().unwrap().from_agent, coder);
    assert_eq!(
        fabric_tests::entry_field(&raw[0].1, "sender"),
        Some(coder.as_str())
    );

    // The monitor sees the inboxes, read-only.
    let o = fabric(
        &redis.url_of(acl::MONITOR_USER),
        &["status", &percy, "--json"],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status[0]["agent_id"], percy.as_str());
    assert_eq!(status[0]["dead_letters"], 1);
    // …and may change nothing.
    let o = fabric(
        &redis.url_of(acl::MONITOR_USER),
        &["dead-letters", "purge", &percy, "--yes"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("refused by the server's ACL"), "{err}");

    // A send to an agent nobody registered: queued in coder's outbox, then rejected by the
    // router, and coder sees why with its own credentials.
    let nobody = unique_agent("nobody");
    let o = fabric(
        &redis.url_of(&coder),
        &["--mode", "secure", "send", &nobody, "{}", "--from", &coder],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut rejected = serde_json::Value::Null;
    for _ in 0..100 {
        let o = fabric(
            &redis.url_of(&coder),
            &["dead-letters", "list", &coder, "--outbox", "--json"],
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        rejected = serde_json::from_slice(&o.stdout).unwrap();
        if rejected.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rejected[0]["reason"], "unknown_recipient", "{rejected}");
    assert!(
        rejected[0]["error"].as_str().unwrap().contains(&nobody),
        "{rejected}"
    );

    worker.stop().await;
    drop(router);
}

/// A child process killed (by its pid) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
