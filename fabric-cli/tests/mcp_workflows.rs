//! The workflow tools of `fabric mcp` over stdio: an agent starts a chain across two agents
//! served by workers, and gets its result with `fabric_workflow_status`.

mod common;

use common::{call, mcp_connect, ok, start_worker, tool_error};
use fabric_tests::{RedisServer, init_tracing, unique_agent};
use serde_json::json;

#[tokio::test]
async fn an_agent_starts_a_chain_and_awaits_its_result() {
    init_tracing();
    let redis = RedisServer::start();
    let url = redis.url();
    let me = unique_agent("planner");
    let (a, b) = (unique_agent("wa"), unique_agent("wb"));
    let wa = start_worker(&url, &a).await;
    let wb = start_worker(&url, &b).await;
    let client = mcp_connect(&url, &["--agent", &me]).await;

    let started = ok(&call(
        &client,
        "fabric_workflow_start",
        json!({
            "kind": "chain",
            "steps": [
                {"to_agent": a, "message_type": "mcp_echo", "payload": {"text": "hi"}},
                {"to_agent": b, "message_type": "mcp_echo", "payload": {"stage": 2}}
            ],
            "reply_to_results": true
        }),
    )
    .await);
    assert_eq!(started["status"], "running");
    assert_eq!(started["steps"], 2);
    assert_eq!(started["reply_to"], format!("agent:{me}:results"));
    let id = started["workflow_id"].as_str().unwrap().to_owned();
    let done = ok(&call(
        &client,
        "fabric.workflow.status",
        json!({"workflow_id": id, "wait_seconds": 20}),
    )
    .await);
    assert_eq!(done["status"], "succeeded", "{done}");
    // Step two got step one's reply plus its own payload.
    assert_eq!(
        done["result"],
        json!({
            "echo": {"echo": {"text": "hi"}, "handled_by": a, "stage": 2},
            "handled_by": b
        })
    );
    assert_eq!(done["step"], 1);
    assert_eq!(done["from_agent"], me.as_str());
    // The final reply also reached my results stream.
    let got = ok(&call(
        &client,
        "fabric_message_receive",
        json!({"source": "replies", "block_ms": 2000}),
    )
    .await);
    assert_eq!(got["count"], 1, "{got}");
    assert_eq!(got["messages"][0]["payload"], done["result"]);

    // Clear errors for what an agent gets wrong.
    let e = tool_error(
        &call(
            &client,
            "fabric_workflow_start",
            json!({"kind": "chord", "steps": [{"to_agent": a, "message_type": "mcp_echo"}]}),
        )
        .await,
    );
    assert!(e.contains("needs a callback"), "{e}");
    let e = tool_error(
        &call(
            &client,
            "fabric_workflow_status",
            json!({"workflow_id": "not-an-id"}),
        )
        .await,
    );
    assert!(e.contains("32 lowercase hex digits"), "{e}");
    // Another agent may not look at my workflow.
    let other = mcp_connect(&url, &["--agent", &unique_agent("nosy")]).await;
    let e = tool_error(&call(&other, "fabric_workflow_status", json!({"workflow_id": id})).await);
    assert!(e.contains("access denied"), "{e}");
    wa.stop().await;
    wb.stop().await;
}
