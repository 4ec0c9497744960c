//! The operator commands, run as the built `fabric` binary against a real redis-server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{FABRIC, expect_code, fabric, stderr, stdout};
use fabric_tests::{RedisServer, init_tracing, unique_agent, wait_until_async};
use fabric_worker::bus::ReceiveOptions;
use fabric_worker::keys;
use fabric_worker::prelude::*;
use serde_json::{Value, json};

#[handler(message_type = "cli_echo")]
async fn cli_echo(payload: Value) -> Result<Value, HandlerError> {
    Ok(json!({"echo": payload}))
}

#[handler(message_type = "cli_fail")]
async fn cli_fail() -> Result<(), HandlerError> {
    Err(HandlerError::permanent("this task always fails"))
}

/// Starts an in-process worker for `agent` (stop it with `RunningWorker::stop`).
async fn start_worker(url: &str, agent: &str) -> fabric_tests::RunningWorker {
    fabric_tests::RunningWorker::start(
        Worker::builder(agent)
            .url(url)
            .block(Duration::from_millis(300)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_send_tail_and_pending() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");

    // Nothing there yet: exit 4 with one clear line.
    let o = fabric(&url, &["status"]);
    expect_code(&o, 4);
    assert!(
        stderr(&o).starts_with("error: no agent inboxes found"),
        "{}",
        stderr(&o)
    );

    // send, human and JSON.
    let o = fabric(
        &url,
        &[
            "send",
            &percy,
            r#"{"task_type":"review","pr":1}"#,
            "--from",
            "coder",
        ],
    );
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("queued msg:"), "{out}");
    assert!(out.contains(&format!("for {percy} as ")), "{out}");
    assert!(out.contains("(priority normal)"), "{out}");
    let o = fabric(
        &url,
        &[
            "send",
            &percy,
            r#"{"x":2}"#,
            "--type",
            "event",
            "--priority",
            "urgent",
            "--header",
            "trace=abc",
            "--json",
        ],
    );
    expect_code(&o, 0);
    let receipt: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(receipt["status"], "queued");
    assert_eq!(receipt["to_agent"], percy.as_str());

    // status: discovered by SCAN, as a table and as JSON.
    let o = fabric(&url, &["status"]);
    expect_code(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("AGENT"), "{out}");
    assert!(
        lines[0].contains("DEPTH")
            && lines[0].contains("OLDEST PENDING")
            && lines[0].contains("DEAD")
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..4],
        [percy.as_str(), &keys::default_group(&percy), "2", "0"],
        "{out}"
    );
    let o = fabric(&url, &["status", &percy, "--json"]);
    expect_code(&o, 0);
    let st: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(st[0]["queue_depth"], 2);
    assert_eq!(st[0]["agent_id"], percy.as_str());
    let o = fabric(&url, &["status", &percy, "nobody-here"]);
    expect_code(&o, 4);
    assert!(stdout(&o).contains("(no inbox)"));
    assert!(
        stderr(&o).contains("no inbox for nobody-here"),
        "{}",
        stderr(&o)
    );

    // tail from the start reads without consuming.
    let o = fabric(&url, &["tail", &percy, "--from-start", "--limit", "2"]);
    expect_code(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains(&format!("coder -> {percy}  task  normal")),
        "{out}"
    );
    assert!(
        lines[1].contains(&format!("operator -> {percy}  event  urgent  {{\"x\":2}}")),
        "{out}"
    );
    let o = fabric(
        &url,
        &["tail", &percy, "--from-start", "--limit", "2", "--json"],
    );
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[1]["_stream_id"], receipt["stream_id"]);
    assert_eq!(lines[1]["_headers"]["trace"], "abc");
    let bus = Bus::connect(url.clone()).await.unwrap();
    let st = bus.queue_status(&percy, None).await.unwrap();
    assert_eq!(
        (st.queue_depth, st.pending),
        (2, 0),
        "tail consumed something"
    );

    // tail live: a message sent after it started shows up.
    let mut child = Command::new(FABRIC)
        .args(["tail", &percy, "--json", "--limit", "1"])
        .env("REDIS_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for its "watching …" line so the send comes after the tail started.
    let mut err_line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut err_line)
        .unwrap();
    assert!(err_line.starts_with("watching agent:"), "{err_line}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = bus
        .send(Message::new(
            "coder",
            &percy,
            "event",
            json!({"live": true}),
        ))
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(line["_stream_id"], sent.stream_id);
    assert_eq!(line["payload"]["live"], true);

    // pending: deliver without acknowledging.
    let o = fabric(&url, &["pending", &percy]);
    expect_code(&o, 0);
    assert!(
        stdout(&o).starts_with("nothing pending in"),
        "{}",
        stdout(&o)
    );
    let got = bus
        .receive(
            &percy,
            ReceiveOptions::default().count(2).consumer("ops-console"),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let o = fabric(&url, &["pending", &percy]);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("STREAM ID"), "{out}");
    assert!(
        out.contains(&format!("{}  ops-console", got[0].stream_id)),
        "{out}"
    );
    let o = fabric(&url, &["pending", &percy, "--json"]);
    let p: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(p.as_array().unwrap().len(), 2);
    assert_eq!(p[0]["consumer"], "ops-console");
    assert_eq!(p[0]["deliveries"], 1);
    let o = fabric(&url, &["status", &percy]);
    let out = stdout(&o);
    assert!(out.contains("ops-console (idle "), "{out}");
    assert!(out.contains("2 pending)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_and_dead_letters() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    let stop = start_worker(&url, &percy).await;

    // send --wait prints the reply.
    let o = fabric(
        &url,
        &[
            "send",
            &percy,
            r#"{"q":"ping"}"#,
            "--type",
            "cli_echo",
            "--wait",
            "10",
        ],
    );
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("reply from {percy} to msg:")),
        "{out}"
    );
    assert!(out.contains("\"q\": \"ping\""), "{out}");
    let o = fabric(
        &url,
        &[
            "send",
            &percy,
            r#"{"q":"ping"}"#,
            "--type",
            "cli_echo",
            "--wait",
            "10",
            "--json",
        ],
    );
    expect_code(&o, 0);
    let reply: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(reply["payload"]["echo"], json!({"q": "ping"}));
    // No worker for that agent: exit 5.
    let nobody = unique_agent("nobody");
    let o = fabric(&url, &["send", &nobody, "{}", "--wait", "0.3"]);
    expect_code(&o, 5);
    assert!(
        stderr(&o).starts_with("error: no reply to request"),
        "{}",
        stderr(&o)
    );

    // A message that fails for good becomes a dead letter.
    let o = fabric(&url, &["dead-letters", "list", &percy]);
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), format!("no dead letters for {percy}"));
    let o = fabric(&url, &["send", &percy, "{}", "--type", "cli_fail"]);
    expect_code(&o, 0);
    let bus = Bus::connect(url.clone()).await.unwrap();
    assert!(
        common::dead_letters_reach(&bus, &percy, 1).await,
        "no dead letter appeared"
    );
    let o = fabric(&url, &["dead-letters", "list", &percy]);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("DEAD ID"), "{out}");
    assert!(out.contains("permanent_error"), "{out}");
    assert!(out.contains("cli_fail"), "{out}");
    assert!(out.contains("this task always fails"), "{out}");
    let o = fabric(&url, &["dlq", "list", &percy, "--json"]);
    let dead: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let dead_id = dead[0]["dead_id"].as_str().unwrap().to_owned();
    assert_eq!(dead[0]["reason"], "permanent_error");

    // requeue: an unknown id is "not found"; the real one goes back (and fails again).
    let o = fabric(&url, &["dead-letters", "requeue", &percy, "1-1"]);
    expect_code(&o, 4);
    assert!(
        stdout(&o).starts_with("requeued 0 dead letters"),
        "{}",
        stdout(&o)
    );
    let o = fabric(&url, &["dead-letters", "requeue", &percy, &dead_id]);
    expect_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        format!("requeued 1 dead letter to agent:{percy}:inbox")
    );
    let p = percy.clone();
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let (bus, p, old) = (bus.clone(), p.clone(), dead_id.clone());
            async move {
                bus.dead_letters(&p, 10)
                    .await
                    .is_ok_and(|d| d.len() == 1 && d[0].dead_id != old)
            }
        })
        .await,
        "the requeued message was not handled (and dead-lettered) again"
    );
    let o = fabric(&url, &["status", &percy, "--json"]);
    let st: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(st[0]["dead_letters"], 1);

    // purge needs --yes.
    let o = fabric(&url, &["dead-letters", "purge", &percy]);
    expect_code(&o, 2);
    assert!(
        stderr(&o).contains("run again with --yes"),
        "{}",
        stderr(&o)
    );
    let o = fabric(&url, &["dead-letters", "purge", &percy, "--yes"]);
    expect_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        format!("purged 1 dead letter of {percy}")
    );
    let o = fabric(
        &url,
        &["dead-letters", "requeue", &percy, "--all", "--json"],
    );
    expect_code(&o, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()["requeued"],
        0
    );
    stop.stop().await;
}

