//! What one identity may take of the server: calls per second, and blocking receives at
//! once (each holds a Redis connection of its own), per identity and in all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::tools::ToolError;

/// The limits (`fabric mcp --max-blocking-receives…`, `--calls-per-second`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimitsConfig {
    /// Blocking receives one identity may have waiting at once.
    pub blocking_per_identity: usize,
    /// Blocking receives waiting at once, all identities together.
    pub blocking_total: usize,
    /// Tool calls per second one identity may make on average…
    pub calls_per_second: f64,
    /// …and at once after a pause.
    pub burst: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            blocking_per_identity: 8,
            blocking_total: 64,
            calls_per_second: 20.0,
            burst: 40.0,
        }
    }
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The server's limits and what each identity uses of them.
#[derive(Debug)]
pub(crate) struct Limits {
    config: LimitsConfig,
    total: Arc<Semaphore>,
    blocking: Mutex<HashMap<String, Arc<Semaphore>>>,
    rate: Mutex<HashMap<String, Bucket>>,
}

/// Held while a blocking receive waits.
#[derive(Debug)]
pub(crate) struct BlockingPermit {
    _own: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Limits {
    pub(crate) fn new(config: LimitsConfig) -> Limits {
        Limits {
            config,
            total: Arc::new(Semaphore::new(config.blocking_total.max(1))),
            blocking: Mutex::new(HashMap::new()),
            rate: Mutex::new(HashMap::new()),
        }
    }

    /// One call of `who`, or how long to wait before the next.
    pub(crate) fn check_rate(&self, who: &str) -> Result<(), ToolError> {
        let c = &self.config;
        let now = Instant::now();
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if rate.len() > 10_000 {
            // Forget identities idle long enough to be full again.
            let full_after = c.burst / c.calls_per_second.max(0.001);
            rate.retain(|_, b| now.duration_since(b.at).as_secs_f64() < full_after);
        }
        let b = rate.entry(who.to_owned()).or_insert(Bucket {
            tokens: c.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * c.calls_per_second;
        b.tokens = (b.tokens + refill).min(c.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - b.tokens) / c.calls_per_second.max(0.001) * 1000.0).ceil();
        Err(ToolError(format!(
            "rate limit: at most {} calls per second per identity (bursts of {}); retry in {wait_ms:.0} ms",
            c.calls_per_second, c.burst
        )))
    }

    /// A slot for one blocking receive of `who`, or why not.
    pub(crate) fn blocking(&self, who: &str) -> Result<BlockingPermit, ToolError> {
        let c = &self.config;
        let own = {
            let mut map = self.blocking.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() > 10_000 {
                map.retain(|_, s| s.available_permits() < c.blocking_per_identity);
            }
            map.entry(who.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(c.blocking_per_identity.max(1))))
                .clone()
        };
        let own = own.try_acquire_owned().map_err(|_| {
            ToolError(format!(
                "too many blocking receives at once for you ({} are waiting already): wait for one to return, or call with block_ms 0",
                c.blocking_per_identity
            ))
        })?;
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            ToolError(format!(
                "the server is at its limit of {} blocking receives at once: retry shortly, or call with block_ms 0",
                c.blocking_total
            ))
        })?;
        Ok(BlockingPermit {
            _own: own,
            _total: total,
        })
    }
}

/// Whether `topic` matches the Redis glob `pattern` (`*`, `?`, `[...]` as a literal class
/// is not used by topic patterns: `*` and `?` only).
pub(crate) fn glob_match(pattern: &str, topic: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), topic.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_limited_per_identity() {
        let l = Limits::new(LimitsConfig {
            calls_per_second: 1.0,
            burst: 3.0,
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            l.check_rate("percy").unwrap();
        }
        let e = l.check_rate("percy").unwrap_err().0;
        assert!(e.starts_with("rate limit"), "{e}");
        l.check_rate("coder").unwrap();
    }

    #[test]
    fn blocking_receives_are_capped_per_identity_and_in_all() {
        let l = Limits::new(LimitsConfig {
            blocking_per_identity: 2,
            blocking_total: 3,
            ..LimitsConfig::default()
        });
        let a = l.blocking("percy").unwrap();
        let _b = l.blocking("percy").unwrap();
        assert!(l.blocking("percy").unwrap_err().0.contains("for you"));
        let _c = l.blocking("coder").unwrap();
        assert!(l.blocking("coder").unwrap_err().0.contains("the server"));
        drop(a);
        l.blocking("coder").unwrap();
    }

    #[test]
    fn topic_globs() {
        assert!(glob_match("analytics.*", "analytics.insights"));
        assert!(glob_match("shared:*", "shared:"));
        assert!(!glob_match("analytics.*", "agent.percy.new_message"));
        assert!(!glob_match("system.*", "__keyspace@0__:agent:percy:inbox"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
    }
}
