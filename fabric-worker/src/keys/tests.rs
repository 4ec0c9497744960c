//! The key rules, checked.

use super::topics::*;
use super::*;

#[test]
fn key_strings_match_the_protocol() {
    assert_eq!(inbox("percy"), "agent:percy:inbox");
    assert_eq!(results("coder"), "agent:coder:results");
    assert_eq!(default_group("percy"), "percy_workers");
    assert_eq!(new_message_channel("percy"), "agent.percy.new_message");
    assert_eq!(
        dead_letters("agent:percy:inbox"),
        "agent:percy:inbox:dead{agent:percy:inbox}"
    );
    assert_eq!(
        retries("agent:percy:inbox"),
        "agent:percy:inbox:retry{agent:percy:inbox}"
    );
    assert_eq!(
        delayed("agent:percy:inbox"),
        "agent:percy:inbox:delayed{agent:percy:inbox}"
    );
    assert_eq!(
        lane("agent:percy:inbox", "urgent"),
        "agent:percy:inbox:urgent{agent:percy:inbox}"
    );
}

#[test]
fn companions_share_the_inbox_slot() {
    let s = inbox("percy");
    assert_eq!(hash_tag(&s), s);
    assert_eq!(hash_tag(&dead_letters(&s)), s);
    assert_eq!(hash_tag(&retries(&s)), s);
    assert_eq!(hash_tag(&delayed(&s)), s);
    for l in LANES {
        assert_eq!(hash_tag(&lane(&s, l)), s);
        assert_eq!(lane_of(&s, &lane(&s, l)), Some(l));
        // A lane's own companions stay in the inbox's slot too.
        assert_eq!(hash_tag(&retries(&lane(&s, l))), s);
    }
    assert_eq!(lane_of(&s, &s), None);
    assert_eq!(
        split_received_id("urgent/1-2").unwrap(),
        (Some("urgent"), "1-2")
    );
    assert_eq!(split_received_id("1-2").unwrap(), (None, "1-2"));
    assert!(split_received_id("inbox/1-2").is_err());
    assert!(split_received_id("urgent/x").is_err());
    assert_eq!(home(&lane(&s, "low")), s);
    assert_eq!(home(&s), s);
    assert_eq!(home(&dead_letters(&s)), dead_letters(&s));
    assert_eq!(lane_of(&s, &dead_letters(&s)), None);
    assert_eq!(
        lane_of(&s, "agent:percy:inbox:urgent{agent:coder:inbox}"),
        None
    );
    assert_eq!(hash_tag("a{}b"), "a{}b");
    assert_eq!(hash_tag("a{x}b{y}"), "x");
}

#[test]
fn reply_streams_belong_to_one_agent() {
    assert!(is_reply_stream_of("coder", "agent:coder:results"));
    assert!(is_reply_stream_of("coder", "agent:coder:replies:0af3"));
    for bad in [
        "agent:coder:inbox",
        "agent:coder:inbox:dead{agent:coder:inbox}",
        "agent:coder:replies:",
        "agent:coder:replies:a{b}",
        "agent:coder:results:x",
        "agent:codex:results",
        "agent:percy:results",
        "some:key",
        "agent:coder",
    ] {
        assert!(!is_reply_stream_of("coder", bad), "{bad}");
    }
    assert_eq!(outbox_owner(&outbox("percy")), Some("percy"));
    assert_eq!(outbox_owner("agent:percy:inbox"), None);
    assert_eq!(
        forwarded(&inbox("percy")),
        "agent:percy:inbox:fwd{agent:percy:inbox}"
    );
}

#[test]
fn results_and_reply_streams_are_not_in_the_inbox_slot() {
    // docs/protocol.md says so: they are used alone, and results keeps the Python name.
    let s = inbox("percy");
    assert_ne!(hash_tag(&results("percy")), hash_tag(&s));
    assert_ne!(hash_tag(&reply_stream("percy", "abc")), hash_tag(&s));
    assert!(results("percy").starts_with("agent:percy:"));
    assert!(reply_stream("percy", "abc").starts_with("agent:percy:"));
}

