//! How the `fabric` binary fails: consistent exit codes for an agent that does not exist,
//! a wrong password told apart from an unreachable server, errors as JSON with `--json`,
//! and logs without terminal colour codes when they go to a file or a pipe.

mod common;

use std::process::{Command, Stdio};

use common::{FABRIC, expect_code, fabric};
use fabric_tests::{RedisServer, SecureRedis, init_tracing, unique_agent};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every command about one agent says "no inbox" with exit code 4 for an id that has none,
/// in words and, with `--json`, as a JSON object on stdout.
#[test]
fn no_such_agent_is_exit_4_everywhere_and_json_with_json() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let ghost = unique_agent("ghost");
    for args in [
        vec!["status", ghost.as_str()],
        vec!["pending", ghost.as_str()],
        vec!["dead-letters", "list", ghost.as_str()],
        vec!["dead-letters", "requeue", ghost.as_str(), "--all"],
        vec!["dead-letters", "purge", ghost.as_str(), "--yes"],
        vec!["pause", ghost.as_str()],
        vec!["resume", ghost.as_str()],
        vec!["show", ghost.as_str(), "1-1"],
        vec!["show", ghost.as_str(), "msg:1"],
        vec!["retries", "list", ghost.as_str()],
        vec!["retries", "run", ghost.as_str(), "1-1"],
        vec!["retries", "delete", ghost.as_str(), "1-1"],
        vec!["dead-letters", "retry", ghost.as_str(), "1-1"],
        vec!["dead-letters", "delete", ghost.as_str(), "1-1"],
        vec!["pending", "claim", ghost.as_str(), "1-1", "--to", "c"],
        vec!["pending", "ack", ghost.as_str(), "1-1", "--yes"],
        vec!["status", ghost.as_str(), "--watch"],
    ] {
        let o = fabric(&url, &args);
        expect_code(&o, 4);
        let err = text(&o.stderr);
        assert!(
            err.starts_with("error: no inbox for ") || err.contains("(no inbox)"),
            "{args:?}: {err}"
        );
        // The same with --json: the error is one JSON object on stdout.
        let mut with_json = args.clone();
        with_json.push("--json");
        let o = fabric(&url, &with_json);
        expect_code(&o, 4);
        let out = text(&o.stdout);
        let last = out.lines().last().unwrap_or_default();
        let v: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{args:?} --json: stdout is not JSON ({e}): {out}"));
        assert_eq!(v["error"]["exit_code"], 4, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&ghost)),
            "{v}"
        );
    }
    // A usage error with --json is JSON too (exit 2).
    let o = fabric(
        &url,
        &["dead-letters", "list", &ghost, "--count", "0", "--json"],
    );
    expect_code(&o, 2);
    let v: Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON error");
    assert_eq!(v["error"]["exit_code"], 2, "{v}");

    // An agent that exists lists its (zero) dead letters and succeeds.
    let real = unique_agent("real");
    let o = fabric(&url, &["send", &real, "{}", "--from", "coder"]);
    expect_code(&o, 0);
    let o = fabric(&url, &["dead-letters", "list", &real]);
    expect_code(&o, 0);
    assert!(
        text(&o.stdout).contains("no dead letters"),
        "{}",
        text(&o.stdout)
    );

    // pause / resume: said in words and JSON, shown by status.
    let o = fabric(&url, &["pause", &real]);
    expect_code(&o, 0);
    assert!(
        text(&o.stdout).starts_with(&format!("paused {real}")),
        "{}",
        text(&o.stdout)
    );
    let o = fabric(&url, &["status", &real]);
    expect_code(&o, 0);
    assert!(
        text(&o.stdout).contains(&format!("{real} (paused)")),
        "{}",
        text(&o.stdout)
    );
    let o = fabric(&url, &["status", &real, "--json"]);
    let v: Value = serde_json::from_str(&text(&o.stdout)).expect("status JSON");
    assert_eq!(v[0]["paused"], true, "{v}");
    let o = fabric(&url, &["pause", &real, "--json"]);
    let v: Value = serde_json::from_str(&text(&o.stdout)).expect("pause JSON");
    assert_eq!(
        (v["paused"].clone(), v["changed"].clone()),
        (true.into(), false.into())
    );
    let o = fabric(&url, &["resume", &real]);
    expect_code(&o, 0);
    assert!(
        text(&o.stdout).starts_with(&format!("resumed {real}")),
        "{}",
        text(&o.stdout)
    );
    let o = fabric(&url, &["status", &real]);
    assert!(!text(&o.stdout).contains("(paused)"), "{}", text(&o.stdout));
}

/// A wrong password is exit code 6 and says to check the credentials, not to start Redis;
/// an unreachable server stays exit code 3 with its own hint.
#[test]
fn wrong_password_is_told_apart_from_unreachable() {
    init_tracing();
    let redis = SecureRedis::start(&[], false);
    let wrong = redis
        .server
        .url_as(fabric_worker::acl::ADMIN_USER, "not-the-password");
    let o = fabric(&wrong, &["status"]);
    expect_code(&o, 6);
    let err = text(&o.stderr);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("start redis-server"), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password leaked: {err}"
    );

    // No password at all where one is required (NOAUTH) is the same case.
    let anonymous = format!("redis://127.0.0.1:{}", redis.server.port());
    let o = fabric(&anonymous, &["status", "--json"]);
    expect_code(&o, 6);
    let v: Value = serde_json::from_str(text(&o.stdout).trim()).expect("JSON error");
    assert_eq!(v["error"]["exit_code"], 6, "{v}");

    // Nothing listening: exit 3, and the hint is about reaching Redis.
    let port = redis.server.port();
    drop(redis);
    let o = fabric(&format!("redis://127.0.0.1:{port}"), &["status"]);
    expect_code(&o, 3);
    assert!(
        text(&o.stderr).contains("start redis-server"),
        "{}",
        text(&o.stderr)
    );
}

/// Logs written to a pipe (as to a file) carry no ANSI colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let agent = unique_agent("plain");
    let o = Command::new(FABRIC)
        .args(["send", &agent, "{}", "--from", "coder"])
        .env("REDIS_URL", redis.url())
        .env_remove("FABRIC_AGENT")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .expect("run fabric");
    expect_code(&o, 0);
    let err = text(&o.stderr);
    assert!(
        err.contains("DEBUG") && err.contains("message queued"),
        "expected debug logs on stderr, got: {err}"
    );
    assert!(!err.contains('\u{1b}'), "ANSI escape in piped logs: {err}");
}
