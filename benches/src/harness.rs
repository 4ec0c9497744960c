//! Shared machinery: messages, consumer groups and their state, and timing consumers from
//! their first handler start to a condition (the environment and filling streams: `env.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fabric_worker::bus::GroupStatus;
use fabric_worker::{Bus, Message, keys};
use serde_json::json;

pub(crate) use crate::env::{Env, connect, fill};
use crate::procs::{self, Consumer, Kind};
use crate::stats::{ProcStats, now_us};
use crate::watch::HARNESS_COMMANDS;
pub(crate) use crate::watch::{blocked_readers, redis_usage, wait_readers_blocked};

/// The shape of benchmark messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MsgKind {
    /// `Message::new(from, to, "bench", payload)`: no `reply_to`, so no reply is written.
    Bench,
    /// `Message::task(from, to, "code_review", payload)`: `reply_to` = the sender's results stream.
    Task,
}

/// The realistic payload every benchmark message carries (≈ 150 bytes of JSON).
pub(crate) fn payload(i: usize) -> serde_json::Value {
    json!({
        "task_type": "code_review",
        "pr_id": format!("PR-{i}"),
        "repo": "acme/fabric-worker",
        "files": ["src/bus.rs", "src/runtime.rs", "src/message.rs"],
        "sent_us": 0,
    })
}

/// `n` messages from the producer to `to`.
pub(crate) fn messages(env: &Env, to: &str, n: usize, kind: MsgKind) -> Vec<Message> {
    let from = env.producer();
    (0..n)
        .map(|i| match kind {
            MsgKind::Bench => Message::new(&from, to, "bench", payload(i)),
            MsgKind::Task => {
                let mut p = payload(i);
                if let Some(o) = p.as_object_mut() {
                    o.remove("task_type");
                }
                Message::task(&from, to, "code_review", p)
            }
        })
        .collect()
}

/// The `data` fields (envelope JSON) of `n` messages.
pub(crate) fn datas(env: &Env, to: &str, n: usize, kind: MsgKind) -> anyhow::Result<Vec<String>> {
    messages(env, to, n, kind)
        .iter()
        .map(|m| Ok(m.to_data()?))
        .collect()
}

/// Creates `group` on `agent`'s inbox at id 0 (an existing group is fine), as the library does.
/// Sends one message as `kind` does: ours with `Bus::send` (for the latency figures: one
/// awaited send, its notification included); raw with one `XADD` of the serialized envelope
/// to the recipient's inbox.
pub(crate) async fn send_one(
    kind: Kind,
    bus: &Bus,
    conn: &mut redis::aio::MultiplexedConnection,
    m: Message,
) -> anyhow::Result<()> {
    match kind {
        Kind::Ours => {
            bus.send(m).await?;
        }
        Kind::Raw => {
            let data = serde_json::to_string(&m)?;
            let _: String = redis::cmd("XADD")
                .arg(keys::inbox(&m.to_agent))
                .arg("*")
                .arg("data")
                .arg(&data)
                .query_async(conn)
                .await?;
        }
    }
    Ok(())
}

pub(crate) async fn create_group(env: &Env, agent: &str, group: &str) -> anyhow::Result<()> {
    Ok(env.bus.create_group(agent, Some(group)).await?)
}

/// Creates the group a consumer of `kind` reads each agent's inbox through.
pub(crate) async fn create_groups(env: &Env, kind: Kind, agents: &[String]) -> anyhow::Result<()> {
    for a in agents {
        create_group(env, a, &group_for(kind, a)).await?;
    }
    Ok(())
}

/// The consumer group a consumer of `kind` reads `agent`'s inbox through: the worker's
/// default `<agent>_workers`, or one group for the raw consumer (one `XREADGROUP` serves
/// all its streams, so they share a group name).
pub(crate) fn group_for(kind: Kind, agent: &str) -> String {
    match kind {
        Kind::Ours => keys::default_group(agent),
        Kind::Raw => RAW_GROUP.to_owned(),
    }
}

/// The raw consumer's group.
pub(crate) const RAW_GROUP: &str = "bench_raw";

/// `(agent, group)` of each agent for consumers of `kind`.
pub(crate) fn targets(kind: Kind, agents: &[String]) -> Vec<(String, String)> {
    agents
        .iter()
        .map(|a| (a.clone(), group_for(kind, a)))
        .collect()
}

