//! Periodic tasks against a real redis-server, with `test_worker` processes (its schedules:
//! `tick` every second for `ticker`, `cron_tick` at even seconds in Europe/Paris for
//! `cronner`, `TEST_SCHEDULE` for `sched`): one message per period whatever the number of
//! processes, also when the process that sent last is killed; cron instants to the second;
//! the missed-period policies across a downtime.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fabric_tests::{RedisServer, WorkerProcess, now_ms, records, wait_until};
use redis::Commands;
use serde_json::Value;

/// (boundary, message id, sender pid, handled at ms) of a scheduled message handled.
type Handled = (u64, String, u32, u64);

/// Every scheduled message handled.
fn handled(conn: &mut redis::Connection, agent: &str) -> Vec<Handled> {
    records(conn, "test:done", agent)
        .into_iter()
        .map(|r| {
            let by = r["n"]["by"].as_str().unwrap_or_default().to_owned();
            (
                r["n"]["at"]
                    .as_u64()
                    .expect("a scheduled message has fabric-schedule-at"),
                r["id"].as_str().unwrap_or_default().to_owned(),
                by.rsplit('-')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                r["t_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn boundaries(conn: &mut redis::Connection, agent: &str) -> BTreeSet<u64> {
    handled(conn, agent).into_iter().map(|h| h.0).collect()
}

#[test]
fn three_processes_send_one_message_per_period_also_when_the_last_sender_dies() {
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = server.client();
    // Quick reclaim: a tick being handled by the killed process is handled by another.
    let env = [
        ("FABRIC_RECLAIM_IDLE_MS", "2000".to_owned()),
        ("FABRIC_BLOCK_MS", "500".to_owned()),
    ];
    let started = now_ms();
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start(&url, "ticker", &env))
        .collect();
    assert!(
        wait_until(Duration::from_secs(25), || boundaries(&mut conn, "ticker")
            .len()
            >= 8),
        "fewer than 8 ticks in 25 s: {:?}",
        boundaries(&mut conn, "ticker")
    );
    // The process that sent the latest tick (its fabric-schedule-by header) dies.
    let last = handled(&mut conn, "ticker")
        .into_iter()
        .max_by_key(|h| h.0)
        .unwrap();
    let victim = workers
        .iter()
        .position(|w| w.pid() == last.2)
        .unwrap_or_else(|| {
            panic!(
                "tick {} was sent by pid {}, not one of ours",
                last.0, last.2
            )
        });
    let victim_pid = workers[victim].pid();
    workers[victim].kill();
    let killed = now_ms();
    assert!(
        wait_until(Duration::from_secs(25), || boundaries(&mut conn, "ticker")
            .last()
            .is_some_and(|b| *b >= killed + 8_000)),
        "the ticks stopped after the last sender was killed: {:?}",
        boundaries(&mut conn, "ticker")
    );
    for (i, w) in workers.iter_mut().enumerate() {
        if i != victim {
            w.signal("TERM");
            assert_eq!(w.wait_timeout(Duration::from_secs(15)), Some(0));
        }
    }
    let all = handled(&mut conn, "ticker");
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (at, id, _, _) in &all {
        ids.entry(*at).or_default().insert(id.clone());
    }
    let first = *ids.keys().next().unwrap();
    let last = *ids.keys().last().unwrap();
    assert!(
        first <= started + 5_000,
        "first tick {first}, started {started}"
    );
    for (at, set) in &ids {
        assert_eq!(at % 1000, 0, "ticks are on whole seconds: {at}");
        assert_eq!(
            set.len(),
            1,
            "period {at} was sent {} times: {set:?}",
            set.len()
        );
    }
    let missing: Vec<u64> = (first / 1000..=last / 1000)
        .map(|s| s * 1000)
        .filter(|b| !ids.contains_key(b))
        .collect();
    assert!(missing.is_empty(), "periods without a message: {missing:?}");
    let after_kill: Vec<u32> = all
        .iter()
        .filter(|h| h.0 > killed + 1_000)
        .map(|h| h.2)
        .collect();
    assert!(after_kill.len() >= 7, "{after_kill:?}");
    assert!(
        !after_kill.contains(&victim_pid),
        "ticks after the kill came from the dead process"
    );
    eprintln!(
        "periodic: {} periods ({first}..={last}), each sent once; {} after SIGKILL of pid {victim_pid}",
        ids.len(),
        after_kill.len()
    );
}

#[test]
fn a_cron_schedule_in_a_time_zone_fires_at_its_seconds() {
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = server.client();
    let mut w = WorkerProcess::start(&url, "cronner", &[]);
    assert!(
        wait_until(Duration::from_secs(20), || boundaries(&mut conn, "cronner")
            .len()
            >= 4),
        "fewer than 4 cron ticks in 20 s"
    );
    w.signal("TERM");
    assert_eq!(w.wait_timeout(Duration::from_secs(15)), Some(0));
    let all = handled(&mut conn, "cronner");
    let mut lateness = Vec::new();
    for (at, _, _, t_ms) in &all {
        assert_eq!(at % 2000, 0, "*/2 seconds: {at}");
        assert!(*t_ms >= *at, "handled before its instant: {at} at {t_ms}");
        lateness.push(t_ms - at);
    }
    assert!(
        lateness.iter().all(|l| *l < 1000),
        "handled more than 1 s after the instant: {lateness:?}"
    );
    let ats: Vec<u64> = boundaries(&mut conn, "cronner").into_iter().collect();
    assert!(ats.windows(2).all(|p| p[1] - p[0] == 2000), "{ats:?}");
    assert_eq!(ats.len(), all.len(), "one message per instant: {all:?}");
    // The schedule is recorded, with its last run.
    let spec: String = conn.hget("agent:cronner:schedules", "cron_tick").unwrap();
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["spec"], "cron */2 * * * * * Europe/Paris");
    let run: String = conn
        .hget("agent:cronner:schedule_runs", "cron_tick")
        .unwrap();
    let run: Value = serde_json::from_str(&run).unwrap();
    assert_eq!(run["last_ms"].as_u64(), ats.last().copied());
    eprintln!("periodic: cron lateness ms {lateness:?}");
}

/// Runs `sched` with a 4 s schedule and `policy`, stops it across a boundary, starts it
/// again; returns the boundary missed, the first start's time and what was handled.
fn across_a_downtime(policy: &str) -> (u64, u64, Vec<Handled>) {
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = server.client();
    let env = [("TEST_SCHEDULE", format!("4:{policy}"))];
    let started = now_ms();
    let mut w = WorkerProcess::start(&url, "sched", &env);
    assert!(wait_until(Duration::from_secs(20), || conn
        .hexists::<_, _, bool>("agent:sched:schedule_runs", "every-n")
        .unwrap_or(false)));
    w.signal("TERM");
    assert_eq!(w.wait_timeout(Duration::from_secs(15)), Some(0));
    let down = now_ms();
    let missed = (down / 4000 + 1) * 4000;
    // Let the boundary pass with no worker running.
    std::thread::sleep(Duration::from_millis(missed + 300 - down));
    let mut w = WorkerProcess::start(&url, "sched", &env);
    assert!(
        wait_until(Duration::from_secs(20), || boundaries(&mut conn, "sched")
            .contains(&(missed + 4000))),
        "the schedule did not go on after the restart: {:?}",
        handled(&mut conn, "sched")
    );
    w.signal("TERM");
    assert_eq!(w.wait_timeout(Duration::from_secs(15)), Some(0));
    (missed, started, handled(&mut conn, "sched"))
}

#[test]
fn catch_up_sends_the_missed_period_once_at_start() {
    let (missed, started, all) = across_a_downtime("catch_up");
    let caught: Vec<_> = all.iter().filter(|h| h.0 == missed).collect();
    assert_eq!(caught.len(), 1, "the missed period, once: {all:?}");
    assert!(
        caught[0].3 < missed + 4000,
        "caught up at start, not later: {caught:?}"
    );
    // The very first start had nothing to catch up (the schedule did not exist before).
    assert!(
        all.iter().all(|h| h.0 >= started),
        "{all:?} (started {started})"
    );
    assert_eq!(all.iter().filter(|h| h.0 == missed + 4000).count(), 1);
}

#[test]
fn skip_drops_the_missed_period() {
    let (missed, _, all) = across_a_downtime("skip");
    assert!(
        all.iter().all(|h| h.0 != missed),
        "skip sent the missed period: {all:?}"
    );
    assert_eq!(all.iter().filter(|h| h.0 == missed + 4000).count(), 1);
}
