//! The measurements: drain, enqueue, latency, scale, growth, memory.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fabric_worker::{Bus, Message, keys};
use serde_json::{Value, json};

use crate::harness::{
    self, Env, MsgKind, RAW_GROUP, Timed, Until, create_group, create_groups, datas, fill,
    group_for, median, messages, targets, time_consumers,
};
use crate::procs::{self, Kind};
use crate::report::{Report, Row, Target, Unit, thousands};
use crate::stats::now_us;

/// How big each measurement is.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub drain: usize,
    pub enqueue_seq: usize,
    pub enqueue_concurrent: usize,
    pub enqueue_batch: usize,
    pub batch_size: usize,
    pub concurrency: usize,
    pub latency_rates: Vec<u64>,
    pub latency_secs: f64,
    pub scale: usize,
    pub agents: usize,
    pub growth_small: usize,
    pub growth_large: usize,
    pub growth_slice: usize,
    pub growth_enqueue: usize,
    pub idle_wait: Duration,
    pub timeout: Duration,
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                drain: 2_000,
                enqueue_seq: 300,
                enqueue_concurrent: 1_280,
                enqueue_batch: 2_000,
                batch_size: 100,
                concurrency: 64,
                latency_rates: vec![1_000, 10_000],
                latency_secs: 0.3,
                scale: 2_000,
                agents: 100,
                growth_small: 1_000,
                growth_large: 20_000,
                growth_slice: 500,
                growth_enqueue: 1_000,
                idle_wait: Duration::from_millis(300),
                timeout: Duration::from_secs(60),
            }
        } else {
            Sizes {
                drain: 100_000,
                enqueue_seq: 10_000,
                enqueue_concurrent: 64_000,
                enqueue_batch: 100_000,
                batch_size: 100,
                concurrency: 64,
                latency_rates: vec![1_000, 10_000],
                latency_secs: 5.0,
                scale: 100_000,
                agents: 100,
                growth_small: 1_000,
                growth_large: 1_000_000,
                growth_slice: 50_000,
                growth_enqueue: 20_000,
                idle_wait: Duration::from_secs(2),
                timeout: Duration::from_secs(600),
            }
        }
    }
}

/// Results one scenario hands to another.
#[derive(Debug, Default)]
pub struct Shared {
    pub drain_ours: Option<f64>,
    pub drain_raw: Option<f64>,
    pub peak_rss_ours_kib: Option<u64>,
    pub peak_rss_raw_kib: Option<u64>,
}

const RAW_DRAIN: &str = "raw consumer process: XREADGROUP COUNT 100 BLOCK loop, parse the envelope JSON, one XACK per batch";

