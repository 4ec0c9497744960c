//! `fabric mcp` over stdio, driven by rmcp's own MCP client against a real redis-server.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    FABRIC, blocked_readers, call, mcp_connect, ok, start_worker, text, tool_error, try_call,
};
use fabric_tests::{RedisServer, init_tracing, unique_agent, wait_until_async};
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, JsonObject};
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};

#[tokio::test]
async fn lists_the_tools_and_calls_every_one() {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let me = unique_agent("coder");
    let percy = unique_agent("percy");
    let stop_worker = start_worker(&url, &percy).await;
    let client = mcp_connect(&url, &["--agent", &me]).await;

    // tools/list: ten underscore names, each with a description and both schemas.
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "fabric_agents",
            "fabric_message_acknowledge",
            "fabric_message_peek",
            "fabric_message_publish",
            "fabric_message_queue_status",
            "fabric_message_receive",
            "fabric_message_request",
            "fabric_message_send",
            "fabric_workflow_start",
            "fabric_workflow_status"
        ]
    );
    for t in &tools {
        assert!(
            t.description.is_some() && t.output_schema.is_some(),
            "{}",
            t.name
        );
    }
    let receive = tools
        .iter()
        .find(|t| t.name == "fabric_message_receive")
        .unwrap();
    assert_eq!(
        receive.input_schema["properties"]["block_ms"]["maximum"],
        60000
    );
    assert!(receive.description.as_deref().unwrap().contains("60000"));

    // send (to myself) → receive → acknowledge → queue_status.
    let sent = ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": me, "message_type": "task", "payload": {"task_type": "note", "n": 1}, "priority": "high"}),
    )
    .await);
    assert_eq!(sent["status"], "queued");
    assert!(sent["message_id"].as_str().unwrap().starts_with("msg:"));
    let got = ok(&call(&client, "fabric_message_receive", json!({"block_ms": 2000})).await);
    assert_eq!(got["count"], 1);
    assert_eq!(got["agent_id"], me.as_str());
    let m = &got["messages"][0];
    assert_eq!(m["id"], sent["message_id"]);
    assert_eq!(m["from_agent"], me.as_str());
    assert_eq!(m["priority"], 3);
    assert_eq!(m["payload"]["n"], 1);
    assert_eq!(m["_stream_id"], sent["stream_id"]);
    let status = ok(&call(&client, "fabric_message_queue_status", json!({})).await);
    assert_eq!(status["pending"], 1);
    assert_eq!(status["queue_depth"], 1);
    assert_eq!(status["stream_info"]["length"], 1);
    let acked = ok(&call(
        &client,
        "fabric_message_acknowledge",
        json!({"message_ids": [m["_stream_id"]]}),
    )
    .await);
    assert_eq!(
        acked["acknowledged"],
        json!([{"id": m["_stream_id"], "acked": true}])
    );
    // The dotted spelling of the user's existing clients reaches the same tool.
    let status = ok(&call(
        &client,
        "fabric.message.queue_status",
        json!({"agent_id": me}),
    )
    .await);
    assert_eq!(status["agent_id"], me.as_str());
    assert_eq!(status["pending"], 0);
    assert_eq!(status["queue_depth"], 0);
    // One consumer for all MCP sessions of the agent, in the agent's MCP group.
    assert_eq!(status["consumer_group"], format!("{me}_mcp"));
    let consumers = status["consumers"].as_array().unwrap();
    let names: Vec<&str> = consumers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, [format!("{me}-mcp")], "{status}");

    // publish reaches a subscriber.
    let topic = format!("analytics.{}", unique_agent("t"));
    let rclient = redis::Client::open(url.as_str()).unwrap();
    let mut sub = rclient.get_async_pubsub().await.unwrap();
    sub.subscribe(&topic).await.unwrap();
    let published = ok(&call(
        &client,
        "fabric_message_publish",
        json!({"topic": topic, "message": {"insight": 42}}),
    )
    .await);
    assert_eq!(
        published,
        json!({"topic": topic, "recipients": 1, "published": true})
    );
    let msg = tokio::time::timeout(Duration::from_secs(5), async {
        use futures::StreamExt;
        sub.on_message().next().await
    })
    .await
    .unwrap()
    .unwrap();
    let body: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(body["data"], json!({"insight": 42}));
    assert_eq!(body["from"], me.as_str());
    assert_eq!(body["topic"], topic.as_str());

    // request: a running worker handles it and its reply comes back.
    let reply = ok(&call(
        &client,
        "fabric_message_request",
        json!({"to_agent": percy, "message_type": "mcp_echo", "payload": {"q": "ping"}, "timeout_ms": 10000}),
    )
    .await);
    assert_eq!(reply["payload"]["echo"], json!({"q": "ping"}));
    assert_eq!(reply["payload"]["handled_by"], percy.as_str());
    assert_eq!(reply["from_agent"], percy.as_str());
    assert_eq!(reply["to_agent"], me.as_str());

    // send through MCP with reply_to = my results stream: the worker's reply arrives there.
    ok(&call(
        &client,
        "fabric.message.send",
        json!({"to_agent": percy, "message_type": "mcp_echo", "payload": {"q": "via results"}, "reply_to": format!("agent:{me}:results")}),
    )
    .await);
    let mut conn = redis.async_conn().await;
    let results = format!("agent:{me}:results");
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            let key = results.clone();
            async move {
                redis::cmd("XLEN")
                    .arg(key)
                    .query_async::<u64>(&mut c)
                    .await
                    .unwrap_or(0)
                    == 1
            }
        })
        .await,
        "the reply did not reach {results}"
    );
    let replies = fabric_tests::stream_entries(&mut conn, &results).await;
    let data: Value =
        serde_json::from_str(fabric_tests::entry_field(&replies[0].1, "data").unwrap()).unwrap();
    assert_eq!(data["payload"]["echo"], json!({"q": "via results"}));
    // Anywhere but a stream of mine (here: my inbox) is refused.
    let e = tool_error(
        &call(
            &client,
            "fabric_message_send",
            json!({"to_agent": percy, "message_type": "mcp_echo", "payload": {}, "reply_to": format!("agent:{me}:inbox")}),
        )
        .await,
    );
    assert!(
        e.contains("replies may only go to a stream of the sender"),
        "{e}"
    );

    // a request nobody answers times out with a clear tool error.
    let started = Instant::now();
    let e = tool_error(
        &call(
            &client,
            "fabric_message_request",
            json!({"to_agent": unique_agent("nobody"), "message_type": "task", "payload": {}, "timeout_ms": 300}),
        )
        .await,
    );
    assert!(e.contains("no reply"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    stop_worker.stop().await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_clear_tool_error() {
    let redis = RedisServer::start();
    let me = unique_agent("coder");
    let client = mcp_connect(&redis.url(), &["--agent", &me]).await;
    let big = "x".repeat(1024 * 1024 + 10);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "fabric_message_send",
            json!({"to_agent": "per cy", "message_type": "task", "payload": {}}),
            "invalid argument `to_agent` of fabric_message_send: invalid agent id \"per cy\"",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy:inbox", "message_type": "task", "payload": {}}),
            "`to_agent` of fabric_message_send: invalid agent id",
        ),
        (
            "fabric_message_send",
            json!({"message_type": "task", "payload": {}}),
            "missing required argument `to_agent`",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": "do it"}),
            "expected a JSON object, got a string",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": "{\"a\": 1}"}),
            "pass the object itself",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": [1, 2]}),
            "expected a JSON object, got an array",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": {"blob": big}}),
            "too large",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "has space", "payload": {}}),
            "invalid message type",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": {}, "priority": true}),
            "`priority`",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": 7, "message_type": "task", "payload": {}}),
            "`to_agent` of fabric_message_send: expected a string, got an integer",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": {}, "from_agent": "percy"}),
            "refused: from_agent \"percy\"",
        ),
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": {}, "to": "x"}),
            "unknown argument `to`",
        ),
        (
            "fabric_message_receive",
            json!({"count": "ten"}),
            "expected an integer from 1 to 1000, got a string",
        ),
        (
            "fabric_message_receive",
            json!({"count": 5000}),
            "5000 is out of range",
        ),
        (
            "fabric_message_receive",
            json!({"count": 0}),
            "out of range",
        ),
        (
            "fabric_message_receive",
            json!({"block_ms": 600000}),
            "600000 is out of range; it must be from 0 to 60000",
        ),
        (
            "fabric_message_receive",
            json!({"block_ms": -1}),
            "`block_ms`",
        ),
        (
            "fabric_message_receive",
            json!({"auto_ack": "yes"}),
            "true or false",
        ),
        (
            "fabric_message_receive",
            json!({"agent_id": "percy"}),
            "access denied",
        ),
        (
            "fabric_message_receive",
            json!({"agent_id": "a.b"}),
            "`agent_id` of fabric_message_receive: invalid agent id \"a.b\"",
        ),
        (
            "fabric_message_receive",
            json!({"consumer_group": "bad group"}),
            "invalid consumer group",
        ),
        (
            "fabric_message_acknowledge",
            json!({"message_ids": ["msg:123"]}),
            "invalid stream id \"msg:123\"",
        ),
        (
            "fabric_message_acknowledge",
            json!({"message_ids": "1-0"}),
            "expected an array of strings",
        ),
        (
            "fabric_message_acknowledge",
            json!({"message_ids": []}),
            "is empty",
        ),
        (
            "fabric_message_acknowledge",
            json!({"agent_id": "percy", "message_ids": ["1-0"]}),
            "access denied",
        ),
        (
            "fabric_message_publish",
            json!({"topic": "has space", "message": {}}),
            "invalid topic",
        ),
        (
            "fabric_message_publish",
            json!({"topic": "t", "message": 3}),
            "expected a JSON object, got an integer",
        ),
        (
            "fabric_message_queue_status",
            json!({"agent_id": 42}),
            "expected a string, got an integer",
        ),
        (
            "fabric_message_queue_status",
            json!({"agent_id": "percy"}),
            "access denied",
        ),
        (
            "fabric_message_request",
            json!({"to_agent": "percy", "message_type": "task", "payload": {}, "timeout_ms": 0}),
            "`timeout_ms`",
        ),
        (
            "fabric_message_request",
            json!({"to_agent": "percy", "message_type": "task", "payload": {}, "timeout_ms": 999999}),
            "out of range",
        ),
    ];
    for (tool, args, expected) in cases {
        let r = call(&client, tool, args.clone()).await;
        let e = tool_error(&r);
        assert!(
            e.contains(expected),
            "{tool} {args}: expected {expected:?} in {e:?}"
        );
    }
    // An unknown tool is a protocol error, not a crash.
    let e = try_call(&client, "fabric_message_nope", json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown tool"), "{e}");
    // The server is still fine.
    ok(&call(&client, "fabric_message_queue_status", json!({})).await);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn blocking_receive_ends_at_block_ms_and_on_cancel() {
    let redis = RedisServer::start_own(false); // counts blocked clients: not shared
    let url = redis.url();
    let me = unique_agent("coder");
    let client = mcp_connect(&url, &["--agent", &me]).await;

    let started = Instant::now();
    let got = ok(&call(&client, "fabric_message_receive", json!({"block_ms": 700})).await);
    let took = started.elapsed();
    assert_eq!(got["count"], 0);
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(4),
        "took {took:?}"
    );

    // A 60 s blocking read, cancelled by the client after 300 ms.
    let mut args = JsonObject::new();
    args.insert("block_ms".into(), json!(60000));
    let req = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("fabric_message_receive").with_arguments(args),
    ));
    let handle = client
        .send_cancellable_request(req, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let u = url.clone();
    assert!(
        wait_until_async(Duration::from_secs(5), || {
            let u = u.clone();
            async move { blocked_readers(&u) == 1 }
        })
        .await,
        "the receive never blocked in Redis"
    );
    handle.cancel(Some("test".into())).await.unwrap();
    let u = url.clone();
    assert!(
        wait_until_async(Duration::from_secs(3), || {
            let u = u.clone();
            async move { blocked_readers(&u) == 0 }
        })
        .await,
        "the blocking read was still running in Redis after the cancel"
    );
    // A message sent now is not swallowed by the abandoned read: the next receive gets it.
    ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": me, "message_type": "task", "payload": {"after": "cancel"}}),
    )
    .await);
    let got = ok(&call(&client, "fabric_message_receive", json!({"block_ms": 2000})).await);
    assert_eq!(got["count"], 1);
    assert_eq!(got["messages"][0]["payload"]["after"], "cancel");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn redis_unreachable_is_a_tool_error_not_a_crash() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let client = mcp_connect(&url, &["--agent", "coder"]).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 10);
    for (tool, args) in [
        (
            "fabric_message_send",
            json!({"to_agent": "percy", "message_type": "task", "payload": {}}),
        ),
        ("fabric_message_receive", json!({"block_ms": 1000})),
        ("fabric_message_queue_status", json!({})),
    ] {
        let started = Instant::now();
        let e = tool_error(&call(&client, tool, args).await);
        assert!(e.contains("Redis is unreachable"), "{e}");
        assert!(e.contains(&url), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Bad input is reported as such, Redis or not.
    let e = tool_error(
        &call(
            &client,
            "fabric_message_send",
            json!({"to_agent": "per cy", "message_type": "task", "payload": {}}),
        )
        .await,
    );
    assert!(e.starts_with("invalid argument `to_agent`"), "{e}");
    let e = tool_error(
        &call(
            &client,
            "fabric_message_receive",
            json!({"block_ms": 61000}),
        )
        .await,
    );
    assert!(e.contains("out of range"), "{e}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn admin_may_act_for_any_agent() {
    let redis = RedisServer::start();
    let percy = unique_agent("percy");
    let client = mcp_connect(&redis.url(), &["--admin"]).await;
    ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": percy, "from_agent": "ops", "message_type": "task", "payload": {"x": 1}}),
    )
    .await);
    let got = ok(&call(
        &client,
        "fabric_message_receive",
        json!({"agent_id": percy, "block_ms": 0}),
    )
    .await);
    assert_eq!(got["count"], 1);
    assert_eq!(got["messages"][0]["from_agent"], "ops");
    let e = tool_error(&call(&client, "fabric_message_receive", json!({})).await);
    assert!(e.contains("agent_id is required"), "{e}");
    client.cancel().await.unwrap();
}

#[test]
fn stdio_without_an_identity_is_a_usage_error() {
    let out = std::process::Command::new(FABRIC)
        .arg("mcp")
        .env_remove("FABRIC_AGENT")
        .env_remove("FABRIC_ADMIN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: fabric mcp needs to know who is calling"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let _ = text;
}
