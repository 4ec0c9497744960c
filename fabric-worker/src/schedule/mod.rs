//! Periodic tasks: a [`Schedule`] makes the workers of an agent send the agent one message
//! per period — every interval (aligned to the Unix epoch) or at the instants of a cron
//! expression with seconds, in a time zone. No separate beat process: every worker process
//! serving the agent runs the schedule, and each period's message is enqueued **once**
//! whatever their number (an idempotent send keyed on the schedule and the period,
//! `docs/protocol.md` §12).
//!
//! Declared beside a handler, or in code:
//!
//! ```text
//! #[handler(message_type = "digest", every = "1h")]
//! #[handler(message_type = "digest", cron = "0 0 3 * * *", tz = "Europe/Paris", missed = "skip")]
//! ```
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn demo() -> fabric_worker::Result<()> {
//! use std::time::Duration;
//! use fabric_worker::{Worker, schedule::{Missed, Schedule}};
//!
//! let nightly = Schedule::cron("nightly-digest", "digest", "0 0 3 * * *")?
//!     .time_zone("Europe/Paris")?
//!     .payload(serde_json::json!({"scope": "all"}))
//!     .missed(Missed::Skip);
//! let ping = Schedule::every("heartbeat", "ping", Duration::from_secs(30))?;
//! Worker::builder("memory").schedule(nightly).schedule(ping).from_env()?.run().await?;
//! # Ok(()) }
//! ```

mod timing;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::keys;
pub(crate) use timing::Timing;

/// The header naming the schedule that sent a message.
pub const SCHEDULE_HEADER: &str = "fabric-schedule";
/// The header carrying the boundary (ms since the epoch) a scheduled message is for.
pub const SCHEDULE_AT_HEADER: &str = "fabric-schedule-at";
/// The header naming the worker process that sent a scheduled message (`<host>-<pid>`).
pub const SCHEDULE_BY_HEADER: &str = "fabric-schedule-by";

/// What a schedule does about periods that passed while no worker of its agent ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Missed {
    /// The default: a worker that starts after one or more boundaries passed with no worker
    /// running sends **one** message, for the most recent of them (a nightly job survives a
    /// deploy across 03:00; a week of downtime still gives one run, not seven).
    #[default]
    CatchUp,
    /// Boundaries that passed with no worker running are dropped (as asynq's scheduler and
    /// Celery beat do).
    Skip,
}

impl Missed {
    /// `catch_up` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::CatchUp => "catch_up",
            Missed::Skip => "skip",
        }
    }
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Missed {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "catch_up" => Ok(Missed::CatchUp),
            "skip" => Ok(Missed::Skip),
            _ => Err(Error::invalid(
                "missed-period policy",
                s,
                "expected \"catch_up\" (one message for the latest missed period) or \"skip\"",
            )),
        }
    }
}

/// One periodic task: send the agent a message of `message_type` with `payload` at each
/// boundary. Register it with [`WorkerBuilder::schedule`](crate::runtime::WorkerBuilder::schedule).
#[derive(Clone, Debug)]
#[must_use]
pub struct Schedule {
    name: String,
    agent: Option<String>,
    message_type: String,
    payload: Value,
    missed: Missed,
    cron: Option<String>,
    tz: Option<String>,
    timing: Timing,
}

impl Schedule {
    /// Every `period` (at least a second), at the multiples of it since the Unix epoch
    /// (`1h` fires on the hour, UTC; every process computes the same instants).
    /// `name` follows the message-type rule (`[A-Za-z0-9_.:-]`, 1–64 characters).
    pub fn every(name: &str, message_type: &str, period: Duration) -> Result<Self> {
        let period_ms = crate::time::millis(period);
        if period_ms < timing::MIN_PERIOD_MS {
            return Err(Error::invalid(
                "schedule interval",
                &format!("{period:?}"),
                "must be at least a second",
            ));
        }
        Self::new(name, message_type, Timing::Every { period_ms }, None)
    }

