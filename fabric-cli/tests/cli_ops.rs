//! The operator's daily commands, run as the built `fabric` binary against a real
//! redis-server: one dead letter retried or deleted by id, scheduled retries listed, run now
//! or deleted, one message shown by id, a stuck pending entry moved or acknowledged,
//! `status --watch` (progress lines and bad URLs: `cli_ops_progress.rs`; secure mode:
//! `cli_ops_secure.rs`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{FABRIC, expect_code, fabric, has_row, json_of, on_a_terminal, stderr, stdout};
use fabric_tests::{RedisServer, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::bus::ReceiveOptions;
use fabric_worker::prelude::*;
use serde_json::{Value, json};

/// `ops_dead` fails for good while this is set.
static DEAD_FAILS: AtomicBool = AtomicBool::new(true);
static DEAD_HANDLED: AtomicUsize = AtomicUsize::new(0);
static RETRY_HANDLED: AtomicUsize = AtomicUsize::new(0);

#[handler(message_type = "ops_dead")]
async fn ops_dead() -> Result<(), HandlerError> {
    if DEAD_FAILS.load(Ordering::SeqCst) {
        return Err(HandlerError::permanent("ops_dead failed on purpose"));
    }
    DEAD_HANDLED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// The first attempt fails and asks to be retried in an hour; later ones succeed.
#[handler(message_type = "ops_retry")]
async fn ops_retry(ctx: Context) -> Result<(), HandlerError> {
    if ctx.attempt() == 1 {
        return Err(HandlerError::retry("first attempt fails on purpose")
            .with_retry_after(Duration::from_secs(3600)));
    }
    RETRY_HANDLED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_retried_and_deleted_one_by_one() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    let bus = Bus::connect(url.clone()).await.unwrap();
    let worker = RunningWorker::fast(&url, &percy, |b| b).await;

    // Two messages fail for good.
    for n in 1..=2 {
        let o = fabric(
            &url,
            &[
                "send",
                &percy,
                &format!("{{\"n\":{n}}}"),
                "--type",
                "ops_dead",
                "--header",
                "trace=t1",
            ],
        );
        expect_code(&o, 0);
    }
    assert!(
        common::dead_letters_reach(&bus, &percy, 2).await,
        "no dead letters appeared"
    );
    let dead = json_of(&fabric(&url, &["dead-letters", "list", &percy, "--json"]));
    let first = dead[0]["dead_id"].as_str().unwrap().to_owned();
    let second = dead[1]["dead_id"].as_str().unwrap().to_owned();

    // show: where it is, why, and its envelope.
    let o = fabric(&url, &["show", &percy, &first]);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("dead letter in agent:"), "{out}");
    assert!(out.contains("permanent_error"), "{out}");
    assert!(out.contains("ops_dead failed on purpose"), "{out}");
    assert!(has_row(&out, "type", "ops_dead"), "{out}");
    assert!(has_row(&out, "header", "trace=t1"), "{out}");
    assert!(out.contains("\"n\": 1"), "{out}");
    let shown = json_of(&fabric(&url, &["show", &percy, &first, "--json"]));
    assert_eq!(shown["location"]["state"], "dead_letter", "{shown}");
    assert_eq!(shown["location"]["reason"], "permanent_error", "{shown}");
    assert_eq!(shown["headers"]["trace"], "t1", "{shown}");
    assert_eq!(shown["message"]["message_type"], "ops_dead", "{shown}");
    // The original entry's id finds the dead letter too (the entry was acknowledged).
    let original = shown["location"]["from_stream_id"].as_str().unwrap();
    let by_original = json_of(&fabric(&url, &["show", &percy, original, "--json"]));
    assert_eq!(
        by_original["location"]["state"], "dead_letter",
        "{by_original}"
    );
    assert_eq!(by_original["id"], first.as_str());
    // And so does its message id.
    let message_id = shown["message"]["id"].as_str().unwrap();
    let by_message = json_of(&fabric(&url, &["show", &percy, message_id, "--json"]));
    assert_eq!(by_message["id"], first.as_str(), "{by_message}");

    // retry one by id: back in the inbox as a fresh attempt, handled this time.
    DEAD_FAILS.store(false, Ordering::SeqCst);
    let before = DEAD_HANDLED.load(Ordering::SeqCst);
    let o = fabric(&url, &["dead-letters", "retry", &percy, &first]);
    expect_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        format!(
            "dead letter {first} of {percy} is back in agent:{percy}:inbox as a fresh first attempt"
        )
    );
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            DEAD_HANDLED.load(Ordering::SeqCst) > before
        })
        .await,
        "the retried dead letter was not handled"
    );
    let left = bus.dead_letters(&percy, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].dead_id, second, "only the one retried left");
    // Again: no such entry (exit 4), in words and as JSON.
    let o = fabric(&url, &["dead-letters", "retry", &percy, &first]);
    expect_code(&o, 4);
    assert!(
        stderr(&o).starts_with("error: no such entry:"),
        "{}",
        stderr(&o)
    );
    let o = fabric(&url, &["dead-letters", "retry", &percy, &first, "--json"]);
    expect_code(&o, 4);
    let e: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(e["error"]["exit_code"], 4);
    // A malformed id is a usage error.
    expect_code(&fabric(&url, &["dead-letters", "retry", &percy, "oops"]), 2);

    // delete one by id: gone for good, nothing handled.
    let handled = DEAD_HANDLED.load(Ordering::SeqCst);
    let deleted = json_of(&fabric(
        &url,
        &["dead-letters", "delete", &percy, &second, "--json"],
    ));
    assert_eq!(deleted["deleted"]["dead_id"], second.as_str());
    assert!(bus.dead_letters(&percy, 10).await.unwrap().is_empty());
    let o = fabric(&url, &["dead-letters", "delete", &percy, &second]);
    expect_code(&o, 4);
    assert!(stderr(&o).contains("no such entry"), "{}", stderr(&o));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(DEAD_HANDLED.load(Ordering::SeqCst), handled);
    // An unknown agent is exit 4 as everywhere.
    let ghost = unique_agent("ghost");
    expect_code(
        &fabric(&url, &["dead-letters", "delete", &ghost, &second]),
        4,
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_listed_run_now_and_deleted() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    let bus = Bus::connect(url.clone()).await.unwrap();
    let o = fabric(&url, &["retries", "list", &percy]);
    expect_code(&o, 4);
    let worker = RunningWorker::fast(&url, &percy, |b| b).await;
    for n in 1..=2 {
        let o = fabric(
            &url,
            &[
                "send",
                &percy,
                &format!("{{\"n\":{n}}}"),
                "--type",
                "ops_retry",
            ],
        );
        expect_code(&o, 0);
    }
    let p = percy.clone();
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let (bus, p) = (bus.clone(), p.clone());
            async move { bus.retries(&p, 10).await.is_ok_and(|r| r.len() == 2) }
        })
        .await,
        "no retries were scheduled"
    );
    // list: the table and JSON.
    let o = fabric(&url, &["retries", "list", &percy]);
    expect_code(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("DUE"),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].contains("ops_retry") && lines[1].contains("first attempt fails on purpose"),
        "{out}"
    );
    assert!(
        lines[1].contains("Z (in 59m") || lines[1].contains("Z (in 1h00m"),
        "{out}"
    );
    let list = json_of(&fabric(&url, &["retries", "list", &percy, "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["attempt"], 2);
    assert_eq!(list[0]["last_error"], "first attempt fails on purpose");
    assert!(list[0]["due_in_ms"].as_u64().unwrap() > 3_500_000, "{list}");
    let run_id = list[0]["id"].as_str().unwrap().to_owned();
    let delete_id = list[1]["id"].as_str().unwrap().to_owned();

    // show by the failed entry's id: waiting as a retry.
    let o = fabric(&url, &["show", &percy, &run_id]);
    expect_code(&o, 0);
    assert!(
        stdout(&o).contains("for its next attempt, due in"),
        "{}",
        stdout(&o)
    );
    let shown = json_of(&fabric(&url, &["show", &percy, &run_id, "--json"]));
    assert_eq!(shown["location"]["state"], "retry", "{shown}");
    assert_eq!(shown["attempt"], 2);
    assert_eq!(shown["last_error"], "first attempt fails on purpose");

    // run one now: in the inbox at once, for attempt 2, even with no worker running…
    let message_id = list[0]["message"]["id"].as_str().unwrap().to_owned();
    worker.stop().await;
    let before = RETRY_HANDLED.load(Ordering::SeqCst);
    let o = fabric(&url, &["retries", "run", &percy, &run_id]);
    expect_code(&o, 0);
    assert_eq!(
        stdout(&o).trim(),
        format!("retry of {run_id} moved into agent:{percy}:inbox now, for attempt 2")
    );
    let shown = json_of(&fabric(&url, &["show", &percy, &message_id, "--json"]));
    assert_eq!(shown["location"]["state"], "queued", "{shown}");
    assert_eq!(shown["attempt"], 2, "{shown}");
    // …and a worker handles it, while the other still waits.
    let worker = RunningWorker::fast(&url, &percy, |b| b).await;
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            RETRY_HANDLED.load(Ordering::SeqCst) > before
        })
        .await,
        "the retry run now was not handled"
    );
    let left = bus.retries(&percy, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id.as_deref(), Some(delete_id.as_str()));
    let o = fabric(&url, &["retries", "run", &percy, &run_id]);
    expect_code(&o, 4);
    assert!(
        stderr(&o).starts_with("error: no such entry:"),
        "{}",
        stderr(&o)
    );

    // delete the other: never attempted again.
    let o = fabric(&url, &["retries", "delete", &percy, &delete_id]);
    expect_code(&o, 0);
    assert!(
        stdout(&o).contains("will not be attempted again"),
        "{}",
        stdout(&o)
    );
    assert!(bus.retries(&percy, 10).await.unwrap().is_empty());
    let st = json_of(&fabric(&url, &["status", &percy, "--json"]));
    assert_eq!(st[0]["scheduled_retries"], 0);
    let o = fabric(&url, &["retries", "delete", &percy, &delete_id, "--json"]);
    expect_code(&o, 4);
    let e: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(e["error"]["exit_code"], 4);
    let o = fabric(&url, &["retries", "list", &percy]);
    expect_code(&o, 0);
    assert_eq!(stdout(&o).trim(), format!("no retries waiting for {percy}"));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_entries_claimed_and_acknowledged() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    let bus = Bus::connect(url.clone()).await.unwrap();
    let mut ids = Vec::new();
    for n in 1..=2 {
        let r = json_of(&fabric(
            &url,
            &[
                "send",
                &percy,
                &format!("{{\"n\":{n}}}"),
                "--header",
                "k=v",
                "--json",
            ],
        ));
        ids.push(r["stream_id"].as_str().unwrap().to_owned());
    }
    // show: queued, with its envelope, by stream id and by message id.
    let o = fabric(&url, &["show", &percy, &ids[0]]);
    expect_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("queued in agent:{percy}:inbox")),
        "{out}"
    );
    assert!(has_row(&out, "header", "k=v"), "{out}");
    assert!(has_row(&out, "from", "operator"), "{out}");

    // Delivered to a consumer that never acknowledges.
    let got = bus
        .receive(
            &percy,
            ReceiveOptions::default().count(2).consumer("ops-stuck"),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let shown = json_of(&fabric(&url, &["show", &percy, &ids[0], "--json"]));
    assert_eq!(shown["location"]["state"], "pending", "{shown}");
    assert_eq!(shown["location"]["consumer"], "ops-stuck", "{shown}");
    assert_eq!(shown["location"]["deliveries"], 1, "{shown}");

    // claim moves the owner.
    let o = fabric(
        &url,
        &["pending", "claim", &percy, &ids[0], "--to", "ops-spare"],
    );
    expect_code(&o, 0);
    assert!(
        stdout(&o).contains("moved from ops-stuck to ops-spare"),
        "{}",
        stdout(&o)
    );
    let pending = json_of(&fabric(&url, &["pending", &percy, "--json"]));
    let owner = |id: &str| {
        pending
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["stream_id"] == id)
            .map(|p| p["consumer"].clone())
    };
    assert_eq!(owner(&ids[0]), Some(json!("ops-spare")), "{pending}");
    assert_eq!(owner(&ids[1]), Some(json!("ops-stuck")), "{pending}");
    let o = fabric(
        &url,
        &["pending", "claim", &percy, "1-1", "--to", "ops-spare"],
    );
    expect_code(&o, 4);
    assert!(
        stderr(&o).starts_with("error: no such entry:"),
        "{}",
        stderr(&o)
    );

    // ack needs --yes off a terminal, and says what it means.
    let o = fabric(&url, &["pending", "ack", &percy, &ids[1]]);
    expect_code(&o, 2);
    assert!(
        stderr(&o).contains("will NOT be processed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(bus.pending(&percy, None, 10).await.unwrap().len(), 2);
    // On a terminal it asks; anything but yes leaves it.
    let (shown, code) = on_a_terminal(&url, &format!("pending ack {percy} {}", ids[1]), "n\n");
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("(held by ops-stuck, delivered 1 time)")
            && shown.contains("will NOT be processed")
            && shown.contains("Acknowledge it? [y/N]"),
        "{shown}"
    );
    // An entry that is not pending is "no such entry" before any question.
    let (shown, code) = on_a_terminal(&url, &format!("pending ack {percy} 1-1"), "y\n");
    assert_eq!(code, Some(4), "{shown}");
    assert!(!shown.contains("[y/N]"), "{shown}");
    assert_eq!(bus.pending(&percy, None, 10).await.unwrap().len(), 2);
    let (shown, code) = on_a_terminal(&url, &format!("pending ack {percy} {}", ids[1]), "y\n");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("it will not be processed"), "{shown}");
    let pel = bus.pending(&percy, None, 10).await.unwrap();
    assert_eq!(pel.len(), 1, "the PEL shrank");
    assert_eq!(pel[0].stream_id, ids[0]);
    let acked = json_of(&fabric(
        &url,
        &["pending", "ack", &percy, &ids[0], "--yes", "--json"],
    ));
    assert_eq!(acked["processed"], false);
    assert_eq!(acked["consumer"], "ops-spare");
    assert!(bus.pending(&percy, None, 10).await.unwrap().is_empty());
    let o = fabric(&url, &["pending", "ack", &percy, &ids[0], "--yes"]);
    expect_code(&o, 4);
    let shown = json_of(&fabric(&url, &["show", &percy, &ids[0], "--json"]));
    assert_eq!(shown["location"]["state"], "acknowledged", "{shown}");
    // No such message at all.
    let o = fabric(&url, &["show", &percy, "msg:nothing-like-it"]);
    expect_code(&o, 4);
    assert!(
        stderr(&o).starts_with("error: no such entry:"),
        "{}",
        stderr(&o)
    );
    // The listing form still works beside the subcommands.
    expect_code(&fabric(&url, &["pending", &percy]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_snapshots_that_follow_changes() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    expect_code(&fabric(&url, &["send", &percy, "{}"]), 0);
    let mut child = KillOnDrop(
        Command::new(FABRIC)
            .args(["status", &percy, "--watch", "--interval", "200ms", "--json"])
            .env("REDIS_URL", &url)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fabric status --watch"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut depth = || -> u64 {
        let line = lines.next().expect("a snapshot").expect("read a snapshot");
        let v: Value = serde_json::from_str(&line).expect("each snapshot is one JSON line");
        v[0]["queue_depth"].as_u64().unwrap()
    };
    assert_eq!(depth(), 1);
    expect_code(&fabric(&url, &["send", &percy, "{}"]), 0);
    let mut seen = Vec::new();
    for _ in 0..50 {
        let d = depth();
        seen.push(d);
        if d == 2 {
            break;
        }
    }
    assert_eq!(
        seen.last(),
        Some(&2),
        "the watch never showed the new message: {seen:?}"
    );
    // The reader goes away: the watch ends by itself (exit 0) at its next snapshot.
    drop(lines);
    let ended = fabric_tests::wait_until(Duration::from_secs(5), || {
        child.0.try_wait().is_ok_and(|s| s.is_some())
    });
    assert!(ended, "the watch kept running with nobody reading it");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    drop(child);

    // The table on a pipe: successive snapshots, each under its time, no screen clearing.
    let mut child = KillOnDrop(
        Command::new(FABRIC)
            .args(["status", &percy, "-w", "--interval", "0.2"])
            .env("REDIS_URL", &url)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fabric status --watch"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut headers = 0;
    let mut text = String::new();
    while headers < 3 {
        let line = lines.next().unwrap().unwrap();
        if line.starts_with("--- ") {
            headers += 1;
        }
        text.push_str(&line);
        text.push('\n');
    }
    drop(child);
    assert!(!text.contains('\x1b'), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("AGENT ")).count(),
        2,
        "{text}"
    );
    // On a terminal: the screen is cleared and the table redrawn, until Ctrl-C (SIGINT).
    let line = format!("timeout -s INT 1.5 {FABRIC} status {percy} --watch --interval 200ms");
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("REDIS_URL", &url)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux runs the command on a pseudo-terminal");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown
            .matches("\x1b[H\x1b[2JEvery 200ms: fabric status")
            .count()
            >= 2,
        "{shown:?}"
    );
    assert!(!shown.contains("--- "), "{shown:?}");
    // A bad interval or an unknown agent: usage error, not found.
    expect_code(
        &fabric(&url, &["status", "--watch", "--interval", "1ms"]),
        2,
    );
    expect_code(&fabric(&url, &["status", "--interval", "1s"]), 2);
    let ghost = unique_agent("ghost");
    expect_code(&fabric(&url, &["status", &ghost, "--watch"]), 4);
}

/// A child process killed (by its pid) and reaped when dropped, even by a failing test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
