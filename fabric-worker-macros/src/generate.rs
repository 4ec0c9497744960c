//! The code `#[handler]` adds beside the function: a type-erased shim and its
//! `inventory` registration.
//!
//! Every argument is taken through the public trait `fabric_worker::handler::HandlerArg`, so
//! its *type* decides what it receives (the `Context`, or the decoded payload), and a type
//! that is neither is reported at the argument, naming that trait. The return value goes
//! through `fabric_worker::handler::IntoHandlerResult`, reported at the return type. Every
//! path is absolute so that user items named `Result`, `Box`, `core`, ... cannot change
//! its meaning.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ItemFn, ReturnType, Type};

use crate::args::HandlerArgs;

/// A span with call-site hygiene but the source location of `tokens`, so
/// that type errors in generated code point at the user's code.
fn located_at(tokens: &impl Spanned) -> Span {
    Span::call_site().located_at(tokens.span())
}

pub(crate) fn generate(args: &HandlerArgs, func: &ItemFn, types: &[&Type]) -> TokenStream {
    let fn_ident = &func.sig.ident;
    let name_suffix = format!("::{}", fn_ident.unraw());

    let mut extract = Vec::new();
    let mut kinds = Vec::new();
    let mut call_args = Vec::new();
    for (i, ty) in types.iter().enumerate() {
        // Spanned at the argument's type: a type that is neither `Context` nor a payload
        // type is reported there.
        let span = located_at(*ty);
        let var = Ident::new(&format!("__fabric_arg{i}"), span);
        let from_parts = quote_spanned! {span=>
            <#ty as ::fabric_worker::handler::HandlerArg>::from_parts
        };
        extract.push(quote! {
            let #var: #ty = match #from_parts(&mut __fabric_parts) {
                ::core::result::Result::Ok(__fabric_value) => __fabric_value,
                ::core::result::Result::Err(__fabric_outcome) => return __fabric_outcome,
            };
        });
        kinds.push(quote_spanned! {span=>
            <#ty as ::fabric_worker::handler::HandlerArg>::KIND
        });
        call_args.push(var);
    }

    let output_span = match &func.sig.output {
        ReturnType::Type(_, ty) => located_at(ty),
        ReturnType::Default => located_at(fn_ident),
    };
    // Spanned at the return type: a return type that is not a handler result is reported there.
    let into_outcome = quote_spanned! {output_span=>
        ::fabric_worker::handler::IntoHandlerResult::into_outcome
    };
    let result = Ident::new("__fabric_result", output_span);
    // Two contexts or two payloads: a compile error (a `const` panic) naming the rule, at
    // the second argument.
    let check_span = types
        .last()
        .map_or_else(|| located_at(fn_ident), |ty| located_at(*ty));
    let check = quote_spanned! {check_span=>
        ::fabric_worker::handler::check_args(&[#(#kinds),*])
    };

    let message_type = args.message_type.as_deref().unwrap_or_default();
    let topic = option_tokens(args.topic.as_deref().map(|t| quote! { #t }));
    let agent = option_tokens(args.agent.as_deref().map(|a| quote! { #a }));
    let max_attempts = option_tokens(args.max_attempts.map(|n| {
        let lit = proc_macro2::Literal::u32_suffixed(n);
        quote! { #lit }
    }));
    let timeout_ms = option_tokens(args.timeout_ms.map(|n| {
        let lit = proc_macro2::Literal::u64_suffixed(n);
        quote! { #lit }
    }));
    let schedule = option_tokens(args.schedule.as_ref().map(|s| {
        let every = proc_macro2::Literal::u64_suffixed(s.every_ms);
        let (cron, tz, missed) = (&s.cron, &s.tz, &s.missed);
        quote! {
            ::fabric_worker::__private::HandlerSchedule {
                every_ms: #every,
                cron: #cron,
                tz: #tz,
                missed: #missed,
            }
        }
    }));
    let rate_limit = option_tokens(args.rate_limit.as_ref().map(|r| {
        let name = option_tokens(r.name.as_deref().map(|n| quote! { #n }));
        let count = proc_macro2::Literal::u32_suffixed(r.count);
        let period_ms = proc_macro2::Literal::u64_suffixed(r.period_ms);
        let burst = proc_macro2::Literal::u32_suffixed(r.burst);
        quote! {
            ::fabric_worker::__private::RateLimitDecl {
                name: #name,
                count: #count,
                period_ms: #period_ms,
                burst: #burst,
            }
        }
    }));
    let shim = format_ident!("__fabric_handler_shim");

    quote! {
        #[doc(hidden)]
        const _: () = {
            const _: () = #check;
            fn #shim(
                __ctx: ::fabric_worker::Context,
            ) -> ::fabric_worker::handler::HandlerFuture {
                ::fabric_worker::__private::Box::pin(async move {
                    let mut __fabric_parts = ::fabric_worker::handler::Parts::new(__ctx);
                    #(#extract)*
                    ::core::mem::drop(__fabric_parts);
                    let #result = #fn_ident(#(#call_args),*).await;
                    #into_outcome(#result)
                })
            }
            ::fabric_worker::__private::inventory::submit! {
                ::fabric_worker::__private::Registration {
                    message_type: #message_type,
                    topic: #topic,
                    agent: #agent,
                    name: ::core::concat!(::core::module_path!(), #name_suffix),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    max_attempts: #max_attempts,
                    timeout_ms: #timeout_ms,
                    handler: #shim,
                    schedule: #schedule,
                    rate_limit: #rate_limit,
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
