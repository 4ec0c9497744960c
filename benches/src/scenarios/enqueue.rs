//! Enqueue: `send` from one and from many tasks, and `send_batch`, against raw `XADD`.

use std::time::Instant;

use fabric_worker::{Bus, Message, keys};
use serde_json::json;

use super::Sizes;
use crate::harness::{self, Env, MsgKind, median, messages};
use crate::report::{Report, Row, Target, Unit};

pub(super) async fn bus(env: &Env, notify: bool) -> anyhow::Result<Bus> {
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
    let rate = send_from_tasks(&bus, messages(env, &agent, n, MsgKind::Bench), tasks).await?;
    env.cleanup(std::slice::from_ref(&agent)).await?;
    Ok(rate)
}

/// Messages per second of `bus.send` of `msgs`, one at a time from `tasks` concurrent tasks.
pub(super) async fn send_from_tasks(
    bus: &Bus,
    msgs: Vec<Message>,
    tasks: usize,
) -> anyhow::Result<f64> {
    let n = msgs.len();
    let chunks = split(msgs, tasks);
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
    Ok(n as f64 / t.elapsed().as_secs_f64())
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
pub(super) async fn enq_raw_pipelined(
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

pub(super) fn chunked<T>(v: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut it = v.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(size.max(1)).collect());
    }
    out
}

/// Enqueue: `send` from 1 and from 64 tasks, `send_batch`, vs raw XADD.
pub(crate) async fn enqueue(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
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
