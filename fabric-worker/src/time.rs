//! Conversions between durations, clocks and the whole milliseconds Redis speaks, without
//! `as` casts that could truncate or wrap.

use std::time::Duration;

/// Whole milliseconds of `d`, saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch, by this machine's clock (0 before 1970).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// A random number: cheap and good enough to spread timers (a new `RandomState` is seeded
/// anew each time).
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

/// Phases a period is cut into by [`housekeeping_interval`] when spreading.
const PHASES: u32 = 8;

/// When this process's spread intervals are counted from.
static EPOCH: std::sync::LazyLock<tokio::time::Instant> =
    std::sync::LazyLock::new(tokio::time::Instant::now);

/// The interval of a periodic loop (reclaim, trim, a read poll): ticking at once and then
/// every `period`; or, when `spread` (a process serving many inboxes), in one of
/// [`PHASES`] phases of the period picked at random. The loops of many streams then do
/// not all tick at once, and those that share a phase tick together, so that their
/// commands leave in one write on the shared connection (a command alone costs a system
/// call and a loopback round trip: the bulk of an idle process's CPU). Missed ticks are
/// delayed.
pub(crate) fn housekeeping_interval(period: Duration, spread: bool) -> tokio::time::Interval {
    let now = tokio::time::Instant::now();
    let first = if spread {
        let phase = u32::try_from(random_u64() % u64::from(PHASES)).unwrap_or(0);
        next_in_phase(now, *EPOCH + period / PHASES * phase, period)
    } else {
        now
    };
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// The next instant after `now` of the grid `at + k × period` (`at` itself when it is still
/// ahead): the first tick of a spread interval comes within one period.
fn next_in_phase(
    now: tokio::time::Instant,
    at: tokio::time::Instant,
    period: Duration,
) -> tokio::time::Instant {
    if now < at {
        return at;
    }
    let periods = (now - at).as_nanos() / period.as_nanos().max(1) + 1;
    at + period.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX))
}

/// Ms since the epoch of a timestamp as the Python bus writes it (naive UTC,
/// `2026-11-25T20:15:56.123456`), or RFC 3339 with an offset.
pub(crate) fn timestamp_ms(ts: &str) -> Option<u64> {
    let ts = ts.trim();
    if let Some(ms) = python_timestamp_ms(ts) {
        return Some(ms);
    }
    let utc = chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|n| n.and_utc())
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(ts).map(|d| d.to_utc()))
        .ok()?;
    u64::try_from(utc.timestamp_millis()).ok()
}

/// The Python bus's own format, `2026-11-25T20:15:56.123456` (what every worker reads per
/// message, for its expiry), read digit by digit; `None` for anything else (then the general
/// parser decides). `chrono`'s pattern parser cost ~1 µs a message.
fn python_timestamp_ms(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    if b.len() != 26 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b[19] != b'.' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let at = date.and_hms_micro_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?)?;
    u64::try_from(at.and_utc().timestamp_millis()).ok()
}

/// Now, as the Python bus writes timestamps: naive UTC with microseconds.
pub(crate) fn now_timestamp() -> String {
    python_timestamp(chrono::Utc::now().naive_utc())
}

/// `t` as the Python bus writes timestamps (`2026-11-25T20:15:56.123456`), digit by digit:
/// `chrono`'s `format` parses its pattern on every call, a cost paid for every reply.
fn python_timestamp(t: chrono::NaiveDateTime) -> String {
    use chrono::{Datelike, Timelike};
    let Ok(year @ 0..=9999) = u32::try_from(t.year()) else {
        return t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    };
    fn push(s: &mut String, n: u32, digits: u32) {
        for i in (0..digits).rev() {
            let d = n / 10u32.pow(i) % 10;
            s.push(char::from(b'0' + u8::try_from(d).unwrap_or(0)));
        }
    }
    let mut s = String::with_capacity(26);
    push(&mut s, year, 4);
    s.push('-');
    push(&mut s, t.month(), 2);
    s.push('-');
    push(&mut s, t.day(), 2);
    s.push('T');
    push(&mut s, t.hour(), 2);
    s.push(':');
    push(&mut s, t.minute(), 2);
    s.push(':');
    // A leap second: chrono keeps it in the nanoseconds (>= 1e9), as `format` does.
    let (second, micros) = match t.nanosecond() / 1000 {
        m @ 1_000_000.. => (60, m - 1_000_000),
        m => (t.second(), m),
    };
    push(&mut s, second, 2);
    s.push('.');
    push(&mut s, micros, 6);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_interval_ticks_first_within_one_period() {
        let epoch = tokio::time::Instant::now();
        let period = Duration::from_secs(10);
        for phase in 0..PHASES {
            let at = epoch + period / PHASES * phase;
            for now_ms in [0u64, 1, 1_249, 1_250, 9_999, 10_000, 25_000, 123_456] {
                let now = epoch + Duration::from_millis(now_ms);
                let first = next_in_phase(now, at, period);
                assert!(
                    first >= now && first - now <= period,
                    "phase {phase}, now {now_ms} ms: first tick {:?} after now",
                    first - now
                );
                // On the phase's grid.
                assert_eq!((first - at).as_nanos() % period.as_nanos(), 0);
            }
        }
    }

    #[test]
    fn conversions_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert!(now_ms() > 1_700_000_000_000);
    }

    #[test]
    fn python_timestamps_match_chrono_format() {
        use chrono::{NaiveDate, NaiveDateTime};
        let chrono_fmt = |t: NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        let mut t = NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.and_hms_micro_opt(0, 0, 0, 0))
            .expect("a valid instant");
        // Instants over 300 years, with every kind of field width.
        for _ in 0..20_000 {
            assert_eq!(super::python_timestamp(t), chrono_fmt(t));
            t += chrono::Duration::microseconds(473_385_600_001);
        }
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_500_000))
            .expect("a leap second");
        assert_eq!(super::python_timestamp(leap), "2016-12-31T23:59:60.500000");
        assert_eq!(super::python_timestamp(leap), chrono_fmt(leap));
        let far = NaiveDate::from_ymd_opt(12345, 1, 2)
            .and_then(|d| d.and_hms_opt(3, 4, 5))
            .expect("a far instant");
        assert_eq!(super::python_timestamp(far), chrono_fmt(far));
        assert!(super::now_timestamp().starts_with("20"));
    }

    #[test]
    fn python_timestamps_are_read_as_chrono_reads_them() {
        for ts in [
            "2026-11-25T20:15:56.123456",
            "2026-11-25T20:15:56.000000",
            "1970-01-01T00:00:00.000001",
            "2024-02-29T23:59:59.999999",
            "2026-11-25T20:15:56.123", // other lengths: the general parser
            "2026-11-25T20:15:56",
            "2026-11-25T20:15:56+02:00",
            "2026-02-30T20:15:56.123456", // no such day
            "2026-11-25T20:15:5x.123456",
        ] {
            let general = chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|n| n.and_utc())
                .or_else(|_| chrono::DateTime::parse_from_rfc3339(ts).map(|d| d.to_utc()))
                .ok()
                .and_then(|d| u64::try_from(d.timestamp_millis()).ok());
            assert_eq!(timestamp_ms(ts), general, "{ts}");
            if ts.len() == 26 && general.is_some() {
                assert_eq!(python_timestamp_ms(ts), general, "{ts}");
            }
        }
    }
}
