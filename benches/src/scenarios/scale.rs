//! Scale: more worker processes on one agent; many agents in one process.

use serde_json::json;

use super::{Shared, Sizes, drain_once, mib, n_fmt, timed_json};
use crate::harness::{Env, MsgKind, Timed};
use crate::procs::Kind;
use crate::report::{Report, Row, Unit};

/// Scale: 1 vs 2 worker processes on one agent; 1 vs 100 agents in one process.
pub(crate) async fn scale(
    env: &Env,
    sz: &Sizes,
    report: &mut Report,
    shared: &mut Shared,
) -> anyhow::Result<()> {
    let n = sz.scale;
    let rate_of = |t: &Timed| t.rate(n as u64);
    let (one_ours, one_raw) = match (shared.drain_ours, shared.drain_raw, n == sz.drain) {
        (Some(o), Some(r), true) => (o, r),
        _ => {
            eprintln!("  scale: 1 process, 1 agent (ours, raw)");
            let o = drain_once(env, sz, report, Kind::Ours, 1, 1, n, MsgKind::Bench).await?;
            let r = drain_once(env, sz, report, Kind::Raw, 1, 1, n, MsgKind::Bench).await?;
            (rate_of(&o), rate_of(&r))
        }
    };
    eprintln!("  scale: 2 processes, 1 agent: ours");
    let two_ours = drain_once(env, sz, report, Kind::Ours, 2, 1, n, MsgKind::Bench).await?;
    eprintln!("  scale: 2 processes, 1 agent: raw");
    let two_raw = drain_once(env, sz, report, Kind::Raw, 2, 1, n, MsgKind::Bench).await?;
    let agents = sz.agents;
    eprintln!("  scale: {agents} agents, 1 process: ours");
    let many_ours = drain_once(env, sz, report, Kind::Ours, 1, agents, n, MsgKind::Bench).await?;
    eprintln!("  scale: {agents} agents, 1 process: raw");
    let many_raw = drain_once(env, sz, report, Kind::Raw, 1, agents, n, MsgKind::Bench).await?;
    report.push(Row::new(
        "scale",
        format!("Scale: drain {}, 2 worker processes, 1 agent", n_fmt(n)),
        Unit::MsgPerSec,
        Some(rate_of(&two_ours)),
        Some(rate_of(&two_raw)),
        "the same number of raw consumer processes in one group",
    ));
    report.push(Row::new(
        "scale",
        "Scale: speed-up, 2 vs 1 processes",
        Unit::Factor,
        Some(rate_of(&two_ours) / one_ours),
        Some(rate_of(&two_raw) / one_raw),
        "the same number of raw consumer processes in one group",
    ));
    report.push(Row::new(
        "scale (agents)",
        format!(
            "Scale: drain {} over {agents} agents, 1 process",
            n_fmt(n)
        ),
        Unit::MsgPerSec,
        Some(rate_of(&many_ours)),
        Some(rate_of(&many_raw)),
        "one raw process, one XREADGROUP over all the streams (COUNT 100 each), one XACK per stream per batch",
    ));
    report.push(Row::new(
        "scale (agents)",
        format!("Scale: {agents} agents vs 1 agent, same total"),
        Unit::Factor,
        Some(rate_of(&many_ours) / one_ours),
        Some(rate_of(&many_raw) / one_raw),
        "one raw process, one XREADGROUP over all the streams (COUNT 100 each), one XACK per stream per batch",
    ));
    let peak = |t: &Timed| t.peak_rss_kib.iter().copied().max().map(mib);
    report.push(Row::new(
        "scale (agents)",
        format!("Scale: peak RSS draining over {agents} agents (VmHWM)"),
        Unit::MiB,
        peak(&many_ours),
        peak(&many_raw),
        "one raw process, one XREADGROUP over all the streams (COUNT 100 each), one XACK per stream per batch",
    ));
    report.detail(
        "scale",
        json!({
            "messages": n,
            "one_process": {"ours_msg_per_s": one_ours, "raw_msg_per_s": one_raw},
            "two_processes": {"ours": timed_json(&two_ours, n), "raw": timed_json(&two_raw, n)},
            "many_agents": {"agents": agents, "ours": timed_json(&many_ours, n), "raw": timed_json(&many_raw, n)},
        }),
    );
    Ok(())
}
