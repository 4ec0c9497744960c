//! Validation of the annotated function and generation of the registration.
//!
//! The generated code must match what `fabric_worker::__private` provides:
//! a `const _: () = { ... }` block holding a type-erased shim
//! (`fn(Context, Value) -> BoxFuture`) and an `inventory::submit!` of a
//! `Registration`. Every path is absolute so that user items named `Result`,
//! `Box`, `core`, ... cannot change its meaning.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Safety, Type};

use crate::args::{self, HandlerArgs, push_error};

/// Entry point used by the `#[handler]` attribute.
///
/// Always returns the original item tokens untouched, followed either by the
/// generated registration or by `compile_error!` invocations describing every
/// problem found.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let generated = match expand_registration(args, item.clone()) {
        Ok(tokens) => tokens,
        Err(err) => err.into_compile_error(),
    };
    if debug_enabled() {
        eprintln!("[fabric-worker-macros] #[handler] expansion:\n{generated}");
    }
    quote! {
        #item
        #generated
    }
}

fn debug_enabled() -> bool {
    std::env::var_os("FABRIC_MACROS_DEBUG").is_some_and(|v| v == "1")
}

/// How a handler argument is fed.
enum ArgKind<'a> {
    /// The `Context` argument; receives the worker context.
    Context(&'a Type),
    /// The payload argument; decoded from the message payload.
    Payload(&'a Type),
}

/// Validates the attribute arguments and the function, and produces the
/// registration tokens (without the function itself).
pub(crate) fn expand_registration(
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    let mut errors = None;

    let handler_args = match args::parse_args(args) {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            push_error(&mut errors, err);
            None
        }
    };

    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => Some(func),
        Err(err) => {
            let err = match syn::parse2::<syn::Item>(item) {
                Ok(other) => syn::Error::new(
                    item_span(&other),
                    "#[handler] can only be used on `async fn` items",
                ),
                Err(_) => err,
            };
            push_error(&mut errors, err);
            None
        }
    };

    let arg_kinds = match &func {
        Some(func) => match check_fn(func) {
            Ok(kinds) => Some(kinds),
            Err(err) => {
                push_error(&mut errors, err);
                None
            }
        },
        None => None,
    };

    if let Some(err) = errors {
        return Err(err);
    }
    match (&handler_args, &func, &arg_kinds) {
        (Some(handler_args), Some(func), Some(kinds)) => Ok(generate(handler_args, func, kinds)),
        // Every `None` above pushed an error, so this is unreachable; report
        // something sensible rather than panicking.
        _ => Err(syn::Error::new(
            Span::call_site(),
            "#[handler] could not process this function",
        )),
    }
}

/// A span pointing at the start of a non-function item (used when the
/// attribute is placed on a struct, impl, ...).
fn item_span(item: &syn::Item) -> Span {
    item.to_token_stream()
        .into_iter()
        .find(|tt| !matches!(tt, proc_macro2::TokenTree::Punct(p) if p.as_char() == '#'))
        .map_or_else(Span::call_site, |tt| tt.span())
}

