//! Helpers shared by the `fabric` tests: running the binary, MCP clients, tool calls.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fabric_worker::prelude::*;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};

pub(crate) type Client = RunningService<RoleClient, ()>;

/// The built `fabric` binary.
pub(crate) const FABRIC: &str = env!("CARGO_BIN_EXE_fabric");

/// Runs `fabric ARGS` against `url` (no `FABRIC_AGENT` inherited) and waits for it.
pub(crate) fn fabric(url: &str, args: &[&str]) -> Output {
    Command::new(FABRIC)
        .args(args)
        .env("REDIS_URL", url)
        .env_remove("FABRIC_AGENT")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("run fabric")
}

/// Starts `fabric mcp ARGS` against `redis_url` and connects an MCP client to it over stdio.
pub(crate) async fn mcp_connect(redis_url: &str, args: &[&str]) -> Client {
    mcp_connect_with_env(redis_url, args, &[]).await
}

/// [`mcp_connect`] with extra environment variables.
pub(crate) async fn mcp_connect_with_env(
    redis_url: &str,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
) -> Client {
    use rmcp::ServiceExt;
    let mut cmd = tokio::process::Command::new(FABRIC);
    cmd.arg("mcp")
        .args(args)
        .env("REDIS_URL", redis_url)
        .env_remove("FABRIC_AGENT")
        .env_remove("FABRIC_ADMIN")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fabric mcp");
    ().serve(transport)
        .await
        .expect("MCP handshake with fabric mcp")
}

/// The handler the in-process worker runs: echoes the payload back.
#[handler(message_type = "mcp_echo")]
async fn mcp_echo(ctx: Context, payload: Value) -> Result<Value, HandlerError> {
    Ok(json!({"echo": payload, "handled_by": ctx.agent()}))
}

/// Starts an in-process worker for `agent` (stop it with `RunningWorker::stop`).
pub(crate) async fn start_worker(url: &str, agent: &str) -> fabric_tests::RunningWorker {
    fabric_tests::RunningWorker::start(
        Worker::builder(agent)
            .url(url)
            .block(Duration::from_millis(300)),
    )
    .await
}

/// Calls a tool; panics on a protocol error (not on a tool error).
pub(crate) async fn call(client: &Client, name: &str, args: Value) -> CallToolResult {
    try_call(client, name, args)
        .await
        .unwrap_or_else(|e| panic!("{name}: protocol error {e}"))
}

pub(crate) async fn try_call(
    client: &Client,
    name: &str,
    args: Value,
) -> Result<CallToolResult, rmcp::ServiceError> {
    let args: JsonObject = match args {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    };
    client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args))
        .await
}

/// The structured content of a successful call.
pub(crate) fn ok(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "tool error: {}", text(r));
    r.structured_content.clone().expect("structured content")
}

/// The text of a result.
pub(crate) fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The error text of a failed call.
pub(crate) fn tool_error(r: &CallToolResult) -> String {
    assert_eq!(
        r.is_error,
        Some(true),
        "expected a tool error, got {:?}",
        r.structured_content
    );
    text(r)
}

/// How many clients are blocked in `XREADGROUP` right now.
pub(crate) fn blocked_readers(url: &str) -> usize {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    list.lines()
        .filter(|l| {
            l.contains("cmd=xreadgroup")
                && l.split(' ')
                    .any(|kv| kv.starts_with("flags=") && kv.contains('b'))
        })
        .count()
}

// The helpers of the operator-command tests (cli_ops*.rs).

/// What a command wrote on stdout.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a command wrote on stderr.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Checks the exit code, showing both outputs when it is not the one expected.
#[track_caller]
pub(crate) fn expect_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Whether `fabric show`'s text has the row `key  value`.
pub(crate) fn has_row(out: &str, key: &str, value: &str) -> bool {
    out.lines().any(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with("  ") && rest.trim() == value)
    })
}

/// The JSON a successful command printed.
#[track_caller]
pub(crate) fn json_of(o: &Output) -> Value {
    expect_code(o, 0);
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Runs `fabric ARGS` on a pseudo-terminal (`script` from util-linux), feeding it `input`;
/// returns what the terminal showed and the exit code.
pub(crate) fn on_a_terminal(url: &str, args: &str, input: &str) -> (String, Option<i32>) {
    let mut child = Command::new("script")
        .args(["-qec", &format!("{FABRIC} {args}"), "/dev/null"])
        .env("REDIS_URL", url)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux runs the command on a pseudo-terminal");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write the input");
    let o = child.wait_with_output().expect("wait for script");
    drop(stdin);
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        o.status.code(),
    )
}

/// Waits up to 10 s until `agent` has exactly `n` dead letters (read through `bus`).
pub(crate) async fn dead_letters_reach(bus: &Bus, agent: &str, n: usize) -> bool {
    fabric_tests::wait_until_async(Duration::from_secs(10), move || async move {
        bus.dead_letters(agent, 10)
            .await
            .is_ok_and(|d| d.len() == n)
    })
    .await
}
