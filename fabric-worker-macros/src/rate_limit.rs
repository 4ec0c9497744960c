//! `rate_limit = "..."`: `[<name>:]<count>/[<n>]<unit>[,burst=<b>]`, checked at compile
//! time. The same grammar as `fabric-worker`'s `runtime/rate_spec.rs` (which parses the
//! worker-wide limit given at run time); keep the two in step.

/// Most messages per period.
const MAX_COUNT: u64 = 1_000_000;
/// Longest period: one day.
const MAX_PERIOD_MS: u64 = 86_400_000;
/// Largest burst.
const MAX_BURST: u64 = 1_000_000;
/// Longest limit name.
const MAX_NAME_LEN: usize = 64;

const EXPECTED: &str = "expected \"<count>/<unit>\" with unit `s`, `m` or `h` (\"10/s\", \
     \"100/10s\"), optionally after a shared name and with a burst (\"openai:60/m\", \
     \"openai:60/m,burst=5\")";

/// A checked rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimitArg {
    pub(crate) name: Option<String>,
    pub(crate) count: u32,
    pub(crate) period_ms: u64,
    pub(crate) burst: u32,
}

fn number(s: &str, what: &str, max: u64) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid rate limit: {what} {s:?} is not a whole number; {EXPECTED}"
        ));
    }
    match s.parse::<u64>() {
        Ok(0) => Err(format!("invalid rate limit: {what} must be at least 1")),
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("invalid rate limit: {what} must be at most {max}")),
    }
}

/// Parses and checks a `rate_limit` value.
pub(crate) fn parse_rate_limit(s: &str) -> Result<RateLimitArg, String> {
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
        return Err(format!("invalid rate limit {s:?}; {EXPECTED}"));
    };
    let count = number(count, "the count", MAX_COUNT)?;
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
        _ => {
            return Err(format!(
                "invalid rate limit: unknown unit {unit:?}; {EXPECTED}"
            ));
        }
    };
    let period_ms = times
        .checked_mul(unit_ms)
        .filter(|p| *p <= MAX_PERIOD_MS)
        .ok_or_else(|| "invalid rate limit: the period must be at most one day (24h)".to_owned())?;
    let burst = match burst {
        None => 1,
        Some(b) => match b.strip_prefix("burst=") {
            Some(n) => number(n.trim(), "the burst", MAX_BURST)?,
            None => {
                return Err(format!(
                    "invalid rate limit: unknown option {b:?} after `,`; {EXPECTED}"
                ));
            }
        },
    };
    Ok(RateLimitArg {
        name: name.map(str::to_owned),
        // Both at most 1_000_000: they fit.
        count: u32::try_from(count).unwrap_or(u32::MAX),
        period_ms,
        burst: u32::try_from(burst).unwrap_or(u32::MAX),
    })
}

fn check_name(n: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if n.is_empty() || n.len() > MAX_NAME_LEN {
        return Err(format!(
            "invalid rate limit: the name before `:` must be 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(c) = n.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "invalid rate limit: character `{}` is not allowed in the name {n:?}; use ASCII \
             letters, digits, `_`, `.` and `-`",
            c.escape_debug()
        ));
    }
    if !n.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "invalid rate limit: the name {n:?} must start with an ASCII letter or digit"
        ));
    }
    Ok(())
}
