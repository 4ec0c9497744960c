//! Parsing and validation of the `#[handler(...)]` attribute arguments.
//!
//! Everything here works on `proc_macro2` tokens so it can be unit tested
//! without a compiler session. Problems with individual arguments are
//! collected and reported together (via [`syn::Error::combine`]); only a
//! syntax error in the argument list itself stops parsing early.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Lit, LitInt, LitStr, Token, UnOp};

/// Maximum length of `message_type` and `agent` values.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// The argument names accepted by `#[handler(...)]`, in documentation order.
const KNOWN_ARGS: &[&str] = &[
    "message_type",
    "topic",
    "agent",
    "max_attempts",
    "timeout",
    "every",
    "cron",
    "tz",
    "missed",
    "rate_limit",
];

/// Longest durable topic (or topic pattern) accepted.
pub(crate) const MAX_TOPIC_LEN: usize = 200;

/// What is said when neither `message_type` nor `topic` is given.
const MISSING_KIND: &str = "missing `message_type` or `topic`; expected \
     #[handler(message_type = \"...\")] (messages sent to the agent) or \
     #[handler(topic = \"...\")] (events of durable topics)";

/// Validated `#[handler(...)]` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandlerArgs {
    /// The message type this handler consumes (`None` for a topic handler).
    pub(crate) message_type: Option<String>,
    /// The durable topic or topic glob this handler consumes (`None` for a message handler).
    pub(crate) topic: Option<String>,
    /// Restricts the handler to a single agent.
    pub(crate) agent: Option<String>,
    /// Per-handler override of the maximum number of delivery attempts.
    pub(crate) max_attempts: Option<u32>,
    /// Per-handler timeout, already converted to milliseconds.
    pub(crate) timeout_ms: Option<u64>,
    /// The schedule declared with the handler (`every`/`cron`, `tz`, `missed`).
    pub(crate) schedule: Option<crate::schedule::ScheduleArgs>,
    /// Its rate limit (`rate_limit = "openai:60/m"`).
    pub(crate) rate_limit: Option<crate::rate_limit::RateLimitArg>,
}

/// One `name = value` pair as written by the user, before validation.
struct RawArg {
    name: Ident,
    value: Expr,
}

/// Adds `err` to the accumulated error, keeping every message.
pub(crate) fn push_error(acc: &mut Option<syn::Error>, err: syn::Error) {
    match acc {
        Some(existing) => existing.combine(err),
        None => *acc = Some(err),
    }
}

