//! The worker's tunables: their defaults, their checks, and the layering of explicit
//! settings over environment variables over defaults.

use std::time::Duration;

use crate::broker::capped_backoff;
use crate::env::Vars;
use crate::error::{Error, Result};
use crate::keys;

/// Tunables of a worker. Every field has a default; see [`WorkerBuilder`](super::WorkerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct WorkerConfig {
    /// Handlers running at once, per served stream.
    pub(crate) concurrency: usize,
    /// Most entries read per `XREADGROUP`.
    pub(crate) batch_size: usize,
    /// How long one `XREADGROUP` blocks waiting for entries.
    pub(crate) block: Duration,
    /// Entries pending longer than this without a lease renewal are reclaimed.
    pub(crate) reclaim_idle: Duration,
    /// How often to look for entries to reclaim (default: a third of `reclaim_idle`).
    pub(crate) reclaim_interval: Option<Duration>,
    /// Handler attempts before a failing message is dead-lettered.
    pub(crate) max_attempts: u32,
    /// Deliveries of one entry before it is dead-lettered as poison.
    pub(crate) max_deliveries: u64,
    /// First retry delay; doubles each attempt, with jitter.
    pub(crate) backoff_base: Duration,
    /// Longest retry delay, jitter included.
    pub(crate) backoff_max: Duration,
    /// A handler running longer is cancelled (`None`: never).
    pub(crate) handler_timeout: Option<Duration>,
    /// On shutdown, how long in-flight handlers may take to finish.
    pub(crate) shutdown_timeout: Duration,
    /// How often acknowledged entries are trimmed.
    pub(crate) trim_interval: Duration,
    /// Longest wait between checks for due retries.
    pub(crate) retry_poll_interval: Duration,
    /// Larger entries are dead-lettered (`too_large`) without being decoded.
    pub(crate) max_entry_bytes: usize,
    /// Expired messages are dropped (acknowledged and counted) instead of dead-lettered.
    pub(crate) drop_expired: bool,
    /// Read the inbox's priority lanes (creating them), urgent first.
    pub(crate) priority_lanes: bool,
    /// At start, how long to wait for a Redis that is unreachable or still loading its
    /// dataset before giving up (zero: give up at once).
    pub(crate) startup_wait: Duration,
    /// The limit every served agent's messages share (per agent, or a named shared one).
    pub(crate) rate_limit: Option<super::rate_spec::RateLimit>,
    /// How far ahead a rate-limited message may reserve its turn (see `rate_limit.rs`).
    pub(crate) rate_limit_horizon: Duration,
    /// Handlers running at once in the whole process, over every served stream (`None`: only
    /// the per-stream limit).
    pub(crate) max_in_flight: Option<usize>,
    /// A process serving at most this many inboxes reads each on a blocking connection of its
    /// own; serving more, it reads them all on its shared connection when a notification (or
    /// the read poll) says there is something to read (`reader.rs`).
    pub(crate) blocking_readers: usize,
    /// With shared reads, how often an inbox is read when no notification came (the safety
    /// net for messages written without one); also the promoter's poll then.
    pub(crate) read_poll_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 100,
            batch_size: 100,
            block: Duration::from_secs(5),
            reclaim_idle: Duration::from_secs(30),
            reclaim_interval: None,
            max_attempts: 5,
            max_deliveries: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            handler_timeout: Some(Duration::from_secs(900)),
            shutdown_timeout: Duration::from_secs(30),
            trim_interval: Duration::from_secs(10),
            retry_poll_interval: Duration::from_secs(1),
            max_entry_bytes: crate::broker::wire::DEFAULT_MAX_ENTRY_BYTES,
            drop_expired: false,
            priority_lanes: true,
            startup_wait: Duration::from_secs(60),
            rate_limit: None,
            rate_limit_horizon: Duration::from_secs(60),
            max_in_flight: None,
            blocking_readers: 16,
            read_poll_interval: Duration::from_secs(5),
        }
    }
}

impl WorkerConfig {
    /// How often running handlers renew their lease: a third of the reclaim idle time.
    pub(crate) fn lease_interval(&self) -> Duration {
        (self.reclaim_idle / 3).max(Duration::from_millis(10))
    }

