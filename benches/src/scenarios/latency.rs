//! Latency: send → handler start at fixed offered rates.

use std::time::Duration;

use anyhow::Context as _;
use fabric_worker::Message;
use fabric_worker::bus::Mode;
use serde_json::{Value, json};

use super::{Sizes, n_fmt};
use crate::harness::{self, Env, MsgKind, messages, targets};
use crate::procs::Kind;
use crate::report::{Report, Row, Target, Unit};
use crate::stats::now_us;

/// Open-loop sends at `rate`/s for `secs` to a running consumer; returns its latency stats.
/// With `Mode::Secure` our sends go through the producer's outbox and a router (which must
/// be running).
pub(super) async fn latency_once(
    env: &Env,
    kind: Kind,
    rate: u64,
    secs: f64,
    mode: Mode,
) -> anyhow::Result<Value> {
    let agent = env.agent("lat");
    let tg = targets(kind, std::slice::from_ref(&agent));
    let (consumer, bus) = super::start_one(env, kind, &agent, mode).await?;
    let conn = env.new_conn().await?;
    let send = |m: Message| {
        let bus = bus.clone();
        let mut conn = conn.clone();
        async move { harness::send_one(kind, &bus, &mut conn, m).await }
    };
    // Warm-up (not recorded: sent_us = 0).
    for m in messages(env, &agent, 200, MsgKind::Bench) {
        send(m).await?;
    }
    if mode == Mode::Secure {
        harness::wait_delivered(env, &agent, 200).await?;
    }
    harness::wait_drained(env, &tg).await?;
    let total = ((rate as f64) * secs).round().max(1.0) as u64;
    let msgs = messages(env, &agent, total as usize, MsgKind::Bench);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::with_capacity(total as usize);
    for (i, mut m) in msgs.into_iter().enumerate() {
        let at = start + Duration::from_nanos((i as u64) * 1_000_000_000 / rate);
        tokio::time::sleep_until(at).await;
        m.payload["sent_us"] = json!(now_us());
        handles.push(tokio::spawn(send(m)));
    }
    let send_secs = start.elapsed().as_secs_f64();
    for h in handles {
        h.await??;
    }
    if mode == Mode::Secure {
        harness::wait_delivered(env, &agent, 200 + total).await?;
    }
    harness::wait_drained(env, &tg).await?;
    let stats = consumer.stop().await?;
    env.cleanup(&[agent, env.producer()]).await?;
    let lat = stats
        .latency
        .context("the consumer recorded no latencies")?;
    if lat.count != total {
        eprintln!(
            "    warning: {} latencies recorded for {total} messages",
            lat.count
        );
    }
    Ok(json!({
        "offered_per_s": rate,
        "achieved_per_s": total as f64 / send_secs,
        "messages": total,
        "recorded": lat.count,
        "p50_us": lat.p50_us,
        "p99_us": lat.p99_us,
        "p999_us": lat.p999_us,
        "max_us": lat.max_us,
        "mean_us": lat.mean_us,
    }))
}

/// Latency: send → handler start at fixed offered rates.
pub(crate) async fn latency(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let mut details = Vec::new();
    for &rate in &sz.latency_rates {
        eprintln!("  latency at {rate}/s for {} s: ours", sz.latency_secs);
        let o = latency_once(env, Kind::Ours, rate, sz.latency_secs, Mode::Direct).await?;
        eprintln!(
            "    p50 {} µs, p99 {} µs, p99.9 {} µs",
            o["p50_us"], o["p99_us"], o["p999_us"]
        );
        eprintln!("  latency at {rate}/s: raw");
        let b = latency_once(env, Kind::Raw, rate, sz.latency_secs, Mode::Direct).await?;
        eprintln!(
            "    p50 {} µs, p99 {} µs, p99.9 {} µs",
            b["p50_us"], b["p99_us"], b["p999_us"]
        );
        let get = |v: &Value, k: &str| v[k].as_f64();
        let rate_s = n_fmt(rate as usize);
        let base = "raw XADD sender → raw consumer process (same open-loop schedule, same payload)";
        report.push(Row::new(
            "latency",
            format!("Latency send → handler start @ {rate_s}/s: p50"),
            Unit::Micros,
            get(&o, "p50_us"),
            get(&b, "p50_us"),
            base,
        ));
        let p99 = Row::new(
            "latency",
            format!("Latency @ {rate_s}/s: p99"),
            Unit::Micros,
            get(&o, "p99_us"),
            get(&b, "p99_us"),
            base,
        );
        report.push(if rate == 1_000 {
            p99.target(Target::OursBelow(2_000.0))
        } else {
            p99
        });
        report.push(Row::new(
            "latency",
            format!("Latency @ {rate_s}/s: p99.9"),
            Unit::Micros,
            get(&o, "p999_us"),
            get(&b, "p999_us"),
            base,
        ));
        details.push(json!({"rate": rate, "ours": o, "raw": b}));
    }
    report.detail(
        "latency",
        json!({
            "measured": "handler start time minus the send timestamp carried in the payload (µs since epoch, same clock); open loop: message i leaves at start + i/rate (tokio timer, 1 ms resolution: at 10,000/s they leave in bursts of ~10 per ms), each send in its own task; after a 200-message warm-up",
            "seconds_per_rate": sz.latency_secs,
            "runs": details,
        }),
    );
    Ok(())
}
