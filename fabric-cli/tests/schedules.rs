//! `fabric schedules`: the periodic tasks a worker registered, with their spec, next run and
//! last run, as a table and as JSON; exit code 4 for an agent without an inbox or without
//! schedules.

mod common;

use std::time::Duration;

use common::fabric;
use fabric_tests::{RedisServer, init_tracing, unique_agent, wait_until_async};
use fabric_worker::prelude::*;
use fabric_worker::schedule::Schedule;
use serde_json::{Value, json};

#[handler(
    message_type = "sched_probe",
    cron = "* * * * * *",
    tz = "Europe/Paris"
)]
async fn probe() -> Result<(), HandlerError> {
    Ok(())
}

fn rows(url: &str, agent: &str) -> Vec<Value> {
    let o = fabric(url, &["--json", "schedules", agent]);
    serde_json::from_slice(&o.stdout).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_schedules_with_next_and_last_runs() {
    init_tracing();
    let server = RedisServer::start();
    let url = server.url();
    let agent = unique_agent("sch");
    let hourly = Schedule::every("hourly", "sched_probe", Duration::from_secs(3600))
        .unwrap()
        .payload(json!({"scope": "all"}));
    let worker = fabric_tests::RunningWorker::start(
        Worker::builder(&agent)
            .url(&url)
            .block(Duration::from_millis(300))
            .schedule(hourly),
    )
    .await;
    // The every-second cron schedule fires; its run is recorded.
    let (u, a) = (url.clone(), agent.clone());
    assert!(
        wait_until_async(Duration::from_secs(15), || {
            let (u, a) = (u.clone(), a.clone());
            async move {
                tokio::task::spawn_blocking(move || rows(&u, &a))
                    .await
                    .unwrap()
                    .iter()
                    .any(|r| r["name"] == "sched_probe" && r["last_ms"].is_u64())
            }
        })
        .await,
        "{:?}",
        rows(&url, &agent)
    );
    let o = fabric(&url, &["schedules", &agent]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("AGENT") && lines[0].contains("NEXT RUN"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].contains("hourly") && lines[1].contains("every 1h"),
        "{out}"
    );
    assert!(lines[1].ends_with("never"), "{out}");
    assert!(lines[2].contains("cron * * * * * * Europe/Paris"), "{out}");
    assert!(
        lines[2].contains("catch_up") && lines[2].ends_with("ago)"),
        "{out}"
    );

    let all = rows(&url, &agent);
    assert_eq!(all.len(), 2, "{all:?}");
    let h = &all[0];
    assert_eq!(h["agent"], agent.as_str());
    assert_eq!(h["message_type"], "sched_probe");
    assert_eq!(h["every_ms"], 3_600_000);
    assert_eq!(h["payload"], json!({"scope": "all"}));
    let next = h["next_run_ms"].as_u64().unwrap();
    assert_eq!(next % 3_600_000, 0, "on the hour: {next}");
    assert!(next > fabric_tests::now_ms(), "{next}");
    let c = &all[1];
    assert_eq!(
        (c["cron"].as_str(), c["tz"].as_str()),
        (Some("* * * * * *"), Some("Europe/Paris"))
    );
    assert!(
        c["last_message_id"].as_str().unwrap().starts_with("msg:"),
        "{c}"
    );
    worker.stop().await;

    // Every agent at once, without naming it.
    let o = fabric(&url, &["--json", "schedules"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&o.stdout)
            .unwrap()
            .len(),
        2
    );

    // No inbox: not found, as `status` says it.
    let ghost = unique_agent("ghost");
    let o = fabric(&url, &["schedules", &ghost]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("no inbox for {ghost}")), "{err}");
    // An inbox but no schedule: not found either, saying so.
    let plain = unique_agent("plain");
    let bus = Bus::connect(&url).await.unwrap();
    bus.send(Message::new("tester", &plain, "x", json!({})))
        .await
        .unwrap();
    let o = fabric(&url, &["schedules", &plain]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no schedules registered"), "{err}");
}
