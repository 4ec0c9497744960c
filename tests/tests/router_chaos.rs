//! Router chaos: 10,000 messages between 3 agents (each under its own Redis user, in secure
//! mode) through 2 router processes; one router is SIGKILLed mid-run and Redis is restarted
//! once (`appendonly yes`, `appendfsync always`). Nothing is lost, and nothing is delivered
//! twice into an inbox — even though senders resend what they could not confirm.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fabric_tests::{RouterProcess, RunningRouter, SecureRedis, init_tracing, unique_agent};
use fabric_worker::bus::Mode;
use fabric_worker::{Bus, Error, Message, keys};
use serde_json::json;

const TOTAL: usize = 10_000;

/// Sends `msgs` in batches, resending (the same messages, same ids) whatever was not
/// confirmed queued — through a Redis restart.
async fn send_all(url: String, msgs: Vec<Message>) {
    let bus = Bus::builder(url)
        .mode(Mode::Secure)
        .connect()
        .await
        .expect("connect as the agent");
    for batch in msgs.chunks(50) {
        // Paced, so that the router kill and the Redis restart happen while sending.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let mut left: Vec<Message> = batch.to_vec();
        let deadline = Instant::now() + Duration::from_secs(90);
        while !left.is_empty() {
            assert!(Instant::now() < deadline, "could not send for 90 s");
            match bus.send_batch(left.clone()).await {
                Ok(_) => left.clear(),
                Err(Error::PartlySent { failed, .. }) => {
                    left.retain(|m| failed.iter().any(|f| f.message_id == m.id));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Message id → how many times it is in the inboxes (`None` while Redis cannot answer).
fn delivered(admin: &mut redis::Connection, agents: &[String]) -> Option<HashMap<String, usize>> {
    let mut seen = HashMap::new();
    for a in agents {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys::inbox(a))
            .arg("-")
            .arg("+")
            .query(admin)
            .ok()?;
        for e in reply.ids {
            let data: String = e.get("data")?;
            let v: serde_json::Value = serde_json::from_str(&data).ok()?;
            let id = v["id"].as_str()?.to_owned();
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    Some(seen)
}

#[test]
fn killed_routers_and_a_redis_restart_lose_nothing_and_deliver_nothing_twice() {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let agents: Vec<String> = (0..3).map(|i| unique_agent(&format!("ch{i}"))).collect();
    let mut redis = SecureRedis::start(&agents, true);
    rt.block_on(redis.prepare());
    let mut r1 = RouterProcess::start(&redis.router_url());
    let _r2 = RouterProcess::start(&redis.router_url());

    // Each agent sends a third of the messages, alternately to the two others.
    let mut all_ids = Vec::with_capacity(TOTAL);
    let mut senders = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let n = TOTAL / 3 + usize::from(i < TOTAL % 3);
        let msgs: Vec<Message> = (0..n)
            .map(|k| {
                let to = &agents[(i + 1 + k % 2) % 3];
                Message::new(a, to, "chaos", json!({"k": k}))
            })
            .collect();
        all_ids.extend(msgs.iter().map(|m| m.id.clone()));
        senders.push(rt.spawn(send_all(redis.url_of(a), msgs)));
    }
    assert_eq!(all_ids.len(), TOTAL);

    let mut admin = redis.server.client();
    let progress = |admin: &mut redis::Connection| -> usize {
        agents
            .iter()
            .map(|a| {
                redis::cmd("XLEN")
                    .arg(keys::inbox(a))
                    .query::<usize>(admin)
                    .unwrap_or(0)
            })
            .sum()
    };
    // Kill one router once deliveries are under way.
    let t0 = Instant::now();
    while progress(&mut admin) < TOTAL / 5 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    r1.kill();
    println!("router 1 killed after {} deliveries", progress(&mut admin));
    // Restart Redis in the middle.
    while progress(&mut admin) < TOTAL / 2 && t0.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("restarting Redis after {} deliveries", progress(&mut admin));
    redis.server.restart();
    let mut admin = redis.server.client();

    for s in senders {
        rt.block_on(s).expect("a sender panicked");
    }
    // Wait for the remaining deliveries.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = HashMap::new();
    while Instant::now() < deadline {
        if let Some(s) = delivered(&mut admin, &agents) {
            seen = s;
            if seen.len() >= TOTAL {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if seen.len() < TOTAL {
        for a in &agents {
            let o = keys::outbox(a);
            let len: redis::RedisResult<usize> = redis::cmd("XLEN").arg(&o).query(&mut admin);
            let groups: redis::RedisResult<redis::Value> =
                redis::cmd("XINFO").arg("GROUPS").arg(&o).query(&mut admin);
            println!("{o}: len {len:?} groups {groups:?}");
        }
    }
    let missing: Vec<&String> = all_ids
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} messages delivered twice, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(seen.len(), TOTAL);
    let in_inboxes = progress(&mut admin);
    assert_eq!(in_inboxes, TOTAL, "entries in the inboxes");
    let read: usize = agents
        .iter()
        .map(|a| {
            let groups: redis::RedisResult<Vec<HashMap<String, redis::Value>>> =
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(keys::outbox(a))
                    .query(&mut admin);
            groups
                .ok()
                .and_then(|g| g.first().and_then(|g| g.get("entries-read").cloned()))
                .and_then(|v| redis::from_redis_value::<usize>(v).ok())
                .unwrap_or(0)
        })
        .sum();
    println!(
        "all {TOTAL} delivered exactly once in {:?} ({read} outbox entries read: {} resent by senders that could not confirm a send)",
        t0.elapsed(),
        read.saturating_sub(TOTAL)
    );
}

/// A router that read two entries, delivered the first and died before acknowledging
/// either (played by hand, as the router's user, with the very call a router makes):
/// another router takes both over, delivers the second and not the first again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_delivers_what_the_dead_router_had_not_and_nothing_twice() {
    init_tracing();
    let (percy, coder) = (unique_agent("percy"), unique_agent("coder"));
    let redis = SecureRedis::start(&[percy.clone(), coder.clone()], false);
    redis.prepare().await;
    let bus = redis.agent_bus(&percy).await;
    let first = Message::new(&percy, &coder, "task", json!({"n": 1}));
    let second = Message::new(&percy, &coder, "task", json!({"n": 2}));
    bus.send_batch(vec![first.clone(), second.clone()])
        .await
        .unwrap();

    // The dead router: reads both, delivers the first, never acknowledges.
    let mut router = redis::Client::open(redis.router_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let outbox = keys::outbox(&percy);
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(keys::ROUTER_GROUP)
        .arg("dead-router")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&outbox)
        .arg(">")
        .query_async(&mut router)
        .await
        .unwrap();
    assert!(format!("{read:?}").contains(&second.id), "{read:?}");
    let inbox = keys::inbox(&coder);
    let delivered: Vec<(i64, String)> = redis::cmd("FCALL")
        .arg("fabric_forward")
        .arg(2)
        .arg(&inbox)
        .arg(keys::forwarded(&inbox))
        .arg(1)
        .arg(900_000)
        .arg(&percy)
        .arg(1)
        .arg(format!("{percy}/{}", first.id))
        .arg(1)
        .arg("data")
        .arg(first.to_data().unwrap())
        .query_async(&mut router)
        .await
        .unwrap();
    assert_eq!(delivered[0].0, 1, "{delivered:?}");

    // A live router takes over (after 500 ms idle).
    let live = RunningRouter::serve(&redis.router_url()).await;
    let mut admin = redis.server.async_conn().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let pending = loop {
        let p: (u64, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
            .arg(&outbox)
            .arg(keys::ROUTER_GROUP)
            .query_async(&mut admin)
            .await
            .unwrap();
        if p.0 == 0 || Instant::now() > deadline {
            break p.0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    live.stop().await;
    assert_eq!(pending, 0, "the live router took nothing over");
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(&inbox)
        .arg("-")
        .arg("+")
        .query_async(&mut admin)
        .await
        .unwrap();
    let ids: Vec<String> = entries
        .iter()
        .map(|(_, f)| {
            let v: serde_json::Value = serde_json::from_str(&f["data"]).unwrap();
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, [first.id.clone(), second.id.clone()], "{entries:?}");
    assert!(entries.iter().all(|(_, f)| f["sender"] == percy));
}
