//! Metrics cost: the same drain with metrics off (the default) and on
//! (`FABRIC_METRICS_ADDR`, the Prometheus recorder installed and every message counted),
//! alternating in one run.

use serde_json::json;

use super::{Sizes, drain_once, n_fmt, timed_json};
use crate::harness::{self, Env, MsgKind, median};
use crate::procs::{self, Kind};
use crate::report::{Report, Row, Target, Unit};

/// Drain `sz.drain` queued messages with metrics off and on, `env.repeat` times each.
pub(crate) async fn metrics(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let n = sz.drain;
    let (mut off, mut on, mut runs) = (Vec::new(), Vec::new(), Vec::new());
    // Consumer CPU per message (µs): steadier than the rate on a shared machine.
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    for r in 0..env.repeat {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for metrics_on in order {
            let label = if metrics_on {
                "metrics on"
            } else {
                "metrics off"
            };
            eprintln!(
                "  drain {n} messages, {label} (run {}/{})",
                r + 1,
                env.repeat
            );
            // Port 0: any free port; the recorder and server run as in production.
            let vars = if metrics_on {
                vec![("FABRIC_METRICS_ADDR", "127.0.0.1:0".to_owned())]
            } else {
                Vec::new()
            };
            let t = procs::with_ours_env(
                vars,
                drain_once(env, sz, report, Kind::Ours, 1, 1, n, MsgKind::Bench),
            )
            .await?;
            let rate = t.rate(n as u64);
            let cpu = t.consumer_cpu_ms * 1e3 / n as f64;
            eprintln!("    {rate:.0} msg/s, {cpu:.2} µs consumer CPU per message");
            if metrics_on {
                on.push(rate);
                cpu_on.push(cpu);
            } else {
                off.push(rate);
                cpu_off.push(cpu);
            }
            runs.push(json!({"metrics": metrics_on, "run": r + 1, "result": timed_json(&t, n)}));
        }
    }
    let ratio = harness::paired_ratio(&on, &off);
    report.push(
        Row::new(
            "metrics",
            format!(
                "Drain {} queued with metrics on (FABRIC_METRICS_ADDR) (median of {})",
                n_fmt(n),
                env.repeat
            ),
            Unit::MsgPerSec,
            Some(median(on)),
            Some(median(off)),
            "the same worker and drain with metrics off (the default)",
        )
        .paired_ratio(ratio)
        .target(Target::RatioAtLeast(0.95)),
    );
    let cpu_ratio = harness::paired_ratio(&cpu_on, &cpu_off);
    report.push(
        Row::new(
            "metrics",
            "Drain: consumer process CPU per message, metrics on",
            Unit::Micros,
            Some(median(cpu_on)),
            Some(median(cpu_off)),
            "the same with metrics off",
        )
        .paired_ratio(cpu_ratio)
        .target(Target::RatioAtMost(1.05)),
    );
    report.detail("metrics", json!({"messages": n, "runs": runs}));
    Ok(())
}
