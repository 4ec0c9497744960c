//! `fabric-bench __raw`: the hand-written baseline consumer, a process of its own.
//!
//! The least work a correct at-least-once consumer does with the `redis` crate: one
//! `XREADGROUP … COUNT 100 BLOCK 1000 STREAMS <streams> >` loop on one connection; for
//! each entry, parse the `data` JSON (the envelope, with its payload deserialized into the
//! same struct the worker's handler takes); for an entry whose envelope has a `reply_to`
//! (a task), a reply envelope serialized and `XADD`ed there; then one `XACK` per stream per
//! batch (all of a batch's replies and `XACK`s in one pipeline, the replies first), awaited
//! before the next read. No reclaim, no retries, no dead letters, no lease, no trimming. Same
//! runtime as the worker (multi-threaded tokio).
//!
//! Settings come from the environment: `REDIS_URL`, `BENCH_STREAMS` (comma-separated),
//! `BENCH_GROUP`, `BENCH_STATS_FILE`. On SIGTERM it stops and writes its stats file.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use redis::Value;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::stats::{BenchPayload, Recorder, write_stats};

static RECORDER: LazyLock<Recorder> = LazyLock::new(Recorder::default);

/// The envelope fields the baseline needs; the other keys are parsed and skipped.
#[derive(Deserialize)]
struct RawEnvelope {
    id: String,
    from_agent: String,
    to_agent: String,
    message_type: String,
    payload: BenchPayload,
    #[serde(default)]
    reply_to: Option<String>,
}

/// The reply the baseline writes for a task: the fields a reply envelope carries.
#[derive(serde::Serialize)]
struct RawReply<'a> {
    id: String,
    from_agent: &'a str,
    to_agent: &'a str,
    message_type: &'static str,
    payload: serde_json::Value,
    correlation_id: &'a str,
    timestamp: String,
}

/// Runs the baseline consumer until SIGTERM, then writes the stats file.
pub(crate) fn main() -> anyhow::Result<()> {
    let stats_file = PathBuf::from(std::env::var("BENCH_STATS_FILE").context("BENCH_STATS_FILE")?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())?;
    write_stats(&stats_file, &RECORDER.snapshot())
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").context("REDIS_URL")?;
    let streams: Vec<String> = std::env::var("BENCH_STREAMS")
        .context("BENCH_STREAMS")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let group = std::env::var("BENCH_GROUP").context("BENCH_GROUP")?;
    let consumer = format!("raw-{}", std::process::id());
    let client = redis::Client::open(url.as_str())?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg(&group)
        .arg(&consumer)
        .arg("COUNT")
        .arg(100)
        .arg("BLOCK")
        .arg(1000)
        .arg("STREAMS")
        .arg(&streams);
    for _ in &streams {
        read.arg(">");
    }
    loop {
        let reply: Value = tokio::select! {
            _ = term.recv() => return Ok(()),
            r = read.query_async(&mut conn) => r?,
        };
        let mut pipe = redis::pipe();
        let mut any = false;
        for (stream, entries) in stream_entries(&reply)? {
            let mut ack = redis::cmd("XACK");
            ack.arg(stream).arg(&group);
            for entry in entries {
                let (id, data) = entry_id_and_data(entry)?;
                if let Some((to, reply)) = handle(data) {
                    pipe.cmd("XADD")
                        .arg(to)
                        .arg("*")
                        .arg("data")
                        .arg(reply)
                        .ignore();
                }
                ack.arg(id);
                any = true;
            }
            pipe.add_command(ack).ignore();
        }
        if any {
            pipe.query_async::<()>(&mut conn).await?;
        }
    }
}

/// No-op handling: parse the envelope JSON and its payload, count, record latency; for a
/// task, its reply: (the stream to write it to, the serialized envelope).
fn handle(data: Option<&[u8]>) -> Option<(String, String)> {
    match data.map(serde_json::from_slice::<RawEnvelope>) {
        Some(Ok(env)) => {
            std::hint::black_box(env.message_type.len());
            RECORDER.record(&env.payload);
            let to = env.reply_to.as_deref()?;
            let reply = RawReply {
                id: format!("r-{}", env.id),
                from_agent: &env.to_agent,
                to_agent: &env.from_agent,
                message_type: "response",
                payload: serde_json::Value::Null,
                correlation_id: &env.id,
                timestamp: chrono_like_now(),
            };
            let json = serde_json::to_string(&reply).ok()?;
            Some((to.to_owned(), json))
        }
        // A correct consumer would dead-letter it; the benchmark never writes such entries.
        _ => {
            eprintln!("raw consumer: an entry without a valid `data` envelope");
            None
        }
    }
}

/// A timestamp as the envelope carries one (seconds since the epoch, with fraction).
fn chrono_like_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `(stream key, entries)` of an XREADGROUP reply (RESP2 arrays or a RESP3 map).
fn stream_entries(reply: &Value) -> anyhow::Result<Vec<(&[u8], &[Value])>> {
    let mut out = Vec::new();
    match reply {
        Value::Nil => {}
        Value::Array(streams) => {
            for s in streams {
                match s {
                    Value::Array(kv) if kv.len() == 2 => {
                        let key = bytes(&kv[0]).context("stream key")?;
                        match &kv[1] {
                            Value::Array(e) => out.push((key, e.as_slice())),
                            Value::Nil => {}
                            other => bail!("unexpected entries {other:?}"),
                        }
                    }
                    other => bail!("unexpected XREADGROUP item {other:?}"),
                }
            }
        }
        Value::Map(pairs) => {
            for (k, e) in pairs {
                let key = bytes(k).context("stream key")?;
                if let Value::Array(e) = e {
                    out.push((key, e.as_slice()));
                }
            }
        }
        other => bail!("unexpected XREADGROUP reply {other:?}"),
    }
    Ok(out)
}

/// The id and the `data` field of one entry `[id, [field, value, …]]`.
fn entry_id_and_data(entry: &Value) -> anyhow::Result<(&[u8], Option<&[u8]>)> {
    let Value::Array(parts) = entry else {
        bail!("unexpected entry {entry:?}");
    };
    let id = parts.first().and_then(bytes).context("entry id")?;
    let data = match parts.get(1) {
        Some(Value::Array(fv)) => fv
            .chunks(2)
            .find(|c| c.len() == 2 && bytes(&c[0]) == Some(b"data".as_slice()))
            .and_then(|c| bytes(&c[1])),
        Some(Value::Map(pairs)) => pairs
            .iter()
            .find(|(k, _)| bytes(k) == Some(b"data".as_slice()))
            .and_then(|(_, v)| bytes(v)),
        _ => None,
    };
    Ok((id, data))
}
