//! Agents: one process serving many agents (1,000; 50 with --quick) — what it holds and
//! costs while idle, how fast an idle agent wakes up, and whether one agent's backlog starves
//! the others.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::agents_send::{fairness_once, wake_latency};
use super::{Sizes, mib, n_fmt};
use crate::harness::{self, Env, RAW_GROUP, create_groups};
use crate::procs::{self, Consumer, Kind};
use crate::report::{Report, Row, Target, Unit};
use crate::server::port_of;
use crate::stats::LatencySummary;
use crate::watch;

/// Agents in the small run that shows whether connections grow with the agent count: past
/// the 16 inboxes a worker reads with blocking reads of their own by default
/// (`blocking_readers`), so that both runs read the same way.
const FEW_AGENTS: usize = 20;

/// What a consumer serving many agents holds and costs while idle.
#[derive(Debug, Default)]
struct Idle {
    agents: usize,
    /// Spawn → ready (see `watch::wait_ready`), ms.
    ready_ms: f64,
    connections: usize,
    rss_kib: u64,
    /// Over the window (none for a connections-only run).
    window_s: f64,
    cpu_pct: f64,
    redis_cpu_pct: f64,
    redis_cmds_per_s: f64,
    redis_calls: BTreeMap<String, u64>,
}

impl Idle {
    fn json(&self) -> Value {
        json!({
            "agents": self.agents,
            "ready_ms": self.ready_ms,
            "connections": self.connections,
            "rss_kib": self.rss_kib,
            "window_s": self.window_s,
            "cpu_pct": self.cpu_pct,
            "redis_cpu_pct": self.redis_cpu_pct,
            "redis_cmds_per_s": self.redis_cmds_per_s,
            "redis_calls": self.redis_calls,
        })
    }
}

/// Starts a consumer of `kind` serving `agents` (fresh, groups created, inboxes empty),
/// waits until it is ready and `sz.idle_wait` more, then measures it idle over `window`
/// (none: connections and RSS only). Returns the consumer, still running.
async fn idle_once(
    env: &Env,
    sz: &Sizes,
    kind: Kind,
    agents: &[String],
    window: Option<Duration>,
) -> anyhow::Result<(Idle, Consumer)> {
    let port = port_of(&env.url)?;
    create_groups(env, kind, agents).await?;
    let before = harness::blocked_readers(&mut env.conn.clone()).await?;
    let t0 = Instant::now();
    let mut c = procs::spawn(kind, &env.url, agents, RAW_GROUP, &env.tmp)?;
    watch::wait_ready(env, kind, agents, before, &mut [&mut c]).await?;
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(sz.idle_wait).await;
    let mut idle = Idle {
        agents: agents.len(),
        ready_ms,
        ..Idle::default()
    };
    if let Some(w) = window {
        let u0 = env.redis_usage().await?;
        let cpu0 = c.cpu_ms().context("reading /proc/<pid>/stat")?;
        let t = Instant::now();
        tokio::time::sleep(w).await;
        let cpu1 = c.cpu_ms().context("reading /proc/<pid>/stat")?;
        let u1 = env.redis_usage().await?;
        let secs = t.elapsed().as_secs_f64();
        idle.window_s = secs;
        idle.cpu_pct = (cpu1 - cpu0) / 1e3 / secs * 100.0;
        idle.redis_cpu_pct = (u1.cpu_s - u0.cpu_s) / secs * 100.0;
        idle.redis_calls = u1.consumer_calls_since(&u0);
        idle.redis_cmds_per_s = idle.redis_calls.values().sum::<u64>() as f64 / secs;
    }
    idle.connections = c.connections_to(port)?;
    idle.rss_kib = c.rss_kib().context("reading VmRSS")?;
    c.check_alive()?;
    Ok((idle, c))
}

