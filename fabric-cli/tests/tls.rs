//! The `fabric` command over TLS: the operator CLI and `fabric mcp` take `rediss://` URLs and
//! the `FABRIC_TLS_*` variables, against a TLS-only redis-server that requires client
//! certificates (`--tls-auth-clients yes`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{FABRIC, call, mcp_connect_with_env, ok};
use fabric_tests::{RedisServer, TestPki, init_tracing, unique_agent};
use fabric_worker::prelude::*;
use serde_json::{Value, json};

/// `fabric ARGS` with `REDIS_URL=url` and exactly these TLS variables.
fn fabric_tls(url: &str, args: &[&str], tls: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(FABRIC);
    cmd.args(args)
        .env("REDIS_URL", url)
        .env("RUST_LOG", "error")
        .env_remove("FABRIC_AGENT")
        .env_remove("FABRIC_TLS_CA_FILE")
        .env_remove("FABRIC_TLS_CERT_FILE")
        .env_remove("FABRIC_TLS_KEY_FILE")
        .stdin(Stdio::null());
    for (k, v) in tls {
        cmd.env(k, v);
    }
    cmd.output().expect("run fabric")
}

#[track_caller]
fn expect_code(o: &Output, code: i32) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(code), "stdout: {out}\nstderr: {err}");
    if code == 0 { out } else { err }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fabric_status_and_mcp_work_over_mutual_tls_from_the_environment() {
    init_tracing();
    let pki = TestPki::generate();
    let server = RedisServer::start_tls(&pki, true);
    let url = server.url();
    let agent = unique_agent("tls-status");
    let bus = Bus::builder(&url)
        .tls_ca_file(pki.ca())
        .tls_client_cert(pki.client_cert(), pki.client_key())
        .connect()
        .await
        .unwrap();
    bus.send(Message::new("operator", &agent, "task", json!({"n": 1})))
        .await
        .unwrap();
    let all = [
        ("FABRIC_TLS_CA_FILE", pki.ca()),
        ("FABRIC_TLS_CERT_FILE", pki.client_cert()),
        ("FABRIC_TLS_KEY_FILE", pki.client_key()),
    ];

    // The CLI, configured by the environment alone.
    let out = expect_code(&fabric_tls(&url, &["status", &agent, "--json"], &all), 0);
    let st: Value = serde_json::from_str(&out).expect("status --json prints JSON");
    assert_eq!(st[0]["agent_id"], agent.as_str(), "{st}");
    assert_eq!(st[0]["queue_depth"], 1, "{st}");

    // Without the client certificate the server refuses: Redis unreachable (3), saying why.
    let err = expect_code(&fabric_tls(&url, &["status", &agent], &all[..1]), 3);
    assert!(
        err.contains("refused the TLS connection") && err.contains("FABRIC_TLS_CERT_FILE"),
        "{err}"
    );
    // Half a client identity, or a CA file that is not there: usage errors (2) naming the variable.
    let err = expect_code(&fabric_tls(&url, &["status"], &all[..2]), 2);
    assert!(
        err.contains("FABRIC_TLS_CERT_FILE is set but FABRIC_TLS_KEY_FILE is not"),
        "{err}"
    );
    let missing = pki.dir().join("missing-ca.pem");
    let err = expect_code(
        &fabric_tls(
            &url,
            &["status"],
            &[("FABRIC_TLS_CA_FILE", &missing), all[1], all[2]],
        ),
        2,
    );
    assert!(
        err.contains("FABRIC_TLS_CA_FILE=")
            && err.contains("missing-ca.pem")
            && err.contains("cannot be read"),
        "{err}"
    );
    // `fabric mcp` refuses it at start, before any tool call.
    let err = expect_code(
        &fabric_tls(
            &url,
            &["mcp", "--agent", "coder"],
            &[("FABRIC_TLS_CA_FILE", &missing)],
        ),
        2,
    );
    assert!(err.contains("missing-ca.pem"), "{err}");

    // The MCP server, configured by the same variables, sends and reports over TLS.
    let client = mcp_connect_with_env(&url, &["--agent", &agent], &all).await;
    let sent = ok(&call(
        &client,
        "fabric_message_send",
        json!({"to_agent": agent, "message_type": "task", "payload": {"n": 2}}),
    )
    .await);
    assert_eq!(sent["status"], "queued", "{sent}");
    let status = ok(&call(&client, "fabric_message_queue_status", json!({})).await);
    assert_eq!(status["agent_id"], agent.as_str(), "{status}");
    assert_eq!(status["queue_depth"], 2, "{status}");
    client.cancel().await.unwrap();
}