/// Checks the function signature and classifies its arguments.
fn check_fn(func: &ItemFn) -> syn::Result<Vec<ArgKind<'_>>> {
    let sig = &func.sig;
    let mut errors = None;

    if let Some(constness) = &sig.constness {
        push_error(
            &mut errors,
            syn::Error::new(constness.span, "#[handler] functions cannot be `const`"),
        );
    }
    if sig.asyncness.is_none() {
        push_error(
            &mut errors,
            syn::Error::new(sig.fn_token.span, "#[handler] functions must be `async`"),
        );
    }
    if let Safety::Unsafe(unsafety) = &sig.safety {
        push_error(
            &mut errors,
            syn::Error::new(unsafety.span, "#[handler] functions cannot be `unsafe`"),
        );
    }
    if let Some(abi) = &sig.abi {
        push_error(
            &mut errors,
            syn::Error::new_spanned(abi, "#[handler] functions cannot be `extern`"),
        );
    }
    if let Some(variadic) = &sig.variadic {
        push_error(
            &mut errors,
            syn::Error::new_spanned(variadic, "#[handler] functions cannot be variadic"),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        push_error(
            &mut errors,
            syn::Error::new_spanned(
                &sig.generics,
                "#[handler] cannot be used on generic functions",
            ),
        );
    }

    let mut kinds = Vec::new();
    let mut context_seen = false;
    let mut payload_seen = false;
    let too_many = sig.inputs.len() > 2;

    for (index, input) in sig.inputs.iter().enumerate() {
        let pat_type = match input {
            FnArg::Receiver(receiver) => {
                push_error(
                    &mut errors,
                    syn::Error::new_spanned(receiver, "#[handler] cannot be used on methods"),
                );
                continue;
            }
            FnArg::Typed(pat_type) => pat_type,
        };
        if index >= 2 {
            push_error(
                &mut errors,
                syn::Error::new_spanned(
                    input,
                    "#[handler] functions take at most 2 arguments: a `Context` and a payload",
                ),
            );
            continue;
        }
        let ty = peel_type(&pat_type.ty);
        match ty {
            Type::Reference(_) => {
                push_error(
                    &mut errors,
                    syn::Error::new_spanned(ty, "handler arguments must be owned values"),
                );
                continue;
            }
            Type::ImplTrait(_) => {
                push_error(
                    &mut errors,
                    syn::Error::new_spanned(
                        ty,
                        "#[handler] cannot be used on generic functions; \
                         use a concrete type instead of `impl Trait`",
                    ),
                );
                continue;
            }
            _ => {}
        }
        if is_context(ty) {
            if context_seen && !too_many {
                push_error(
                    &mut errors,
                    syn::Error::new_spanned(
                        &pat_type.ty,
                        "#[handler] functions take at most one `Context` argument",
                    ),
                );
            }
            context_seen = true;
            kinds.push(ArgKind::Context(&pat_type.ty));
        } else {
            if payload_seen && !too_many {
                push_error(
                    &mut errors,
                    syn::Error::new_spanned(
                        &pat_type.ty,
                        "#[handler] functions take at most one payload argument; \
                         combine the fields into a single type",
                    ),
                );
            }
            payload_seen = true;
            kinds.push(ArgKind::Payload(&pat_type.ty));
        }
    }

    match errors {
        Some(err) => Err(err),
        None => Ok(kinds),
    }
}

/// Strips invisible groups and parentheses around a type.
fn peel_type(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => peel_type(&group.elem),
        Type::Paren(paren) => peel_type(&paren.elem),
        other => other,
    }
}

/// A type whose last path segment is `Context` is the context argument.
fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Context"),
        _ => false,
    }
}

/// A span with call-site hygiene but the source location of `tokens`, so
/// that type errors in generated code point at the user's code.
fn located_at(tokens: &impl Spanned) -> Span {
    Span::call_site().located_at(tokens.span())
}

