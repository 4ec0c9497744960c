//! Periodic tasks without a beat process: every worker process serving an agent runs one
//! loop per schedule of the agent. Each loop sleeps until the next boundary (by this
//! machine's clock) and sends the agent its message with `Bus::send_once`, keyed
//! `schedule:<name>:<boundary ms>`: the first process to send a boundary appends it, the
//! others' sends are duplicates (one atomic `FCALL fabric_send_once` in the inbox's slot; in
//! secure mode, the router's delivery deduplication). So a period gives one message however
//! many processes run, none has to be elected, and the schedule keeps firing while any one
//! of them lives. See `docs/protocol.md` §12.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::broker::reconnect_backoff;
use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::keys;
use crate::message::Message;
use crate::schedule::{
    Missed, SCHEDULE_AT_HEADER, SCHEDULE_BY_HEADER, SCHEDULE_HEADER, Schedule, ScheduleRun,
};
use crate::time::now_ms;

/// Shortest idempotency window of a scheduled send: covers the spread between the processes
/// that send one boundary (their clock skew and lateness).
const MIN_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Longest idempotency window.
const MAX_WINDOW_MS: u64 = 400 * 86_400_000;

/// The idempotency key of a boundary.
pub(crate) fn once_key(name: &str, boundary_ms: u64) -> String {
    format!("schedule:{name}:{boundary_ms}")
}

/// The idempotency window of a boundary: twice the time to the next one, at least 10 min.
pub(crate) fn window_ms(s: &Schedule, boundary_ms: u64) -> u64 {
    s.timing()
        .gap_after(boundary_ms)
        .saturating_mul(2)
        .clamp(MIN_WINDOW_MS, MAX_WINDOW_MS)
}

/// Runs one schedule of `agent` until `stop`.
pub(super) async fn run(bus: Bus, agent: String, s: Schedule, stop: CancellationToken) {
    let Some(mut run) = register(&bus, &agent, &s, &stop).await else {
        return;
    };
    let mut cursor = now_ms();
    if s.missed_policy() == Missed::CatchUp
        && let Some(b) = s.latest_at_or_before_ms(cursor)
        && b > run.last_ms.unwrap_or(0).max(run.since_ms)
    {
        info!(%agent, schedule = s.name(), boundary_ms = b, last_ms = ?run.last_ms, "a period passed while no worker ran; sending it once (missed = catch_up)");
        fire(&bus, &agent, &s, b, &mut run, &stop).await;
    }
    loop {
        let Some(b) = s.next_after_ms(cursor) else {
            info!(%agent, schedule = s.name(), "the schedule has no boundary left; it ends");
            return;
        };
        // Sleep until `b` by the wall clock (checked again on waking: the clock may be set).
        loop {
            let now = now_ms();
            if now >= b {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(b - now)) => {}
            }
        }
        let now = now_ms();
        let mut due = b;
        // Stalled (suspended, starved) past the next boundary too: send the latest only.
        if s.next_after_ms(b).is_some_and(|n| n <= now)
            && let Some(latest) = s.latest_at_or_before_ms(now)
        {
            warn!(%agent, schedule = s.name(), from_ms = b, to_ms = latest, "this worker fell behind its schedule (stalled or suspended); sending the latest period only");
            due = latest;
        }
        fire(&bus, &agent, &s, due, &mut run, &stop).await;
        cursor = due;
    }
}

/// Records the schedule (`HSET agent:<a>:schedules`), its first run (`HSETNX
/// agent:<a>:schedule_runs`, which keeps the earliest), and reads its runs back. Waits
/// through connection errors; `None` when stopped meanwhile.
async fn register(
    bus: &Bus,
    agent: &str,
    s: &Schedule,
    stop: &CancellationToken,
) -> Option<ScheduleRun> {
    let mut backoff = reconnect_backoff();
    loop {
        match try_register(bus, agent, s).await {
            Ok(run) => return Some(run),
            Err(e) if e.is_connection_error() => {
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                warn!(%agent, schedule = s.name(), error = %e, "cannot register the schedule yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(d) => {}
                }
            }
            Err(e) => {
                error!(%agent, schedule = s.name(), error = %e, "cannot record the schedule: it runs, but `fabric schedules` will not show it and missed periods are not caught up");
                return Some(ScheduleRun {
                    since_ms: now_ms(),
                    ..ScheduleRun::default()
                });
            }
        }
    }
}

