//! When a schedule fires: intervals aligned to the Unix epoch, and cron expressions (with
//! seconds) evaluated in a time zone.
//!
//! Cron times are wall-clock times of the zone, mapped to instants as RFC 5545 §3.3.5 maps
//! local times: a time that occurs twice (the autumn change) means its **first** occurrence,
//! so it fires once; a time that does not occur (the spring change) is read with the offset
//! in force before the gap, so `02:30` on the night clocks jump from 02:00 to 03:00 fires at
//! 03:30 — once, not skipped.

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Shortest interval: a schedule fires at most once a second.
pub(crate) const MIN_PERIOD_MS: u64 = 1_000;

/// Longest daylight-saving gap or overlap looked around (real zones change by at most 2 h).
const AROUND: TimeDelta = TimeDelta::hours(3);

/// Most cron candidates looked at for one answer (a `* * * * * *` schedule through an
/// overlap needs 3,600; an expression whose dates never come, e.g. `0 0 0 30 2 *`, stops here).
const MAX_STEPS: usize = 200_000;

/// The timing of a schedule.
#[derive(Clone, Debug)]
pub(crate) enum Timing {
    /// Every `period_ms`, at the multiples of it since the Unix epoch.
    Every {
        /// The period in ms (at least [`MIN_PERIOD_MS`]).
        period_ms: u64,
    },
    /// At the instants a cron expression names in a time zone.
    Cron {
        /// The parsed expression.
        schedule: Box<cron::Schedule>,
        /// Its time zone.
        tz: Tz,
    },
}

/// Parses a cron expression with seconds (6 fields, or 7 with years, or `@daily`-style
/// shorthands), with a message saying what is expected.
pub(crate) fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && !(6..=7).contains(&fields) {
        let hint = if fields == 5 {
            format!(" (a 5-field Unix cron line has no seconds: write \"0 {trimmed}\")")
        } else {
            String::new()
        };
        return Err(format!(
            "cron expression {expr:?} has {fields} fields; expected 6 (sec min hour day-of-month month day-of-week) or 7 (and year), e.g. \"0 0 3 * * *\"{hint}"
        ));
    }
    trimmed.parse::<cron::Schedule>().map_err(|e| {
        // The crate points at the mistake on lines of its own: keep its last line.
        let e = e.to_string();
        let e = e.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default();
        format!(
            "invalid cron expression {expr:?}: {e}; expected sec min hour day-of-month month day-of-week [year], e.g. \"0 0 3 * * *\" or \"0 */15 * * * MON-FRI\""
        )
    })
}

/// Parses an IANA time zone name (`Europe/Paris`, `UTC`).
pub(crate) fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?}; expected an IANA name such as \"Europe/Paris\", \"America/New_York\" or \"UTC\"")
    })
}

fn to_utc(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

fn to_ms(t: DateTime<Utc>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

/// The instant a wall-clock time of `tz` means (RFC 5545 §3.3.5, see the module docs).
fn instant(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(d) => Some(d.to_utc()),
        LocalResult::Ambiguous(first, _) => Some(first.to_utc()),
        LocalResult::None => {
            // In a gap: the offset in force before it (a day earlier there is no other change).
            let before = tz
                .offset_from_utc_datetime(&(wall - TimeDelta::days(1)))
                .fix();
            let utc = wall - TimeDelta::seconds(i64::from(before.local_minus_utc()));
            Some(utc.and_utc())
        }
    }
}

/// The wall-clock times `t` could be matched from: its own, and the one it would have with
/// the offset of [`AROUND`] earlier (they differ right after a change), lowest first.
fn walls(tz: Tz, t: DateTime<Utc>) -> (NaiveDateTime, NaiveDateTime) {
    let now = t.with_timezone(&tz).naive_local();
    let earlier = tz.offset_from_utc_datetime(&(t - AROUND).naive_utc()).fix();
    let other = t.naive_utc() + TimeDelta::seconds(i64::from(earlier.local_minus_utc()));
    (now.min(other), now.max(other))
}

/// `wall` as the fake UTC time the cron crate iterates over (wall clocks have no gaps).
fn fake(wall: NaiveDateTime) -> DateTime<Utc> {
    wall.and_utc()
}

impl Timing {
    /// The first boundary strictly after `t_ms` (ms since the epoch); `None` if there is
    /// none (a cron expression whose dates are all past).
    pub(crate) fn next_after(&self, t_ms: u64) -> Option<u64> {
        match self {
            Timing::Every { period_ms } => (t_ms / period_ms + 1).checked_mul(*period_ms),
            Timing::Cron { schedule, tz } => {
                let t = to_utc(t_ms)?;
                let (lo, _) = walls(*tz, t);
                // Whole seconds: start the scan at the second before `lo`, strictly after it.
                let start = fake(lo - TimeDelta::seconds(1)).with_nanosecond_zero();
                let mut best: Option<DateTime<Utc>> = None;
                for wall in schedule.after(&start).take(MAX_STEPS) {
                    let wall = wall.naive_utc();
                    if let Some(b) = best
                        && wall >= b.with_timezone(tz).naive_local()
                    {
                        break;
                    }
                    if let Some(i) = instant(*tz, wall)
                        && i > t
                        && best.is_none_or(|b| i < b)
                    {
                        best = Some(i);
                    }
                }
                best.and_then(to_ms)
            }
        }
    }

    /// The last boundary at or before `t_ms`; `None` if there is none.
    pub(crate) fn latest_at_or_before(&self, t_ms: u64) -> Option<u64> {
        match self {
            Timing::Every { period_ms } => Some(t_ms / period_ms * period_ms),
            Timing::Cron { schedule, tz } => {
                let t = to_utc(t_ms)?;
                let (_, hi) = walls(*tz, t);
                // From the second after `hi`, backwards, that second included.
                let start = fake(hi + TimeDelta::seconds(1)).with_nanosecond_zero();
                let mut best: Option<DateTime<Utc>> = None;
                for wall in schedule.after(&start).rev().take(MAX_STEPS) {
                    let wall = wall.naive_utc();
                    if let Some(b) = best
                        && wall < b.with_timezone(tz).naive_local() - AROUND
                    {
                        break;
                    }
                    if let Some(i) = instant(*tz, wall)
                        && i <= t
                        && best.is_none_or(|b| i > b)
                    {
                        best = Some(i);
                    }
                }
                best.and_then(to_ms)
            }
        }
    }

    /// The time between the boundary `b` and the next one (for the idempotency window).
    pub(crate) fn gap_after(&self, b_ms: u64) -> u64 {
        match self {
            Timing::Every { period_ms } => *period_ms,
            Timing::Cron { .. } => self
                .next_after(b_ms)
                .map_or(86_400_000, |n| n.saturating_sub(b_ms)),
        }
    }
}

/// Sub-second parts dropped.
trait NoNanos {
    fn with_nanosecond_zero(self) -> Self;
}

impl NoNanos for DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

#[cfg(test)]
#[path = "timing_tests.rs"]
mod tests;