#[test]
fn redis_unreachable_usage_errors_and_help() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    for args in [
        vec!["status"],
        vec!["status", "percy"],
        vec!["send", "percy", "{}"],
        vec!["tail", "percy"],
        vec!["pending", "percy"],
        vec!["dead-letters", "list", "percy"],
    ] {
        let o = fabric(&url, &args);
        expect_code(&o, 3);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("error: cannot connect to Redis at {url}")),
            "{args:?}: {err}"
        );
    }
    // --redis-url wins over REDIS_URL.
    let o = fabric("redis://127.0.0.1:1", &["status", "--redis-url", &url]);
    assert!(stderr(&o).contains(&url));

    for (args, expected) in [
        (
            vec!["status", "bad id"],
            "error: invalid agent id \"bad id\"",
        ),
        (
            vec!["send", "percy", "[1]"],
            "error: the payload must be a JSON object",
        ),
        (
            vec!["send", "percy", "{}", "--priority", "meh"],
            "error: invalid priority",
        ),
        (
            vec!["tail", "percy", "--after", "xyz"],
            "error: --after: invalid stream id \"xyz\"",
        ),
        (
            vec!["mcp", "--tokens-file", "t.json"],
            "error: token, JWT and credentials options apply to --http only",
        ),
        (
            vec![
                "mcp",
                "--http",
                "0.0.0.0:0",
                "--tokens-file",
                "/nonexistent/t.json",
            ],
            "error: cannot read tokens file",
        ),
    ] {
        let o = fabric(&url, &args);
        expect_code(&o, 2);
        assert!(stderr(&o).starts_with(expected), "{args:?}: {}", stderr(&o));
    }
    // clap's own usage errors exit 2 too.
    expect_code(&fabric(&url, &["frobnicate"]), 2);
    expect_code(&fabric(&url, &["dead-letters", "requeue", "percy"]), 2);

    let o = fabric(&url, &["--help"]);
    expect_code(&o, 0);
    let help = stdout(&o);
    for needle in [
        "mcp",
        "status",
        "send",
        "tail",
        "pending",
        "dead-letters",
        "Exit codes",
        "REDIS_URL",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    let o = fabric(&url, &["mcp", "--help"]);
    assert!(stdout(&o).contains("claude mcp add"), "{}", stdout(&o));
}