#[test]
fn companions_stay_under_the_agent_prefix() {
    let s = inbox("percy");
    assert!(dead_letters(&s).starts_with("agent:percy:"));
    assert!(retries(&s).starts_with("agent:percy:"));
}

#[test]
fn durable_topics_have_their_stream_companions_and_rules() {
    let s = topic_stream("analytics.insights");
    assert_eq!(s, "topic:analytics.insights");
    assert_eq!(topic_of_stream(&s), Some("analytics.insights"));
    assert_eq!(topic_of_stream("agent:x:inbox"), None);
    assert_eq!(
        dead_letters(&s),
        "topic:analytics.insights:dead{topic:analytics.insights}"
    );
    assert_eq!(
        retries(&s),
        "topic:analytics.insights:retry{topic:analytics.insights}"
    );
    assert_eq!(hash_tag(&dead_letters(&s)), s);
    assert_eq!(hash_tag(&retries(&s)), s);
    for ok in [
        "analytics.insights",
        "shared:news",
        "a",
        "9-x_y",
        &"t".repeat(200),
    ] {
        validate_durable_topic(ok).unwrap();
    }
    for bad in ["", "a b", ".x", "a{b}", "a*", "té", &"t".repeat(201)] {
        let e = validate_durable_topic(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid durable topic"), "{bad:?}: {e}");
    }
    for ok in ["analytics.*", "*", "*.errors", "a.*.b", "exact"] {
        validate_topic_pattern(ok).unwrap();
    }
    for bad in ["", ".x", "a b", "a?", "a{b}"] {
        let e = validate_topic_pattern(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid topic pattern"), "{bad:?}: {e}");
    }
}

#[test]
fn agent_ids_are_validated() {
    for ok in ["percy", "coder-2", "memory_agent", "A1", &"a".repeat(64)] {
        validate_agent(ok).unwrap();
    }
    for bad in [
        "",
        "per cy",
        "percy:inbox",
        "{percy}",
        "-percy",
        "_x",
        "pér",
        "a.b",
        &"a".repeat(65),
    ] {
        let err = validate_agent(bad).unwrap_err().to_string();
        assert!(err.starts_with("invalid agent id"), "{bad:?}: {err}");
    }
}

#[test]
fn message_types_and_groups_are_validated() {
    validate_message_type("task").unwrap();
    validate_message_type("code.review:v2").unwrap();
    assert!(validate_message_type("has space").is_err());
    assert!(validate_message_type("").is_err());
    validate_group("percy_workers").unwrap();
    assert!(validate_group("percy workers").is_err());
    assert!(validate_group("{x}").is_err());
    let err = validate_consumer("a b").unwrap_err().to_string();
    assert!(err.starts_with("invalid consumer name"), "{err}");
    validate_topic("analytics.insights").unwrap();
    validate_topic("shared:news").unwrap();
    assert!(validate_topic("a b").is_err());
    validate_stream_key("agent:coder:results").unwrap();
    assert!(validate_stream_key("").is_err());
}

fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[test]
fn lanes_are_read_urgent_high_inbox_low() {
    let order = in_read_order(0, [("low", 3), ("urgent", 1), ("high", 2)]);
    assert_eq!(
        order,
        vec![
            (Some("urgent"), 1),
            (Some("high"), 2),
            (None, 0),
            (Some("low"), 3)
        ]
    );
    assert_eq!(
        in_read_order(0, [("low", 3)]),
        vec![(None, 0), (Some("low"), 3)]
    );
}

#[test]
fn secure_topic_copies_are_the_agents_own_keys() {
    assert_eq!(
        agent_topic_stream("percy", "analytics.x"),
        "agent:percy:topic:analytics.x"
    );
    assert_eq!(
        topic_of_stream("agent:percy:topic:analytics.x"),
        Some("analytics.x")
    );
    assert_eq!(topic_of_stream("topic:analytics.x"), Some("analytics.x"));
    assert_eq!(topic_of_stream("agent:percy:inbox"), None);
    assert_eq!(agent_topics("percy"), "agent:percy:topics");
    assert_eq!(
        topic_subscriptions_owner(&agent_topic_subscriptions("percy")),
        Some("percy")
    );
}
