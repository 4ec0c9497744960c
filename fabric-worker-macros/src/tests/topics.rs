//! Diagnostics and expansion of topic handlers (`#[handler(topic = "...")]`).

use super::*;

const BOTH: &str = "`message_type` and `topic` cannot be used together: a handler takes either \
                    the messages of one type sent to the agent (`message_type = \"...\"`) or the \
                    events of durable topics (`topic = \"...\"`); write two handlers";

#[test]
fn a_topic_handler_registers_its_topic_and_no_message_type() {
    let out = ok(
        quote!(topic = "analytics.*", agent = "percy", max_attempts = 2),
        quote! { async fn on_event(ctx: Context, e: Event) {} },
    );
    let out = normalize(&out);
    assert!(out.contains("message_type : \"\" ,"), "{out}");
    assert!(
        out.contains("topic : :: core :: option :: Option :: Some (\"analytics.*\") ,"),
        "{out}"
    );
    assert!(out.contains("Some (\"percy\")"), "{out}");
    ok(quote!(topic = "shared:news"), quote! { async fn h() {} });
    ok(quote!(topic = "*"), quote! { async fn h() {} });
    let max = "t".repeat(200);
    ok(quote!(topic = #max), quote! { async fn h() {} });
}

#[test]
fn message_handlers_register_no_topic() {
    let out = normalize(&ok(
        quote!(message_type = "task"),
        quote! { async fn h() {} },
    ));
    assert!(
        out.contains("topic : :: core :: option :: Option :: None ,"),
        "{out}"
    );
}

#[test]
fn both_message_type_and_topic_is_refused() {
    assert_single(
        &arg_errors(quote!(message_type = "task", topic = "analytics.*")),
        BOTH,
    );
    // Each argument is still checked on its own.
    assert_eq!(
        arg_errors(quote!(message_type = "task", topic = "a b")),
        [
            "invalid character ` ` in `topic` \"a b\"; allowed characters are ASCII letters, \
             digits, `_`, `.`, `:`, `-`, and `*` (any run of characters)"
                .to_owned(),
            BOTH.to_owned(),
        ]
    );
}

#[test]
fn neither_is_refused_naming_both() {
    assert_single(
        &arg_errors(quote!(agent = "percy")),
        "missing `message_type` or `topic`; expected #[handler(message_type = \"...\")] \
         (messages sent to the agent) or #[handler(topic = \"...\")] (events of durable topics)",
    );
}

#[test]
fn topic_values_are_checked() {
    assert_single(&arg_errors(quote!(topic = "")), "`topic` must not be empty");
    assert_single(
        &arg_errors(quote!(topic = ".analytics")),
        "`topic` must start with an ASCII letter, a digit or `*`, found `.`",
    );
    assert_single(
        &arg_errors(quote!(topic = "analytics.?")),
        "invalid character `?` in `topic` \"analytics.?\"; allowed characters are ASCII \
         letters, digits, `_`, `.`, `:`, `-`, and `*` (any run of characters)",
    );
    let long = "t".repeat(201);
    assert_single(
        &arg_errors(quote!(topic = #long)),
        "`topic` must be at most 200 characters long, found 201",
    );
    assert_single(
        &arg_errors(quote!(topic = analytics)),
        "expected a string literal for `topic`, e.g. `topic = \"analytics.*\"`",
    );
    assert_single(
        &arg_errors(quote!(topic = "a", topic = "b")),
        "duplicate argument `topic`",
    );
}