    /// How often the reclaimer walks the pending list.
    pub(crate) fn reclaim_every(&self) -> Duration {
        self.reclaim_interval
            .unwrap_or(self.reclaim_idle / 3)
            .max(Duration::from_millis(10))
    }

    /// The delay before attempt `next_attempt` (2 = first retry): `backoff_base` doubling
    /// per attempt, plus up to 100% jitter, never more than `backoff_max`.
    pub(crate) fn retry_delay(&self, next_attempt: u32) -> Duration {
        // Past 64 doublings every delay is the cap: no need to walk further.
        let n = usize::try_from(next_attempt.saturating_sub(2).min(64)).unwrap_or(64);
        capped_backoff(self.backoff_base, self.backoff_max)
            .nth(n)
            .unwrap_or(self.backoff_max)
    }

    /// Checks that the values make sense together.
    pub(crate) fn check(&self) -> Result<()> {
        let positive = |name: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} must be greater than zero")))
            }
        };
        positive("concurrency", self.concurrency > 0)?;
        positive("batch_size", self.batch_size > 0)?;
        positive("max_attempts", self.max_attempts > 0)?;
        positive("max_deliveries", self.max_deliveries > 0)?;
        positive("reclaim_idle", !self.reclaim_idle.is_zero())?;
        positive("block", !self.block.is_zero())?;
        positive("max_entry_bytes", self.max_entry_bytes > 0)?;
        positive("max_in_flight", self.max_in_flight != Some(0))?;
        positive("read_poll_interval", !self.read_poll_interval.is_zero())?;
        if self.block > Duration::from_secs(300) {
            return Err(Error::Config("block must be at most 300 s".into()));
        }
        if self.rate_limit_horizon > MAX_RATE_LIMIT_HORIZON {
            return Err(Error::Config(format!(
                "rate_limit_horizon must be at most {} s",
                MAX_RATE_LIMIT_HORIZON.as_secs()
            )));
        }
        if self.backoff_base > self.backoff_max {
            return Err(Error::Config(format!(
                "backoff base {:?} is larger than its max {:?}",
                self.backoff_base, self.backoff_max
            )));
        }
        Ok(())
    }
}

/// Longest reservation horizon of rate limits (the Lua function caps it at the same).
pub(crate) const MAX_RATE_LIMIT_HORIZON: Duration = Duration::from_secs(3600);

