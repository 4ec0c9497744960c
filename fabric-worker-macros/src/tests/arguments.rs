//! Diagnostics of the attribute's arguments.

use super::*;

#[test]
fn missing_message_type() {
    let expected = "missing `message_type` or `topic`; expected \
         #[handler(message_type = \"...\")] (messages sent to the agent) or \
         #[handler(topic = \"...\")] (events of durable topics)";
    assert_single(&arg_errors(quote!()), expected);
    assert_single(&arg_errors(quote!(agent = "percy")), expected);
}

#[test]
fn unknown_argument() {
    assert_single(
        &arg_errors(quote!(message_type = "t", retries = 3)),
        "unknown argument `retries`; expected one of `message_type`, `topic`, \
             `agent`, `max_attempts`, `timeout`, `every`, `cron`, `tz`, `missed`, `rate_limit`",
    );
    // Keywords are reported as unknown arguments too, not as parse errors.
    assert_eq!(arg_errors(quote!(message_type = "t", type = 3)).len(), 1);
}

#[test]
fn duplicate_argument() {
    assert_single(
        &arg_errors(quote!(message_type = "a", message_type = "b")),
        "duplicate argument `message_type`",
    );
}

#[test]
fn wrong_literal_types() {
    assert_single(
        &arg_errors(quote!(message_type = 5)),
        "expected a string literal for `message_type`, e.g. `message_type = \"task\"`",
    );
    assert_single(
        &arg_errors(quote!(message_type = task)),
        "expected a string literal for `message_type`, e.g. `message_type = \"task\"`",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", agent = percy)),
        "expected a string literal for `agent`, e.g. `agent = \"percy\"`",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", max_attempts = "8")),
        "expected an integer literal for `max_attempts`, e.g. `max_attempts = 8`",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", timeout = 30)),
        "expected a string literal for `timeout`, e.g. `timeout = \"30s\"`",
    );
}

#[test]
fn independent_errors_are_combined() {
    let errs = errors(
        quote!(
            message_type = "",
            retries = 1,
            timeout = "soon",
            max_attempts = 0
        ),
        quote! { fn h<T>(x: &T, y: u8, z: u8) {} },
    );
    assert_eq!(
        errs,
        [
            "`message_type` must not be empty",
            "unknown argument `retries`; expected one of `message_type`, `topic`, \
                 `agent`, `max_attempts`, `timeout`, `every`, `cron`, `tz`, `missed`, `rate_limit`",
            "invalid timeout \"soon\"; expected an integer followed by `ms`, `s`, `m` or \
                 `h`, e.g. \"30s\"",
            "`max_attempts` must be at least 1",
            "#[handler] functions must be `async`",
            "#[handler] cannot be used on generic functions",
            "handler arguments must be owned values",
            "#[handler] functions take at most 2 arguments: a `Context` and a payload",
        ]
    );
}

