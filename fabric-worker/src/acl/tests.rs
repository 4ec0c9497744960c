//! The rules each role gets, checked as text (the integration tests check them against a
//! real redis-server).

use super::*;

#[test]
fn a_secure_agent_has_rights_on_its_own_keys_only() {
    let r = rules(
        &Role::Agent("coder".into()),
        Mode::Secure,
        "pw",
        &["custom.*"],
    )
    .unwrap();
    assert_eq!(&r[..3], ["reset", "on", ">pw"]);
    assert!(r.contains(&"~agent:coder:*".to_string()));
    assert!(r.contains(&"&agent.coder.new_message".to_string()));
    assert!(r.contains(&"&custom.*".to_string()));
    assert!(!r.contains(&"&shared:*".to_string()));
    for forbidden in [
        "+eval",
        "+evalsha",
        "+script",
        "+function",
        "+@all",
        "~*",
        "+keys",
    ] {
        assert!(!r.iter().any(|x| x == forbidden), "{forbidden} in {r:?}");
    }
    // Its only selector: the rate limits shared by name.
    let selectors: Vec<&String> = r.iter().filter(|x| x.starts_with('(')).collect();
    assert_eq!(
        selectors,
        [&"(~fabric:ratelimit:{*} +fcall +get +set)".to_string()],
        "a secure agent has no selector on others' keys: {r:?}"
    );
    let key_patterns: Vec<&String> = r.iter().filter(|x| x.starts_with('~')).collect();
    assert_eq!(key_patterns, [&"~agent:coder:*".to_string()]);
}

#[test]
fn a_direct_agent_may_also_append_to_other_streams() {
    let r = rules(&Role::Agent("coder".into()), Mode::Direct, "pw", &[]).unwrap();
    assert!(
        r.iter()
            .any(|x| x.starts_with("(~agent:*:inbox ~agent:*:inbox:once{*}")
                && x.contains("+xadd")),
        "{r:?}"
    );
    assert!(r.contains(&"&agent.*.new_message".to_string()));
    assert!(!r.iter().any(|x| x == "+eval"));
}

#[test]
fn the_router_delivers_only_through_fabric_forward() {
    let r = rules(&Role::Router, Mode::Secure, "pw", &[]).unwrap();
    let delivery = r
        .iter()
        .find(|x| x.contains("~agent:*:inbox "))
        .expect("a delivery selector");
    assert!(delivery.contains("+fcall"));
    assert!(!delivery.contains("+xreadgroup") && !delivery.contains("+xrange"));
    assert!(!r.iter().any(|x| x == "+eval" || x == "+@all"));
}

#[test]
fn files_have_one_user_line_each_and_no_comments() {
    let f = file(&[
        (
            "percy".into(),
            rules(&Role::Agent("percy".into()), Mode::Secure, "a", &[]).unwrap(),
        ),
        (
            ADMIN_USER.into(),
            rules(&Role::Admin, Mode::Secure, "b", &[]).unwrap(),
        ),
    ]);
    let lines: Vec<&str> = f.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.starts_with("user ")));
    assert!(lines[1].starts_with("user fabric-admin reset on >b"));
}

#[test]
fn files_can_hold_hashes_instead_of_passwords() {
    let r = hash_passwords(rules(&Role::Monitor, Mode::Secure, "secret", &[]).unwrap());
    // sha256("secret")
    assert!(r.contains(
        &"#2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b".to_string()
    ));
    assert!(!r.iter().any(|x| x.starts_with('>')));
    let a = generate_password();
    assert_eq!(a.len(), 64);
    assert_ne!(a, generate_password());
}

#[test]
fn the_mcp_server_sends_where_its_mode_says() {
    let secure = rules(&Role::McpServer, Mode::Secure, "pw", &[]).unwrap();
    assert!(secure.contains(&"(~agent:*:outbox +xadd)".to_string()));
    let direct = rules(&Role::McpServer, Mode::Direct, "pw", &[]).unwrap();
    assert!(
        direct.contains(&"(~agent:*:results ~agent:*:replies:* +xadd)".to_string())
            && direct
                .iter()
                .any(|x| x.starts_with("(~agent:*:inbox ~agent:*:inbox:once{*}")),
        "{direct:?}"
    );
}

#[test]
fn bad_input_is_refused() {
    let agent = |a: &str| Role::Agent(a.into());
    assert!(rules(&agent("a b"), Mode::Secure, "pw", &[]).is_err());
    assert!(rules(&agent("coder"), Mode::Secure, "", &[]).is_err());
    assert!(rules(&agent("coder"), Mode::Secure, "p w", &[]).is_err());
    let e = rules(&agent("coder"), Mode::Secure, "p\nw", &[])
        .unwrap_err()
        .to_string();
    assert!(
        !e.contains("p\nw"),
        "the password must not appear in errors: {e}"
    );
}

#[test]
fn lane_patterns_are_the_lane_keys() {
    let inbox = keys::inbox("x");
    for (pattern, key) in LANE_PATTERNS.iter().zip(keys::lanes(&inbox)) {
        // `*` any run of characters, as in Redis' ACL key patterns.
        assert!(keys::topic_matches(pattern, &key), "{pattern} !~ {key}");
    }
}

#[test]
fn the_rate_limit_pattern_covers_shared_limits_and_agent_patterns_their_own() {
    let shared = keys::rate_limit_shared("openai");
    assert!(keys::topic_matches(RATE_LIMIT_PATTERN, &shared), "{shared}");
    for own in [
        keys::rate_limit_agent("x"),
        keys::rate_limit_handler("x", "complete", None),
        keys::rate_limit_handler("x", "", Some("analytics.*")),
    ] {
        assert!(keys::topic_matches("agent:x:*", &own), "{own}");
    }
    for mode in [Mode::Direct, Mode::Secure] {
        let r = rules(&Role::Agent("x".into()), mode, "pw", &[]).unwrap();
        assert!(
            r.contains(&"(~fabric:ratelimit:{*} +fcall +get +set)".to_string()),
            "{mode:?}: {r:?}"
        );
    }
}

#[test]
fn direct_agents_and_the_mcp_server_may_use_workflows_secure_agents_may_not() {
    let has_workflows = |r: &[String]| {
        r.iter()
            .any(|x| x.starts_with("(~fabric:workflow:* ") && x.contains("+fcall"))
    };
    let direct = rules(&Role::Agent("coder".into()), Mode::Direct, "pw", &[]).unwrap();
    assert!(has_workflows(&direct), "{direct:?}");
    let mcp = rules(&Role::McpServer, Mode::Direct, "pw", &[]).unwrap();
    assert!(has_workflows(&mcp), "{mcp:?}");
    let secure = rules(&Role::Agent("coder".into()), Mode::Secure, "pw", &[]).unwrap();
    assert!(!has_workflows(&secure), "{secure:?}");
    assert_eq!(keys::workflow("ab"), "fabric:workflow:{ab}");
    assert!(keys::topic_matches(
        "fabric:workflow:*",
        &keys::workflow("ab")
    ));
}
