//! Delivery guarantees with worker processes: poison messages that kill their process,
//! handlers far longer than the reclaim idle time, and a chaos run (SIGKILLed workers and
//! a Redis restart while 10,000 messages are handled).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fabric_tests::{RedisServer, WorkerProcess, records, unique_agent, wait_until};
use fabric_worker::{Bus, Message};
use redis::Commands;
use serde_json::{Value, json};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn send_all(url: &str, msgs: &[Message]) {
    rt().block_on(async {
        let bus = Bus::builder(url).notify(false).connect().await.unwrap();
        for chunk in msgs.chunks(500) {
            bus.send_batch(chunk.to_vec()).await.unwrap();
        }
    });
}

fn dead_letters(url: &str, agent: &str) -> Vec<fabric_worker::bus::DeadLetter> {
    rt().block_on(async {
        Bus::connect(url)
            .await
            .unwrap()
            .dead_letters(agent, 1000)
            .await
            .unwrap()
    })
}

/// Keeps `n` worker processes alive, restarting any that exits; counts restarts.
struct Supervisor {
    url: String,
    agent: String,
    env: Vec<(&'static str, String)>,
    workers: Vec<WorkerProcess>,
    restarts: usize,
}

impl Supervisor {
    fn new(url: &str, agent: &str, n: usize, env: Vec<(&'static str, String)>) -> Self {
        let workers = (0..n)
            .map(|_| WorkerProcess::start(url, agent, &env))
            .collect();
        Supervisor {
            url: url.into(),
            agent: agent.into(),
            env,
            workers,
            restarts: 0,
        }
    }

    fn tend(&mut self) {
        for w in &mut self.workers {
            if let Ok(Some(_)) = w.child.try_wait() {
                *w = WorkerProcess::start(&self.url, &self.agent, &self.env);
                self.restarts += 1;
            }
        }
    }
}

#[test]
fn a_message_that_kills_its_worker_ends_in_dead_letters_after_the_delivery_limit() {
    let server = RedisServer::start();
    let agent = unique_agent("poison");
    let mut conn = server.client();
    let env = vec![
        ("FABRIC_RECLAIM_IDLE_MS", "300".to_string()),
        ("FABRIC_MAX_DELIVERIES", "3".to_string()),
        ("FABRIC_CONCURRENCY", "1".to_string()),
    ];
    let mut msgs = vec![Message::new(
        "tester",
        &agent,
        "work",
        json!({"n": "poison", "mode": "abort"}),
    )];
    msgs.extend((0..10).map(|i| Message::new("tester", &agent, "work", json!({"n": i}))));
    send_all(&server.url(), &msgs);
    let mut sup = Supervisor::new(&server.url(), &agent, 1, env);
    let ok = wait_until(Duration::from_secs(60), || {
        sup.tend();
        dead_letters(&server.url(), &agent).len() == 1
            && records(&mut conn, "test:done", &agent).len() >= 10
    });
    let dead = dead_letters(&server.url(), &agent);
    assert!(
        ok,
        "dead: {dead:?}, done: {}",
        records(&mut conn, "test:done", &agent).len()
    );
    assert_eq!(dead[0].reason, "delivery_limit", "{dead:?}");
    assert!(
        dead[0].error.contains("delivered 4 times"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].message.as_ref().unwrap().payload["mode"], "abort");
    assert_eq!(
        sup.restarts, 3,
        "the poison message crashed its worker exactly max_deliveries times"
    );
    let done: HashSet<u64> = records(&mut conn, "test:done", &agent)
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        done,
        (0..10).collect::<HashSet<u64>>(),
        "every other message was handled"
    );
}

#[test]
fn a_handler_running_10x_the_reclaim_idle_time_is_handled_exactly_once() {
    let server = RedisServer::start();
    let agent = unique_agent("lease");
    let mut conn = server.client();
    let env = vec![("FABRIC_RECLAIM_IDLE_MS", "300".to_string())];
    let _workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start(&server.url(), &agent, &env))
        .collect();
    send_all(
        &server.url(),
        &[Message::new(
            "tester",
            &agent,
            "work",
            json!({"n": 1, "sleep_ms": 3000}),
        )],
    );
    assert!(wait_until(Duration::from_secs(20), || !records(
        &mut conn,
        "test:done",
        &agent
    )
    .is_empty()));
    std::thread::sleep(Duration::from_millis(1500)); // room for a wrongful second run to show
    let started = records(&mut conn, "test:started", &agent);
    let done = records(&mut conn, "test:done", &agent);
    assert_eq!(
        started.len(),
        1,
        "the entry was taken from a live handler: {started:?}"
    );
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["delivery"], 1);
}

