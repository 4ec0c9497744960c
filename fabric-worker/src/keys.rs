//! Every Redis key and channel name the bus uses, and the rules for the names users give
//! (agent ids, message types, groups, topics). See `docs/protocol.md`.
//!
//! An agent `X` owns the stream `agent:X:inbox` (no braces, as the Python bus writes it).
//! Every companion key of a stream `S` (its dead letters and retries) is `S:<suffix>{S}`:
//! it starts with the agent's `agent:X:` prefix (so a per-agent ACL pattern `~agent:X:*`
//! covers it) and its hash tag is the stream key itself, so on Redis Cluster it lands in
//! the same slot as `S` and the multi-key operations on `S` and its companions work.
//!
//! `agent:X:results` (the Python bus's default `reply_to`, so its name cannot change) and
//! the request/reply streams `agent:X:replies:<instance>` are under the same prefix but not
//! hash-tagged: they may live in another slot than the inbox, which is fine because no
//! operation touches them together with another key.

use crate::error::{Error, Result};

/// Longest agent id accepted.
pub const MAX_AGENT_LEN: usize = 64;
/// Longest message type accepted.
pub const MAX_MESSAGE_TYPE_LEN: usize = 64;
/// Longest consumer group / consumer name accepted.
pub const MAX_GROUP_LEN: usize = 128;
/// Longest topic / stream key accepted.
pub const MAX_KEY_LEN: usize = 256;

/// The agent-id rule as a regular expression (for JSON schemas); [`validate_agent`] is
/// the same rule.
pub const AGENT_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";
/// The message-type rule as a regular expression; [`validate_message_type`] is the same rule.
pub const MESSAGE_TYPE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$";

/// Longest durable topic name accepted.
pub const MAX_DURABLE_TOPIC_LEN: usize = 200;
/// The durable-topic rule as a regular expression; [`validate_durable_topic`] is the same
/// rule. (Pub/Sub topics are looser: see [`validate_topic`].)
pub const DURABLE_TOPIC_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$";
/// The set of every durable topic name (`SADD` on each publish), so that pattern
/// subscriptions find topics, also ones created later.
pub const TOPICS_REGISTRY: &str = "fabric:topics";
/// When each (consumer group, topic pattern) subscription was first seen (a hash: field
/// `<group>/<pattern>`, value ms since the epoch, server clock): a group created later on a
/// matching topic starts there (`docs/protocol.md` §11).
pub const TOPIC_SUBSCRIPTIONS: &str = "fabric:topic_subscriptions";

/// The stream-id rule as a regular expression; [`validate_stream_id`] is the same rule.
pub const STREAM_ID_PATTERN: &str = "^[0-9]{1,20}(-[0-9]{1,20})?$";

/// Checks a stream entry id: `<ms>-<seq>` or `<ms>`, each 1–20 digits
/// (`1700000000000-0`).
pub fn validate_stream_id(id: &str) -> Result<()> {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().unwrap_or("");
    let num = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if num(ms) && parts.next().is_none_or(num) {
        Ok(())
    } else {
        Err(Error::invalid(
            "stream id",
            id,
            "expected an entry id like 1700000000000-0",
        ))
    }
}

/// The rule for ids [`Bus::receive`](crate::Bus::receive) hands out (and acknowledge takes)
/// as a regular expression: an entry id, prefixed with `<lane>/` for an entry of a
/// priority lane of the inbox (`urgent/1700000000000-0`).
pub const RECEIVED_ID_PATTERN: &str = "^((urgent|high|low)/)?[0-9]{1,20}(-[0-9]{1,20})?$";

/// Splits a received id into its lane (`None`: the stream itself) and entry id, checking
/// both (see [`RECEIVED_ID_PATTERN`]).
pub fn split_received_id(id: &str) -> Result<(Option<&'static str>, &str)> {
    let (lane, entry) = match id.split_once('/') {
        Some((lane, entry)) => match LANES.iter().find(|l| **l == lane) {
            Some(l) => (Some(*l), entry),
            None => {
                return Err(Error::invalid(
                    "stream id",
                    id,
                    "expected an entry id like 1700000000000-0, or urgent/, high/ or low/ before one",
                ));
            }
        },
        None => (None, id),
    };
    validate_stream_id(entry)?;
    Ok((lane, entry))
}

/// Checks an agent id: 1–64 characters from `[A-Za-z0-9_-]`, starting with a letter or digit.
pub fn validate_agent(agent: &str) -> Result<()> {
    check_charset(
        "agent id",
        agent,
        MAX_AGENT_LEN,
        |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
        "[A-Za-z0-9_-]",
    )
}

/// Checks a message type: 1–64 characters from `[A-Za-z0-9_.:-]`, starting with a letter or digit.
pub fn validate_message_type(message_type: &str) -> Result<()> {
    check_charset(
        "message type",
        message_type,
        MAX_MESSAGE_TYPE_LEN,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
        "[A-Za-z0-9_.:-]",
    )
}

