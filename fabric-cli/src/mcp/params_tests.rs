//! Tests of the typed tool arguments (`params.rs`): their errors, values and schemas.

use super::*;
use serde_json::json;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Example {
    /// Who.
    to: AgentId,
    count: Option<Bounded<1, 1000>>,
    payload: Option<JsonObjectArg>,
    priority: Option<PriorityArg>,
    flag: Option<Flag>,
}

#[allow(clippy::needless_pass_by_value)] // called with json!(…) literals
fn err(args: Value) -> String {
    parse::<Example>("t", args.as_object().unwrap())
        .unwrap_err()
        .0
}

#[test]
fn each_argument_error_names_the_argument_and_what_came() {
    let e = err(json!({"to": "per cy"}));
    assert!(
        e.starts_with("invalid argument `to` of t: invalid agent id \"per cy\""),
        "{e}"
    );
    let e = err(json!({"to": 7}));
    assert_eq!(
        e,
        "invalid argument `to` of t: expected a string, got an integer (7)"
    );
    let e = err(json!({"to": "a", "count": "ten"}));
    assert!(
        e.contains("expected an integer from 1 to 1000, got a string (\"ten\")"),
        "{e}"
    );
    let e = err(json!({"to": "a", "count": 5000}));
    assert!(
        e.contains("`count` of t: 5000 is out of range; it must be from 1 to 1000"),
        "{e}"
    );
    let e = err(json!({"to": "a", "count": -1}));
    assert!(e.contains("-1 is out of range"), "{e}");
    let p: Example = parse(
        "t",
        json!({"to": "a", "payload": {"k": 1}}).as_object().unwrap(),
    )
    .unwrap();
    assert_eq!(p.payload.unwrap().0["k"], 1);
    let e = err(json!({"to": "a", "payload": "{\"a\":1}"}));
    assert!(e.contains("pass the object itself"), "{e}");
    let e = err(json!({"to": "a", "payload": [1]}));
    assert!(e.contains("expected a JSON object, got an array"), "{e}");
    let e = err(json!({"to": "a", "priority": "medium"}));
    assert!(e.contains("invalid priority \"medium\""), "{e}");
    let e = err(json!({"to": "a", "priority": 9}));
    assert!(e.contains("invalid priority \"9\""), "{e}");
    let e = err(json!({"to": "a", "priority": true}));
    assert!(
        e.contains("`priority`") && e.contains("got a boolean"),
        "{e}"
    );
    let e = err(json!({"to": "a", "count": "-1"}));
    assert!(e.contains("-1 is out of range"), "{e}");
    let e = err(json!({"to": "a", "count": "5000"}));
    assert!(e.contains("5000 is out of range"), "{e}");
    let e = err(json!({"to": "a", "flag": "yes"}));
    assert!(e.contains("true or false"), "{e}");
    let e = err(json!({"to": "a", "nope": 1}));
    assert_eq!(
        e,
        "unknown argument `nope`; it takes `to`, `count`, `payload`, `priority`, `flag` (tool t)"
    );
    let e = err(json!({}));
    assert_eq!(e, "missing required argument `to` of t");
    let big = "x".repeat(MAX_PAYLOAD_BYTES);
    let e = err(json!({"to": "a", "payload": {"blob": big}}));
    assert!(e.contains("too large") && e.contains("1 MiB"), "{e}");
}

#[test]
fn parsed_values() {
    let p: Example = parse(
        "t",
        json!({"to": "percy", "count": 3.0, "priority": "HIGH", "flag": true, "payload": {"a": 1}})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(p.to.0, "percy");
    assert_eq!(p.count, Some(Bounded(3)));
    assert_eq!(p.priority, Some(PriorityArg(Priority::High)));
    assert_eq!(p.flag, Some(Flag(true)));
    // Numbers and booleans sent as strings by some hosts: the same rule.
    let p: Example = parse(
        "t",
        json!({"to": "a", "count": "5", "flag": "false"})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(p.count, Some(Bounded(5)));
    assert_eq!(p.flag, Some(Flag(false)));
    for (v, want) in [(json!(1), Priority::Low), (json!("4"), Priority::Urgent)] {
        let p: Example =
            parse("t", json!({"to": "a", "priority": v}).as_object().unwrap()).unwrap();
        assert_eq!(p.priority, Some(PriorityArg(want)));
    }
}

#[test]
fn the_schema_comes_from_the_same_types() {
    let s = input_schema::<Example>();
    assert_eq!(s["type"], "object");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["required"], json!(["to"]));
    let props = s["properties"].as_object().unwrap();
    assert_eq!(props["to"]["pattern"], keys::AGENT_ID_PATTERN);
    assert_eq!(props["to"]["description"], "Who.");
    let count = serde_json::to_string(&props["count"]).unwrap();
    assert!(
        count.contains("\"minimum\":1") && count.contains("\"maximum\":1000"),
        "{count}"
    );
    assert!(
        !s.contains_key("$schema") && !s.contains_key("$defs"),
        "{s:?}"
    );
}