async fn try_register(bus: &Bus, agent: &str, s: &Schedule) -> Result<ScheduleRun> {
    let now = now_ms();
    let specs = keys::schedules(agent);
    let runs = keys::schedule_runs(agent);
    let spec = encode("schedule", &s.record(agent, now))?;
    let first = encode(
        "schedule run",
        &ScheduleRun {
            since_ms: now,
            next_ms: s.next_after_ms(now),
            ..ScheduleRun::default()
        },
    )?;
    let mut conn = bus.broker().conn();
    let _: i64 = redis::cmd("HSET")
        .arg(&specs)
        .arg(s.name())
        .arg(spec)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("HSET", &specs, e))?;
    let _: i64 = redis::cmd("HSETNX")
        .arg(&runs)
        .arg(s.name())
        .arg(first)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("HSETNX", &runs, e))?;
    let raw: Option<String> = redis::cmd("HGET")
        .arg(&runs)
        .arg(s.name())
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("HGET", &runs, e))?;
    Ok(raw
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or(ScheduleRun {
            since_ms: now,
            ..ScheduleRun::default()
        }))
}

fn encode(what: &'static str, v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|source| Error::Encode { what, source })
}

/// This process, as the `fabric-schedule-by` header names it: `<host>-<pid>`.
fn sender() -> String {
    format!(
        "{}-{}",
        super::builder::hostname().unwrap_or_else(|| "host".into()),
        std::process::id()
    )
}

/// The message of boundary `b`: from the agent to itself, with the schedule's headers.
pub(crate) fn message(agent: &str, s: &Schedule, b: u64) -> Message {
    let payload = match s.payload_value() {
        Value::Object(m) => Value::Object(m.clone()),
        _ => Value::Object(Default::default()),
    };
    Message::new(agent, agent, s.message_type(), payload)
        .with_header(SCHEDULE_HEADER, s.name())
        .with_header(SCHEDULE_AT_HEADER, b.to_string())
        .with_header(SCHEDULE_BY_HEADER, sender())
}

/// Sends boundary `b` once (retrying through connection errors until the next boundary),
/// and records the run when this process was the one that appended it.
async fn fire(
    bus: &Bus,
    agent: &str,
    s: &Schedule,
    b: u64,
    run: &mut ScheduleRun,
    stop: &CancellationToken,
) {
    let key = once_key(s.name(), b);
    let window = Duration::from_millis(window_ms(s, b));
    let mut backoff = reconnect_backoff();
    let receipt = loop {
        match bus.send_once(message(agent, s, b), &key, window).await {
            Ok(r) => break r,
            Err(e) if e.is_connection_error() => {
                if s.next_after_ms(b).is_some_and(|n| n <= now_ms()) {
                    warn!(%agent, schedule = s.name(), boundary_ms = b, error = %e, "Redis stayed unreachable until the next period: this one is not sent");
                    return;
                }
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                warn!(%agent, schedule = s.name(), boundary_ms = b, error = %e, "cannot send the scheduled message yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
            }
            Err(e) => {
                error!(%agent, schedule = s.name(), boundary_ms = b, error = %e, "the scheduled message was refused; this period is not sent");
                return;
            }
        }
    };
    if receipt.status == "duplicate" {
        debug!(%agent, schedule = s.name(), boundary_ms = b, first = %receipt.message_id, "another worker sent this period");
        return;
    }
    let now = now_ms();
    info!(%agent, schedule = s.name(), boundary_ms = b, late_ms = now.saturating_sub(b), message_id = %receipt.message_id, "scheduled message sent");
    run.last_ms = Some(b);
    run.last_fired_ms = Some(now);
    run.last_message_id = Some(receipt.message_id);
    run.next_ms = s.next_after_ms(b);
    let runs = keys::schedule_runs(agent);
    let written = match encode("schedule run", &*run) {
        Ok(json) => redis::cmd("HSET")
            .arg(&runs)
            .arg(s.name())
            .arg(json)
            .query_async::<i64>(&mut bus.broker().conn())
            .await
            .map_err(|e| Error::redis("HSET", &runs, e)),
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        warn!(%agent, schedule = s.name(), error = %e, "sent, but could not record the run (fabric schedules shows the previous one)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_windows_and_messages() {
        let s = Schedule::every("tick", "tick", Duration::from_secs(1)).unwrap();
        assert_eq!(once_key("tick", 1000), "schedule:tick:1000");
        assert_eq!(window_ms(&s, 1000), MIN_WINDOW_MS);
        let d = Schedule::every("daily", "d", Duration::from_secs(86_400)).unwrap();
        assert_eq!(window_ms(&d, 0), 2 * 86_400_000);
        let m = message("memory", &s, 5000);
        assert_eq!(
            (m.from_agent.as_str(), m.to_agent.as_str()),
            ("memory", "memory")
        );
        assert_eq!(
            m.headers.get(SCHEDULE_HEADER).map(String::as_str),
            Some("tick")
        );
        assert_eq!(
            m.headers.get(SCHEDULE_AT_HEADER).map(String::as_str),
            Some("5000")
        );
        assert!(m.payload.is_object());
    }
}