/// Checks a consumer group or consumer name: 1–128 characters from `[A-Za-z0-9_.:-]`,
/// starting with a letter or digit.
pub fn validate_group(group: &str) -> Result<()> {
    check_charset(
        "consumer group",
        group,
        MAX_GROUP_LEN,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
        "[A-Za-z0-9_.:-]",
    )
}

/// Checks a consumer name (same rule as groups).
pub fn validate_consumer(consumer: &str) -> Result<()> {
    validate_group(consumer).map_err(|e| e.renamed("consumer name"))
}

/// Checks a Pub/Sub topic: 1–256 printable ASCII characters without spaces.
pub fn validate_topic(topic: &str) -> Result<()> {
    check_charset(
        "topic",
        topic,
        MAX_KEY_LEN,
        |c| c.is_ascii_graphic(),
        "printable ASCII without spaces",
    )
}

/// Checks a durable topic name: 1–200 characters from `[A-Za-z0-9_.:-]`, starting with a
/// letter or digit (`analytics.insights`, `shared:news`).
pub fn validate_durable_topic(topic: &str) -> Result<()> {
    check_charset(
        "durable topic",
        topic,
        MAX_DURABLE_TOPIC_LEN,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
        "[A-Za-z0-9_.:-]",
    )
}

/// Checks a durable topic subscription: a topic name, or a glob where `*` stands for any
/// run of characters (`analytics.*`, `*`); a pattern may start with `*`.
pub fn validate_topic_pattern(pattern: &str) -> Result<()> {
    check_charset(
        "topic pattern",
        pattern,
        MAX_DURABLE_TOPIC_LEN,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '*'),
        "letters, digits, `_`, `.`, `:`, `-`, and `*` for any run of characters",
    )?;
    if !pattern.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '*') {
        return Err(Error::invalid(
            "topic pattern",
            pattern,
            "must start with a letter, a digit or `*`",
        ));
    }
    Ok(())
}

/// The stream of a durable topic: `topic:<topic>`. Its companions (dead letters, retries)
/// follow the rule of every stream: `topic:<topic>:dead{topic:<topic>}`, ….
pub fn topic_stream(topic: &str) -> String {
    format!("topic:{topic}")
}

/// The topic whose stream `key` is (`topic:<topic>` → `<topic>`).
pub fn topic_of_stream(key: &str) -> Option<&str> {
    key.strip_prefix("topic:")
}

/// Checks a stream key given as `reply_to`: 1–256 printable ASCII characters without spaces.
pub fn validate_stream_key(key: &str) -> Result<()> {
    check_charset(
        "stream key",
        key,
        MAX_KEY_LEN,
        |c| c.is_ascii_graphic(),
        "printable ASCII without spaces",
    )
}

fn check_charset(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    rule: &str,
) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(what, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            what,
            value,
            format!("is {} bytes long; at most {max} are allowed", value.len()),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(Error::invalid(
            what,
            value,
            format!("character {bad:?} is not allowed; use {rule}"),
        ));
    }
    if rule.starts_with('[') && !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(
            what,
            value,
            "must start with a letter or a digit",
        ));
    }
    Ok(())
}

/// The inbox stream of an agent: `agent:<agent>:inbox`.
pub fn inbox(agent: &str) -> String {
    format!("agent:{agent}:inbox")
}

/// The outbox of an agent in secure mode: `agent:<agent>:outbox`. The agent appends what it
/// sends; the router delivers it, stamping the outbox's owner as the sender.
pub fn outbox(agent: &str) -> String {
    format!("agent:{agent}:outbox")
}

/// The consumer group routers read outboxes through.
pub const ROUTER_GROUP: &str = "fabric_routers";

/// Where the router remembers what it delivered to `stream` (a sorted set of
/// `<sender>/<message id>` in the stream's slot): `<stream>:fwd{<stream>}`.
pub fn forwarded(stream: &str) -> String {
    companion(stream, "fwd")
}

/// Whether `key` is a stream replies to `agent` may be written to: its results stream
/// `agent:<agent>:results` or one of its request streams `agent:<agent>:replies:<instance>`.
pub fn is_reply_stream_of(agent: &str, key: &str) -> bool {
    let Some(rest) = key
        .strip_prefix("agent:")
        .and_then(|k| k.strip_prefix(agent))
        .and_then(|k| k.strip_prefix(':'))
    else {
        return false;
    };
    if rest == "results" {
        return true;
    }
    rest.strip_prefix("replies:").is_some_and(|instance| {
        !instance.is_empty()
            && instance.len() <= MAX_GROUP_LEN
            && instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    })
}

/// The agent whose outbox `key` is.
pub fn outbox_owner(key: &str) -> Option<&str> {
    key.strip_prefix("agent:")?.strip_suffix(":outbox")
}

/// The default results stream of an agent (the default `reply_to` of its tasks): `agent:<agent>:results`.
pub fn results(agent: &str) -> String {
    format!("agent:{agent}:results")
}

