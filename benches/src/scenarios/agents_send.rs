//! The agents scenario's load: open-loop sends to random agents of a process serving many
//! (wake-up latency), and the same while one agent drains a backlog (fairness).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use fabric_worker::{Bus, Message, keys};
use serde_json::{Value, json};

use super::Sizes;
use crate::harness::{self, Env, MsgKind, RAW_GROUP, acked, create_groups, datas, fill, targets};
use crate::procs::{self, Consumer, Kind};
use crate::stats::{LatencySummary, now_us};
use crate::watch;

/// A small deterministic generator (splitmix64) for picking agents.
pub(super) struct Pick(u64);

impl Pick {
    pub(super) fn new(seed: u64) -> Pick {
        Pick(seed)
    }

    fn index(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// When an open-loop sender stops.
pub(super) struct Limit<'a> {
    /// At most this many messages.
    pub max: Option<u64>,
    /// Once this is set and at least `min` were sent.
    pub stop: Option<&'a AtomicBool>,
    pub min: u64,
}

/// Sends to a random agent of `agents` each, open loop at `rate`/s: message *i* leaves at
/// start + *i*/rate in its own task, its payload carrying `sent_us`. Ours: `Bus::send`
/// (notify on, the default); raw: one `XADD`. Returns how many were sent and the rate
/// achieved.
pub(super) async fn open_loop(
    env: &Env,
    kind: Kind,
    agents: &[String],
    rate: u64,
    limit: &Limit<'_>,
    pick: &mut Pick,
) -> anyhow::Result<(u64, f64)> {
    let bus = Bus::connect(&env.url).await?;
    let conn = env.new_conn().await?;
    let producer = env.producer();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::new();
    let mut i: u64 = 0;
    let stopped = |i: u64| {
        limit.max.is_some_and(|m| i >= m)
            || (i >= limit.min && limit.stop.is_some_and(|s| s.load(Ordering::Relaxed)))
    };
    while !stopped(i) {
        tokio::time::sleep_until(start + Duration::from_nanos(i * 1_000_000_000 / rate)).await;
        if stopped(i) {
            break;
        }
        let agent = &agents[pick.index(agents.len())];
        let mut m = Message::new(&producer, agent, "bench", harness::payload(i as usize));
        let (bus, mut conn) = (bus.clone(), conn.clone());
        m.payload["sent_us"] = json!(now_us());
        handles.push(tokio::spawn(async move {
            harness::send_one(kind, &bus, &mut conn, m).await
        }));
        i += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    for h in handles {
        h.await??;
    }
    Ok((i, i as f64 / secs.max(1e-9)))
}

/// Waits until `n` entries are acknowledged over `targets` (summed).
pub(super) async fn wait_acked(
    env: &Env,
    targets: &[(String, String)],
    n: u64,
) -> anyhow::Result<()> {
    let watch = env.new_bus().await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done: u64 = harness::group_states(&watch, targets)
            .await?
            .iter()
            .map(acked)
            .sum();
        if done >= n {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{done} of {n} messages acknowledged within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wake-up latency: `sz.wake_rate`/s for `sz.wake_secs` to random agents of `agents`,
/// served by the (idle, ready) consumer `c`, after a warm-up of 20 unrecorded messages.
/// Stops `c` and returns its latency summary and the rate achieved.
pub(super) async fn wake_latency(
    env: &Env,
    sz: &Sizes,
    kind: Kind,
    agents: &[String],
    c: Consumer,
) -> anyhow::Result<(LatencySummary, f64)> {
    let tg = targets(kind, agents);
    let mut pick = Pick::new(0x5eed);
    // Warm-up (sent_us = 0: not recorded): the sender's connections, the consumer's paths.
    let producer = env.producer();
    let warm = Bus::connect(&env.url).await?;
    for i in 0..20 {
        let a = &agents[pick.index(agents.len())];
        let m = Message::new(&producer, a, "bench", harness::payload(i));
        match kind {
            Kind::Ours => {
                warm.send(m).await?;
            }
            Kind::Raw => {
                let _: String = redis::cmd("XADD")
                    .arg(keys::inbox(a))
                    .arg("*")
                    .arg("data")
                    .arg(serde_json::to_string(&m)?)
                    .query_async(&mut env.conn.clone())
                    .await?;
            }
        }
    }
    wait_acked(env, &tg, 20).await?;
    let total = ((sz.wake_rate as f64) * sz.wake_secs).round().max(1.0) as u64;
    let limit = Limit {
        max: Some(total),
        stop: None,
        min: 0,
    };
    let (sent, achieved) = open_loop(env, kind, agents, sz.wake_rate, &limit, &mut pick).await?;
    wait_acked(env, &tg, 20 + sent).await?;
    let stats = c.stop().await?;
    let lat = stats
        .latency
        .context("the consumer recorded no latencies")?;
    Ok((lat, achieved))
}

/// One fairness run: `sz.hot_backlog` messages queued for the last of `n` fresh agents
/// before the consumer starts; once it serves them all and the backlog's delivery has
/// begun, messages go to the other agents at `sz.others_rate`/s until the backlog is drained
/// (at least 20). The backlog carries no send time, so the consumer's latency histogram holds
/// only the others' send → handler-start latencies. `vars`: extra `FABRIC_*` variables for
/// our worker.
pub(super) async fn fairness_once(
    env: &Env,
    sz: &Sizes,
    kind: Kind,
    n: usize,
    vars: procs::EnvVars,
) -> anyhow::Result<Value> {
    let agents: Vec<String> = (0..n.max(2)).map(|_| env.agent("fair")).collect();
    let (others, hot) = agents.split_at(agents.len() - 1);
    let hot = hot[0].clone();
    create_groups(env, kind, &agents).await?;
    let backlog = sz.hot_backlog;
    let d = datas(env, &hot, backlog.min(1_000), MsgKind::Bench)?;
    fill(env, &keys::inbox(&hot), &d, backlog).await?;
    let watch_bus = env.new_bus().await?;
    let hot_target = targets(kind, std::slice::from_ref(&hot));
    let spawned_us = now_us();
    let mut c = procs::with_ours_env(vars, async {
        procs::spawn(kind, &env.url, &agents, RAW_GROUP, &env.tmp)
    })
    .await?;
    // Ready: our worker has registered every agent (the hot one last), and the backlog's
    // delivery has begun.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let registered = kind == Kind::Raw || watch::presence_count(env, &agents).await? == n;
        let g = &harness::group_states(&watch_bus, &hot_target).await?[0];
        if registered && (g.pending > 0 || g.entries_read.unwrap_or(0) > 0) {
            break;
        }
        c.check_alive()?;
        if std::time::Instant::now() > deadline {
            bail!(
                "{} consumer not serving {n} agents within 60 s",
                kind.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_us = now_us();
    let drained = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (drained, bus, hot, tg) = (drained.clone(), watch_bus.clone(), hot.clone(), hot_target);
        let deadline = std::time::Instant::now() + sz.timeout;
        async move {
            let mut prev = now_us();
            loop {
                if std::time::Instant::now() > deadline {
                    // try_join! below then drops the sender.
                    bail!(
                        "the hot agent's backlog not drained within {:?}",
                        sz.timeout
                    );
                }
                let now = now_us();
                let g = &harness::group_states(&bus, &tg).await?[0];
                if harness::drained(&bus, &hot, g).await? {
                    drained.store(true, Ordering::Relaxed);
                    return anyhow::Ok(prev + (now - prev) / 2);
                }
                prev = now;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let limit = Limit {
        max: None,
        stop: Some(&drained),
        min: 20,
    };
    let mut pick = Pick::new(0xfa1e);
    let sender = open_loop(env, kind, others, sz.others_rate, &limit, &mut pick);
    let (drained_us, sent) = tokio::try_join!(watcher, sender)?;
    let (sent, achieved) = sent;
    wait_acked(env, &targets(kind, others), sent).await?;
    let stats = c.stop().await?;
    let mut cleanup = agents.clone();
    cleanup.push(env.producer());
    env.cleanup(&cleanup).await?;
    let lat = stats
        .latency
        .context("the consumer recorded no latencies")?;
    let drain_s = drained_us.saturating_sub(stats.first_us) as f64 / 1e6;
    Ok(json!({
        "agents": n,
        "backlog": backlog,
        "hot_drain_s": drain_s,
        "hot_drain_per_s": backlog as f64 / drain_s.max(1e-6),
        "startup_ms": stats.first_us.saturating_sub(spawned_us) as f64 / 1e3,
        "ready_after_first_start_ms": ready_us.saturating_sub(stats.first_us) as f64 / 1e3,
        "others_sent": sent,
        "others_offered_per_s": sz.others_rate,
        "others_achieved_per_s": achieved,
        "others_recorded": lat.count,
        "others_p50_us": lat.p50_us,
        "others_p99_us": lat.p99_us,
        "others_p999_us": lat.p999_us,
        "others_max_us": lat.max_us,
        "handled": stats.handled,
    }))
}
