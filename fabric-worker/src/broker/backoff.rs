//! Backoff schedules: exponential, with jitter, and never above their cap.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays starting at `min`, doubling, with up to +100% jitter, each capped at `max`
/// (backon adds its jitter after its own cap, so the cap is applied again here), forever.
pub(crate) fn capped_backoff(
    min: Duration,
    max: Duration,
) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .map(move |d| d.min(max))
}

/// Backoff for reconnecting to Redis: 100 ms doubling to 5 s, with jitter, forever.
pub(crate) fn reconnect_backoff() -> impl Iterator<Item = Duration> + Send {
    capped_backoff(Duration::from_millis(100), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_never_pass_the_cap() {
        let max = Duration::from_millis(800);
        let delays: Vec<Duration> = capped_backoff(Duration::from_millis(100), max)
            .take(200)
            .collect();
        assert!(delays.iter().all(|d| *d <= max), "{delays:?}");
        assert!(delays[0] >= Duration::from_millis(100), "{delays:?}");
        assert!(delays[0] <= Duration::from_millis(200), "{delays:?}");
        // Past the cap, jitter would reach 2x: every delay is still at most the cap, and
        // at least the cap's share before jitter.
        assert!(delays[10..].iter().all(|d| *d == max), "{delays:?}");
        assert!(
            reconnect_backoff()
                .take(100)
                .all(|d| d <= Duration::from_secs(5))
        );
    }
}