/// Fields any sender controls cannot rewrite the operator's terminal: `tail` and
/// `dead-letters list` show control characters as escapes.
#[tokio::test]
async fn escape_sequences_in_messages_are_shown_not_obeyed() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    let mut conn = redis.async_conn().await;
    let evil = "\u{1b}[2J\u{1b}[31mOWNED\r\u{7}";
    // A valid envelope whose timestamp and payload carry escapes, and an invalid entry.
    let data = json!({
        "id": "msg:1", "from_agent": "coder", "to_agent": percy, "message_type": "task",
        "payload": {"note": evil}, "timestamp": evil, "priority": 2, "ttl_seconds": 3600,
    })
    .to_string();
    for d in [data.as_str(), evil] {
        let _: String = redis::cmd("XADD")
            .arg(keys::inbox(&percy))
            .arg("*")
            .arg("data")
            .arg(d)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A dead letter whose error text carries them too.
    let _: String = redis::cmd("XADD")
        .arg(keys::dead_letters(&keys::inbox(&percy)))
        .arg("*")
        .arg("data")
        .arg(&data)
        .arg("dead_reason")
        .arg("permanent_error")
        .arg("dead_error")
        .arg(evil)
        .arg("dead_at")
        .arg(evil)
        .query_async(&mut conn)
        .await
        .unwrap();
    for args in [
        vec!["tail", percy.as_str(), "--from-start", "--limit", "2"],
        vec![
            "tail",
            percy.as_str(),
            "--from-start",
            "--limit",
            "2",
            "--full",
        ],
        vec!["dead-letters", "list", percy.as_str()],
    ] {
        let o = fabric(&url, &args);
        expect_code(&o, 0);
        let out = &o.stdout;
        assert!(
            !out.iter().any(|b| matches!(b, 0x1b | b'\r' | 0x07)),
            "{args:?} printed raw control characters: {:?}",
            String::from_utf8_lossy(out)
        );
        assert!(stdout(&o).contains("OWNED"), "{}", stdout(&o));
    }
}