/// Parses and validates the tokens inside `#[handler(...)]`.
///
/// Every independent problem is reported; the returned error may therefore
/// hold several messages.
pub(crate) fn parse_args(tokens: TokenStream) -> syn::Result<HandlerArgs> {
    let raw = parse_raw_args.parse2(tokens)?;

    let mut errors = None;
    let mut seen: Vec<String> = Vec::new();
    let mut message_type: Option<String> = None;
    let mut saw_message_type = false;
    let mut topic: Option<String> = None;
    let mut saw_topic: Option<Span> = None;
    let mut agent = None;
    let mut max_attempts = None;
    let mut timeout_ms = None;
    let mut schedule = crate::schedule::RawSchedule::default();
    let mut rate_limit = None;

    for RawArg { name, value } in raw {
        let key = name.unraw().to_string();
        if !KNOWN_ARGS.contains(&key.as_str()) {
            push_error(
                &mut errors,
                syn::Error::new(
                    name.span(),
                    format!(
                        "unknown argument `{key}`; expected one of {}",
                        KNOWN_ARGS
                            .iter()
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            );
            continue;
        }
        if seen.contains(&key) {
            push_error(
                &mut errors,
                syn::Error::new(name.span(), format!("duplicate argument `{key}`")),
            );
            continue;
        }
        seen.push(key.clone());

        let result = match key.as_str() {
            "message_type" => {
                saw_message_type = true;
                string_arg(&value, "message_type", "task")
                    .and_then(|lit| {
                        let s = lit.value();
                        validate_message_type(&s)
                            .map(|()| s)
                            .map_err(|msg| syn::Error::new(lit.span(), msg))
                    })
                    .map(|s| message_type = Some(s))
            }
            "topic" => {
                saw_topic = Some(name.span());
                string_arg(&value, "topic", "analytics.*")
                    .and_then(|lit| {
                        let s = lit.value();
                        validate_topic(&s)
                            .map(|()| s)
                            .map_err(|msg| syn::Error::new(lit.span(), msg))
                    })
                    .map(|s| topic = Some(s))
            }
            "agent" => string_arg(&value, "agent", "percy")
                .and_then(|lit| {
                    let s = lit.value();
                    validate_agent(&s)
                        .map(|()| s)
                        .map_err(|msg| syn::Error::new(lit.span(), msg))
                })
                .map(|s| agent = Some(s)),
            "max_attempts" => max_attempts_arg(&value).map(|n| max_attempts = Some(n)),
            "timeout" => string_arg(&value, "timeout", "30s")
                .and_then(|lit| {
                    parse_timeout(&lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))
                })
                .map(|ms| timeout_ms = Some(ms)),
            "every" => string_arg(&value, "every", "1h").map(|l| schedule.every = Some(l)),
            "cron" => string_arg(&value, "cron", "0 0 3 * * *").map(|l| schedule.cron = Some(l)),
            "tz" => string_arg(&value, "tz", "Europe/Paris").map(|l| schedule.tz = Some(l)),
            "missed" => string_arg(&value, "missed", "skip").map(|l| schedule.missed = Some(l)),
            "rate_limit" => string_arg(&value, "rate_limit", "openai:60/m")
                .and_then(|lit| {
                    crate::rate_limit::parse_rate_limit(&lit.value())
                        .map_err(|msg| syn::Error::new(lit.span(), msg))
                })
                .map(|r| rate_limit = Some(r)),
            _ => Ok(()),
        };
        if let Err(err) = result {
            push_error(&mut errors, err);
        }
    }

    let schedule = crate::schedule::check(schedule, saw_topic, &mut errors);

    match (saw_message_type, saw_topic) {
        (false, None) => push_error(
            &mut errors,
            syn::Error::new(Span::call_site(), MISSING_KIND),
        ),
        (true, Some(span)) => push_error(
            &mut errors,
            syn::Error::new(
                span,
                "`message_type` and `topic` cannot be used together: a handler takes either \
                 the messages of one type sent to the agent (`message_type = \"...\"`) or the \
                 events of durable topics (`topic = \"...\"`); write two handlers",
            ),
        ),
        _ => {}
    }

    match (errors, message_type, topic) {
        (Some(err), _, _) => Err(err),
        (None, message_type, topic) if message_type.is_some() != topic.is_some() => {
            Ok(HandlerArgs {
                message_type,
                topic,
                agent,
                max_attempts,
                timeout_ms,
                schedule,
                rate_limit,
            })
        }
        // Unreachable in practice: every other case recorded an error above. Report it
        // rather than panicking.
        (None, _, _) => Err(syn::Error::new(Span::call_site(), MISSING_KIND)),
    }
}

/// Parses a comma separated list of `name = expr` pairs.
fn parse_raw_args(input: ParseStream<'_>) -> syn::Result<Vec<RawArg>> {
    let mut args = Vec::new();
    while !input.is_empty() {
        if !input.peek(Ident::peek_any) {
            return Err(input.error("expected an argument such as `message_type = \"...\"`"));
        }
        let name = input.call(Ident::parse_any)?;
        if !input.peek(Token![=]) {
            let key = name.unraw();
            return Err(syn::Error::new(
                name.span(),
                format!("expected `{key} = ...`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value: Expr = input.parse()?;
        args.push(RawArg { name, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(args)
}

/// Looks through invisible groups (e.g. from `macro_rules!` `$x:literal`).
fn peel(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => peel(&group.expr),
        other => other,
    }
}

/// Requires `value` to be a plain string literal.
fn string_arg(value: &Expr, key: &str, example: &str) -> syn::Result<LitStr> {
    match peel(value) {
        Expr::Lit(expr) => match &expr.lit {
            Lit::Str(lit) if lit.suffix().is_empty() => Ok(lit.clone()),
            Lit::Str(lit) => Err(syn::Error::new(
                lit.span(),
                format!("unexpected suffix `{}` on string literal", lit.suffix()),
            )),
            _ => Err(syn::Error::new_spanned(
                value,
                format!("expected a string literal for `{key}`, e.g. `{key} = \"{example}\"`"),
            )),
        },
        _ => Err(syn::Error::new_spanned(
            value,
            format!("expected a string literal for `{key}`, e.g. `{key} = \"{example}\"`"),
        )),
    }
}

/// Validates and converts the `max_attempts` value.
fn max_attempts_arg(value: &Expr) -> syn::Result<u32> {
    match peel(value) {
        Expr::Lit(expr) => match &expr.lit {
            Lit::Int(lit) => int_to_attempts(lit),
            _ => Err(syn::Error::new_spanned(
                value,
                "expected an integer literal for `max_attempts`, e.g. `max_attempts = 8`",
            )),
        },
        Expr::Unary(unary)
            if matches!(unary.op, UnOp::Neg(_))
                && matches!(peel(&unary.expr), Expr::Lit(lit) if matches!(lit.lit, Lit::Int(_))) =>
        {
            Err(syn::Error::new_spanned(
                value,
                "`max_attempts` must be at least 1",
            ))
        }
        _ => Err(syn::Error::new_spanned(
            value,
            "expected an integer literal for `max_attempts`, e.g. `max_attempts = 8`",
        )),
    }
}

fn int_to_attempts(lit: &LitInt) -> syn::Result<u32> {
    let suffix = lit.suffix();
    if !suffix.is_empty() && suffix != "u32" {
        return Err(syn::Error::new(
            lit.span(),
            format!("unexpected suffix `{suffix}` on `max_attempts`; expected a `u32` value"),
        ));
    }
    let digits = lit.base10_digits();
    if digits.bytes().all(|b| b == b'0') {
        return Err(syn::Error::new(
            lit.span(),
            "`max_attempts` must be at least 1",
        ));
    }
    digits.parse::<u32>().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("`max_attempts` must be at most {}", u32::MAX),
        )
    })
}

/// Checks a message type against `[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}`.
pub(crate) fn validate_message_type(s: &str) -> Result<(), String> {
    validate_name(
        s,
        "message_type",
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
        "ASCII letters, digits, `_`, `.`, `:` and `-`",
    )
}

/// Checks a durable topic or topic glob: `[A-Za-z0-9_.:*-]`, 1–200 characters, starting
/// with a letter, a digit or `*` (`analytics.*`, `shared:news`).
pub(crate) fn validate_topic(s: &str) -> Result<(), String> {
    let allowed = "ASCII letters, digits, `_`, `.`, `:`, `-`, and `*` (any run of characters)";
    let Some(first) = s.chars().next() else {
        return Err("`topic` must not be empty".to_owned());
    };
    if let Some(bad) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '*')))
    {
        return Err(format!(
            "invalid character `{}` in `topic` {s:?}; allowed characters are {allowed}",
            bad.escape_debug()
        ));
    }
    if !(first.is_ascii_alphanumeric() || first == '*') {
        return Err(format!(
            "`topic` must start with an ASCII letter, a digit or `*`, found `{first}`"
        ));
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "`topic` must be at most {MAX_TOPIC_LEN} characters long, found {}",
            s.len()
        ));
    }
    Ok(())
}

