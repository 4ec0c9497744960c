//! Validation of the annotated function: every problem the macro can see is reported at
//! once, each at its own span. What the macro cannot see (whether a type is `Context` or
//! deserializable, whether the return type is a handler result) is left to the generated
//! code's trait bounds (see `generate.rs`).

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{FnArg, ItemFn, Safety, Type};

use crate::args::{self, push_error};

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
    let mut out = item;
    out.extend(generated);
    out
}

fn debug_enabled() -> bool {
    std::env::var_os("FABRIC_MACROS_DEBUG").is_some_and(|v| v == "1")
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

    let arg_types = match &func {
        Some(func) => match check_fn(func) {
            Ok(types) => Some(types),
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
    match (&handler_args, &func, &arg_types) {
        (Some(handler_args), Some(func), Some(types)) => {
            Ok(crate::generate::generate(handler_args, func, types))
        }
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

/// Checks the function signature and returns its argument types. What each argument
/// receives (the context or the payload) is decided by its type, in the generated code.
fn check_fn(func: &ItemFn) -> syn::Result<Vec<&Type>> {
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

    let mut types = Vec::new();
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
        types.push(&*pat_type.ty);
    }

    match errors {
        Some(err) => Err(err),
        None => Ok(types),
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
