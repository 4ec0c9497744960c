//! The schedule arguments of `#[handler]`: `every`, `cron`, `tz` and `missed`, checked at
//! compile time with the crates the worker evaluates them with (`cron`, `chrono-tz`).

use proc_macro2::Span;
use syn::LitStr;

use crate::args::push_error;

/// A checked schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScheduleArgs {
    /// The interval in ms, or 0 for a cron schedule.
    pub(crate) every_ms: u64,
    /// The cron expression, or `""`.
    pub(crate) cron: String,
    /// The time zone, or `""` (UTC).
    pub(crate) tz: String,
    /// `catch_up`, `skip`, or `""` (the default, `catch_up`).
    pub(crate) missed: String,
}

/// The schedule arguments as written (each a string literal).
#[derive(Default)]
pub(crate) struct RawSchedule {
    pub(crate) every: Option<LitStr>,
    pub(crate) cron: Option<LitStr>,
    pub(crate) tz: Option<LitStr>,
    pub(crate) missed: Option<LitStr>,
}

/// Shortest interval, in ms.
const MIN_EVERY_MS: u64 = 1_000;

/// Converts an interval such as `"90s"`, `"1h"` or `"1d"` into milliseconds (at least 1 s).
pub(crate) fn parse_every(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid interval {s:?}; expected an integer followed by `s`, `m`, `h` or `d` \
                 (or `ms`), e.g. \"1h\""
            ));
        }
    };
    let ms = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            format!("invalid interval {s:?}: expected a whole number before the unit, e.g. \"30s\"")
        })?;
    if ms < MIN_EVERY_MS {
        return Err(format!(
            "interval {s:?} is shorter than the shortest, \"1s\""
        ));
    }
    Ok(ms)
}

/// Checks a cron expression with seconds as the worker will parse it.
pub(crate) fn check_cron(expr: &str) -> Result<(), String> {
    let trimmed = expr.trim();
    let fields = trimmed.split_whitespace().count();
    if !trimmed.starts_with('@') && !(6..=7).contains(&fields) {
        let hint = if fields == 5 {
            format!(" (a 5-field Unix cron line has no seconds: write \"0 {trimmed}\")")
        } else {
            String::new()
        };
        return Err(format!(
            "cron expression {expr:?} has {fields} fields; expected 6 (sec min hour \
             day-of-month month day-of-week) or 7 (and year), e.g. \"0 0 3 * * *\"{hint}"
        ));
    }
    trimmed.parse::<cron::Schedule>().map(|_| ()).map_err(|e| {
        // The crate points at the mistake on lines of its own: keep its last line.
        let e = e.to_string();
        let e = e
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_default();
        format!(
            "invalid cron expression {expr:?}: {e}; expected sec min hour day-of-month \
                 month day-of-week [year], e.g. \"0 0 3 * * *\" or \"0 */15 * * * MON-FRI\""
        )
    })
}

/// Checks an IANA time zone name.
pub(crate) fn check_tz(name: &str) -> Result<(), String> {
    name.parse::<chrono_tz::Tz>().map(|_| ()).map_err(|_| {
        format!(
            "unknown time zone {name:?}; expected an IANA name such as \"Europe/Paris\", \
             \"America/New_York\" or \"UTC\""
        )
    })
}

/// Checks the schedule arguments together; errors are added to `errors`. `topic` is the
/// span of a `topic` argument, if any (schedules send messages: message handlers only).
pub(crate) fn check(
    raw: RawSchedule,
    topic: Option<Span>,
    errors: &mut Option<syn::Error>,
) -> Option<ScheduleArgs> {
    let RawSchedule {
        every,
        cron,
        tz,
        missed,
    } = raw;
    let mut ok = true;
    let mut fail = |span: Span, msg: String| {
        push_error(errors, syn::Error::new(span, msg));
    };
    let any = every.as_ref().or(cron.as_ref());
    if every.is_some()
        && let Some(c) = &cron
    {
        ok = false;
        fail(
            c.span(),
            "`every` and `cron` cannot be used together: a schedule is either an interval \
             (`every = \"1h\"`) or a cron expression (`cron = \"0 0 3 * * *\"`)"
                .to_owned(),
        );
    }
    if any.is_none() {
        for (lit, name) in [(&tz, "tz"), (&missed, "missed")] {
            if let Some(l) = lit {
                ok = false;
                fail(
                    l.span(),
                    format!("`{name}` needs a schedule: add `every = \"...\"` or `cron = \"...\"`"),
                );
            }
        }
    }
    if topic.is_some()
        && let Some(lit) = any
    {
        ok = false;
        fail(
            lit.span(),
            "a schedule sends the agent a message: it needs `message_type = \"...\"`, not \
             `topic` (publish durable events from a scheduled message handler instead)"
                .to_owned(),
        );
    }
    let mut every_ms = 0;
    if let Some(e) = &every {
        match parse_every(&e.value()) {
            Ok(ms) => every_ms = ms,
            Err(msg) => {
                ok = false;
                fail(e.span(), msg);
            }
        }
    }
    if let Some(c) = &cron
        && let Err(msg) = check_cron(&c.value())
    {
        ok = false;
        fail(c.span(), msg);
    }
    if let Some(t) = &tz {
        if let Err(msg) = check_tz(&t.value()) {
            ok = false;
            fail(t.span(), msg);
        } else if every.is_some() && cron.is_none() {
            ok = false;
            fail(
                t.span(),
                "`tz` applies to `cron` only: `every` intervals are aligned to the Unix epoch"
                    .to_owned(),
            );
        }
    }
    if let Some(m) = &missed
        && !matches!(m.value().as_str(), "catch_up" | "skip")
    {
        ok = false;
        fail(
            m.span(),
            format!(
                "invalid `missed` {:?}; expected \"catch_up\" (the default: one message for \
                 the latest period missed while no worker ran) or \"skip\"",
                m.value()
            ),
        );
    }
    if !ok || any.is_none() {
        return None;
    }
    Some(ScheduleArgs {
        every_ms,
        cron: cron
            .map(|c| c.value().trim().to_owned())
            .unwrap_or_default(),
        tz: tz.map(|t| t.value()).unwrap_or_default(),
        missed: missed.map(|m| m.value()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse_every("1h"), Ok(3_600_000));
        assert_eq!(parse_every("2d"), Ok(172_800_000));
        assert!(parse_every("500ms").unwrap_err().contains("shortest"));
        assert!(parse_every("1w").unwrap_err().contains("invalid interval"));
        assert!(check_cron("0 0 3 * * *").is_ok());
        assert!(check_cron("0 3 * * *").unwrap_err().contains("no seconds"));
        assert!(
            check_cron("0 0 25 * * *")
                .unwrap_err()
                .contains("invalid cron")
        );
        assert!(check_tz("Europe/Paris").is_ok());
        assert!(check_tz("Europe/Pariss").is_err());
    }
}
