//! AI agents that talk to the bus only through MCP: replies they can read, redelivery of
//! what they did not acknowledge, an inbox shared with the agent's Rust worker by message
//! type, discovery, and progress while a request waits.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{call, mcp_connect, ok, start_worker, tool_error};
use fabric_tests::{RedisServer, init_tracing, unique_agent, wait_until_async};
use fabric_worker::prelude::*;
use fabric_worker::{Bus, keys};
use rmcp::model::{
    CallToolRequestParams, NumberOrString, ProgressNotificationParam, ProgressToken,
    RequestMetaObject,
};
use serde_json::{Value, json};

/// percy's handler for tasks in this test binary: a review.
#[handler(message_type = "task")]
async fn review(ctx: Context, payload: Value) -> Result<Value, HandlerError> {
    Ok(json!({"reviewed": payload, "by": ctx.agent()}))
}

/// The names of the consumers of `group` on `stream`.
async fn consumers(url: &str, stream: &str, group: &str) -> Vec<String> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let v: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    v.iter()
        .filter_map(|c| match c {
            redis::Value::Array(kv) | redis::Value::Set(kv) => kv
                .chunks(2)
                .find(|p| matches!(&p[0], redis::Value::BulkString(k) if k == b"name"))
                .and_then(|p| match &p[1] {
                    redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                }),
            redis::Value::Map(kv) => kv
                .iter()
                .find(|(k, _)| matches!(k, redis::Value::BulkString(k) if k == b"name"))
                .and_then(|(_, v)| match v {
                    redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                }),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_mcp_only_agent_reads_the_replies_to_what_it_sent() {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let me = unique_agent("coder");
    let percy = unique_agent("percy");
    let worker = start_worker(&url, &percy).await;
    let client = mcp_connect(&url, &["--agent", &me]).await;

    let sent = ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": percy, "message_type": "task", "payload": {"task_type": "code_review", "pr_id": "123"}}),
    )
    .await);
    assert_eq!(sent["status"], "queued");
    assert!(
        sent["reply"]
            .as_str()
            .unwrap()
            .contains("source \"replies\""),
        "{sent}"
    );
    assert!(sent.get("warning").is_none(), "{sent}");
    // The reply, through MCP tools alone.
    let got = ok(&call(
        &client,
        "fabric_message_receive",
        json!({"source": "replies", "block_ms": 10000}),
    )
    .await);
    assert_eq!(got["source"], "replies");
    assert_eq!(got["count"], 1, "{got}");
    let reply = &got["messages"][0];
    assert_eq!(reply["from_agent"], percy.as_str());
    assert_eq!(reply["message_type"], "response");
    assert_eq!(reply["payload"]["reviewed"]["pr_id"], "123");
    let acked = ok(&call(
        &client,
        "fabric_message_acknowledge",
        json!({"message_ids": [reply["_stream_id"]], "source": "replies"}),
    )
    .await);
    assert_eq!(acked["acknowledged"][0]["acked"], true, "{acked}");
    // Acknowledged: not received again; and the inbox is a different source.
    let again = ok(&call(
        &client,
        "fabric_message_receive",
        json!({"source": "replies", "block_ms": 0}),
    )
    .await);
    assert_eq!(again["count"], 0);
    let inbox = ok(&call(&client, "fabric_message_receive", json!({"block_ms": 0})).await);
    assert_eq!(inbox["count"], 0);
    let e = tool_error(
        &call(
            &client,
            "fabric_message_receive",
            json!({"source": "outbox"}),
        )
        .await,
    );
    assert!(e.contains("expected \"inbox\" or \"replies\""), "{e}");

    worker.stop().await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn unacknowledged_messages_come_back_after_the_visibility_timeout() {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let me = unique_agent("coder");
    let inbox = keys::inbox(&me);
    // A consumer an earlier version left behind (one per MCP process) in the workers' group.
    let bus = Bus::connect(&url).await.unwrap();
    bus.create_group(&me, None).await.unwrap();
    let legacy = format!("{me}-mcp-1a2b3c4d");
    bus.send(Message::new(&me, &me, "note", json!({"n": 0})))
        .await
        .unwrap();
    let old = bus
        .receive(
            &me,
            fabric_worker::bus::ReceiveOptions::default().consumer(&legacy),
        )
        .await
        .unwrap();
    bus.acknowledge(&me, &[old[0].stream_id.clone()], None)
        .await
        .unwrap();
    assert!(
        consumers(&url, &inbox, &keys::default_group(&me))
            .await
            .contains(&legacy)
    );

    let first = mcp_connect(&url, &["--agent", &me, "--visibility-timeout", "1"]).await;
    for n in 1..=2 {
        ok(&call(
            &first,
            "fabric_message_send",
            json!({"to_agent": me, "message_type": "note", "payload": {"n": n}}),
        )
        .await);
    }
    let got = ok(&call(&first, "fabric_message_receive", json!({"block_ms": 2000})).await);
    assert_eq!(got["count"], 2, "{got}");
    assert_eq!(got["messages"][0]["_deliveries"], 1);
    // Not acknowledged: the first session's process ends.
    first.cancel().await.unwrap();

    // Within the visibility timeout nothing comes back…
    let second = mcp_connect(&url, &["--agent", &me, "--visibility-timeout", "1"]).await;
    let early = ok(&call(&second, "fabric_message_receive", json!({"block_ms": 0})).await);
    assert_eq!(early["count"], 0, "{early}");
    // …after it, both do, to the next session.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = ok(&call(&second, "fabric_message_receive", json!({"block_ms": 2000})).await);
    assert_eq!(again["count"], 2, "{again}");
    let ids: Vec<Value> = again["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["_deliveries"], 2, "{m}");
            m["_stream_id"].clone()
        })
        .collect();
    assert_eq!(
        ids,
        got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["_stream_id"].clone())
            .collect::<Vec<_>>()
    );
    let acked = ok(&call(
        &second,
        "fabric_message_acknowledge",
        json!({"message_ids": ids}),
    )
    .await);
    assert!(
        acked["acknowledged"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["acked"] == true),
        "{acked}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let none = ok(&call(&second, "fabric_message_receive", json!({"block_ms": 0})).await);
    assert_eq!(none["count"], 0, "{none}");
    // One consumer for every session of the agent; the old per-process one is gone.
    assert_eq!(
        consumers(&url, &inbox, &keys::mcp_group(&me)).await,
        [keys::mcp_consumer(&me)]
    );
    assert!(
        !consumers(&url, &inbox, &keys::default_group(&me))
            .await
            .contains(&legacy)
    );
    second.cancel().await.unwrap();
}

