//! Drain: a queued backlog drained by one consumer process, ours against the raw consumer.

use serde_json::json;

use super::{RAW_DRAIN, Shared, Sizes, drain_once, n_fmt, timed_json};
use crate::harness::{self, Env, MsgKind, datas, median};
use crate::procs::Kind;
use crate::report::{Report, Row, Target, Unit};

/// Drain: a queued backlog, one consumer process, default settings.
pub(crate) async fn drain(
    env: &Env,
    sz: &Sizes,
    report: &mut Report,
    shared: &mut Shared,
) -> anyhow::Result<()> {
    let n = sz.drain;
    // Per kind: rates, start-ups, µs per message (consumer CPU, Redis CPU), commands.
    let mut samples = [DrainSamples::default(), DrainSamples::default()];
    let mut runs = Vec::new();
    for r in 0..env.repeat {
        let order = if r % 2 == 0 {
            [Kind::Ours, Kind::Raw]
        } else {
            [Kind::Raw, Kind::Ours]
        };
        for kind in order {
            eprintln!(
                "  drain {n} messages, {} (run {}/{})",
                kind.name(),
                r + 1,
                env.repeat
            );
            let t = drain_once(env, sz, report, kind, 1, 1, n, MsgKind::Bench).await?;
            let rate = t.rate(n as u64);
            eprintln!(
                "    {:.0} msg/s, start-up {:.0} ms",
                rate,
                t.startup.as_secs_f64() * 1e3
            );
            let peak = t.peak_rss_kib.first().copied();
            let (s, peak_seen) = match kind {
                Kind::Ours => (&mut samples[0], &mut shared.peak_rss_ours_kib),
                Kind::Raw => (&mut samples[1], &mut shared.peak_rss_raw_kib),
            };
            s.cmds.push(t.commands_per_msg(n as u64));
            s.cpu.push((
                t.consumer_cpu_ms * 1e3 / n as f64,
                t.redis_cpu_ms * 1e3 / n as f64,
            ));
            s.rates.push(rate);
            s.startup_ms.push(t.startup.as_secs_f64() * 1e3);
            *peak_seen = (*peak_seen).max(peak);
            runs.push(json!({"kind": kind.name(), "run": r + 1, "result": timed_json(&t, n)}));
        }
    }
    let [
        DrainSamples {
            rates: ours,
            startup_ms: ours_start,
            cpu: ours_cpu,
            cmds: ours_cmds,
        },
        DrainSamples {
            rates: raw,
            startup_ms: raw_start,
            cpu: raw_cpu,
            cmds: raw_cmds,
        },
    ] = samples;
    let ratio = harness::paired_ratio(&ours, &raw);
    let (o, b) = (median(ours), median(raw));
    shared.drain_ours = Some(o);
    shared.drain_raw = Some(b);
    report.push(
        Row::new(
            "drain",
            format!(
                "Drain {} queued, 1 worker process, defaults (median of {})",
                n_fmt(n),
                env.repeat
            ),
            Unit::MsgPerSec,
            Some(o),
            Some(b),
            RAW_DRAIN,
        )
        .paired_ratio(ratio)
        .target(Target::RatioAtLeast(0.70)),
    );
    let cpu = |v: &[(f64, f64)], redis: bool| {
        median(v.iter().map(|c| if redis { c.1 } else { c.0 }).collect())
    };
    report.push(Row::new(
        "drain",
        "Drain: consumer process CPU per message",
        Unit::Micros,
        Some(cpu(&ours_cpu, false)),
        Some(cpu(&raw_cpu, false)),
        RAW_DRAIN,
    ));
    report.push(Row::new(
        "drain",
        "Drain: Redis CPU per message",
        Unit::Micros,
        Some(cpu(&ours_cpu, true)),
        Some(cpu(&raw_cpu, true)),
        RAW_DRAIN,
    ));
    report.push(Row::new(
        "drain",
        "Drain: Redis commands per message",
        Unit::Count,
        Some(median(ours_cmds)),
        Some(median(raw_cmds)),
        RAW_DRAIN,
    ));
    report.push(Row::new(
        "drain",
        "Drain: worker start-up (spawn → first handler start)",
        Unit::Millis,
        Some(median(ours_start)),
        Some(median(raw_start)),
        RAW_DRAIN,
    ));

    // Tasks: reply_to is set, so the worker writes one reply per message.
    eprintln!("  drain {n} task messages (reply_to set), ours and raw");
    let t_ours = drain_once(env, sz, report, Kind::Ours, 1, 1, n, MsgKind::Task).await?;
    let t_raw = drain_once(env, sz, report, Kind::Raw, 1, 1, n, MsgKind::Task).await?;
    report.push(Row::new(
        "drain",
        format!(
            "Drain {} `Message::task`s (reply_to set: +1 reply XADD each)",
            n_fmt(n)
        ),
        Unit::MsgPerSec,
        Some(t_ours.rate(n as u64)),
        Some(t_raw.rate(n as u64)),
        RAW_DRAIN,
    ));
    report.detail(
        "drain",
        json!({
            "messages": n,
            "envelope_bytes": datas(env, "x", 1, MsgKind::Bench)?[0].len(),
            "measured": "from the first handler start (timestamp recorded in the consumer process) to the first XINFO GROUPS poll (every 2 ms; midpoint with the previous poll) that sees pending = 0 and lag = 0",
            "runs": runs,
            "task_messages": {"ours": timed_json(&t_ours, n), "raw": timed_json(&t_raw, n)},
        }),
    );
    Ok(())
}

/// What the drain runs of one kind measured.
#[derive(Default)]
struct DrainSamples {
    rates: Vec<f64>,
    startup_ms: Vec<f64>,
    /// µs per message: (consumer CPU, Redis CPU).
    cpu: Vec<(f64, f64)>,
    cmds: Vec<f64>,
}