fn generate(args: &HandlerArgs, func: &ItemFn, kinds: &[ArgKind<'_>]) -> TokenStream {
    let fn_ident = &func.sig.ident;
    let name_suffix = format!("::{}", fn_ident.unraw());

    let mut prelude = Vec::new();
    let mut decode = Vec::new();
    let mut call_args = Vec::new();
    let mut has_context = false;
    let mut has_payload = false;

    for kind in kinds {
        match kind {
            ArgKind::Context(ty) => {
                has_context = true;
                let ctx = Ident::new("__ctx", located_at(*ty));
                call_args.push(quote! { #ctx });
            }
            ArgKind::Payload(ty) => {
                has_payload = true;
                let span = located_at(*ty);
                let decode_fn = quote_spanned! {span=>
                    ::fabric_worker::__private::decode_payload::<#ty>
                };
                // `__fabric_value` / `__fabric_outcome` rather than short names:
                // a user unit struct or const named like a binding would
                // otherwise turn the binding into a pattern match.
                decode.push(quote! {
                    let __arg_payload: #ty = match #decode_fn(__payload) {
                        ::core::result::Result::Ok(__fabric_value) => __fabric_value,
                        ::core::result::Result::Err(__fabric_outcome) => return __fabric_outcome,
                    };
                });
                let arg = Ident::new("__arg_payload", span);
                call_args.push(quote! { #arg });
            }
        }
    }
    if !has_context {
        prelude.push(quote! { ::core::mem::drop(__ctx); });
    }
    if !has_payload {
        prelude.push(quote! { ::core::mem::drop(__payload); });
    }

    let output_span = match &func.sig.output {
        ReturnType::Type(_, ty) => located_at(ty),
        ReturnType::Default => located_at(fn_ident),
    };
    let into_outcome = quote_spanned! {output_span=>
        ::fabric_worker::__private::into_outcome
    };
    // Bound to a variable located at the return type so that a return type
    // not implementing `IntoHandlerResult` is reported there.
    let result = Ident::new("__fabric_result", output_span);

    let message_type = &args.message_type;
    let agent = option_tokens(args.agent.as_deref().map(|a| quote! { #a }));
    let max_attempts = option_tokens(args.max_attempts.map(|n| {
        let lit = proc_macro2::Literal::u32_suffixed(n);
        quote! { #lit }
    }));
    let timeout_ms = option_tokens(args.timeout_ms.map(|n| {
        let lit = proc_macro2::Literal::u64_suffixed(n);
        quote! { #lit }
    }));
    let shim = format_ident!("__fabric_handler_shim");

    quote! {
        #[doc(hidden)]
        const _: () = {
            fn #shim(
                __ctx: ::fabric_worker::Context,
                __payload: ::fabric_worker::__private::Value,
            ) -> ::fabric_worker::__private::BoxFuture {
                #(#prelude)*
                ::fabric_worker::__private::Box::pin(async move {
                    #(#decode)*
                    let __fabric_result = #fn_ident(#(#call_args),*).await;
                    #into_outcome(#result)
                })
            }
            ::fabric_worker::__private::inventory::submit! {
                ::fabric_worker::__private::Registration {
                    message_type: #message_type,
                    agent: #agent,
                    name: ::core::concat!(::core::module_path!(), #name_suffix),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    max_attempts: #max_attempts,
                    timeout_ms: #timeout_ms,
                    handler: #shim,
                }
            }
        };
    }
}

fn option_tokens(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote! { ::core::option::Option::Some(#value) },
        None => quote! { ::core::option::Option::None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse_timeout;

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
                fn __fabric_handler_shim(
                    __ctx: ::fabric_worker::Context,
                    __payload: ::fabric_worker::__private::Value,
                ) -> ::fabric_worker::__private::BoxFuture {
                    ::fabric_worker::__private::Box::pin(async move {
                        let __arg_payload: CodeReview = match ::fabric_worker::__private::decode_payload::<CodeReview>(__payload) {
                            ::core::result::Result::Ok(__fabric_value) => __fabric_value,
                            ::core::result::Result::Err(__fabric_outcome) => return __fabric_outcome,
                        };
                        let __fabric_result = review(__ctx, __arg_payload).await;
                        ::fabric_worker::__private::into_outcome(__fabric_result)
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
        assert!(out.contains("h (__arg_payload , __ctx) . await ;"), "{out}");
    }

    #[test]
    fn context_only_drops_payload() {
        let out = ok(
            quote!(message_type = "task"),
            quote! { async fn h(ctx: Context) {} },
        );
        assert!(
            out.contains(":: core :: mem :: drop (__payload) ;"),
            "{out}"
        );
        assert!(!out.contains("decode_payload"), "{out}");
        assert!(out.contains("h (__ctx) . await"), "{out}");
    }

    #[test]
    fn payload_only_drops_context() {
        let out = ok(
            quote!(message_type = "task"),
            quote! { async fn h(v: Value) {} },
        );
        assert!(out.contains(":: core :: mem :: drop (__ctx) ;"), "{out}");
        assert!(out.contains("decode_payload :: < Value >"), "{out}");
        assert!(out.contains("h (__arg_payload) . await"), "{out}");
    }

    #[test]
    fn no_args() {
        let out = ok(quote!(message_type = "ping"), quote! { async fn h() {} });
        assert!(out.contains("drop (__ctx)"), "{out}");
        assert!(out.contains("drop (__payload)"), "{out}");
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
            out.contains(
                "let __arg_payload : std :: collections :: HashMap < String , Vec < u8 > >"
            ),
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
    fn duplicate_kinds() {
        assert_single(
            &fn_errors(quote! { async fn h(a: A, b: B) {} }),
            "#[handler] functions take at most one payload argument; combine the fields into \
             a single type",
        );
        assert_single(
            &fn_errors(quote! { async fn h(a: Context, b: fabric_worker::Context) {} }),
            "#[handler] functions take at most one `Context` argument",
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
    fn context_detection_uses_last_segment() {
        let out = ok(
            quote!(message_type = "t"),
            quote! { async fn h(c: ::fabric_worker::Context, p: my::ContextData) {} },
        );
        assert!(out.contains("h (__ctx , __arg_payload)"), "{out}");
        assert!(
            out.contains("decode_payload :: < my :: ContextData >"),
            "{out}"
        );
    }
}