/// The state of each `(agent, group)`: the library's `XINFO GROUPS`, all sent at once on
/// the bus's multiplexed connection (so one round trip, pipelined).
pub(crate) async fn group_states(
    bus: &Bus,
    targets: &[(String, String)],
) -> anyhow::Result<Vec<GroupStatus>> {
    let all = futures::future::try_join_all(targets.iter().map(|(a, _)| bus.groups(a))).await?;
    all.into_iter()
        .zip(targets)
        .map(|(groups, (agent, group))| {
            groups
                .into_iter()
                .find(|g| g.name == *group)
                .with_context(|| format!("no group {group} on {agent}'s inbox"))
        })
        .collect()
}

/// Entries delivered to the group and acknowledged.
pub(crate) fn acked(g: &GroupStatus) -> u64 {
    g.acknowledged().unwrap_or(0)
}

/// Whether every entry of the agent's inbox was delivered to the group and acknowledged.
pub(crate) async fn drained(bus: &Bus, agent: &str, g: &GroupStatus) -> anyhow::Result<bool> {
    if g.pending > 0 {
        return Ok(false);
    }
    if let Some(lag) = g.lag {
        return Ok(lag == 0);
    }
    // Redis cannot tell the lag (deletions): compare with the last id.
    let last = bus
        .stream_info(agent)
        .await?
        .and_then(|i| i.last_generated_id);
    Ok(last.as_deref() == Some(g.last_delivered_id.as_str()))
}

/// What the harness waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Until {
    /// Every stream delivered and acknowledged.
    Drained,
    /// From the moment `.0` entries are acknowledged (summed over the streams) to the
    /// moment `.1` are: a window that leaves out start-up.
    Window(u64, u64),
}

/// The result of timing a set of consumer processes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timed {
    /// Spawn → first handler start.
    pub startup: Duration,
    /// First handler start (or the start of the window) → condition met.
    pub elapsed: Duration,
    /// Entries acknowledged in that time.
    pub acked: u64,
    /// Peak RSS (VmHWM) of each consumer process, KiB.
    pub peak_rss_kib: Vec<u64>,
    /// What the processes reported when stopped.
    pub stats: Vec<ProcStats>,
    /// CPU time (user + system) the consumer processes used, spawn → condition met, ms.
    pub consumer_cpu_ms: f64,
    /// CPU time Redis used over the same span, ms.
    pub redis_cpu_ms: f64,
    /// Redis commands run over the same span (`INFO commandstats` delta), by command.
    pub redis_calls: BTreeMap<String, u64>,
}

impl Timed {
    /// Redis commands the consumers ran per message (the harness' own polling left out).
    pub(crate) fn commands_per_msg(&self, messages: u64) -> f64 {
        self.redis_calls
            .iter()
            .filter(|(k, _)| !HARNESS_COMMANDS.contains(&k.as_str()))
            .map(|(_, v)| *v)
            .sum::<u64>() as f64
            / messages.max(1) as f64
    }

