//! Durable topics' names and keys (`docs/protocol.md` §11): the shared streams
//! `topic:<T>` of direct mode, their registries, and in secure mode each agent's own copy.

use super::check_charset;
use crate::error::{Error, Result};

/// Longest durable topic name accepted.
pub const MAX_DURABLE_TOPIC_LEN: usize = 200;
/// The durable-topic rule as a regular expression; [`validate_durable_topic`] is the same
/// rule. (Pub/Sub topics are looser: see [`validate_topic`](super::validate_topic).)
pub const DURABLE_TOPIC_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$";
/// The set of every durable topic name (`SADD` on each publish), so that pattern
/// subscriptions find topics, also ones created later.
pub const TOPICS_REGISTRY: &str = "fabric:topics";
/// When each (consumer group, topic pattern) subscription was first seen (a hash: field
/// `<group>/<pattern>`, value ms since the epoch, server clock): a group created later on a
/// matching topic starts there (`docs/protocol.md` §11).
pub const TOPIC_SUBSCRIPTIONS: &str = "fabric:topic_subscriptions";

/// A subscription's field in [`TOPIC_SUBSCRIPTIONS`] (and in an agent's own, secure mode):
/// `<group>/<pattern>`.
pub(crate) fn subscription_field(group: &str, pattern: &str) -> String {
    format!("{group}/{pattern}")
}

/// The (group, pattern) of a subscription's field; `None` unless the pattern is a valid one
/// (neither groups nor patterns contain `/`).
pub(crate) fn subscription_of(field: &str) -> Option<(&str, &str)> {
    let (group, pattern) = field.split_once('/')?;
    validate_topic_pattern(pattern)
        .is_ok()
        .then_some((group, pattern))
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

/// The topic whose stream `key` is: `topic:<T>` → `T`, and in secure mode an agent's copy
/// `agent:X:topic:<T>` → `T`.
pub fn topic_of_stream(key: &str) -> Option<&str> {
    if let Some(t) = key.strip_prefix("topic:") {
        return Some(t);
    }
    // Agent ids have no `:`: the agent is the text up to the next one.
    let rest = key.strip_prefix("agent:")?;
    let (_, after) = rest.split_once(':')?;
    after.strip_prefix("topic:")
}

/// Secure mode: agent `X`'s own copy of durable topic `T`, which the router fills:
/// `agent:X:topic:T` (under the agent's own keys, so no other agent can touch it).
pub fn agent_topic_stream(agent: &str, topic: &str) -> String {
    format!("agent:{agent}:topic:{topic}")
}

/// Secure mode: the durable topics the router delivered to `agent` (a set): `agent:X:topics`.
pub fn agent_topics(agent: &str) -> String {
    format!("agent:{agent}:topics")
}

/// Secure mode: `agent`'s durable topic subscriptions, as [`TOPIC_SUBSCRIPTIONS`] but its
/// own: `agent:X:topic_subscriptions` (a hash `<group>/<pattern>` → first seen, ms). The
/// router reads them to know whom to copy an event to.
pub fn agent_topic_subscriptions(agent: &str) -> String {
    format!("agent:{agent}:topic_subscriptions")
}

/// The agent whose subscriptions `key` holds (`agent:X:topic_subscriptions` → `X`).
pub fn topic_subscriptions_owner(key: &str) -> Option<&str> {
    key.strip_prefix("agent:")?
        .strip_suffix(":topic_subscriptions")
}

/// Whether the durable topic `topic` matches the subscription `pattern` (`*` matches any
/// run of characters, dots included; any other character matches itself).
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), topic.as_bytes());
    // Greedy glob with one backtrack point: no recursion, at most |p| × |t| steps.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, ti));
            pi += 1;
        } else if p.get(pi) == t.get(ti) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}