/// Agents: idle cost and wake-up latency of one process serving `sz.many_agents`, and
/// fairness under one hot agent (also with `FABRIC_MAX_IN_FLIGHT=64`).
pub(crate) async fn agents(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let n = sz.many_agents;
    let mut idle = BTreeMap::new();
    let mut few = BTreeMap::new();
    let mut wake = BTreeMap::new();
    for kind in [Kind::Ours, Kind::Raw] {
        eprintln!(
            "  agents: {FEW_AGENTS} agents, connections: {}",
            kind.name()
        );
        let a: Vec<String> = (0..FEW_AGENTS).map(|_| env.agent("few")).collect();
        let (f, c) = idle_once(env, sz, kind, &a, None).await?;
        c.stop().await?;
        env.cleanup(&a).await?;
        eprintln!(
            "  agents: {n} agents idle for {:.0} s: {}",
            sz.idle_window.as_secs_f64(),
            kind.name()
        );
        let a: Vec<String> = (0..n).map(|_| env.agent("idle")).collect();
        let (i, c) = idle_once(env, sz, kind, &a, Some(sz.idle_window)).await?;
        eprintln!(
            "    {} connections, CPU {:.2} %, Redis CPU {:.2} %, {:.1} commands/s, RSS {:.1} MiB (ready in {:.0} ms)",
            i.connections,
            i.cpu_pct,
            i.redis_cpu_pct,
            i.redis_cmds_per_s,
            mib(i.rss_kib),
            i.ready_ms
        );
        eprintln!(
            "  agents: wake-up latency, {}/s for {} s to random agents: {}",
            sz.wake_rate,
            sz.wake_secs,
            kind.name()
        );
        let (lat, achieved) = wake_latency(env, sz, kind, &a, c).await?;
        eprintln!(
            "    p50 {} µs, p99 {} µs, p99.9 {} µs",
            lat.p50_us, lat.p99_us, lat.p999_us
        );
        let mut cleanup = a.clone();
        cleanup.push(env.producer());
        env.cleanup(&cleanup).await?;
        few.insert(kind.name(), f);
        idle.insert(kind.name(), i);
        wake.insert(kind.name(), (lat, achieved));
    }
    let mut fair = BTreeMap::new();
    let runs: [(&str, Kind, procs::EnvVars); 3] = [
        ("ours", Kind::Ours, Vec::new()),
        ("raw", Kind::Raw, Vec::new()),
        (
            "ours_max_in_flight_64",
            Kind::Ours,
            vec![("FABRIC_MAX_IN_FLIGHT", "64".to_owned())],
        ),
    ];
    for (label, kind, vars) in runs {
        eprintln!(
            "  agents: fairness, 1 of {n} agents with {} queued, the others at {}/s: {label}",
            n_fmt(sz.hot_backlog),
            sz.others_rate
        );
        let r = fairness_once(env, sz, kind, n, vars).await?;
        eprintln!(
            "    others p50 {} µs, p99 {} µs, max {} µs ({} sent); hot agent {:.0} msg/s",
            r["others_p50_us"],
            r["others_p99_us"],
            r["others_max_us"],
            r["others_sent"],
            r["hot_drain_per_s"].as_f64().unwrap_or(f64::NAN)
        );
        fair.insert(label, r);
    }
    push_rows(sz, report, &few, &idle, &wake, &fair);
    report.detail(
        "agents",
        json!({
            "agents": n,
            "few_agents": few.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
            "idle": idle.iter().map(|(k, v)| (k.to_string(), v.json())).collect::<serde_json::Map<_, _>>(),
            "wake": wake.iter().map(|(k, (l, r))| (k.to_string(), json!({"latency": l, "achieved_per_s": r, "offered_per_s": sz.wake_rate, "seconds": sz.wake_secs}))).collect::<serde_json::Map<_, _>>(),
            "fairness": fair,
            "measured": "connections: the consumer process's TCP sockets (/proc/<pid>/fd inodes in /proc/<pid>/net/tcp and tcp6) whose remote port is Redis'; idle CPU: utime + stime delta (/proc/<pid>/stat, 10 ms ticks) over the window; Redis CPU: INFO cpu delta; commands: INFO commandstats delta without the benchmark's own INFO; after the consumer is ready (ours: presence written for every agent; raw: its XREADGROUP blocked) and idle_wait more",
        }),
    );
    Ok(())
}