    /// Messages per second over `elapsed`.
    pub(crate) fn rate(&self, messages: u64) -> f64 {
        messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn handled(&self) -> u64 {
        self.stats.iter().map(|s| s.handled).sum()
    }
}

/// Spawns `procs_n` consumers of `kind` serving `agents` (their groups must exist) and
/// times them from the first handler start (a timestamp the consumer processes record) to
/// `until`, seen by polling `XINFO GROUPS` every 2 ms (5 ms for many streams; the time
/// taken is the midpoint between that poll and the one before). Then stops them (SIGTERM)
/// and collects their stats.
pub(crate) async fn time_consumers(
    env: &Env,
    kind: Kind,
    procs_n: usize,
    agents: &[String],
    until: Until,
    timeout: Duration,
) -> anyhow::Result<Timed> {
    let mut left = targets(kind, agents);
    let poll = if left.len() > 4 {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(2)
    };
    let watch = env.new_bus().await?;
    // Entries already acknowledged before the start (a window counts from here).
    let base: u64 = group_states(&watch, &left).await?.iter().map(acked).sum();
    let redis_before = env.redis_usage().await?;
    let t0 = Instant::now();
    let spawned_us = now_us();
    let mut consumers = Vec::with_capacity(procs_n);
    for _ in 0..procs_n {
        consumers.push(procs::spawn(kind, &env.url, agents, RAW_GROUP, &env.tmp)?);
    }
    let mut prev_us = spawned_us;
    let mut window_start_us = None;
    let end_us;
    let mut acked_done = 0u64;
    loop {
        tokio::time::sleep(poll).await;
        let now = now_us();
        let states = group_states(&watch, &left).await?;
        let done = match until {
            Until::Drained => {
                let mut still = Vec::new();
                for (t, g) in left.iter().zip(&states) {
                    if drained(&watch, &t.0, g).await? {
                        acked_done += acked(g);
                    } else {
                        still.push(t.clone());
                    }
                }
                left = still;
                left.is_empty()
            }
            Until::Window(from, to) => {
                let acked_now = states.iter().map(acked).sum::<u64>().saturating_sub(base);
                if window_start_us.is_none() && acked_now >= from {
                    window_start_us = Some((prev_us + (now - prev_us) / 2, acked_now));
                }
                if acked_now >= to {
                    acked_done = acked_now;
                    true
                } else {
                    false
                }
            }
        };
        if done {
            end_us = prev_us + (now - prev_us) / 2;
            break;
        }
        for c in &mut consumers {
            c.check_alive()?;
        }
        if t0.elapsed() > timeout {
            bail!(
                "{} consumer did not finish within {timeout:?} (state: {states:?})",
                kind.name()
            );
        }
        prev_us = now;
    }
    let redis_after = env.redis_usage().await?;
    let consumer_cpu_ms = consumers.iter().filter_map(Consumer::cpu_ms).sum();
    let peak_rss_kib = consumers
        .iter()
        .filter_map(Consumer::peak_rss_kib)
        .collect();
    let mut stats = Vec::new();
    for c in consumers {
        stats.push(c.stop().await?);
    }
    let first_us = stats
        .iter()
        .map(|s| s.first_us)
        .filter(|&t| t > 0)
        .min()
        .context("no consumer handled anything")?;
    // Drained: every handler has started by then; a drain shorter than a poll interval
    // would otherwise come out as 0.
    let (start_us, end_us, acked) = match (until, window_start_us) {
        (Until::Drained, _) => (
            first_us,
            end_us.max(stats.iter().map(|s| s.last_us).max().unwrap_or(0)),
            acked_done,
        ),
        (Until::Window(..), Some((start, at_start))) => (start, end_us, acked_done - at_start),
        (Until::Window(..), None) => (first_us, end_us, acked_done),
    };
    Ok(Timed {
        startup: Duration::from_micros(first_us.saturating_sub(spawned_us)),
        elapsed: Duration::from_micros(end_us.saturating_sub(start_us)),
        acked,
        peak_rss_kib,
        stats,
        consumer_cpu_ms,
        redis_cpu_ms: (redis_after.cpu_s - redis_before.cpu_s) * 1e3,
        redis_calls: redis_after
            .calls
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - redis_before.calls.get(k).copied().unwrap_or(0),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect(),
    })
}

/// Waits until `n` entries were ever added to `agent`'s inbox (in secure mode, delivered by
/// the router: "drained" alone could be seen before the router's last delivery).
pub(crate) async fn wait_delivered(env: &Env, agent: &str, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let added = env
            .bus
            .stream_info(agent)
            .await?
            .and_then(|i| i.entries_added)
            .unwrap_or(0);
        if added >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {added} of {n} entries delivered to {agent}'s inbox within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every target is drained.
pub(crate) async fn wait_drained(env: &Env, targets: &[(String, String)]) -> anyhow::Result<()> {
    let watch = env.new_bus().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let states = group_states(&watch, targets).await?;
        let mut all = true;
        for ((agent, _), g) in targets.iter().zip(&states) {
            if !drained(&watch, agent, g).await? {
                all = false;
                break;
            }
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not drained within 120 s: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The median of the ratios `ours[i] / base[i]`: each pair was measured back to back, so
/// a slow patch of a noisy machine hits both sides of a pair.
pub(crate) fn paired_ratio(ours: &[f64], base: &[f64]) -> f64 {
    median(
        ours.iter()
            .zip(base)
            .filter(|(_, b)| **b > 0.0)
            .map(|(o, b)| o / b)
            .collect(),
    )
}

/// The median of some values (the mean of the two middle ones for an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