/// Tiny deterministic PRNG so a failing run can be replayed from its printed seed.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn chaos_killed_workers_and_a_redis_restart_lose_no_message() {
    let mut server = RedisServer::start_own(true); // appendonly yes, appendfsync always
    let agent = unique_agent("chaos");
    let total = 10_000u64;
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            (t.as_secs() ^ u64::from(t.subsec_nanos()).wrapping_mul(2_654_435_761)) | 1
        });
    println!("chaos seed {seed} (replay with CHAOS_SEED={seed})");
    let mut rng = seed;
    let msgs: Vec<Message> = (0..total)
        .map(|i| Message::new("tester", &agent, "work", json!({"n": i, "sleep_ms": 2})))
        .collect();
    send_all(&server.url(), &msgs);
    let env = vec![
        ("FABRIC_RECLAIM_IDLE_MS", "1000".to_string()),
        ("FABRIC_CONCURRENCY", "8".to_string()),
    ];
    let mut sup = Supervisor::new(&server.url(), &agent, 3, env);
    let t0 = Instant::now();
    let kill_at = [
        500 + xorshift(&mut rng) % 1000,
        2000 + xorshift(&mut rng) % 1000,
    ];
    let restart_at = 3500 + xorshift(&mut rng) % 1000;
    let (mut kills, mut restarted) = (0usize, false);
    let mut conn: Option<redis::Connection> = None;
    let mut distinct = 0usize;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        if kills < kill_at.len() && ms >= kill_at[kills] {
            let victim = (xorshift(&mut rng) % 3) as usize;
            println!(
                "t={ms}ms SIGKILL worker {victim} (pid {})",
                sup.workers[victim].pid()
            );
            sup.workers[victim].kill();
            kills += 1;
        }
        if !restarted && ms >= restart_at {
            println!("t={ms}ms restarting Redis");
            server.stop();
            conn = None;
            std::thread::sleep(Duration::from_millis(1000));
            server.start_again();
            restarted = true;
        }
        sup.tend();
        if conn.is_none() {
            conn = redis::Client::open(server.url())
                .ok()
                .and_then(|c| c.get_connection().ok());
        }
        if let Some(c) = conn.as_mut() {
            match c.lrange::<_, Vec<String>>(format!("test:done:{agent}"), 0, -1) {
                Ok(lines) => {
                    let ns: HashSet<u64> = lines
                        .iter()
                        .map(|l| {
                            serde_json::from_str::<Value>(l).unwrap()["n"]
                                .as_u64()
                                .unwrap()
                        })
                        .collect();
                    distinct = ns.len();
                    if distinct as u64 == total && kills == kill_at.len() && restarted {
                        let duplicates = lines.len() - distinct;
                        println!(
                            "all {total} messages handled in {:?}; {duplicates} duplicate handlings; {} worker restarts",
                            t0.elapsed(),
                            sup.restarts
                        );
                        assert!(
                            dead_letters(&server.url(), &agent).is_empty(),
                            "nothing may be dead-lettered"
                        );
                        return;
                    }
                }
                Err(_) => conn = None,
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "lost messages: only {distinct} of {total} handled (kills {kills}, restarted {restarted})"
    );
}