#[test]
fn message_type_validation() {
    assert_single(
        &arg_errors(quote!(message_type = "")),
        "`message_type` must not be empty",
    );
    assert_single(
        &arg_errors(quote!(message_type = "code review")),
        "invalid character ` ` in `message_type` \"code review\"; allowed characters are \
             ASCII letters, digits, `_`, `.`, `:` and `-`",
    );
    assert_single(
        &arg_errors(quote!(message_type = "tâche")),
        "invalid character `â` in `message_type` \"tâche\"; allowed characters are \
             ASCII letters, digits, `_`, `.`, `:` and `-`",
    );
    assert_single(
        &arg_errors(quote!(message_type = "-task")),
        "`message_type` must start with an ASCII letter or digit, found `-`",
    );
    let long = "a".repeat(65);
    assert_single(
        &arg_errors(quote!(message_type = #long)),
        "`message_type` must be at most 64 characters long, found 65",
    );
    let max = "a".repeat(64);
    ok(quote!(message_type = #max), quote! { async fn h() {} });
    ok(
        quote!(message_type = "9.a_b:c-d"),
        quote! { async fn h() {} },
    );
}

#[test]
fn agent_validation() {
    assert_single(
        &arg_errors(quote!(message_type = "t", agent = "")),
        "`agent` must not be empty",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", agent = "a.b")),
        "invalid character `.` in `agent` \"a.b\"; allowed characters are ASCII letters, \
             digits, `_` and `-`",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", agent = "_percy")),
        "`agent` must start with an ASCII letter or digit, found `_`",
    );
    let long = "p".repeat(65);
    assert_single(
        &arg_errors(quote!(message_type = "t", agent = #long)),
        "`agent` must be at most 64 characters long, found 65",
    );
    ok(
        quote!(message_type = "t", agent = "Percy-2_x"),
        quote! { async fn h() {} },
    );
}

#[test]
fn max_attempts_validation() {
    assert_single(
        &arg_errors(quote!(message_type = "t", max_attempts = 0)),
        "`max_attempts` must be at least 1",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", max_attempts = -3)),
        "`max_attempts` must be at least 1",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", max_attempts = 4294967296)),
        "`max_attempts` must be at most 4294967295",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", max_attempts = 8u8)),
        "unexpected suffix `u8` on `max_attempts`; expected a `u32` value",
    );
    let out = ok(
        quote!(message_type = "t", max_attempts = 8u32),
        quote! { async fn h() {} },
    );
    assert!(out.contains("Some (8u32)"), "{out}");
}

#[test]
fn timeout_validation() {
    assert_single(
        &arg_errors(quote!(message_type = "t", timeout = "0s")),
        "timeout must be greater than zero",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", timeout = "30 seconds")),
        "invalid timeout unit ` seconds` in \"30 seconds\"; expected `ms`, `s`, `m` or `h`",
    );
    let out = ok(
        quote!(message_type = "t", timeout = "2m"),
        quote! { async fn h() {} },
    );
    assert!(out.contains("Some (120000u64)"), "{out}");
    let out = ok(
        quote!(message_type = "t", timeout = "1h"),
        quote! { async fn h() {} },
    );
    assert!(out.contains("Some (3600000u64)"), "{out}");
}

#[test]
fn syntax_errors_in_arguments() {
    assert_single(
        &arg_errors(quote!("task")),
        "expected an argument such as `message_type = \"...\"`",
    );
    assert_single(
        &arg_errors(quote!(message_type)),
        "expected `message_type = ...`",
    );
    assert_eq!(arg_errors(quote!(message_type = "a" agent = "b")).len(), 1);
}

#[test]
fn rate_limits() {
    let msg = |spec: &str| {
        let lit = proc_macro2::Literal::string(spec);
        arg_errors(quote!(message_type = "t", rate_limit = #lit))
    };
    let expected = "expected \"<count>/<unit>\" with unit `s`, `m` or `h` (\"10/s\", \
         \"100/10s\"), optionally after a shared name and with a burst (\"openai:60/m\", \
         \"openai:60/m,burst=5\")";
    assert_single(
        &msg("60/day"),
        &format!("invalid rate limit: unknown unit \"day\"; {expected}"),
    );
    assert_single(
        &msg("60"),
        &format!("invalid rate limit \"60\"; {expected}"),
    );
    assert_single(
        &msg("0/s"),
        "invalid rate limit: the count must be at least 1",
    );
    assert_single(
        &msg("1/25h"),
        "invalid rate limit: the period must be at most one day (24h)",
    );
    assert_single(
        &msg("openai:60/m,burst=0"),
        "invalid rate limit: the burst must be at least 1",
    );
    assert_single(
        &msg("1/s,max=2"),
        &format!("invalid rate limit: unknown option \"max=2\" after `,`; {expected}"),
    );
    assert_single(
        &msg("open ai:1/s"),
        "invalid rate limit: character ` ` is not allowed in the name \"open ai\"; use \
         ASCII letters, digits, `_`, `.` and `-`",
    );
    assert_single(
        &msg("_x:1/s"),
        "invalid rate limit: the name \"_x\" must start with an ASCII letter or digit",
    );
    assert_single(
        &msg("2000000/s"),
        "invalid rate limit: the count must be at most 1000000",
    );
    assert_single(
        &arg_errors(quote!(message_type = "t", rate_limit = 60)),
        "expected a string literal for `rate_limit`, e.g. `rate_limit = \"openai:60/m\"`",
    );
}

#[test]
fn rate_limits_expand_to_their_parts() {
    let out = ok(
        quote!(message_type = "t", rate_limit = "openai:60/m,burst=5"),
        quote! { async fn h() {} },
    );
    assert!(
        normalize(&out).contains(&normalize(
            &quote! {
                rate_limit: ::core::option::Option::Some(::fabric_worker::__private::RateLimitDecl {
                    name: ::core::option::Option::Some("openai"),
                    count: 60u32,
                    period_ms: 60000u64,
                    burst: 5u32,
                }),
            }
            .to_string()
        )),
        "{out}"
    );
}