fn n_fmt(n: usize) -> String {
    thousands(n as u64)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn timed_json(t: &Timed, messages: usize) -> Value {
    let per_msg: serde_json::Map<String, Value> = t
        .redis_calls
        .iter()
        .map(|(k, v)| (k.clone(), json!(*v as f64 / messages as f64)))
        .collect();
    json!({
        "consumer_cpu_us_per_msg": t.consumer_cpu_ms * 1e3 / messages as f64,
        "redis_cpu_us_per_msg": t.redis_cpu_ms * 1e3 / messages as f64,
        "redis_calls_per_msg": per_msg,
        "startup_ms": t.startup.as_secs_f64() * 1e3,
        "elapsed_ms": t.elapsed.as_secs_f64() * 1e3,
        "msg_per_s": t.rate(messages as u64),
        "acked": t.acked,
        "handled": t.handled(),
        "peak_rss_kib": t.peak_rss_kib,
    })
}

/// Queues `per_agent` messages for each of `agents_n` fresh agents, then times `procs_n`
/// consumer processes of `kind` from the first handler start to drained.
#[allow(clippy::too_many_arguments)]
async fn drain_once(
    env: &Env,
    sz: &Sizes,
    report: &mut Report,
    kind: Kind,
    procs_n: usize,
    agents_n: usize,
    total: usize,
    msg_kind: MsgKind,
) -> anyhow::Result<Timed> {
    let agents: Vec<String> = (0..agents_n).map(|_| env.agent("drain")).collect();
    create_groups(env, &targets(kind, &agents)).await?;
    let per_agent = total / agents_n;
    for a in &agents {
        let d = datas(env, a, per_agent, msg_kind)?;
        fill(env, &keys::inbox(a), &d, per_agent).await?;
    }
    let t = time_consumers(env, kind, procs_n, &agents, Until::Drained, sz.timeout).await?;
    if t.handled() != (per_agent * agents_n) as u64 {
        report.note(format!(
            "{} drain ({procs_n} process(es), {agents_n} agent(s)): handled {} of {} messages",
            kind.name(),
            t.handled(),
            per_agent * agents_n
        ));
    }
    let mut cleanup = agents.clone();
    cleanup.push(env.producer());
    env.cleanup(&cleanup).await?;
    Ok(t)
}

/// Drain: a queued backlog, one consumer process, default settings.
pub async fn drain(
    env: &Env,
    sz: &Sizes,
    report: &mut Report,
    shared: &mut Shared,
) -> anyhow::Result<()> {
    let n = sz.drain;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let (mut ours_start, mut raw_start) = (Vec::new(), Vec::new());
    // µs per message: (consumer CPU, Redis CPU), per kind.
    let (mut ours_cpu, mut raw_cpu) = (Vec::new(), Vec::new());
    let (mut ours_cmds, mut raw_cmds) = (Vec::new(), Vec::new());
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
            let cpu = (
                t.consumer_cpu_ms * 1e3 / n as f64,
                t.redis_cpu_ms * 1e3 / n as f64,
            );
            match kind {
                Kind::Ours => {
                    ours_cmds.push(t.commands_per_msg(n as u64));
                    ours_cpu.push(cpu);
                    ours.push(rate);
                    ours_start.push(t.startup.as_secs_f64() * 1e3);
                    shared.peak_rss_ours_kib = shared.peak_rss_ours_kib.max(peak);
                }
                Kind::Raw => {
                    raw_cmds.push(t.commands_per_msg(n as u64));
                    raw_cpu.push(cpu);
                    raw.push(rate);
                    raw_start.push(t.startup.as_secs_f64() * 1e3);
                    shared.peak_rss_raw_kib = shared.peak_rss_raw_kib.max(peak);
                }
            }
            runs.push(json!({"kind": kind.name(), "run": r + 1, "result": timed_json(&t, n)}));
        }
    }
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

// ---------------------------------------------------------------------------------------
// Enqueue

async fn bus(env: &Env, notify: bool) -> anyhow::Result<Bus> {
    Ok(Bus::builder(env.url.as_str())
        .notify(notify)
        .connect()
        .await?)
}

