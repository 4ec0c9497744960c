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
        let offset = period / PHASES * phase;
        // The next instant of this phase on the process's grid.
        let since = now.saturating_duration_since(*EPOCH + offset);
        let periods = since.as_nanos() / period.as_nanos().max(1) + 1;
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        *EPOCH + offset + period.saturating_mul(periods)
    } else {
        now
    };
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert!(now_ms() > 1_700_000_000_000);
    }
}