/// Checks an agent name against `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
pub(crate) fn validate_agent(s: &str) -> Result<(), String> {
    validate_name(
        s,
        "agent",
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'),
        "ASCII letters, digits, `_` and `-`",
    )
}

fn validate_name(
    s: &str,
    key: &str,
    allowed: impl Fn(char) -> bool,
    allowed_desc: &str,
) -> Result<(), String> {
    let Some(first) = s.chars().next() else {
        return Err(format!("`{key}` must not be empty"));
    };
    if let Some(bad) = s.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "invalid character `{}` in `{key}` {s:?}; allowed characters are {allowed_desc}",
            bad.escape_debug()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "`{key}` must start with an ASCII letter or digit, found `{first}`"
        ));
    }
    // Only ASCII is accepted above, so bytes == characters here.
    if s.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{key}` must be at most {MAX_NAME_LEN} characters long, found {}",
            s.len()
        ));
    }
    Ok(())
}

/// Converts a timeout such as `"500ms"`, `"30s"`, `"2m"` or `"1h"` into
/// milliseconds.
pub(crate) fn parse_timeout(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() || unit.is_empty() {
        return Err(format!(
            "invalid timeout {s:?}; expected an integer followed by `ms`, `s`, `m` or `h`, \
             e.g. \"30s\""
        ));
    }
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "invalid timeout unit `{}` in {s:?}; expected `ms`, `s`, `m` or `h`",
                unit.escape_debug()
            ));
        }
    };
    let too_large = || format!("timeout {s:?} is too large");
    let value: u64 = number.parse().map_err(|_| too_large())?;
    if value == 0 {
        return Err("timeout must be greater than zero".to_owned());
    }
    value.checked_mul(factor).ok_or_else(too_large)
}
