//! Memory: consumer RSS idle and under load.

use anyhow::Context as _;
use serde_json::json;

use super::{Shared, Sizes, drain_once, mib, n_fmt};
use crate::harness::{self, Env, MsgKind, RAW_GROUP, create_groups};
use crate::procs::{self, Kind};
use crate::report::{Report, Row, Target, Unit};
use crate::watch;

/// RSS of an idle consumer serving `agents_n` fresh agents.
async fn idle_rss(env: &Env, sz: &Sizes, kind: Kind, agents_n: usize) -> anyhow::Result<u64> {
    let agents: Vec<String> = (0..agents_n).map(|_| env.agent("idle")).collect();
    create_groups(env, kind, &agents).await?;
    let before = harness::blocked_readers(&mut env.conn.clone()).await?;
    let mut c = procs::spawn(kind, &env.url, &agents, RAW_GROUP, &env.tmp)?;
    // Our worker has registered every agent (it may read with one blocked XREADGROUP per
    // stream or without blocking, woken by notifications); the raw consumer's one read is
    // blocked. Then idle_wait.
    watch::wait_ready(env, kind, &agents, before, &mut [&mut c]).await?;
    tokio::time::sleep(sz.idle_wait).await;
    let rss = c.rss_kib().context("reading VmRSS")?;
    c.stop().await?;
    env.cleanup(&agents).await?;
    Ok(rss)
}

/// Memory: worker RSS idle and under load.
pub(crate) async fn memory(
    env: &Env,
    sz: &Sizes,
    report: &mut Report,
    shared: &mut Shared,
) -> anyhow::Result<()> {
    eprintln!("  memory: idle RSS");
    let idle_ours = idle_rss(env, sz, Kind::Ours, 1).await?;
    let idle_raw = idle_rss(env, sz, Kind::Raw, 1).await?;
    let idle_ours_many = idle_rss(env, sz, Kind::Ours, sz.agents).await?;
    let idle_raw_many = idle_rss(env, sz, Kind::Raw, sz.agents).await?;
    if shared.peak_rss_ours_kib.is_none() || shared.peak_rss_raw_kib.is_none() {
        eprintln!("  memory: peak RSS while draining {}", n_fmt(sz.drain));
        let o = drain_once(env, sz, report, Kind::Ours, 1, 1, sz.drain, MsgKind::Bench).await?;
        let r = drain_once(env, sz, report, Kind::Raw, 1, 1, sz.drain, MsgKind::Bench).await?;
        shared.peak_rss_ours_kib = o.peak_rss_kib.first().copied();
        shared.peak_rss_raw_kib = r.peak_rss_kib.first().copied();
    }
    let base = "raw consumer process (same runtime, same state)";
    report.push(
        Row::new(
            "memory",
            "Memory: worker RSS idle, 1 agent",
            Unit::MiB,
            Some(mib(idle_ours)),
            Some(mib(idle_raw)),
            base,
        )
        .target(Target::OursBelow(20.0)),
    );
    report.push(Row::new(
        "memory",
        format!("Memory: worker RSS idle, {} agents", sz.agents),
        Unit::MiB,
        Some(mib(idle_ours_many)),
        Some(mib(idle_raw_many)),
        base,
    ));
    report.push(Row::new(
        "memory",
        format!(
            "Memory: worker peak RSS draining {} (VmHWM)",
            n_fmt(sz.drain)
        ),
        Unit::MiB,
        shared.peak_rss_ours_kib.map(mib),
        shared.peak_rss_raw_kib.map(mib),
        base,
    ));
    report.detail(
        "memory",
        json!({
            "idle_after_ms": sz.idle_wait.as_millis() as u64,
            "idle_kib": {"ours_1_agent": idle_ours, "raw_1_agent": idle_raw, "ours_many_agents": idle_ours_many, "raw_many_agents": idle_raw_many},
            "peak_kib": {"ours": shared.peak_rss_ours_kib, "raw": shared.peak_rss_raw_kib},
            "measured": "VmRSS of the consumer process once ready (our worker: its presence written for every agent; raw: its XREADGROUP blocked) and then idle for idle_after_ms; VmHWM at the end of the drain",
        }),
    );
    Ok(())
}
