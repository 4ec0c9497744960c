//! Rate limits enforced in Redis (`FCALL fabric_rate_limit`, GCRA on the server's clock):
//! the function itself (burst, steady rate, reservations, bad arguments), three worker
//! processes sharing one named limit for 30 s, a limited handler that does not hold back an
//! unlimited one, and a worker-wide limit from the environment.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use fabric_tests::{
    RedisServer, WorkerProcess, init_tracing, lanes_created, records, runtime, unique_agent,
    wait_until,
};
use fabric_worker::keys;
use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::json;

const LIBRARY: &str = include_str!("../../fabric-worker/lua/fabric.lua");

async fn load_library(conn: &mut redis::aio::MultiplexedConnection) {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async(conn)
        .await
        .unwrap();
}

/// `FCALL fabric_rate_limit key count period_ms burst horizon_ms`: (wait_ms, taken, due_ms).
async fn take(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    count: u32,
    period_ms: u64,
    burst: u32,
    horizon_ms: u64,
) -> (i64, i64, i64) {
    redis::cmd("FCALL")
        .arg("fabric_rate_limit")
        .arg(1)
        .arg(key)
        .arg(count)
        .arg(period_ms)
        .arg(burst)
        .arg(horizon_ms)
        .query_async(conn)
        .await
        .unwrap()
}