/// `fabric mcp --http` refuses configurations that would let the wrong callers in.
#[test]
fn mcp_http_refuses_weak_credentials_and_loose_jwts() {
    let dir =
        std::env::temp_dir().join(format!("fabric-cli-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret.key");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-jwt-secret").unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["mcp", "--http", "127.0.0.1:0"];
        all.extend_from_slice(args);
        fabric("redis://127.0.0.1:1", &all)
    };
    // JWTs without an audience: any service's token would do.
    let o = run(&["--jwt-hs256-secret-file", secret.to_str().unwrap()]);
    expect_code(&o, 2);
    assert!(
        stderr(&o).contains("--jwt-audience AUD is required"),
        "{}",
        stderr(&o)
    );
    // A token listed twice (a JSON object with the same key twice), and a guessable one.
    let tokens = dir.join("tokens.json");
    let t = format!("tok-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&tokens, format!(r#"{{"{t}": "percy", "{t}": "coder"}}"#)).unwrap();
    let o = run(&["--tokens-file", tokens.to_str().unwrap()]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("listed twice"), "{}", stderr(&o));
    std::fs::write(
        &tokens,
        r#"{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa": "percy"}"#,
    )
    .unwrap();
    let o = run(&["--tokens-file", tokens.to_str().unwrap()]);
    expect_code(&o, 2);
    assert!(stderr(&o).contains("too easy to guess"), "{}", stderr(&o));
    // A tokens file others can read: the server starts, and says so loudly.
    std::fs::write(&tokens, format!(r#"{{"{t}": "percy"}}"#)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new(FABRIC)
        .args([
            "mcp",
            "--http",
            "127.0.0.1:0",
            "--tokens-file",
            tokens.to_str().unwrap(),
        ])
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.contains("other users can read it") && first.contains("chmod 600"),
        "{first}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fabric send --idempotency-key`: the second send with the key queues nothing.
#[tokio::test]
async fn send_with_an_idempotency_key_queues_once() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    let args = [
        "send",
        percy.as_str(),
        "{}",
        "--idempotency-key",
        "nightly-42",
        "--json",
    ];
    let first: Value = serde_json::from_str(&stdout(&fabric(&url, &args))).unwrap();
    let again: Value = serde_json::from_str(&stdout(&fabric(&url, &args))).unwrap();
    assert_eq!(first["status"], "queued");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(first["stream_id"], again["stream_id"]);
    let o = fabric(
        &url,
        &[
            "send",
            percy.as_str(),
            "{}",
            "--idempotency-key",
            "nightly-42",
        ],
    );
    expect_code(&o, 0);
    assert!(stdout(&o).starts_with("already sent"), "{}", stdout(&o));
    let mut conn = redis.async_conn().await;
    let len: u64 = redis::cmd("XLEN")
        .arg(keys::inbox(&percy))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 1);
}

/// On a terminal, `fabric send --wait` says what it is waiting for while it waits (a pty
/// from `script`, so that stderr is a terminal).
#[tokio::test]
async fn send_wait_shows_progress_on_a_terminal() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let nobody = unique_agent("nobody");
    let line = format!("{FABRIC} send {nobody} '{{}}' --wait 2.5");
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("REDIS_URL", &url)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux runs the command on a pseudo-terminal");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(5), "no reply is exit 5: {out}");
    assert!(
        out.contains(&format!("waiting for {nobody}'s reply")) && out.contains("of 2.5 s"),
        "{out}"
    );
    // Not on a terminal (a pipe): no progress line.
    let o = fabric(&url, &["send", &nobody, "{}", "--wait", "1"]);
    assert!(!stderr(&o).contains("waiting for"), "{}", stderr(&o));
}
