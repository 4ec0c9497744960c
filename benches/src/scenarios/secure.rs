//! Secure mode against direct mode: what the extra hop through the outbox and the router
//! costs, in latency (send → handler start at 1,000/s) and in throughput (a burst of
//! `send_batch`es until the worker has handled them all). The router runs as a process of
//! its own, as `fabric router` does.

use std::time::Instant;

use fabric_worker::bus::Mode;
use serde_json::{Value, json};

use super::latency::latency_once;
use super::{Sizes, n_fmt};
use crate::harness::{self, Env, MsgKind, messages, targets};
use crate::procs::Kind;
use crate::report::{Report, Row, Target, Unit};
use crate::router_mode::RouterProc;

const BASE: &str = "direct mode (the same sender and worker, straight into the inbox)";

/// One throughput run.
struct Run {
    /// Messages per second, first send → last handled.
    rate: f64,
    /// Redis CPU time per message over the same span, µs.
    redis_us: f64,
    /// Redis commands per message over the same span, by command.
    calls: serde_json::Map<String, Value>,
}

/// `n` messages sent as fast as `send_batch(100)` goes, until handled.
async fn throughput_once(env: &Env, mode: Mode, n: usize) -> anyhow::Result<Run> {
    let agent = env.agent("thr");
    let tg = targets(Kind::Ours, std::slice::from_ref(&agent));
    let (consumer, bus) = super::start_one(env, Kind::Ours, &agent, mode).await?;
    if mode == Mode::Secure {
        // The router finds the new outbox within its scan interval (100 ms).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let msgs = messages(env, &agent, n, MsgKind::Bench);
    let mut conn = env.conn.clone();
    let u0 = harness::redis_usage(&mut conn).await?;
    let t0 = Instant::now();
    for chunk in msgs.chunks(100) {
        bus.send_batch(chunk.to_vec()).await?;
    }
    harness::wait_delivered(env, &agent, n as u64).await?;
    harness::wait_drained(env, &tg).await?;
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let u1 = harness::redis_usage(&mut conn).await?;
    consumer.stop().await?;
    env.cleanup(&[agent, env.producer()]).await?;
    let calls = u1
        .calls
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(u0.calls.get(k).copied().unwrap_or(0));
            (d > 0).then(|| {
                (
                    k.clone(),
                    json!((d as f64 / n as f64 * 100.0).round() / 100.0),
                )
            })
        })
        .collect();
    Ok(Run {
        rate,
        redis_us: (u1.cpu_s - u0.cpu_s) * 1e6 / n as f64,
        calls,
    })
}

/// Secure against direct: latency at 1,000/s, and throughput.
pub(crate) async fn secure(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let router = RouterProc::spawn(&env.url)?;
    let rate = 1_000;
    let mut runs = Vec::new();
    eprintln!(
        "  secure mode: latency at {rate}/s for {} s, direct then secure",
        sz.latency_secs
    );
    let direct = latency_once(env, Kind::Ours, rate, sz.latency_secs, Mode::Direct).await?;
    let secure = latency_once(env, Kind::Ours, rate, sz.latency_secs, Mode::Secure).await?;
    eprintln!(
        "    p50 {} → {} µs, p99 {} → {} µs",
        direct["p50_us"], secure["p50_us"], direct["p99_us"], secure["p99_us"]
    );
    let get = |v: &Value, k: &str| v[k].as_f64();
    let rate_s = n_fmt(rate as usize);
    report.push(Row::new(
        "secure",
        format!("Secure mode: latency send → handler start @ {rate_s}/s, p50"),
        Unit::Micros,
        get(&secure, "p50_us"),
        get(&direct, "p50_us"),
        BASE,
    ));
    report.push(
        Row::new(
            "secure",
            format!("Secure mode: latency @ {rate_s}/s, p99"),
            Unit::Micros,
            get(&secure, "p99_us"),
            get(&direct, "p99_us"),
            BASE,
        )
        .target(Target::OursBelow(2_000.0)),
    );
    let n = sz.enqueue_batch / 5;
    let (mut d, mut s) = (Vec::new(), Vec::new());
    for r in 0..env.repeat {
        eprintln!(
            "  secure mode: throughput, {n} messages (run {}/{})",
            r + 1,
            env.repeat
        );
        let direct = throughput_once(env, Mode::Direct, n).await?;
        let secure = throughput_once(env, Mode::Secure, n).await?;
        eprintln!(
            "    direct {:.0}/s ({:.1} µs of Redis CPU a message), secure {:.0}/s ({:.1} µs)",
            direct.rate, direct.redis_us, secure.rate, secure.redis_us
        );
        d.push(direct.rate);
        s.push(secure.rate);
        runs.push(json!({
            "run": r + 1,
            "direct": {"per_s": direct.rate, "redis_cpu_us_per_msg": direct.redis_us, "redis_calls_per_msg": direct.calls},
            "secure": {"per_s": secure.rate, "redis_cpu_us_per_msg": secure.redis_us, "redis_calls_per_msg": secure.calls},
        }));
    }
    let ratio = harness::paired_ratio(&s, &d);
    report.push(
        Row::new(
            "secure",
            format!(
                "Secure mode: {} messages sent (send_batch 100) and handled, 1 worker, 1 router",
                n_fmt(n)
            ),
            Unit::MsgPerSec,
            Some(harness::median(s)),
            Some(harness::median(d)),
            BASE,
        )
        .paired_ratio(ratio)
        .target(Target::RatioAtLeast(0.5)),
    );
    report.detail(
        "secure",
        json!({
            "measured": "latency as in `latency` (the sender writes to its outbox; a router process delivers to the inbox); throughput from the first send to the worker having handled the last message",
            "latency": {"direct": direct, "secure": secure},
            "throughput_runs": runs,
        }),
    );
    router.stop().await?;
    Ok(())
}