    /// At the instants of a cron expression with seconds: `sec min hour day-of-month month
    /// day-of-week [year]` (`"0 0 3 * * *"`: 03:00:00 daily; `"0 */15 * * * MON-FRI"`), or a
    /// shorthand (`@daily`). Evaluated in UTC unless [`Schedule::time_zone`] says otherwise.
    /// Day-of-week numbers follow the `cron` crate (1 = Sunday … 7 = Saturday): prefer names.
    pub fn cron(name: &str, message_type: &str, expression: &str) -> Result<Self> {
        let schedule = timing::parse_cron(expression)
            .map_err(|reason| Error::invalid("cron expression", expression, reason))?;
        let t = Timing::Cron {
            schedule: Box::new(schedule),
            tz: chrono_tz::UTC,
        };
        Self::new(name, message_type, t, Some(expression.trim().to_owned()))
    }

    fn new(name: &str, message_type: &str, timing: Timing, cron: Option<String>) -> Result<Self> {
        keys::validate_message_type(name).map_err(|e| e.renamed("schedule name"))?;
        keys::validate_message_type(message_type)?;
        Ok(Schedule {
            name: name.to_owned(),
            agent: None,
            message_type: message_type.to_owned(),
            payload: Value::Object(Default::default()),
            missed: Missed::default(),
            cron,
            tz: None,
            timing,
        })
    }

    /// Evaluate the cron expression in this IANA time zone (`"Europe/Paris"`); wall-clock
    /// times skipped or repeated by daylight saving fire once (see `docs/protocol.md` §12).
    /// An interval schedule has no time zone: refused.
    pub fn time_zone(mut self, name: &str) -> Result<Self> {
        let Timing::Cron { tz, .. } = &mut self.timing else {
            return Err(Error::invalid(
                "time zone",
                name,
                "only a cron schedule has a time zone (intervals are aligned to the Unix epoch)",
            ));
        };
        *tz = timing::parse_tz(name).map_err(|reason| Error::invalid("time zone", name, reason))?;
        self.tz = Some(name.to_owned());
        Ok(self)
    }

    /// Only for this agent (default: every agent the worker serves that has a handler for
    /// the message type).
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// The payload of each message (a JSON object; default `{}`).
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// The missed-period policy (default [`Missed::CatchUp`]).
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The message type it sends.
    pub fn message_type(&self) -> &str {
        &self.message_type
    }