/// Our `send`, one at a time from `tasks` concurrent tasks.
async fn enq_ours_send(env: &Env, n: usize, tasks: usize) -> anyhow::Result<f64> {
    let agent = env.agent("enq");
    let bus = bus(env, true).await?;
    // Warm the connection pool up.
    let warm = messages(env, &agent, tasks, MsgKind::Bench);
    let hs: Vec<_> = warm
        .into_iter()
        .map(|m| {
            let b = bus.clone();
            tokio::spawn(async move { b.send(m).await })
        })
        .collect();
    for h in hs {
        h.await??;
    }
    let chunks = split(messages(env, &agent, n, MsgKind::Bench), tasks);
    let t = Instant::now();
    let hs: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let b = bus.clone();
            tokio::spawn(async move {
                for m in chunk {
                    b.send(m).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in hs {
        h.await??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    env.cleanup(std::slice::from_ref(&agent)).await?;
    Ok(rate)
}

/// Raw `XADD` (serialize + one command), one at a time from `tasks` concurrent tasks
/// sharing one multiplexed connection.
async fn enq_raw_send(env: &Env, n: usize, tasks: usize) -> anyhow::Result<f64> {
    let agent = env.agent("enq");
    let stream = keys::inbox(&agent);
    let conn = env.new_conn().await?;
    let chunks = split(messages(env, &agent, n, MsgKind::Bench), tasks);
    let t = Instant::now();
    let hs: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let mut c = conn.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                for m in chunk {
                    let data = serde_json::to_string(&m)?;
                    let _: String = redis::cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("data")
                        .arg(&data)
                        .query_async(&mut c)
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in hs {
        h.await??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    env.cleanup(std::slice::from_ref(&agent)).await?;
    Ok(rate)
}

/// Our `send_batch`, batches of `batch`, one task.
async fn enq_ours_batch(env: &Env, n: usize, batch: usize, notify: bool) -> anyhow::Result<f64> {
    let agent = env.agent("enq");
    let bus = bus(env, notify).await?;
    let batches = chunked(messages(env, &agent, n, MsgKind::Bench), batch);
    let t = Instant::now();
    for b in batches {
        bus.send_batch(b).await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    env.cleanup(std::slice::from_ref(&agent)).await?;
    Ok(rate)
}

/// Raw pipelined `XADD` (serialize each message), batches of `batch`, one task.
async fn enq_raw_pipelined(
    env: &Env,
    stream: &str,
    msgs: Vec<Message>,
    batch: usize,
) -> anyhow::Result<f64> {
    let n = msgs.len();
    let mut conn = env.new_conn().await?;
    let batches = chunked(msgs, batch);
    let t = Instant::now();
    for b in batches {
        let mut pipe = redis::pipe();
        for m in &b {
            let data = serde_json::to_string(m)?;
            pipe.cmd("XADD").arg(stream).arg("*").arg("data").arg(data);
        }
        let ids: Vec<String> = pipe.query_async(&mut conn).await?;
        debug_assert_eq!(ids.len(), b.len());
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn split<T>(v: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let per = v.len().div_ceil(parts.max(1)).max(1);
    chunked(v, per)
}

fn chunked<T>(v: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut it = v.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size.max(1)).collect());
    }
    out
}

/// Enqueue: `send` from 1 and from 64 tasks, `send_batch`, vs raw XADD.
pub async fn enqueue(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let c = sz.concurrency;
    let mut r: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    // Short measurements: two more repeats than the drain's.
    let repeat = if env.quick { 1 } else { env.repeat + 2 };
    for run in 0..repeat {
        eprintln!("  enqueue run {}/{repeat}", run + 1);
        let pipelined = async {
            let agent = env.agent("enq");
            let msgs = messages(env, &agent, sz.enqueue_batch, MsgKind::Bench);
            let rate = enq_raw_pipelined(env, &keys::inbox(&agent), msgs, sz.batch_size).await?;
            env.cleanup(std::slice::from_ref(&agent)).await?;
            anyhow::Ok(rate)
        };
        let v = pipelined.await?;
        r.entry("raw_pipelined").or_default().push(v);
        let v = enq_ours_batch(env, sz.enqueue_batch, sz.batch_size, false).await?;
        r.entry("ours_batch_notify_off").or_default().push(v);
        let v = enq_ours_batch(env, sz.enqueue_batch, sz.batch_size, true).await?;
        r.entry("ours_batch_default").or_default().push(v);
        let v = enq_raw_send(env, sz.enqueue_seq, 1).await?;
        r.entry("raw_send_1").or_default().push(v);
        let v = enq_ours_send(env, sz.enqueue_seq, 1).await?;
        r.entry("ours_send_1").or_default().push(v);
        let v = enq_raw_send(env, sz.enqueue_concurrent, c).await?;
        r.entry("raw_send_c").or_default().push(v);
        let v = enq_ours_send(env, sz.enqueue_concurrent, c).await?;
        r.entry("ours_send_c").or_default().push(v);
    }
    let m = |k: &str| median(r.get(k).cloned().unwrap_or_default());
    let get = |k: &str| r.get(k).cloned().unwrap_or_default();
    let pr = |o: &str, b: &str| harness::paired_ratio(&get(o), &get(b));
    let pipe = m("raw_pipelined");
    let pipe_is = format!(
        "raw pipelined XADD (serialize + XADD), batches of {}, one task, one connection",
        sz.batch_size
    );
    report.push(
        Row::new(
            "enqueue",
            "Enqueue: `send`, 1 task",
            Unit::MsgPerSec,
            Some(m("ours_send_1")),
            Some(pipe),
            &pipe_is,
        )
        .paired_ratio(pr("ours_send_1", "raw_pipelined")),
    );
    report.push(
        Row::new(
            "enqueue",
            format!("Enqueue: `send`, {c} tasks"),
            Unit::MsgPerSec,
            Some(m("ours_send_c")),
            Some(pipe),
            &pipe_is,
        )
        .paired_ratio(pr("ours_send_c", "raw_pipelined")),
    );
    report.push(
        Row::new(
            "enqueue",
            format!("Enqueue: `send_batch({})`, notify off", sz.batch_size),
            Unit::MsgPerSec,
            Some(m("ours_batch_notify_off")),
            Some(pipe),
            &pipe_is,
        )
        .paired_ratio(pr("ours_batch_notify_off", "raw_pipelined"))
        .target(Target::RatioAtLeast(0.80)),
    );
    report.push(
        Row::new(
            "enqueue",
            format!(
                "Enqueue: `send_batch({})`, default (notify on: 1 PUBLISH per batch and recipient)",
                sz.batch_size
            ),
            Unit::MsgPerSec,
            Some(m("ours_batch_default")),
            Some(pipe),
            &pipe_is,
        )
        .paired_ratio(pr("ours_batch_default", "raw_pipelined"))
        .target(Target::RatioAtLeast(0.80)),
    );
    report.push(Row::new(
        "enqueue (like for like)",
        "Enqueue: `send`, 1 task vs raw XADD, 1 task",
        Unit::MsgPerSec,
        Some(m("ours_send_1")),
        Some(m("raw_send_1")),
        "raw XADD one at a time (serialize + XADD, awaited) from the same number of tasks, one multiplexed connection",
    )
    .paired_ratio(pr("ours_send_1", "raw_send_1")));
    report.push(Row::new(
        "enqueue (like for like)",
        format!("Enqueue: `send`, {c} tasks vs raw XADD, {c} tasks"),
        Unit::MsgPerSec,
        Some(m("ours_send_c")),
        Some(m("raw_send_c")),
        "raw XADD one at a time (serialize + XADD, awaited) from the same number of tasks, one multiplexed connection",
    )
    .paired_ratio(pr("ours_send_c", "raw_send_c")));
    report.detail(
        "enqueue",
        json!({
            "messages": {"send_1_task": sz.enqueue_seq, "send_concurrent": sz.enqueue_concurrent, "batch": sz.enqueue_batch},
            "measured": "wall time of the sends only; messages are built (Message::new) before timing, serialization is timed on both sides",
            "repeats": repeat,
            "ratio": "median of the per-run ratios (each run measures ours and the baseline back to back)",
            "runs_msg_per_s": r,
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Latency

/// Open-loop sends at `rate`/s for `secs` to a running consumer; returns its latency stats.
async fn latency_once(env: &Env, kind: Kind, rate: u64, secs: f64) -> anyhow::Result<Value> {
    let agent = env.agent("lat");
    let stream = keys::inbox(&agent);
    let tg = targets(kind, std::slice::from_ref(&agent));
    create_groups(env, &tg).await?;
    let before = harness::blocked_readers(&mut env.conn.clone()).await?;
    let mut consumer = procs::spawn(
        kind,
        &env.url,
        std::slice::from_ref(&agent),
        RAW_GROUP,
        &env.tmp,
    )?;
    harness::wait_readers_blocked(env, before, 1, &mut [&mut consumer]).await?;
    let bus = bus(env, true).await?;
    let conn = env.new_conn().await?;
    let send = |m: Message| {
        let bus = bus.clone();
        let mut conn = conn.clone();
        let stream = stream.clone();
        async move {
            match kind {
                Kind::Ours => {
                    bus.send(m).await?;
                }
                Kind::Raw => {
                    let data = serde_json::to_string(&m)?;
                    let _: String = redis::cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("data")
                        .arg(&data)
                        .query_async(&mut conn)
                        .await?;
                }
            }
            anyhow::Ok(())
        }
    };
    // Warm-up (not recorded: sent_us = 0).
    for m in messages(env, &agent, 200, MsgKind::Bench) {
        send(m).await?;
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
pub async fn latency(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let mut details = Vec::new();
    for &rate in &sz.latency_rates {
        eprintln!("  latency at {rate}/s for {} s: ours", sz.latency_secs);
        let o = latency_once(env, Kind::Ours, rate, sz.latency_secs).await?;
        eprintln!(
            "    p50 {} µs, p99 {} µs, p99.9 {} µs",
            o["p50_us"], o["p99_us"], o["p999_us"]
        );
        eprintln!("  latency at {rate}/s: raw");
        let b = latency_once(env, Kind::Raw, rate, sz.latency_secs).await?;
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

// ---------------------------------------------------------------------------------------
// Scale

/// Scale: 1 vs 2 worker processes on one agent; 1 vs 100 agents in one process.
pub async fn scale(
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

// ---------------------------------------------------------------------------------------
// Growth

/// µs per message to enqueue `count` more entries onto a stream that already holds a backlog.
async fn growth_enqueue(
    env: &Env,
    stream_agent: &str,
    count: usize,
    batch: usize,
) -> anyhow::Result<(f64, f64)> {
    let stream = keys::inbox(stream_agent);
    let raw = enq_raw_pipelined(
        env,
        &stream,
        messages(env, stream_agent, count, MsgKind::Bench),
        batch,
    )
    .await?;
    let bus = bus(env, false).await?;
    let batches = chunked(messages(env, stream_agent, count, MsgKind::Bench), batch);
    let t = Instant::now();
    for b in batches {
        bus.send_batch(b).await?;
    }
    let ours = count as f64 / t.elapsed().as_secs_f64();
    Ok((1e6 / ours, 1e6 / raw))
}

/// Reads `n` entries of `stream` through `group` as a consumer that never acknowledges
/// (a crashed one): they stay in the pending list.
async fn ghost_read(env: &Env, stream: &str, group: &str, n: usize) -> anyhow::Result<()> {
    let mut conn = env.conn.clone();
    let mut left = n;
    while left > 0 {
        let count = left.min(10_000);
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("ghost")
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        drop(v);
        left -= count;
    }
    Ok(())
}

/// One growth measurement: a backlog of `size` (undelivered entries after the measured
/// slice, or pending entries of a dead consumer before it), then µs per message to
/// handle `slice` entries, for ours and raw (each through its own group of one stream).
async fn growth_once(env: &Env, sz: &Sizes, size: usize, pending: bool) -> anyhow::Result<Value> {
    let agent = env.agent("grow");
    let stream = keys::inbox(&agent);
    let ours_group = group_for(Kind::Ours, &agent);
    create_group(env, &stream, &ours_group).await?;
    create_group(env, &stream, RAW_GROUP).await?;
    // Measured: from `warm` acknowledged to `warm + slice` (start-up left out).
    let slice = sz.growth_slice;
    let warm = slice / 10;
    let real = datas(env, &agent, (warm + slice).min(10_000), MsgKind::Bench)?;
    let t_fill = Instant::now();
    if pending {
        // Tiny filler entries, delivered to a consumer that never acknowledges them; the
        // measured slice comes after them. (Read well within the 30 s reclaim idle time,
        // so nobody reclaims them during the measurement.)
        fill(env, &stream, &["{}".to_owned()], size).await?;
        fill(env, &stream, &real, warm + slice).await?;
    } else {
        // The measured slice first, then the backlog behind it.
        fill(env, &stream, &real, warm + slice + size).await?;
    }
    let (enq_ours, enq_raw) = growth_enqueue(env, &agent, sz.growth_enqueue, sz.batch_size).await?;
    if pending {
        ghost_read(env, &stream, RAW_GROUP, size).await?;
        ghost_read(env, &stream, &ours_group, size).await?;
    }
    let fill_s = t_fill.elapsed().as_secs_f64();
    let mut out = json!({"backlog": size, "warm_up": warm, "slice": slice, "setup_s": fill_s,
        "enqueue_us_per_msg": {"ours_send_batch_notify_off": enq_ours, "raw_pipelined": enq_raw}});
    // Where each measurement starts: both groups are set back there before each run, so
    // every run handles the same entries with the same backlog.
    let (start_id, start_read) = if pending {
        let mut conn = env.new_conn().await?;
        let g = harness::group_states(&mut conn, &[(stream.clone(), RAW_GROUP.to_owned())]).await?;
        (g[0].last_delivered.clone(), size)
    } else {
        ("0".to_owned(), 0)
    };
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut last_calls = serde_json::Map::new();
    for r in 0..env.repeat {
        let order = if r % 2 == 0 {
            [Kind::Ours, Kind::Raw]
        } else {
            [Kind::Raw, Kind::Ours]
        };
        for kind in order {
            let mut conn = env.conn.clone();
            let _: () = redis::cmd("XGROUP")
                .arg("SETID")
                .arg(&stream)
                .arg(group_for(kind, &agent))
                .arg(&start_id)
                .arg("ENTRIESREAD")
                .arg(start_read)
                .query_async(&mut conn)
                .await
                .context("XGROUP SETID … ENTRIESREAD (Redis 7.0 or later is needed)")?;
            let t = time_consumers(
                env,
                kind,
                1,
                std::slice::from_ref(&agent),
                Until::Window(warm as u64, (warm + slice) as u64),
                sz.timeout,
            )
            .await?;
            let us = t.elapsed.as_secs_f64() * 1e6 / t.acked.max(1) as f64;
            eprintln!("    {}: {us:.1} µs/msg", kind.name());
            last_calls.insert(
                kind.name().to_owned(),
                json!({
                    "redis_calls_spawn_to_end": t.redis_calls,
                    "redis_cpu_ms_spawn_to_end": t.redis_cpu_ms,
                    "consumer_cpu_ms_spawn_to_end": t.consumer_cpu_ms,
                }),
            );
            match kind {
                Kind::Ours => ours.push(us),
                Kind::Raw => raw.push(us),
            }
        }
    }
    out["ours"] = json!({"us_per_msg": median(ours.clone()), "runs": ours});
    out["raw"] = json!({"us_per_msg": median(raw.clone()), "runs": raw});
    out["last_run_usage"] = Value::Object(last_calls);
    let mut conn = env.conn.clone();
    let dead: u64 = redis::cmd("XLEN")
        .arg(keys::dead_letters(&stream))
        .query_async(&mut conn)
        .await?;
    out["dead_letters"] = json!(dead);
    env.cleanup(&[agent, env.producer()]).await?;
    Ok(out)
}

/// Growth: cost per message with a small vs a large backlog.
pub async fn growth(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let mut details = serde_json::Map::new();
    for pending in [false, true] {
        let what = if pending {
            "pending list"
        } else {
            "stream backlog"
        };
        let mut res = Vec::new();
        for size in [sz.growth_small, sz.growth_large] {
            eprintln!("  growth: {what} of {} entries", n_fmt(size));
            let r = growth_once(env, sz, size, pending).await?;
            if r["dead_letters"].as_u64().unwrap_or(0) > 0 {
                report.note(format!(
                    "growth ({what}, {size}): {} entries were dead-lettered during the run",
                    r["dead_letters"]
                ));
            }
            res.push(r);
        }
        let us = |i: usize, k: &str| res[i][k]["us_per_msg"].as_f64();
        let (small, large) = (n_fmt(sz.growth_small), n_fmt(sz.growth_large));
        let base = if pending {
            "raw consumer on the same stream (its own group, with the same dead-consumer pending list)"
        } else {
            "raw consumer on the same stream (its own group)"
        };
        for (i, size) in [(0, &small), (1, &large)] {
            report.push(Row::new(
                "growth",
                format!(
                    "Growth: handle {} with a {what} of {size} (per msg)",
                    n_fmt(sz.growth_slice)
                ),
                Unit::Micros,
                us(i, "ours"),
                us(i, "raw"),
                base,
            ));
        }
        let f = |k: &str| match (us(0, k), us(1, k)) {
            (Some(a), Some(b)) => Some(b / a),
            _ => None,
        };
        report.push(
            Row::new(
                "growth",
                format!("Growth: cost per msg, {what} {large} vs {small}"),
                Unit::Factor,
                f("ours"),
                f("raw"),
                base,
            )
            .target(Target::RatioAtMost(1.25)),
        );
        if !pending {
            let e = |i: usize, k: &str| res[i]["enqueue_us_per_msg"][k].as_f64();
            for (i, size) in [(0, &small), (1, &large)] {
                report.push(Row::new(
                    "growth (enqueue)",
                    format!("Growth: enqueue onto a backlog of {size} (per msg, `send_batch`, notify off)"),
                    Unit::Micros,
                    e(i, "ours_send_batch_notify_off"),
                    e(i, "raw_pipelined"),
                    "raw pipelined XADD onto the same stream",
                ));
            }
        }
        details.insert(what.replace(' ', "_"), Value::Array(res));
    }
    details.insert(
        "measured".into(),
        json!("time from `warm_up` to `warm_up + slice` entries acknowledged (XINFO GROUPS entries-read − pending, polled every 2 ms), divided by the entries acknowledged in between; start-up is left out. The growth factor's ratio compares ours' growth with raw's growth, so Redis' own costs cancel out"),
    );
    report.detail("growth", Value::Object(details));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Memory

/// RSS of an idle consumer serving `agents_n` fresh agents.
async fn idle_rss(env: &Env, sz: &Sizes, kind: Kind, agents_n: usize) -> anyhow::Result<u64> {
    let agents: Vec<String> = (0..agents_n).map(|_| env.agent("idle")).collect();
    let tg = targets(kind, &agents);
    create_groups(env, &tg).await?;
    let before = harness::blocked_readers(&mut env.conn.clone()).await?;
    let mut c = procs::spawn(kind, &env.url, &agents, RAW_GROUP, &env.tmp)?;
    // Our worker blocks one reader per stream; the raw consumer one read for all.
    let expected = if kind == Kind::Ours { agents_n } else { 1 };
    harness::wait_readers_blocked(env, before, expected, &mut [&mut c]).await?;
    tokio::time::sleep(sz.idle_wait).await;
    let rss = c.rss_kib().context("reading VmRSS")?;
    c.stop().await?;
    env.cleanup(&agents).await?;
    Ok(rss)
}

/// Memory: worker RSS idle and under load.
pub async fn memory(
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
            "measured": "VmRSS of the consumer process after it issued its first read and then waited idle_after_ms; VmHWM at the end of the drain",
        }),
    );
    Ok(())
}
