//! `fabric workers`: the worker processes of each agent, live, stopped or gone, with what
//! they handle, as a table and as JSON; an agent nobody serves is exit code 4.

mod common;

use std::time::Duration;

use common::fabric;
use fabric_tests::{RedisServer, init_tracing, unique_agent};
use fabric_worker::prelude::*;
use serde_json::Value;

#[handler(message_type = "workers_probe")]
async fn probe() -> Result<(), HandlerError> {
    Ok(())
}

/// Released by the test: a message its handler holds is in flight meanwhile.
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[handler(message_type = "workers_hold")]
async fn hold() -> Result<(), HandlerError> {
    RELEASE.notified().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_live_and_stopped_workers_with_their_handlers() {
    init_tracing();
    let server = RedisServer::start();
    let url = server.url();
    let agent = unique_agent("wk");
    let worker = fabric_tests::RunningWorker::start(
        Worker::builder(&agent)
            .url(&url)
            .block(Duration::from_millis(300)),
    )
    .await;
    // The worker registers before its first read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = fabric(&url, &["workers", &agent]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("AGENT"), "{out}");
    assert!(lines[1].starts_with(&format!("{agent}  live")), "{out}");
    assert!(lines[1].contains("workers_probe"), "{out}");
    assert!(lines[1].contains(&std::process::id().to_string()), "{out}");
    assert!(lines[0].contains("IN FLIGHT"), "{out}");

    // A message being handled shows in the record's in_flight from the next refresh on (every
    // 10 s).
    let bus = Bus::connect(&url).await.unwrap();
    bus.send(Message::new(
        "tester",
        &agent,
        "workers_hold",
        serde_json::json!({}),
    ))
    .await
    .unwrap();
    let in_flight = |url: &str| {
        let o = fabric(url, &["--json", "workers", &agent]);
        let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        rows.first().and_then(|r| r["in_flight"].as_u64())
    };
    assert!(
        fabric_tests::wait_until(Duration::from_secs(15), || in_flight(&url) == Some(1)),
        "the held message never showed as in flight: {:?}",
        in_flight(&url)
    );
    RELEASE.notify_waiters();

    // Stopped gracefully: its last record says nothing is in flight.
    worker.stop().await;
    let o = fabric(&url, &["--json", "workers", &agent]);
    assert_eq!(o.status.code(), Some(0));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["agent"], agent.as_str());
    assert_eq!(rows[0]["state"], "stopped");
    assert_eq!(rows[0]["in_flight"], 0, "{rows:?}");
    assert_eq!(rows[0]["pid"], std::process::id());
    assert!(
        rows[0]["message_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "workers_probe")
    );

    // Nobody ever served this one: not found (exit 4), saying why.
    let ghost = unique_agent("ghost");
    let o = fabric(&url, &["workers", &ghost]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no worker has registered for"), "{err}");
    // The same "no such agent" (exit 4) from every command about one agent.
    for args in [
        vec!["status", ghost.as_str()],
        vec!["pending", ghost.as_str()],
        vec!["tail", ghost.as_str()],
    ] {
        let o = fabric(&url, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {err}");
        assert!(
            err.contains(&format!("no inbox for {ghost}")),
            "{args:?}: {err}"
        );
    }
}