    /// The agent it is restricted to, if any.
    pub fn agent_name(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// The first boundary strictly after `ms` (ms since the epoch); `None` if none is left.
    pub fn next_after_ms(&self, ms: u64) -> Option<u64> {
        self.timing.next_after(ms)
    }

    /// The last boundary at or before `ms`; `None` if there is none.
    pub fn latest_at_or_before_ms(&self, ms: u64) -> Option<u64> {
        self.timing.latest_at_or_before(ms)
    }

    /// `every 1h` or `cron 0 0 3 * * * Europe/Paris`.
    pub fn describe(&self) -> String {
        match (&self.timing, &self.cron) {
            (Timing::Every { period_ms }, _) => format!("every {}", human_ms(*period_ms)),
            (Timing::Cron { .. }, cron) => format!(
                "cron {} {}",
                cron.as_deref().unwrap_or_default(),
                self.tz.as_deref().unwrap_or("UTC")
            ),
        }
    }

    pub(crate) fn timing(&self) -> &Timing {
        &self.timing
    }

    pub(crate) fn missed_policy(&self) -> Missed {
        self.missed
    }

    pub(crate) fn payload_value(&self) -> &Value {
        &self.payload
    }

    /// Checks what the constructors could not: the payload's shape.
    pub(crate) fn check(&self) -> Result<()> {
        if !self.payload.is_object() {
            return Err(Error::invalid(
                "schedule payload",
                &self.payload.to_string(),
                "must be a JSON object",
            ));
        }
        if let Some(a) = &self.agent {
            keys::validate_agent(a)?;
        }
        Ok(())
    }

    /// The record written to `agent:<agent>:schedules`.
    pub(crate) fn record(&self, agent: &str, seen_ms: u64) -> ScheduleSpec {
        ScheduleSpec {
            name: self.name.clone(),
            agent: agent.to_owned(),
            message_type: self.message_type.clone(),
            spec: self.describe(),
            every_ms: match self.timing {
                Timing::Every { period_ms } => Some(period_ms),
                Timing::Cron { .. } => None,
            },
            cron: self.cron.clone(),
            tz: self.tz.clone(),
            missed: self.missed,
            payload: self.payload.clone(),
            seen_ms,
        }
    }

    /// The schedule a record describes (to compute its next run), if it is readable.
    pub(crate) fn from_record(r: &ScheduleSpec) -> Option<Schedule> {
        let s = match (r.every_ms, &r.cron) {
            (Some(ms), None) => {
                Schedule::every(&r.name, &r.message_type, Duration::from_millis(ms))
            }
            (None, Some(c)) => Schedule::cron(&r.name, &r.message_type, c),
            _ => return None,
        }
        .ok()?;
        match &r.tz {
            Some(tz) => s.time_zone(tz).ok(),
            None => Some(s),
        }
    }
}

/// `90s`, `1h`, `1500ms`: the largest unit that divides it.
fn human_ms(ms: u64) -> String {
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// A schedule as its workers record it in `agent:<agent>:schedules` (`docs/protocol.md` §12).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct ScheduleSpec {
    /// The schedule's name (for `#[handler]` schedules, the message type).
    pub name: String,
    /// The agent it sends to (itself).
    pub agent: String,
    /// The message type it sends.
    pub message_type: String,
    /// `every 1h` or `cron 0 0 3 * * * Europe/Paris`.
    pub spec: String,
    /// The interval in ms, for an interval schedule.
    #[serde(default)]
    pub every_ms: Option<u64>,
    /// The cron expression, for a cron schedule.
    #[serde(default)]
    pub cron: Option<String>,
    /// Its time zone (`None`: UTC).
    #[serde(default)]
    pub tz: Option<String>,
    /// The missed-period policy.
    #[serde(default)]
    pub missed: Missed,
    /// The payload of each message.
    #[serde(default)]
    pub payload: Value,
    /// When a worker last registered it (its start), ms since the epoch.
    #[serde(default)]
    pub seen_ms: u64,
}

/// When a schedule fired, as `agent:<agent>:schedule_runs` records it (`docs/protocol.md` §12).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleRun {
    /// When a worker first ran the schedule (ms): boundaries before it were never missed.
    #[serde(default)]
    pub since_ms: u64,
    /// The boundary (ms) of the last message sent, if any.
    #[serde(default)]
    pub last_ms: Option<u64>,
    /// When that message was sent (ms).
    #[serde(default)]
    pub last_fired_ms: Option<u64>,
    /// Its message id.
    #[serde(default)]
    pub last_message_id: Option<String>,
    /// The boundary after it (ms), as the sending worker computed it.
    #[serde(default)]
    pub next_ms: Option<u64>,
}

/// A schedule and its runs, as [`Bus::schedules`](crate::Bus::schedules) returns it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// What fires, and when.
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// Its runs (default when it never ran).
    #[serde(flatten)]
    pub run: ScheduleRun,
    /// The next boundary after now (ms), computed from the spec; `None` if none is left.
    pub next_run_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_check_and_describe() {
        let s = Schedule::every("heartbeat", "ping", Duration::from_secs(90)).unwrap();
        assert_eq!(s.describe(), "every 90s");
        assert_eq!(s.next_after_ms(1), Some(90_000));
        assert!(Schedule::every("x", "ping", Duration::from_millis(999)).is_err());
        assert!(Schedule::every("bad name", "ping", Duration::from_secs(1)).is_err());
        let e = s.time_zone("Europe/Paris").unwrap_err().to_string();
        assert!(e.contains("only a cron schedule has a time zone"), "{e}");
        let c = Schedule::cron("nightly", "digest", "0 0 3 * * *")
            .unwrap()
            .time_zone("Europe/Paris")
            .unwrap()
            .missed(Missed::Skip);
        assert_eq!(c.describe(), "cron 0 0 3 * * * Europe/Paris");
        let e = Schedule::cron("n", "digest", "0 3 * * *")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no seconds"), "{e}");
        let rec = c.record("memory", 5);
        assert_eq!(rec.missed, Missed::Skip);
        let back = Schedule::from_record(&rec).unwrap();
        assert_eq!(back.describe(), c.describe());
        assert!(
            Schedule::every("p", "t", Duration::from_secs(1))
                .unwrap()
                .payload(Value::Null)
                .check()
                .is_err()
        );
        assert_eq!("skip".parse::<Missed>().unwrap(), Missed::Skip);
        assert!("never".parse::<Missed>().is_err());
    }
}
