//! Unit tests of the expansion (here) and of every diagnostic: of the attribute's
//! arguments (`arguments.rs`) and of the function it is put on (`functions.rs`).

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
            ) -> ::fabric_worker::handler::HandlerFuture {
                ::fabric_worker::__private::Box::pin(async move {
                    let mut __fabric_parts = ::fabric_worker::handler::Parts::new(__ctx);
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
                    topic: ::core::option::Option::None,
                    agent: ::core::option::Option::None,
                    name: ::core::concat!(::core::module_path!(), "::review"),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    max_attempts: ::core::option::Option::Some(8u32),
                    timeout_ms: ::core::option::Option::Some(30000u64),
                    handler: __fabric_handler_shim,
                    schedule: ::core::option::Option::None,
                    rate_limit: ::core::option::Option::None,
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

mod arguments;
mod functions;
mod topics;