#[tokio::test]
async fn a_message_delivered_too_often_goes_to_dead_letters() {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let me = unique_agent("coder");
    let bus = Bus::connect(&url).await.unwrap();
    bus.send(Message::new(&me, &me, "note", json!({})))
        .await
        .unwrap();
    let opts = || {
        fabric_worker::bus::ReceiveOptions::default()
            .group(keys::mcp_group(&me))
            .consumer(keys::mcp_consumer(&me))
            .redeliver_after(Duration::from_millis(50))
            .max_deliveries(2)
    };
    for deliveries in 1..=2 {
        let got = bus.receive(&me, opts()).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].deliveries, deliveries);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(bus.receive(&me, opts()).await.unwrap().is_empty());
    let dead = bus.dead_letters(&me, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason.as_str(), "delivery_limit");
}

#[tokio::test]
async fn an_agent_with_a_worker_and_an_mcp_session_splits_its_inbox_by_type() {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let agent = unique_agent("mixed");
    let worker = start_worker(&url, &agent).await;
    let client = mcp_connect(&url, &["--agent", &agent]).await;
    // The MCP session's first receive creates its group.
    let first = ok(&call(&client, "fabric_message_receive", json!({"block_ms": 0})).await);
    assert_eq!(first["count"], 0);

    let bus = Bus::connect(&url).await.unwrap();
    let other = unique_agent("sender");
    let mut chats = Vec::new();
    for i in 0..3 {
        bus.send(Message::new(&other, &agent, "mcp_echo", json!({"i": i})))
            .await
            .unwrap();
        bus.send(Message::task(&other, &agent, "review", json!({"i": i})))
            .await
            .unwrap();
        let chat = Message::new(&other, &agent, "chat", json!({"i": i}));
        chats.push(chat.id.clone());
        bus.send(chat).await.unwrap();
    }
    // The MCP session gets the chats, and only them.
    let mut got = Vec::new();
    for _ in 0..10 {
        let r = ok(&call(&client, "fabric_message_receive", json!({"block_ms": 1000})).await);
        for m in r["messages"].as_array().unwrap() {
            assert_eq!(m["message_type"], "chat", "{m}");
            got.push(m["id"].as_str().unwrap().to_owned());
            ok(&call(
                &client,
                "fabric_message_acknowledge",
                json!({"message_ids": [m["_stream_id"]]}),
            )
            .await);
        }
        if got.len() >= 3 {
            break;
        }
    }
    assert_eq!(got, chats);
    // The worker handled its six (three replies in the sender's results), and nothing
    // became a dead letter because of the mix.
    let conn = redis.async_conn().await;
    let handled = wait_until_async(Duration::from_secs(10), || {
        let bus = bus.clone();
        let mut conn = conn.clone();
        let agent = agent.clone();
        let other = other.clone();
        async move {
            let g = bus.groups(&agent).await.unwrap();
            let w = g.iter().find(|g| g.name == keys::default_group(&agent));
            let replies: u64 = redis::cmd("XLEN")
                .arg(keys::results(&other))
                .query_async(&mut conn)
                .await
                .unwrap_or(0);
            w.is_some_and(|w| w.pending == 0 && w.lag == Some(0)) && replies == 3
        }
    })
    .await;
    assert!(handled, "the worker did not handle its messages");
    assert!(bus.dead_letters(&agent, 10).await.unwrap().is_empty());
    let mcp = bus.groups(&agent).await.unwrap();
    let mcp = mcp
        .iter()
        .find(|g| g.name == keys::mcp_group(&agent))
        .unwrap();
    assert_eq!((mcp.pending, mcp.lag), (0, Some(0)));

    worker.stop().await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn fabric_agents_lists_live_agents_and_sending_to_an_unknown_one_warns() {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let me = unique_agent("coder");
    let percy = unique_agent("percy");
    let worker = start_worker(&url, &percy).await;
    let client = mcp_connect(&url, &["--agent", &me]).await;
    // My own session reads, so I count as served too.
    ok(&call(&client, "fabric_message_receive", json!({"block_ms": 0})).await);

    let listed = ok(&call(&client, "fabric_agents", json!({})).await);
    assert_eq!(listed["you"], me.as_str());
    let agents = listed["agents"].as_array().unwrap();
    let find = |id: &str| {
        agents
            .iter()
            .find(|a| a["agent_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
            .clone()
    };
    let p = find(&percy);
    assert_eq!(p["live"], true, "{p}");
    assert_eq!(p["worker_live"], true);
    let handles: Vec<&str> = p["handles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        handles.contains(&"task") && handles.contains(&"mcp_echo"),
        "{p}"
    );
    assert_eq!(p["workers"][0]["pid"], std::process::id());
    let c = find(&me);
    assert_eq!(
        (c["mcp_live"].clone(), c["live"].clone()),
        (json!(true), json!(true)),
        "{c}"
    );

    let nobody = unique_agent("percyy");
    let sent = ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": nobody, "message_type": "task", "payload": {}}),
    )
    .await);
    assert_eq!(sent["status"], "queued");
    let warning = sent["warning"].as_str().unwrap();
    assert!(
        warning.contains(&format!("agent \"{nobody}\" has no inbox")) && warning.contains(&percy),
        "{warning}"
    );
    let fine = ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": percy, "message_type": "task", "payload": {}}),
    )
    .await);
    assert!(fine.get("warning").is_none(), "{fine}");
    // A tool call retried with its idempotency key queues nothing the second time.
    let args = json!({"to_agent": percy, "message_type": "task", "payload": {"n": 7}, "idempotency_key": "review-7"});
    let first = ok(&call(&client, "fabric_message_send", args.clone()).await);
    let again = ok(&call(&client, "fabric_message_send", args).await);
    assert_eq!(
        (first["status"].clone(), again["status"].clone()),
        (json!("queued"), json!("duplicate"))
    );
    assert_eq!(first["stream_id"], again["stream_id"]);
    assert_eq!(first["message_id"], again["message_id"]);

    // A stopped worker is listed as not live (its types stay its own).
    worker.stop().await;
    let one = ok(&call(&client, "fabric_agents", json!({"agent_id": percy})).await);
    let p = &one["agents"][0];
    assert_eq!(p["worker_live"], false, "{p}");
    assert_eq!(p["workers"][0]["stopped"], true, "{p}");
    client.cancel().await.unwrap();
}