/// The default consumer group of an agent: `<agent>_workers`.
pub fn default_group(agent: &str) -> String {
    format!("{agent}_workers")
}

/// The consumer group MCP sessions read an agent's inbox and results through:
/// `<agent>_mcp`. Its workers read through `<agent>_workers`; each message is for one of the
/// two (see [`workers`]).
pub fn mcp_group(agent: &str) -> String {
    format!("{agent}_mcp")
}

/// The consumer name every MCP session of an agent reads as: `<agent>-mcp`. One name for
/// all sessions, so that what one session received and did not acknowledge is redelivered
/// to the next, and no consumer is left behind when a session ends.
pub fn mcp_consumer(agent: &str) -> String {
    format!("{agent}-mcp")
}

/// When an MCP session last read an agent's messages: `agent:<agent>:mcp_seen`, ms since
/// the epoch, expiring after `bus::MCP_LIVE_FOR` (so: present = an MCP session is live).
pub fn mcp_seen(agent: &str) -> String {
    format!("agent:{agent}:mcp_seen")
}

/// Where an agent's worker processes say they are alive and which message types they
/// handle: `agent:<agent>:workers`, a hash of consumer name → JSON (see
/// `docs/protocol.md` §5.8). An inbox message whose type a registered worker handles is the
/// workers'; any other is left to the agent's MCP sessions when it has any.
pub fn workers(agent: &str) -> String {
    format!("agent:{agent}:workers")
}

/// Pub/Sub channel announcing a new message for an agent: `agent.<agent>.new_message`.
pub fn new_message_channel(agent: &str) -> String {
    format!("agent.{agent}.new_message")
}

/// A companion key of a stream, in the stream's cluster slot: `<stream>:<suffix>{<stream>}`.
fn companion(stream: &str, suffix: &str) -> String {
    format!("{stream}:{suffix}{{{stream}}}")
}

/// Dead letters of a stream: `<stream>:dead{<stream>}` (a stream).
pub fn dead_letters(stream: &str) -> String {
    companion(stream, "dead")
}

/// How many messages of a stream expired before a worker reached them:
/// `<stream>:expired{<stream>}` (a counter).
pub fn expired_count(stream: &str) -> String {
    companion(stream, "expired")
}

/// Idempotent sends to a stream, by key, until their window ends:
/// `<stream>:once{<stream>}` (a sorted set: key -> expiry ms).
pub fn once(stream: &str) -> String {
    companion(stream, "once")
}

/// What each idempotent send to a stream was: `<stream>:onceids{<stream>}` (a hash: key ->
/// `<stream id> <message id> <timestamp>`).
pub fn once_ids(stream: &str) -> String {
    companion(stream, "onceids")
}

/// Retries waiting for their time of a stream: `<stream>:retry{<stream>}` (a sorted set).
pub fn retries(stream: &str) -> String {
    companion(stream, "retry")
}

/// Messages sent to a stream for later, waiting for their time: `<stream>:delayed{<stream>}`
/// (a sorted set scored by the delivery time, ms since the epoch; members as retries').
pub fn delayed(stream: &str) -> String {
    companion(stream, "delayed")
}

/// The priority lanes of an inbox besides the inbox itself (which is the normal lane),
/// highest first above it and lowest below: read order is urgent, high, inbox, low.
pub const LANES: [&str; 3] = ["urgent", "high", "low"];

/// A priority lane of an inbox: `<inbox>:<lane>{<inbox>}` (`urgent`, `high` or `low`; a
/// stream in the inbox's slot, created by the agent's workers).
pub fn lane(inbox: &str, lane: &str) -> String {
    companion(inbox, lane)
}

/// The lane a stream key is of the inbox `inbox`: `Some("urgent")` for
/// `<inbox>:urgent{<inbox>}`, `None` for the inbox itself or any other key.
pub fn lane_of<'a>(inbox: &str, key: &'a str) -> Option<&'a str> {
    let rest = key.strip_prefix(inbox)?.strip_prefix(':')?;
    let (name, tag) = rest.split_once('{')?;
    (tag.strip_suffix('}') == Some(inbox) && LANES.contains(&name)).then_some(name)
}

/// The stream whose companions (dead letters, retries, schedule, expiry counter) `stream`
/// uses: the inbox for one of its priority lanes, else `stream` itself.
pub fn home(stream: &str) -> &str {
    if let Some(open) = stream.find('{')
        && let Some(inbox) = stream[open + 1..].strip_suffix('}')
        && lane_of(inbox, stream).is_some()
    {
        return inbox;
    }
    stream
}

/// A private reply stream for `Bus::request`: `agent:<agent>:replies:<instance>`.
pub(crate) fn reply_stream(agent: &str, instance: &str) -> String {
    format!("agent:{agent}:replies:{instance}")
}

/// The hash tag Redis Cluster would use for `key` (the content of the first `{…}` if non-empty).
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
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
}
