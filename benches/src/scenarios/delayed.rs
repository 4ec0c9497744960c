//! Delayed delivery: how late a message sent for later is handled (handler start − its
//! delivery time), beside the send → start latency of the same worker for messages sent at
//! those same instants; and the same with a million other messages scheduled, to show that
//! promotion does not slow down with the schedule's size.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use fabric_worker::bus::Mode;
use fabric_worker::keys;
use serde_json::{Value, json};

use super::n_fmt;
use crate::harness::{Env, MsgKind, messages, targets, wait_drained};
use crate::procs::Kind;
use crate::report::{Report, Row, Target, Unit};
use crate::stats::now_us;

/// `(calls, usec)` of one command in `INFO commandstats` (commands run by functions count).
async fn command_stats(env: &Env, command: &str) -> anyhow::Result<(u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut env.conn.clone())
        .await?;
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = info.lines().find_map(|l| l.strip_prefix(&prefix)) else {
        return Ok((0, 0));
    };
    let field = |k: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("calls"), field("usec")))
}

/// One run: `n` messages due over `spread` (starting 0.5 s from now) to a fresh worker.
/// `delayed`: sent at once for later (lateness is recorded); else sent at each instant
/// (send → start latency is recorded). `preload` other members, due in a day, sit in the
/// schedule meanwhile.
async fn run_once(
    env: &Env,
    n: usize,
    spread: Duration,
    preload: usize,
    delayed: bool,
) -> anyhow::Result<Value> {
    let agent = env.agent("dly");
    let inbox = keys::inbox(&agent);
    let schedule = keys::delayed(&inbox);
    let (consumer, bus) = super::start_one(env, Kind::Ours, &agent, Mode::Direct).await?;
    let mut conn = env.conn.clone();
    if preload > 0 {
        let far = now_us() / 1000 + 86_400_000;
        for chunk in (0..preload).collect::<Vec<_>>().chunks(10_000) {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&schedule);
            for i in chunk {
                cmd.arg(far + (*i as u64 % 1000))
                    .arg(json!({"fields": ["data", "{}"], "id": format!("pre-{i}")}).to_string());
            }
            let _: i64 = cmd.query_async(&mut conn).await?;
        }
    }
    let zr_before = command_stats(env, "zrangebyscore").await?;
    let start_us = now_us() + 500_000;
    let step_us = spread.as_micros() as u64 / n.max(1) as u64;
    let due_us = |i: usize| start_us + step_us * i as u64;
    let msgs = messages(env, &agent, n, MsgKind::Bench);
    if delayed {
        let mut batch = Vec::with_capacity(n);
        for (i, mut m) in msgs.into_iter().enumerate() {
            let at = SystemTime::UNIX_EPOCH + Duration::from_micros(due_us(i));
            m.payload["sent_us"] = json!(due_us(i));
            batch.push(m.deliver_at(at));
        }
        for chunk in batch.chunks(500) {
            bus.send_batch(chunk.to_vec()).await?;
        }
    } else {
        let t0 = tokio::time::Instant::now();
        let now0 = now_us();
        let mut handles = Vec::with_capacity(n);
        for (i, mut m) in msgs.into_iter().enumerate() {
            let at = t0 + Duration::from_micros(due_us(i).saturating_sub(now0));
            tokio::time::sleep_until(at).await;
            m.payload["sent_us"] = json!(now_us());
            let bus = bus.clone();
            handles.push(tokio::spawn(async move { bus.send(m).await }));
        }
        for h in handles {
            h.await??;
        }
    }
    let last = due_us(n.saturating_sub(1));
    tokio::time::sleep(Duration::from_micros(
        last.saturating_sub(now_us()) + 300_000,
    ))
    .await;
    wait_drained(env, &targets(Kind::Ours, std::slice::from_ref(&agent))).await?;
    let zr_after = command_stats(env, "zrangebyscore").await?;
    let stats = consumer.stop().await?;
    let _: i64 = redis::cmd("UNLINK")
        .arg(&schedule)
        .query_async(&mut conn)
        .await?;
    env.cleanup(&[agent]).await?;
    let lat = stats.latency.context("the worker recorded no latencies")?;
    let calls = zr_after.0.saturating_sub(zr_before.0).max(1);
    Ok(json!({
        "messages": n,
        "recorded": lat.count,
        "preloaded": preload,
        "p50_us": lat.p50_us,
        "p99_us": lat.p99_us,
        "max_us": lat.max_us,
        "zrangebyscore_us_per_call": zr_after.1.saturating_sub(zr_before.1) as f64 / calls as f64,
    }))
}

/// Delayed delivery: lateness, and its cost with a million scheduled.
pub(crate) async fn delayed(env: &Env, quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let (n, spread, big) = if quick {
        (200, Duration::from_millis(500), 10_000)
    } else {
        (2_000, Duration::from_secs(4), 1_000_000)
    };
    eprintln!("  {n} messages sent at their instants over {spread:?}: send → start (baseline)");
    let base = run_once(env, n, spread, 0, false).await?;
    eprintln!("  {n} messages sent for later, due over {spread:?}: lateness");
    let ours = run_once(env, n, spread, 0, true).await?;
    eprintln!("  the same with {} others scheduled", n_fmt(big));
    let loaded = run_once(env, n, spread, big, true).await?;
    for v in [&base, &ours, &loaded] {
        eprintln!(
            "    p50 {} µs, p99 {} µs, max {} µs, ZRANGEBYSCORE {:.1} µs/call",
            v["p50_us"],
            v["p99_us"],
            v["max_us"],
            v["zrangebyscore_us_per_call"].as_f64().unwrap_or(0.0)
        );
    }
    let get = |v: &Value, k: &str| v[k].as_f64();
    let base_is = "the same worker's send → handler start for messages sent at those instants";
    report.push(Row::new(
        "delayed",
        "Delayed delivery: lateness (start − delivery time) p50",
        Unit::Micros,
        get(&ours, "p50_us"),
        get(&base, "p50_us"),
        base_is,
    ));
    report.push(
        Row::new(
            "delayed",
            "Delayed delivery: lateness p99",
            Unit::Micros,
            get(&ours, "p99_us"),
            get(&base, "p99_us"),
            base_is,
        )
        .target(Target::OursBelow(100_000.0)),
    );
    let big_s = n_fmt(big);
    report.push(
        Row::new(
            "delayed",
            format!("Delayed delivery: lateness p99 with {big_s} others scheduled"),
            Unit::Micros,
            get(&loaded, "p99_us"),
            get(&ours, "p99_us"),
            "lateness p99 with nothing else scheduled (row above)",
        )
        .target(Target::OursBelow(100_000.0)),
    );
    report.push(Row::new(
        "delayed",
        format!("Promotion: ZRANGEBYSCORE per call, {big_s} scheduled vs none"),
        Unit::Micros,
        get(&loaded, "zrangebyscore_us_per_call"),
        get(&ours, "zrangebyscore_us_per_call"),
        "the same with nothing else scheduled (server time per call, INFO commandstats)",
    ));
    Ok(())
}
