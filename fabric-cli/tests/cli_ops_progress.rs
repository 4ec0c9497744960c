//! The progress line of long operations (on a terminal only) and bad Redis URLs, with the
//! built `fabric` binary against a real redis-server.

mod common;

use common::{expect_code, fabric, on_a_terminal, stderr, stdout};
use fabric_tests::{RedisServer, init_tracing, unique_agent};
use fabric_worker::keys;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_requeues_and_purges_show_progress_on_a_terminal_only() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    let inbox = keys::inbox(&percy);
    let dead = keys::dead_letters(&inbox);
    let mut conn = redis.async_conn().await;
    let add_dead = |n: usize| {
        let mut pipe = redis::pipe();
        for i in 0..n {
            let data = json!({"id": format!("msg:{i}"), "from_agent": "coder", "to_agent": percy,
                "message_type": "task", "payload": {"i": i}, "timestamp": "2026-11-28T00:00:00"});
            pipe.cmd("XADD")
                .arg(&dead)
                .arg("*")
                .arg("data")
                .arg(data.to_string())
                .arg("dead_reason")
                .arg("permanent_error")
                .arg("dead_stream")
                .arg(&inbox)
                .arg("dead_stream_id")
                .arg(format!("{}-0", i + 1))
                .ignore();
        }
        pipe
    };
    let _: () = add_dead(2500).query_async(&mut conn).await.unwrap();
    let (shown, code) = on_a_terminal(&url, &format!("dead-letters requeue {percy} --all"), "");
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains(&format!("requeued 100 of 2500 dead letters of {percy}")),
        "{shown}"
    );
    assert!(shown.contains("[#########"), "{shown}");
    assert!(
        shown.contains(&format!("requeued 2500 dead letters to {inbox}")),
        "{shown}"
    );
    let len: u64 = redis::cmd("XLEN")
        .arg(&inbox)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 2500);
    // On a pipe, and with --json: nothing but the result.
    let _: () = add_dead(150).query_async(&mut conn).await.unwrap();
    let o = fabric(&url, &["dead-letters", "requeue", &percy, "--all"]);
    expect_code(&o, 0);
    assert_eq!(stderr(&o), "");
    assert_eq!(
        stdout(&o).trim(),
        format!("requeued 150 dead letters to {inbox}")
    );
    let _: () = add_dead(150).query_async(&mut conn).await.unwrap();
    let (shown, code) = on_a_terminal(
        &url,
        &format!("dead-letters requeue {percy} --all --json"),
        "",
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(!shown.contains(" of 150"), "{shown}");

    // A purge of many says what is under way, on a terminal only.
    let _: () = add_dead(1200).query_async(&mut conn).await.unwrap();
    let (shown, code) = on_a_terminal(&url, &format!("dead-letters purge {percy} --yes"), "");
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains(&format!("purging 1200 dead letters of {percy}")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("purged 1200 dead letters of {percy}")),
        "{shown}"
    );
    let _: () = add_dead(1200).query_async(&mut conn).await.unwrap();
    let o = fabric(&url, &["dead-letters", "purge", &percy, "--yes"]);
    expect_code(&o, 0);
    assert_eq!(stderr(&o), "");
}

/// A Redis URL that cannot be one is a usage error (exit 2) that says what is wrong.
#[test]
fn a_bad_redis_url_is_a_usage_error() {
    for (url, why) in [
        ("nope://127.0.0.1", "unknown scheme \"nope\""),
        ("redis://127.0.0.1:99999", "\"99999\" is not a port number"),
        ("127.0.0.1:6379", "it has no scheme"),
        ("redis://127.0.0.1:6379/abc", "the database \"abc\""),
    ] {
        let o = fabric(url, &["status"]);
        expect_code(&o, 2);
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!("error: invalid Redis URL \"{url}\": {why}")),
            "{err}"
        );
        assert!(err.contains("expected e.g. redis://"), "{err}");
    }
    // The password stays masked; with --json the error is JSON.
    let o = fabric("redis://me:hunter2@:6379", &["status", "--json"]);
    expect_code(&o, 2);
    let out = stdout(&o);
    assert!(!out.contains("hunter2") && out.contains("no host"), "{out}");
    let e: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(e["error"]["exit_code"], 2);
}