async fn server_ms(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    s * 1000 + us / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_allows_the_burst_then_the_rate_and_reserves_turns_in_order() {
    let server = RedisServer::start();
    let mut conn = server.async_conn().await;
    load_library(&mut conn).await;
    let key = format!("fabric:ratelimit:{{{}}}", unique_agent("gcra"));

    // Burst: 3 at once, then the 4th is 100 ms (one emission interval of 10/s) away.
    for i in 0..3 {
        let (wait, taken, _) = take(&mut conn, &key, 10, 1000, 3, 0).await;
        assert_eq!((wait, taken), (0, 1), "turn {i} of the burst");
    }
    let (wait, taken, due) = take(&mut conn, &key, 10, 1000, 3, 0).await;
    assert_eq!(taken, 0, "horizon 0 takes nothing that is not due now");
    assert!((1..=100).contains(&wait), "{wait}");
    let now = server_ms(&mut conn).await;
    assert!(
        (due - now - wait).abs() <= 5,
        "due {due}, now {now}, wait {wait}"
    );
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 1400, "the key expires once idle: {ttl}");

    // Reservations: with a horizon, each turn is taken, due 100 ms after the previous.
    let mut dues = Vec::new();
    for _ in 0..5 {
        let (_, taken, due) = take(&mut conn, &key, 10, 1000, 3, 10_000).await;
        assert_eq!(taken, 1);
        dues.push(due);
    }
    for pair in dues.windows(2) {
        assert!((99..=101).contains(&(pair[1] - pair[0])), "{dues:?}");
    }
    // Beyond the horizon: nothing is taken and the next turn stays where it was.
    let (far, taken, _) = take(&mut conn, &key, 10, 1000, 3, 300).await;
    assert_eq!(taken, 0, "{far}");
    assert!(far > 300, "{far}");
    let (again, _, _) = take(&mut conn, &key, 10, 1000, 3, 300).await;
    assert!(
        again <= far,
        "a refused turn moved the limit: {far} then {again}"
    );

    // A reserved turn coming back on time runs without changing the limit; one that comes
    // back late (a starved worker) is not run late: it takes a new turn.
    let before: String = conn.get(&key).await.unwrap();
    let on_time = server_ms(&mut conn).await;
    let r: (i64, i64, i64) = redis::cmd("FCALL")
        .arg("fabric_rate_limit")
        .arg(1)
        .arg(&key)
        .arg(&[10, 1000, 3, 10_000, on_time][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(r, (0, 1, on_time));
    let after: String = conn.get(&key).await.unwrap();
    assert_eq!(before, after, "a reserved turn taken again");
    let r: (i64, i64, i64) = redis::cmd("FCALL")
        .arg("fabric_rate_limit")
        .arg(1)
        .arg(&key)
        .arg(&[10, 1000, 3, 10_000, on_time - 1000][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(r.0 > 0 && r.1 == 1, "a missed turn takes a new one: {r:?}");
    let after: String = conn.get(&key).await.unwrap();
    assert_ne!(before, after);

    // A damaged (or tampered) key far in the future reads as at most the longest horizon.
    let _: () = conn.set(&key, "99999999999999999").await.unwrap();
    let (wait, _, _) = take(&mut conn, &key, 10, 1000, 3, 0).await;
    assert!(wait <= 3_600_000 + 100, "{wait}");

    // Bad arguments are refused with a message that says what is expected.
    let e = redis::cmd("FCALL")
        .arg("fabric_rate_limit")
        .arg(1)
        .arg(&key)
        .arg(0)
        .arg(1000)
        .arg(1)
        .arg(0)
        .query_async::<redis::Value>(&mut conn)
        .await;
    let e = format!("{e:?}");
    assert!(e.contains("fabric_rate_limit: expected count"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_holds_a_steady_rate_and_costs_one_round_trip() {
    let server = RedisServer::start();
    let mut conn = server.async_conn().await;
    load_library(&mut conn).await;
    let key = format!("fabric:ratelimit:{{{}}}", unique_agent("steady"));
    // 50 per second, burst 5 (which absorbs the asker's own scheduling delays: with burst
    // 1, a turn asked late is lost), asked as fast as possible for 2 s of the server's clock.
    let start = server_ms(&mut conn).await;
    let (mut taken, mut asked) = (0u32, 0u32);
    let started = Instant::now();
    loop {
        let (_, t, _) = take(&mut conn, &key, 50, 1000, 5, 0).await;
        asked += 1;
        taken += u32::try_from(t).unwrap();
        if server_ms(&mut conn).await - start >= 2000 {
            break;
        }
    }
    let elapsed = started.elapsed();
    // 2 s at 50/s after the burst of 5: 105 at most (the burst, then one per 20 ms).
    assert!(
        (100..=105).contains(&taken),
        "{taken} of {asked} in {elapsed:?}"
    );
    assert!(
        asked > 200,
        "the test asked too slowly to mean anything: {asked}"
    );

    // What one turn costs: one FCALL round trip.
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        take(&mut conn, &key, 1_000_000, 1000, 1_000_000, 0).await;
    }
    let per_call = t.elapsed() / n;
    println!("fabric_rate_limit: {per_call:?} per call (sequential, loopback)");
}

fn send(url: &str, agent: &str, message_type: &str, n: usize, from: usize) {
    runtime().block_on(async {
        let bus = Bus::builder(url).notify(false).connect().await.unwrap();
        let msgs: Vec<Message> = (from..from + n)
            .map(|i| Message::new("tester", agent, message_type, json!({ "n": i })))
            .collect();
        for chunk in msgs.chunks(500) {
            bus.send_batch(chunk.to_vec()).await.unwrap();
        }
    });
}

fn dead_letters(conn: &mut redis::Connection, agent: &str) -> usize {
    use redis::Commands;
    conn.xlen(keys::dead_letters(&keys::inbox(agent))).unwrap()
}

/// The acceptance test of issue 15: 3 processes, one shared `100/s` limit (burst 5), a
/// backlog of 3,300 messages (33 s at the limit), concurrency 20 each.
#[test]
fn three_processes_share_one_limit_of_100_per_second_for_30_s() {
    init_tracing();
    const RATE: usize = 100;
    const BURST: usize = 5;
    const MESSAGES: usize = 3300;
    const WINDOW_S: usize = 30;
    let server = RedisServer::start_own(false);
    let url = server.url();
    let agent = unique_agent("rl3");
    let mut conn = server.client();
    let env = [("FABRIC_CONCURRENCY", "20".to_string())];
    let _workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start(&url, &agent, &env))
        .collect();
    assert!(lanes_created(&mut conn, &agent));
    send(&url, &agent, "limited", MESSAGES, 0);
    assert!(
        wait_until(Duration::from_secs(60), || {
            records(&mut conn, "test:done", &agent).len() >= MESSAGES
        }),
        "only {} of {MESSAGES} handled",
        records(&mut conn, "test:done", &agent).len()
    );
    let started = records(&mut conn, "test:started", &agent);
    let mut t: Vec<u64> = started
        .iter()
        .map(|r| r["t_ms"].as_u64().unwrap())
        .collect();
    t.sort_unstable();
    let t0 = t[0];
    // Starts per 1 s window from the first start, over 30 s.
    let mut per_s: BTreeMap<u64, usize> = BTreeMap::new();
    for &x in &t {
        let w = (x - t0) / 1000;
        if w < WINDOW_S as u64 {
            *per_s.entry(w).or_default() += 1;
        }
    }
    let total: usize = per_s.values().sum();
    // Any 1 s sliding window (each start opens one): the busiest.
    let busiest = (0..t.len())
        .map(|i| t[i..].iter().take_while(|&&x| x < t[i] + 1000).count())
        .max()
        .unwrap_or(0);
    let pids: HashSet<u64> = started.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    let attempts: HashSet<u64> = started
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    println!(
        "3 processes, limit {RATE}/s burst {BURST}: {total} starts in the first {WINDOW_S} s \
         (bound {}..={}), busiest sliding 1 s window {busiest}, per 1 s window: {:?}",
        (RATE * WINDOW_S + BURST) * 9 / 10,
        RATE * WINDOW_S + BURST,
        per_s.values().collect::<Vec<_>>()
    );
    assert_eq!(pids.len(), 3, "every process takes part");
    assert!(
        total <= RATE * WINDOW_S + BURST,
        "{total} starts in {WINDOW_S} s: over the limit"
    );
    assert!(
        total >= (RATE * WINDOW_S + BURST) * 9 / 10,
        "{total} starts in {WINDOW_S} s: under 90% of the limit"
    );
    // The limit allows 100 per second plus the burst; 10 more for the promoters'
    // scheduling jitter (turns are promoted at their time, up to a few ms late).
    assert!(
        busiest <= RATE + BURST + 10,
        "a 1 s window had {busiest} starts"
    );
    // Limited messages are parked, not failed: every start is attempt 1, none is
    // handled twice, nothing is dead-lettered.
    assert_eq!(attempts, HashSet::from([1]), "attempts seen: {attempts:?}");
    assert_eq!(started.len(), MESSAGES, "a message started twice");
    let ids: HashSet<&str> = started.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), MESSAGES);
    assert_eq!(dead_letters(&mut conn, &agent), 0);
}

/// Concurrency 2: a backlog of 20 messages limited to 2/s (10 s of turns) is parked, and 30
/// unlimited messages sent after it are all handled within seconds meanwhile.
#[test]
fn a_limited_handler_does_not_hold_back_an_unlimited_one() {
    init_tracing();
    let server = RedisServer::start();
    let url = server.url();
    let agent = unique_agent("rlmix");
    let mut conn = server.client();
    let env = [("FABRIC_CONCURRENCY", "2".to_string())];
    let _worker = WorkerProcess::start(&url, &agent, &env);
    assert!(lanes_created(&mut conn, &agent));
    send(&url, &agent, "limited_slow", 20, 0);
    let retries = keys::retries(&keys::inbox(&agent));
    assert!(
        wait_until(Duration::from_secs(10), || {
            use redis::Commands;
            conn.zcard::<_, usize>(&retries).unwrap_or(0) >= 15
        }),
        "the limited backlog was not parked"
    );
    let sent = Instant::now();
    send(&url, &agent, "work", 30, 1000);
    let unlimited_done = |conn: &mut redis::Connection| {
        records(conn, "test:done", &agent)
            .iter()
            .filter(|r| r["n"].as_u64().unwrap() >= 1000)
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(5), || unlimited_done(&mut conn) == 30),
        "unlimited messages waited behind limited ones: {} of 30 done",
        unlimited_done(&mut conn)
    );
    let took = sent.elapsed();
    let limited_done = records(&mut conn, "test:done", &agent).len() - 30;
    println!("30 unlimited handled in {took:?} while {limited_done} of 20 limited were done");
    assert!(
        limited_done < 15,
        "the limit did not hold: {limited_done} limited done in {took:?}"
    );
    // The limited ones finish at 2 per second, each on its first attempt.
    assert!(wait_until(Duration::from_secs(15), || {
        records(&mut conn, "test:done", &agent).len() == 50
    }));
    let started = records(&mut conn, "test:started", &agent);
    assert!(started.iter().all(|r| r["attempt"] == 1), "{started:?}");
    let mut t: Vec<u64> = started
        .iter()
        .filter(|r| r["n"].as_u64().unwrap() < 1000)
        .map(|r| r["t_ms"].as_u64().unwrap())
        .collect();
    t.sort_unstable();
    let span = t[t.len() - 1] - t[0];
    // 20 turns at 2/s, the first at once: 9.5 s from the first to the last.
    assert!(span >= 9_000, "20 limited messages in {span} ms");
    assert_eq!(dead_letters(&mut conn, &agent), 0);
}

/// `FABRIC_RATE_LIMIT=5/s`: every message of the agent shares the limit.
#[test]
fn a_worker_wide_limit_from_the_environment_applies_to_every_handler() {
    init_tracing();
    let server = RedisServer::start();
    let url = server.url();
    let agent = unique_agent("rlenv");
    let mut conn = server.client();
    let env = [("FABRIC_RATE_LIMIT", "5/s".to_string())];
    let _worker = WorkerProcess::start(&url, &agent, &env);
    assert!(lanes_created(&mut conn, &agent));
    send(&url, &agent, "work", 16, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        records(&mut conn, "test:done", &agent).len() == 16
    }));
    let mut t: Vec<u64> = records(&mut conn, "test:started", &agent)
        .iter()
        .map(|r| r["t_ms"].as_u64().unwrap())
        .collect();
    t.sort_unstable();
    let span = t[15] - t[0];
    // 16 turns at 5/s, the first at once: 3 s.
    assert!((2_900..=4_500).contains(&span), "16 messages in {span} ms");
}

/// Secure mode: an agent's user may take turns from shared limits and its own, and cannot
/// touch another agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_agents_take_shared_and_own_limits_only() {
    let coder = unique_agent("rlsc");
    let percy = unique_agent("rlsp");
    let redis = fabric_tests::SecureRedis::start(&[coder.clone(), percy.clone()], false);
    redis.prepare().await;
    let mut conn = fabric_tests::conn_as(&redis.url_of(&coder)).await;
    for key in [
        keys::rate_limit_shared("openai"),
        keys::rate_limit_agent(&coder),
        keys::rate_limit_handler(&coder, "complete", None),
    ] {
        let (_, taken, _) = take(&mut conn, &key, 10, 1000, 1, 0).await;
        assert_eq!(taken, 1, "{key}");
    }
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("fabric_rate_limit")
        .arg(1)
        .arg(keys::rate_limit_agent(&percy))
        .arg(&[10, 1000, 1, 0][..]);
    fabric_tests::assert_noperm(&mut conn, &[cmd]).await;
}
