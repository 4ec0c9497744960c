//! Growth: cost per message with a small and a large backlog (stream, pending list).

use std::time::Instant;

use anyhow::Context as _;
use fabric_worker::keys;
use serde_json::{Value, json};

use super::enqueue::{bus, chunked, enq_raw_pipelined};
use super::{Sizes, n_fmt};
use crate::harness::{
    self, Env, MsgKind, RAW_GROUP, Until, create_group, datas, fill, group_for, median, messages,
    time_consumers,
};
use crate::procs::Kind;
use crate::report::{Report, Row, Target, Unit};

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
    create_group(env, &agent, &ours_group).await?;
    create_group(env, &agent, RAW_GROUP).await?;
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
        let g = harness::group_states(&env.bus, &[(agent.clone(), RAW_GROUP.to_owned())]).await?;
        (g[0].last_delivered_id.clone(), size)
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
pub(crate) async fn growth(env: &Env, sz: &Sizes, report: &mut Report) -> anyhow::Result<()> {
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
