//! Unit tests of the expansion and of every diagnostic.

use proc_macro2::TokenStream;
use quote::quote;

use crate::args::parse_timeout;
use crate::handler::{expand, expand_registration};

/// Runs the full validation and returns every error message.
fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
    match expand_registration(args, item) {
        Ok(tokens) => panic!("expected an error, got: {tokens}"),
        Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn ok(args: TokenStream, item: TokenStream) -> String {
    match expand_registration(args, item) {
        Ok(tokens) => tokens.to_string(),
        Err(err) => panic!("unexpected error: {err}"),
    }
}

fn arg_errors(args: TokenStream) -> Vec<String> {
    errors(args, quote! { async fn h() {} })
}

fn assert_single(errs: &[String], expected: &str) {
    assert_eq!(errs, [expected.to_owned()], "errors: {errs:#?}");
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn expands_the_review_example_exactly() {
    let out = ok(
        quote!(message_type = "task", max_attempts = 8, timeout = "30s"),
        quote! {
            async fn review(ctx: Context, task: CodeReview) -> Result<Review, HandlerError> {
                todo!()
            }
        },
    );
    let expected = quote! {
        #[doc(hidden)]
        const _: () = {
            const _: () = ::fabric_worker::handler::check_args(&[
                <Context as ::fabric_worker::handler::HandlerArg>::KIND,
                <CodeReview as ::fabric_worker::handler::HandlerArg>::KIND
            ]);
            fn __fabric_handler_shim(
                __ctx: ::fabric_worker::Context,
                __payload: ::fabric_worker::__private::Value,
            ) -> ::fabric_worker::handler::HandlerFuture {
                ::fabric_worker::__private::Box::pin(async move {
                    let mut __fabric_parts = ::fabric_worker::handler::Parts::new(__ctx, __payload);
                    let __fabric_arg0: Context = match <Context as ::fabric_worker::handler::HandlerArg>::from_parts(&mut __fabric_parts) {
                        ::core::result::Result::Ok(__fabric_value) => __fabric_value,
                        ::core::result::Result::Err(__fabric_outcome) => return __fabric_outcome,
                    };
                    let __fabric_arg1: CodeReview = match <CodeReview as ::fabric_worker::handler::HandlerArg>::from_parts(&mut __fabric_parts) {
                        ::core::result::Result::Ok(__fabric_value) => __fabric_value,
                        ::core::result::Result::Err(__fabric_outcome) => return __fabric_outcome,
                    };
                    ::core::mem::drop(__fabric_parts);
                    let __fabric_result = review(__fabric_arg0, __fabric_arg1).await;
                    ::fabric_worker::handler::IntoHandlerResult::into_outcome(__fabric_result)
                })
            }
            ::fabric_worker::__private::inventory::submit! {
                ::fabric_worker::__private::Registration {
                    message_type: "task",
                    agent: ::core::option::Option::None,
                    name: ::core::concat!(::core::module_path!(), "::review"),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    max_attempts: ::core::option::Option::Some(8u32),
                    timeout_ms: ::core::option::Option::Some(30000u64),
                    handler: __fabric_handler_shim,
                }
            }
        };
    };
    assert_eq!(normalize(&out), normalize(&expected.to_string()));
}

#[test]
fn expand_keeps_the_function_verbatim() {
    let item = quote! {
        /// Docs stay.
        #[allow(unused)]
        pub(crate) async fn review(ctx: Context) {}
    };
    let out = expand(quote!(message_type = "task"), item.clone()).to_string();
    assert!(out.starts_with(&item.to_string()), "{out}");
    assert!(out.contains("inventory :: submit !"), "{out}");
}

#[test]
fn expand_keeps_the_function_on_error() {
    let item = quote! { fn review(ctx: Context) {} };
    let out = expand(quote!(), item.clone()).to_string();
    assert!(out.starts_with(&item.to_string()), "{out}");
    assert!(out.contains("compile_error"), "{out}");
    assert!(!out.contains("submit"), "{out}");
    assert!(out.contains("missing `message_type`"), "{out}");
    assert!(out.contains("must be `async`"), "{out}");
}

#[test]
fn argument_order_is_preserved() {
    let out = ok(
        quote!(message_type = "task"),
        quote! { async fn h(task: CodeReview, ctx: fabric_worker::Context) {} },
    );
    assert!(
        out.contains("let __fabric_arg0 : CodeReview = match < CodeReview as"),
        "{out}"
    );
    assert!(
        out.contains("let __fabric_arg1 : fabric_worker :: Context = match"),
        "{out}"
    );
    assert!(
        out.contains("h (__fabric_arg0 , __fabric_arg1) . await ;"),
        "{out}"
    );
}

#[test]
fn one_argument() {
    let out = ok(
        quote!(message_type = "task"),
        quote! { async fn h(ctx: Context) {} },
    );
    assert!(out.contains("check_args (& [< Context as"), "{out}");
    assert!(out.contains("h (__fabric_arg0) . await"), "{out}");
    assert!(!out.contains("__fabric_arg1"), "{out}");
}

#[test]
fn no_args() {
    let out = ok(quote!(message_type = "ping"), quote! { async fn h() {} });
    assert!(out.contains("check_args (& [])"), "{out}");
    assert!(
        out.contains(":: core :: mem :: drop (__fabric_parts) ;"),
        "{out}"
    );
    assert!(out.contains("h () . await"), "{out}");
}

#[test]
fn all_options() {
    let out = ok(
        quote!(
            message_type = "review.v2:code-task_1",
            agent = "percy",
            max_attempts = 3,
            timeout = "500ms",
        ),
        quote! { async fn r#type() {} },
    );
    assert!(
        out.contains("message_type : \"review.v2:code-task_1\""),
        "{out}"
    );
    assert!(
        out.contains("agent : :: core :: option :: Option :: Some (\"percy\")"),
        "{out}"
    );
    assert!(out.contains("Some (3u32)"), "{out}");
    assert!(out.contains("Some (500u64)"), "{out}");
    assert!(out.contains("\"::type\""), "{out}");
}

#[test]
fn payload_type_tokens_are_verbatim() {
    let out = ok(
        quote!(message_type = "t"),
        quote! { async fn h(x: std::collections::HashMap<String, Vec<u8>>) {} },
    );
    assert!(
        out.contains("let __fabric_arg0 : std :: collections :: HashMap < String , Vec < u8 > >"),
        "{out}"
    );
}

#[test]
fn timeout_parser() {
    assert_eq!(parse_timeout("500ms"), Ok(500));
    assert_eq!(parse_timeout("30s"), Ok(30_000));
    assert_eq!(parse_timeout("2m"), Ok(120_000));
    assert_eq!(parse_timeout("1h"), Ok(3_600_000));
    assert_eq!(parse_timeout("1ms"), Ok(1));
    for bad in [
        "",
        "s",
        "30",
        "0s",
        "0ms",
        "-1s",
        "1.5s",
        "30 s",
        " 30s",
        "30sec",
        "1d",
        "30S",
        "ms30",
        "3O s",
        "99999999999999999999s",
        "18446744073709551615h",
    ] {
        assert!(parse_timeout(bad).is_err(), "{bad:?} should be rejected");
    }
    assert_eq!(
        parse_timeout("0s").unwrap_err(),
        "timeout must be greater than zero"
    );
    assert_eq!(
        parse_timeout("30").unwrap_err(),
        "invalid timeout \"30\"; expected an integer followed by `ms`, `s`, `m` or `h`, \
             e.g. \"30s\""
    );
    assert_eq!(
        parse_timeout("1d").unwrap_err(),
        "invalid timeout unit `d` in \"1d\"; expected `ms`, `s`, `m` or `h`"
    );
}

#[test]
fn missing_message_type() {
    let expected = "missing `message_type`; expected #[handler(message_type = \"...\")]";
    assert_single(&arg_errors(quote!()), expected);
    assert_single(&arg_errors(quote!(agent = "percy")), expected);
}

#[test]
fn unknown_argument() {
    assert_single(
        &arg_errors(quote!(message_type = "t", retries = 3)),
        "unknown argument `retries`; expected one of `message_type`, `agent`, \
             `max_attempts`, `timeout`",
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
            "unknown argument `retries`; expected one of `message_type`, `agent`, \
                 `max_attempts`, `timeout`",
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

fn fn_errors(item: TokenStream) -> Vec<String> {
    errors(quote!(message_type = "t"), item)
}

#[test]
fn not_async() {
    assert_single(
        &fn_errors(quote! { fn h(ctx: Context) {} }),
        "#[handler] functions must be `async`",
    );
}

#[test]
fn generic_functions() {
    let msg = "#[handler] cannot be used on generic functions";
    assert_single(&fn_errors(quote! { async fn h<T>(x: T) {} }), msg);
    assert_single(&fn_errors(quote! { async fn h<'a>(x: u8) {} }), msg);
    assert_single(
        &fn_errors(quote! { async fn h(x: u8) where u8: Copy {} }),
        msg,
    );
    assert_single(
        &fn_errors(quote! { async fn h(x: impl Send) {} }),
        "#[handler] cannot be used on generic functions; use a concrete type instead of \
             `impl Trait`",
    );
}

#[test]
fn methods() {
    let msg = "#[handler] cannot be used on methods";
    assert_single(&fn_errors(quote! { async fn h(&self) {} }), msg);
    assert_single(
        &fn_errors(quote! { async fn h(self, ctx: Context) {} }),
        msg,
    );
    assert_single(&fn_errors(quote! { async fn h(self: Box<Self>) {} }), msg);
}

#[test]
fn reference_arguments() {
    let msg = "handler arguments must be owned values";
    assert_single(&fn_errors(quote! { async fn h(ctx: &Context) {} }), msg);
    assert_single(
        &fn_errors(quote! { async fn h(task: &'static str) {} }),
        msg,
    );
    assert_single(&fn_errors(quote! { async fn h(task: &mut Foo) {} }), msg);
    assert_eq!(
        fn_errors(quote! { async fn h(ctx: &Context, task: &Foo) {} }),
        [msg, msg]
    );
}

#[test]
fn too_many_arguments() {
    assert_single(
        &fn_errors(quote! { async fn h(ctx: Context, a: A, b: B) {} }),
        "#[handler] functions take at most 2 arguments: a `Context` and a payload",
    );
    assert_eq!(
        fn_errors(quote! { async fn h(a: A, b: B, c: C, d: D) {} }).len(),
        2,
        "one error per extra argument"
    );
}

#[test]
fn what_an_argument_receives_is_left_to_its_type() {
    // Two payloads or two contexts are caught by the generated `check_args` const (the
    // macro cannot know which type is which); the macro itself accepts them.
    ok(
        quote!(message_type = "t"),
        quote! { async fn h(a: A, b: B) {} },
    );
    ok(
        quote!(message_type = "t"),
        quote! { async fn h(a: Ctx, b: my::Context) {} },
    );
}

#[test]
fn unsafe_extern_const_variadic() {
    assert_single(
        &fn_errors(quote! { async unsafe fn h() {} }),
        "#[handler] functions cannot be `unsafe`",
    );
    assert_single(
        &fn_errors(quote! { async extern "C" fn h() {} }),
        "#[handler] functions cannot be `extern`",
    );
    let errs = fn_errors(quote! { async fn h(a: u8, ...) {} });
    assert!(
        errs.iter()
            .any(|e| e == "#[handler] functions cannot be variadic"),
        "{errs:#?}"
    );
    assert!(
        fn_errors(quote! { const async fn h() {} })
            .iter()
            .any(|e| e == "#[handler] functions cannot be `const`")
    );
}

#[test]
fn not_a_function() {
    assert_single(
        &fn_errors(quote! { struct S; }),
        "#[handler] can only be used on `async fn` items",
    );
}

#[test]
fn context_is_not_detected_by_name() {
    // A payload type named `Context`, and an alias of the real one, go through the same
    // trait: the names play no part in the expansion.
    let out = ok(
        quote!(message_type = "t"),
        quote! { async fn h(c: Ctx, p: my::Context) {} },
    );
    assert!(
        out.contains("< Ctx as :: fabric_worker :: handler :: HandlerArg > :: from_parts"),
        "{out}"
    );
    assert!(
        out.contains(
            "< my :: Context as :: fabric_worker :: handler :: HandlerArg > :: from_parts"
        ),
        "{out}"
    );
}

/// The identifier rules of the macro and of `fabric_worker::keys` are one rule: this table
/// of cases runs against both (and against the regular expressions the MCP schemas carry),
/// so neither can drift from the other.
#[test]
fn identifier_rules_agree_with_the_library() {
    use crate::args::{validate_agent, validate_message_type};
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    let agents: &[(&str, bool)] = &[
        ("percy", true),
        ("coder-2", true),
        ("memory_agent", true),
        ("A1", true),
        ("9lives", true),
        (&long, true),
        (&too_long, false),
        ("", false),
        ("per cy", false),
        ("percy:inbox", false),
        ("{percy}", false),
        ("-percy", false),
        ("_x", false),
        ("pér", false),
        ("a.b", false),
        ("a*", false),
    ];
    let types: &[(&str, bool)] = &[
        ("task", true),
        ("code.review:v2", true),
        ("a-b_c", true),
        ("9.a_b:c-d", true),
        (&long, true),
        (&too_long, false),
        ("", false),
        ("has space", false),
        ("-task", false),
        (".task", false),
        ("tâche", false),
        ("a/b", false),
    ];
    let agent_re = regex_lite(fabric_worker::keys::AGENT_ID_PATTERN);
    let type_re = regex_lite(fabric_worker::keys::MESSAGE_TYPE_PATTERN);
    for (value, valid) in agents {
        assert_eq!(
            validate_agent(value).is_ok(),
            *valid,
            "macro, agent {value:?}"
        );
        assert_eq!(
            fabric_worker::keys::validate_agent(value).is_ok(),
            *valid,
            "library, agent {value:?}"
        );
        assert_eq!(agent_re(value), *valid, "pattern, agent {value:?}");
    }
    for (value, valid) in types {
        assert_eq!(
            validate_message_type(value).is_ok(),
            *valid,
            "macro, type {value:?}"
        );
        assert_eq!(
            fabric_worker::keys::validate_message_type(value).is_ok(),
            *valid,
            "library, type {value:?}"
        );
        assert_eq!(type_re(value), *valid, "pattern, type {value:?}");
    }
}

/// A matcher for the two patterns' shape, `^[first][rest]{0,N}$`, read from the pattern
/// text itself (so a change of the pattern changes what is checked).
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let inner = pattern
        .strip_prefix("^[")
        .and_then(|p| p.strip_suffix('$'))
        .expect("pattern ^[..][..]{0,N}$");
    let (first, rest) = inner.split_once("][").expect("two classes");
    let (rest, count) = rest.split_once("]{0,").expect("a {0,N} repeat");
    let max: usize = count.trim_end_matches('}').parse().expect("N");
    let class = |set: &str| {
        let set = set.to_owned();
        move |c: char| {
            (set.contains("A-Z") && c.is_ascii_uppercase())
                || (set.contains("a-z") && c.is_ascii_lowercase())
                || (set.contains("0-9") && c.is_ascii_digit())
                || set
                    .replace("A-Z", "")
                    .replace("a-z", "")
                    .replace("0-9", "")
                    .contains(c)
        }
    };
    let (first, rest) = (class(first), class(rest));
    move |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(&first) && chars.clone().all(&rest) && chars.count() <= max
    }
}
