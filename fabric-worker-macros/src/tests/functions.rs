//! Diagnostics of the function the attribute is put on.

use super::*;

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