/// Declares [`Settings`]: one optional value per setting, layered field by field.
macro_rules! settings {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)*) => {
        /// Settings given to the builder or read from the environment; `None` = not given.
        #[derive(Clone, Debug, Default)]
        pub(crate) struct Settings {
            $($(#[$doc])* pub(crate) $name: Option<$ty>,)*
        }

        impl Settings {
            /// `self`'s values, and `lower`'s where `self` has none.
            pub(crate) fn over(self, lower: Settings) -> Settings {
                Settings { $($name: self.$name.or(lower.$name),)* }
            }
        }
    };
}

settings! {
    /// `REDIS_URL`.
    url: String,
    /// `FABRIC_GROUP`.
    group: String,
    /// `FABRIC_CONSUMER_NAME`.
    consumer: String,
    /// `FABRIC_CONSUME_RESULTS`.
    results: bool,
    /// `FABRIC_CONCURRENCY`.
    concurrency: usize,
    /// `FABRIC_BATCH_SIZE`.
    batch_size: usize,
    /// `FABRIC_BLOCK_MS`.
    block: Duration,
    /// `FABRIC_RECLAIM_IDLE_MS`.
    reclaim_idle: Duration,
    /// `FABRIC_RECLAIM_INTERVAL_MS`.
    reclaim_interval: Duration,
    /// `FABRIC_MAX_ATTEMPTS`.
    max_attempts: u32,
    /// `FABRIC_MAX_DELIVERIES`.
    max_deliveries: u64,
    /// `FABRIC_BACKOFF_BASE_MS`.
    backoff_base: Duration,
    /// `FABRIC_BACKOFF_MAX_MS`.
    backoff_max: Duration,
    /// `FABRIC_HANDLER_TIMEOUT_MS` (0 = none).
    handler_timeout: Option<Duration>,
    /// `FABRIC_SHUTDOWN_TIMEOUT_MS`.
    shutdown_timeout: Duration,
    /// `FABRIC_TRIM_INTERVAL_MS`.
    trim_interval: Duration,
    /// `FABRIC_RETRY_POLL_INTERVAL_MS`.
    retry_poll_interval: Duration,
    /// `FABRIC_TOPIC_POLL_INTERVAL_MS`.
    topic_poll_interval: Duration,
    /// `FABRIC_MAX_ENTRY_BYTES`.
    max_entry_bytes: usize,
    /// `FABRIC_DROP_EXPIRED`.
    drop_expired: bool,
    /// `FABRIC_PRIORITY_LANES`.
    priority_lanes: bool,
    /// `FABRIC_STARTUP_WAIT_MS`.
    startup_wait: Duration,
    /// `FABRIC_RATE_LIMIT`.
    rate_limit: String,
    /// `FABRIC_RATE_LIMIT_HORIZON_MS`.
    rate_limit_horizon: Duration,
    /// `FABRIC_METRICS_ADDR`.
    metrics_addr: std::net::SocketAddr,
    /// Record metrics without serving them (`WorkerBuilder::metrics`).
    metrics: bool,
    /// `FABRIC_MAX_IN_FLIGHT`.
    max_in_flight: usize,
    /// `FABRIC_BLOCKING_READERS`.
    blocking_readers: usize,
    /// `FABRIC_READ_POLL_MS`.
    read_poll_interval: Duration,
}

impl Settings {
    /// Reads every setting's environment variable; a malformed value is an error naming it.
    pub(crate) fn from_vars<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<Settings> {
        Ok(Settings {
            url: v.string("REDIS_URL"),
            group: v.string("FABRIC_GROUP"),
            consumer: v.string("FABRIC_CONSUMER_NAME"),
            results: v.bool("FABRIC_CONSUME_RESULTS")?,
            concurrency: v.usize("FABRIC_CONCURRENCY")?,
            batch_size: v.usize("FABRIC_BATCH_SIZE")?,
            block: v.millis("FABRIC_BLOCK_MS")?,
            reclaim_idle: v.millis("FABRIC_RECLAIM_IDLE_MS")?,
            reclaim_interval: v.millis("FABRIC_RECLAIM_INTERVAL_MS")?,
            max_attempts: v.u32("FABRIC_MAX_ATTEMPTS")?,
            max_deliveries: v.u64("FABRIC_MAX_DELIVERIES")?,
            backoff_base: v.millis("FABRIC_BACKOFF_BASE_MS")?,
            backoff_max: v.millis("FABRIC_BACKOFF_MAX_MS")?,
            handler_timeout: v
                .millis("FABRIC_HANDLER_TIMEOUT_MS")?
                .map(|d| (!d.is_zero()).then_some(d)),
            shutdown_timeout: v.millis("FABRIC_SHUTDOWN_TIMEOUT_MS")?,
            trim_interval: v.millis("FABRIC_TRIM_INTERVAL_MS")?,
            retry_poll_interval: v.millis("FABRIC_RETRY_POLL_INTERVAL_MS")?,
            topic_poll_interval: v.millis("FABRIC_TOPIC_POLL_INTERVAL_MS")?,
            max_entry_bytes: v.usize("FABRIC_MAX_ENTRY_BYTES")?,
            drop_expired: v.bool("FABRIC_DROP_EXPIRED")?,
            priority_lanes: v.bool("FABRIC_PRIORITY_LANES")?,
            startup_wait: v.millis("FABRIC_STARTUP_WAIT_MS")?,
            rate_limit: v.string("FABRIC_RATE_LIMIT"),
            rate_limit_horizon: v.millis("FABRIC_RATE_LIMIT_HORIZON_MS")?,
            metrics_addr: super::observe::addr_from(v)?,
            metrics: None,
            max_in_flight: v.usize("FABRIC_MAX_IN_FLIGHT")?,
            blocking_readers: v.usize("FABRIC_BLOCKING_READERS")?,
            read_poll_interval: v.millis("FABRIC_READ_POLL_MS")?,
        })
    }

    /// The tunables: these settings over the defaults, checked.
    pub(crate) fn config(&self) -> Result<WorkerConfig> {
        let d = WorkerConfig::default();
        let c = WorkerConfig {
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            block: self.block.unwrap_or(d.block),
            reclaim_idle: self.reclaim_idle.unwrap_or(d.reclaim_idle),
            reclaim_interval: self.reclaim_interval.or(d.reclaim_interval),
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            max_deliveries: self.max_deliveries.unwrap_or(d.max_deliveries),
            backoff_base: self.backoff_base.unwrap_or(d.backoff_base),
            backoff_max: self.backoff_max.unwrap_or(d.backoff_max),
            handler_timeout: self.handler_timeout.unwrap_or(d.handler_timeout),
            shutdown_timeout: self.shutdown_timeout.unwrap_or(d.shutdown_timeout),
            trim_interval: self.trim_interval.unwrap_or(d.trim_interval),
            retry_poll_interval: self.retry_poll_interval.unwrap_or(d.retry_poll_interval),
            max_entry_bytes: self.max_entry_bytes.unwrap_or(d.max_entry_bytes),
            drop_expired: self.drop_expired.unwrap_or(d.drop_expired),
            priority_lanes: self.priority_lanes.unwrap_or(d.priority_lanes),
            startup_wait: self.startup_wait.unwrap_or(d.startup_wait),
            rate_limit: match &self.rate_limit {
                Some(r) => Some(super::rate_spec::RateLimit::parse(r)?),
                None => d.rate_limit,
            },
            rate_limit_horizon: self.rate_limit_horizon.unwrap_or(d.rate_limit_horizon),
            max_in_flight: self.max_in_flight.or(d.max_in_flight),
            blocking_readers: self.blocking_readers.unwrap_or(d.blocking_readers),
            read_poll_interval: self.read_poll_interval.unwrap_or(d.read_poll_interval),
        };
        c.check()?;
        if let Some(g) = &self.group {
            keys::validate_group(g)?;
        }
        if let Some(c) = &self.consumer {
            keys::validate_consumer(c)?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::from_pairs;

    #[test]
    fn retry_delays_double_with_jitter_and_never_pass_the_cap() {
        let c = WorkerConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..WorkerConfig::default()
        };
        for _ in 0..50 {
            let d2 = c.retry_delay(2);
            assert!(
                d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
                "{d2:?}"
            );
            let d3 = c.retry_delay(3);
            assert!(
                d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
                "{d3:?}"
            );
            for attempt in 4..40 {
                assert!(c.retry_delay(attempt) <= c.backoff_max);
            }
        }
        // The cap holds even where jitter would push a capped delay past it.
        assert_eq!(c.retry_delay(30), c.backoff_max);
        assert_eq!(c.retry_delay(u32::MAX), c.backoff_max);
    }

    #[test]
    fn every_variable_is_read() {
        let v = from_pairs(&[
            ("REDIS_URL", "redis://h:1"),
            ("FABRIC_GROUP", "g"),
            ("FABRIC_CONSUMER_NAME", "c"),
            ("FABRIC_CONSUME_RESULTS", "true"),
            ("FABRIC_CONCURRENCY", "7"),
            ("FABRIC_BATCH_SIZE", "8"),
            ("FABRIC_BLOCK_MS", "900"),
            ("FABRIC_RECLAIM_IDLE_MS", "3000"),
            ("FABRIC_RECLAIM_INTERVAL_MS", "500"),
            ("FABRIC_MAX_ATTEMPTS", "9"),
            ("FABRIC_MAX_DELIVERIES", "4"),
            ("FABRIC_BACKOFF_BASE_MS", "10"),
            ("FABRIC_BACKOFF_MAX_MS", "20"),
            ("FABRIC_HANDLER_TIMEOUT_MS", "0"),
            ("FABRIC_SHUTDOWN_TIMEOUT_MS", "11"),
            ("FABRIC_TRIM_INTERVAL_MS", "12"),
            ("FABRIC_RETRY_POLL_INTERVAL_MS", "13"),
            ("FABRIC_MAX_ENTRY_BYTES", "4096"),
            ("FABRIC_RATE_LIMIT", "openai:60/m,burst=5"),
            ("FABRIC_RATE_LIMIT_HORIZON_MS", "30000"),
            ("FABRIC_MAX_IN_FLIGHT", "250"),
            ("FABRIC_BLOCKING_READERS", "0"),
            ("FABRIC_READ_POLL_MS", "700"),
        ]);
        let s = Settings::from_vars(&v).unwrap();
        assert_eq!(s.url.as_deref(), Some("redis://h:1"));
        assert_eq!(s.group.as_deref(), Some("g"));
        assert_eq!(s.consumer.as_deref(), Some("c"));
        assert_eq!(s.results, Some(true));
        let c = s.config().unwrap();
        assert_eq!(c.concurrency, 7);
        assert_eq!(c.batch_size, 8);
        assert_eq!(c.block, Duration::from_millis(900));
        assert_eq!(c.reclaim_idle, Duration::from_secs(3));
        assert_eq!(c.reclaim_interval, Some(Duration::from_millis(500)));
        assert_eq!(c.max_attempts, 9);
        assert_eq!(c.max_deliveries, 4);
        assert_eq!(c.backoff_base, Duration::from_millis(10));
        assert_eq!(c.backoff_max, Duration::from_millis(20));
        assert_eq!(c.handler_timeout, None, "0 means no timeout");
        assert_eq!(c.shutdown_timeout, Duration::from_millis(11));
        assert_eq!(c.trim_interval, Duration::from_millis(12));
        assert_eq!(c.retry_poll_interval, Duration::from_millis(13));
        assert_eq!(c.max_entry_bytes, 4096);
        let r = c.rate_limit.as_ref().unwrap();
        assert_eq!(
            (r.name.as_deref(), r.count, r.period_ms, r.burst),
            (Some("openai"), 60, 60_000, 5)
        );
        assert_eq!(c.rate_limit_horizon, Duration::from_secs(30));
        assert_eq!(c.max_in_flight, Some(250));
        assert_eq!(c.blocking_readers, 0);
        assert_eq!(c.read_poll_interval, Duration::from_millis(700));
        let unset = Settings::from_vars(&from_pairs(&[]))
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(unset.concurrency, 100);
        assert_eq!(unset.handler_timeout, Some(Duration::from_secs(900)));
    }

    #[test]
    fn malformed_or_inconsistent_values_are_refused_by_name() {
        let e = Settings::from_vars(&from_pairs(&[("FABRIC_CONCURRENCY", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FABRIC_CONCURRENCY=\"lots\""), "{e}");
        let e = Settings::from_vars(&from_pairs(&[("FABRIC_CONCURRENCY", "0")]))
            .unwrap()
            .config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("concurrency must be greater than zero"), "{e}");
        let e = Settings::from_vars(&from_pairs(&[
            ("FABRIC_BACKOFF_BASE_MS", "5000"),
            ("FABRIC_BACKOFF_MAX_MS", "10"),
        ]))
        .unwrap()
        .config()
        .unwrap_err()
        .to_string();
        assert!(e.contains("backoff base"), "{e}");
        let e = Settings::from_vars(&from_pairs(&[("FABRIC_GROUP", "a b")]))
            .unwrap()
            .config()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid consumer group"), "{e}");
        let e = Settings::from_vars(&from_pairs(&[("FABRIC_RATE_LIMIT", "10/day")]))
            .unwrap()
            .config()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rate limit") && e.contains("unknown unit"),
            "{e}"
        );
    }

    #[test]
    fn layering_takes_the_upper_value_where_there_is_one() {
        let explicit = Settings {
            concurrency: Some(3),
            ..Settings::default()
        };
        let env = Settings {
            concurrency: Some(50),
            batch_size: Some(10),
            ..Settings::default()
        };
        let s = explicit.over(env);
        assert_eq!(s.concurrency, Some(3));
        assert_eq!(s.batch_size, Some(10));
    }
}
