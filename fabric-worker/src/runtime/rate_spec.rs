//! Rate limits as users write them (`"10/s"`, `"openai:60/m"`, `"openai:60/m,burst=5"`),
//! and the Redis key each one is kept under.
//!
//! The grammar is `[<name>:]<count>/[<n>]<unit>[,burst=<b>]`: at most `count` messages
//! per `n` (default 1) seconds (`s`), minutes (`m`) or hours (`h`), of which `b`
//! (default 1) may start at once after an idle time. A name makes the limit shared by
//! every agent and handler that gives the same name (`fabric:ratelimit:{<name>}`);
//! without one it is per agent and handler. `fabric-worker-macros` checks the same
//! grammar at compile time.

use crate::__private::RateLimitDecl;
use crate::error::{Error, Result};

/// Most messages per period.
pub(crate) const MAX_COUNT: u32 = 1_000_000;
/// Longest period: one day.
pub(crate) const MAX_PERIOD_MS: u64 = 86_400_000;
/// Largest burst.
pub(crate) const MAX_BURST: u32 = 1_000_000;
/// Longest limit name.
pub(crate) const MAX_NAME_LEN: usize = 64;

const EXPECTED: &str = "expected \"<count>/<unit>\" with unit s, m or h (\"10/s\", \"100/10s\"), \
     optionally after a shared name and with a burst (\"openai:60/m\", \"openai:60/m,burst=5\")";

/// One rate limit: `count` messages per `period_ms`, `burst` at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RateLimit {
    /// The shared limit's name; `None`: per agent (builder) or per agent and handler.
    pub(crate) name: Option<String>,
    pub(crate) count: u32,
    pub(crate) period_ms: u64,
    pub(crate) burst: u32,
}

impl From<&RateLimitDecl> for RateLimit {
    fn from(d: &RateLimitDecl) -> Self {
        RateLimit {
            name: d.name.map(str::to_owned),
            count: d.count,
            period_ms: d.period_ms,
            burst: d.burst,
        }
    }
}

impl RateLimit {
    /// Parses `"[<name>:]<count>/[<n>]<unit>[,burst=<b>]"`.
    pub(crate) fn parse(s: &str) -> Result<RateLimit> {
        parse(s).map_err(|why| Error::invalid("rate limit", s, why))
    }
}

fn number(s: &str, what: &str, max: u64) -> std::result::Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a whole number; {EXPECTED}"));
    }
    match s.parse::<u64>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("{what} must be at most {max}")),
    }
}

fn parse(s: &str) -> std::result::Result<RateLimit, String> {
    let (main, burst) = match s.split_once(',') {
        Some((m, b)) => (m.trim(), Some(b.trim())),
        None => (s.trim(), None),
    };
    let (name, rate) = match main.split_once(':') {
        Some((n, r)) => (Some(n), r),
        None => (None, main),
    };
    if let Some(n) = name {
        check_name(n)?;
    }
    let Some((count, period)) = rate.split_once('/') else {
        return Err(EXPECTED.to_owned());
    };
    let count = number(count, "the count", u64::from(MAX_COUNT))?;
    let digits = period.bytes().take_while(u8::is_ascii_digit).count();
    let (times, unit) = period.split_at(digits);
    let times = if times.is_empty() {
        1
    } else {
        number(times, "the period", MAX_PERIOD_MS)?
    };
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit {unit:?}; {EXPECTED}")),
    };
    let period_ms = times
        .checked_mul(unit_ms)
        .filter(|p| *p <= MAX_PERIOD_MS)
        .ok_or_else(|| "the period must be at most one day (24h)".to_owned())?;
    let burst = match burst {
        None => 1,
        Some(b) => match b.strip_prefix("burst=") {
            Some(n) => number(n.trim(), "the burst", u64::from(MAX_BURST))?,
            None => return Err(format!("unknown option {b:?} after ','; {EXPECTED}")),
        },
    };
    Ok(RateLimit {
        name: name.map(str::to_owned),
        count: u32::try_from(count).map_err(|_| EXPECTED.to_owned())?,
        period_ms,
        burst: u32::try_from(burst).map_err(|_| EXPECTED.to_owned())?,
    })
}

fn check_name(n: &str) -> std::result::Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if n.is_empty() || n.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name before ':' must be 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(c) = n.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "character {c:?} is not allowed in the name {n:?}; use [A-Za-z0-9_.-]"
        ));
    }
    if !n.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "the name {n:?} must start with a letter or a digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Option<&'static str>, u32, u64, u32) {
        let r = RateLimit::parse(s).unwrap();
        (
            r.name.map(|n| &*Box::leak(n.into_boxed_str())),
            r.count,
            r.period_ms,
            r.burst,
        )
    }

    #[test]
    fn the_grammar_of_rate_limits() {
        assert_eq!(ok("10/s"), (None, 10, 1_000, 1));
        assert_eq!(ok("openai:60/m"), (Some("openai"), 60, 60_000, 1));
        assert_eq!(ok("openai:60/m,burst=5"), (Some("openai"), 60, 60_000, 5));
        assert_eq!(
            ok("a.b-c_1:100/10s, burst=20"),
            (Some("a.b-c_1"), 100, 10_000, 20)
        );
        assert_eq!(ok("5/h"), (None, 5, 3_600_000, 1));
        assert_eq!(ok("1/24h"), (None, 1, 86_400_000, 1));
        for (bad, says) in [
            ("", "expected"),
            ("10", "expected"),
            ("10/d", "unknown unit"),
            ("0/s", "at least 1"),
            ("x/s", "not a whole number"),
            ("10/25h", "at most one day"),
            ("10/0s", "at least 1"),
            ("open ai:1/s", "not allowed"),
            (":1/s", "1 to 64"),
            ("-x:1/s", "start with"),
            ("1/s,bursts=2", "unknown option"),
            ("1/s,burst=0", "at least 1"),
            ("2000000/s", "at most 1000000"),
        ] {
            let e = RateLimit::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("rate limit"), "{e}");
        }
    }
}