/// A client that records the progress notifications it gets.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ProgressNotificationParam>>>);

impl rmcp::ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.0.lock().unwrap().push(params);
    }
}

#[tokio::test]
async fn a_request_with_a_progress_token_gets_progress_notifications() {
    use rmcp::ServiceExt;
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let me = unique_agent("coder");
    let mut cmd = tokio::process::Command::new(common::FABRIC);
    cmd.args(["mcp", "--agent", &me])
        .env("REDIS_URL", &url)
        .env_remove("FABRIC_AGENT")
        .env("RUST_LOG", "warn");
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .spawn()
        .unwrap();
    let recorder = Recorder::default();
    let client = recorder.clone().serve(transport).await.unwrap();
    let mut meta = RequestMetaObject::default();
    meta.set_progress_token(ProgressToken(NumberOrString::String("wait-1".into())));
    let args = json!({"to_agent": unique_agent("nobody"), "message_type": "task", "payload": {}, "timeout_ms": 2500});
    let mut params = CallToolRequestParams::new("fabric_message_request")
        .with_arguments(args.as_object().unwrap().clone());
    params.meta = Some(meta);
    let r = client.call_tool(params).await.unwrap();
    assert!(tool_error(&r).contains("no reply"));
    let got = recorder.0.lock().unwrap().clone();
    assert!(got.len() >= 2, "{got:?}");
    // (rmcp's client puts a token of its own in the request: the server echoes it.)
    assert!(
        got.iter()
            .all(|p| p.progress_token == got[0].progress_token),
        "{got:?}"
    );
    assert_eq!(got[0].total, Some(2.5));
    assert!(
        got.windows(2).all(|w| w[0].progress <= w[1].progress),
        "{got:?}"
    );
    let text = got[0].message.as_deref().unwrap();
    assert!(
        text.contains("waiting for") && text.contains("of 2.5 s"),
        "{text}"
    );
    client.cancel().await.unwrap();
}