fn push_rows(
    sz: &Sizes,
    report: &mut Report,
    few: &BTreeMap<&str, Idle>,
    idle: &BTreeMap<&str, Idle>,
    wake: &BTreeMap<&str, (LatencySummary, f64)>,
    fair: &BTreeMap<&str, Value>,
) {
    let n = n_fmt(sz.many_agents);
    let base = "raw consumer process: one XREADGROUP … BLOCK over all the streams";
    let pair =
        |m: &BTreeMap<&str, Idle>, f: fn(&Idle) -> f64| (m.get("ours").map(f), m.get("raw").map(f));
    let row = |metric: String, unit: Unit, (o, b): (Option<f64>, Option<f64>)| {
        Row::new("agents", metric, unit, o, b, base)
    };
    let conns = |i: &Idle| i.connections as f64;
    report.push(row(
        format!("Agents: TCP connections to Redis, {FEW_AGENTS} agents, 1 process"),
        Unit::Int,
        pair(few, conns),
    ));
    report.push(row(
        format!("Agents: TCP connections to Redis, {n} agents, 1 process"),
        Unit::Int,
        pair(idle, conns),
    ));
    let growth = |k: &str| Some(idle.get(k)?.connections as f64 - few.get(k)?.connections as f64);
    report.push(
        row(
            format!("Agents: connections added from {FEW_AGENTS} to {n} agents"),
            Unit::Int,
            (growth("ours"), growth("raw")),
        )
        .target(Target::OursBelow(1.0)),
    );
    report.push(row(
        format!("Agents: start-up, {n} agents (spawn → ready to read them all)"),
        Unit::Millis,
        pair(idle, |i| i.ready_ms),
    ));
    let secs = sz.idle_window.as_secs_f64();
    report.push(
        row(
            format!("Agents: process CPU idle, {n} agents ({secs:.0} s)"),
            Unit::Percent,
            pair(idle, |i| i.cpu_pct),
        )
        .target(Target::OursBelow(1.0)),
    );
    report.push(row(
        format!("Agents: Redis CPU meanwhile, {n} agents idle"),
        Unit::Percent,
        pair(idle, |i| i.redis_cpu_pct),
    ));
    report.push(row(
        format!("Agents: Redis commands/s meanwhile, {n} agents idle"),
        Unit::PerSec,
        pair(idle, |i| i.redis_cmds_per_s),
    ));
    report.push(
        row(
            format!("Agents: RSS idle, {n} agents"),
            Unit::MiB,
            pair(idle, |i| mib(i.rss_kib)),
        )
        .target(Target::OursBelow(64.0)),
    );
    let lat = |k: &str, f: fn(&LatencySummary) -> u64| wake.get(k).map(|(l, _)| f(l) as f64);
    let wbase = "raw XADD → raw consumer over the same streams (same schedule)";
    let rate = n_fmt(sz.wake_rate as usize);
    type Pick = fn(&LatencySummary) -> u64;
    for (q, f, target) in [
        ("p50", (|l| l.p50_us) as Pick, None),
        ("p99", |l| l.p99_us, Some(Target::OursBelow(5_000.0))),
        ("p99.9", |l| l.p999_us, None),
    ] {
        let r = Row::new(
            "agents",
            format!("Agents: wake-up send → start, {rate}/s to random agents of {n}: {q}"),
            Unit::Micros,
            lat("ours", f),
            lat("raw", f),
            wbase,
        );
        report.push(match target {
            Some(t) => r.target(t),
            None => r,
        });
    }
    let fbase = "the raw consumer, same backlog and sends";
    let backlog = n_fmt(sz.hot_backlog);
    let get = |k: &str, f: &str| fair.get(k).and_then(|v| v[f].as_f64());
    for (ours, label) in [
        ("ours", ""),
        ("ours_max_in_flight_64", ", FABRIC_MAX_IN_FLIGHT=64"),
    ] {
        for (q, field) in [
            ("p50", "others_p50_us"),
            ("p99", "others_p99_us"),
            ("max", "others_max_us"),
        ] {
            report.push(Row::new(
                "agents",
                format!("Agents: others' send → start while 1 drains {backlog}{label}: {q}"),
                Unit::Micros,
                get(ours, field),
                get("raw", field),
                fbase,
            ));
        }
        report.push(Row::new(
            "agents",
            format!("Agents: the hot agent's drain meanwhile{label}"),
            Unit::MsgPerSec,
            get(ours, "hot_drain_per_s"),
            get("raw", "hot_drain_per_s"),
            fbase,
        ));
    }
}
