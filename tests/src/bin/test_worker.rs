//! A worker process for the integration tests. Serves the agents in `FABRIC_AGENTS` with
//! one handler, `work`, whose behaviour the payload chooses, and records every start and
//! finish in Redis lists `test:started:<agent>` / `test:done:<agent>` (JSON lines).
//!
//! Payload: `{"n": <any>, "sleep_ms": <u64>, "mode": "ok" | "fail" | "permanent" | "panic"
//! | "abort" | "fail_times", "fail_times": <u32>}`.
//!
//! `limited` and `limited_slow` are `work` under rate limits (see each).
//!
//! The agent `topic_sub` also handles the durable topics `proc.*` (see `proc_events`).
//!
//! Periodic tasks (`tests/tests/periodic.rs`): the agent `ticker` gets a `tick` every second,
//! `cronner` a `cron_tick` at every even second (Europe/Paris), and `sched` the schedule
//! `TEST_SCHEDULE` = `<seconds>:<catch_up|skip>` sends it as `scheduled`; each is recorded
//! in `test:done` with `n` = `{"schedule", "at", "by"}` from the message's headers.

use std::sync::OnceLock;
use std::time::Duration;

use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Work {
    #[serde(default)]
    n: Value,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    fail_times: u32,
}

static REDIS: OnceLock<redis::Client> = OnceLock::new();
static CONN: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>> =
    tokio::sync::Mutex::const_new(None);

/// Appends a record, retrying through Redis outages (the chaos test restarts Redis) for up to 60 s.
async fn record(list: &str, ctx: &Context, n: &Value) {
    let Some(client) = REDIS.get() else { return };
    let line = json!({
        "id": ctx.message_id(),
        "n": n,
        "consumer": ctx.consumer(),
        "pid": std::process::id(),
        "attempt": ctx.attempt(),
        "delivery": ctx.delivery_count(),
        "t_ms": chrono_ms(),
    })
    .to_string();
    let key = format!("{list}:{}", ctx.agent());
    for _ in 0..600 {
        let mut guard = CONN.lock().await;
        if guard.is_none() {
            *guard = client.get_multiplexed_async_connection().await.ok();
        }
        if let Some(c) = guard.as_mut() {
            let r: redis::RedisResult<i64> = c.rpush(&key, &line).await;
            if r.is_ok() {
                return;
            }
            *guard = None;
        }
        drop(guard);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("test_worker: could not record {line} in {key}");
}

fn chrono_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[handler(message_type = "work")]
async fn work(ctx: Context, w: Work) -> Result<Value, HandlerError> {
    record("test:started", &ctx, &w.n).await;
    if w.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(w.sleep_ms)).await;
    }
    match w.mode.as_deref().unwrap_or("ok") {
        "fail" => {
            return Err(HandlerError::new(format!(
                "failing on purpose (attempt {})",
                ctx.attempt()
            )));
        }
        "fail_times" if ctx.attempt() <= w.fail_times => {
            return Err(HandlerError::new(format!(
                "failing attempt {}",
                ctx.attempt()
            )));
        }
        "permanent" => return Err(HandlerError::permanent("this can never work")),
        "panic" => panic!("handler panics on purpose"),
        "abort" => std::process::abort(),
        _ => {}
    }
    record("test:done", &ctx, &w.n).await;
    Ok(json!({ "n": w.n, "by": ctx.consumer() }))
}

/// The events of the durable topics `proc.*`, for the agent `topic_sub` only (so that no
/// other test's worker, in secure mode in particular, has a topic handler): recorded in
/// `test:started` / `test:done` like `work`, with the topic as `n`.
#[handler(topic = "proc.*", agent = "topic_sub")]
async fn proc_events(ctx: Context) -> Result<(), HandlerError> {
    let topic = Value::from(ctx.topic().unwrap_or_default());
    record("test:started", &ctx, &topic).await;
    record("test:done", &ctx, &topic).await;
    Ok(())
}

/// Records a scheduled message: which schedule, which boundary, which process sent it.
async fn record_scheduled(ctx: &Context) {
    let n = json!({
        "schedule": ctx.header("fabric-schedule"),
        "at": ctx.header("fabric-schedule-at").and_then(|a| a.parse::<u64>().ok()),
        "by": ctx.header("fabric-schedule-by"),
    });
    record("test:done", ctx, &n).await;
}

/// Every second, for the agent `ticker`.
#[handler(message_type = "tick", agent = "ticker", every = "1s")]
async fn tick(ctx: Context) -> Result<(), HandlerError> {
    record_scheduled(&ctx).await;
    Ok(())
}

/// At every even second, Paris time, for the agent `cronner`.
#[handler(
    message_type = "cron_tick",
    agent = "cronner",
    cron = "*/2 * * * * *",
    tz = "Europe/Paris"
)]
async fn cron_tick(ctx: Context) -> Result<(), HandlerError> {
    record_scheduled(&ctx).await;
    Ok(())
}

/// What `TEST_SCHEDULE` sends, for the agent `sched`.
#[handler(message_type = "scheduled", agent = "sched")]
async fn scheduled(ctx: Context) -> Result<(), HandlerError> {
    record_scheduled(&ctx).await;
    Ok(())
}

/// The schedule `TEST_SCHEDULE` (`<seconds>:<catch_up|skip>`) describes.
fn test_schedule() -> Option<fabric_worker::schedule::Schedule> {
    let spec = std::env::var("TEST_SCHEDULE").ok()?;
    let (secs, missed) = spec.split_once(':')?;
    let every = Duration::from_secs(secs.parse().ok()?);
    let s = fabric_worker::schedule::Schedule::every("every-n", "scheduled", every).ok()?;
    Some(s.missed(missed.parse().ok()?))
}

/// `work` under the rate limit `rl_shared` (100 per second, 5 at once), shared by every
/// process and agent (tests/tests/rate_limits.rs).
#[handler(message_type = "limited", rate_limit = "rl_shared:100/s,burst=5")]
async fn limited(ctx: Context, w: Work) -> Result<Value, HandlerError> {
    work(ctx, w).await
}

/// `work` under a rate limit of its own per agent: 2 per second.
#[handler(message_type = "limited_slow", rate_limit = "2/s")]
async fn limited_slow(ctx: Context, w: Work) -> Result<Value, HandlerError> {
    work(ctx, w).await
}

#[tokio::main]
async fn main() {
    fabric_tests::init_process_tracing();
    // Records go to TEST_RECORD_URL (a user allowed `test:*` keys) when the worker's own
    // user may not write them (secure mode), else to REDIS_URL.
    let url = std::env::var("TEST_RECORD_URL")
        .unwrap_or_else(|_| fabric_worker::bus::redis_url_from_env());
    let _ = REDIS.set(redis::Client::open(url).expect("TEST_RECORD_URL / REDIS_URL"));
    let agents = std::env::var("FABRIC_AGENTS").unwrap_or_else(|_| "tester".into());
    let first = agents
        .split(',')
        .next()
        .unwrap_or("tester")
        .trim()
        .to_owned();
    let mut builder = Worker::builder(first);
    if let Some(s) = test_schedule() {
        builder = builder.schedule(s);
    }
    let result = async { builder.from_env()?.run().await }.await;
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
