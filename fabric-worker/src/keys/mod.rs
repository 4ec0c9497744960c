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

pub(crate) fn check_charset(
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

/// Set while an operator paused the agent of an inbox: `<stream>:paused{<stream>}` (a
/// string, the time it was paused in ms since the epoch); workers start nothing while it
/// exists.
pub fn paused(stream: &str) -> String {
    companion(stream, "paused")
}

/// The priority lanes of an inbox besides the inbox itself (which is the normal lane),
/// highest first above it and lowest below: read order is urgent, high, inbox, low.
pub const LANES: [&str; 3] = ["urgent", "high", "low"];

/// A priority lane of an inbox: `<inbox>:<lane>{<inbox>}` (`urgent`, `high` or `low`; a
/// stream in the inbox's slot, created by the agent's workers).
pub fn lane(inbox: &str, lane: &str) -> String {
    companion(inbox, lane)
}

/// Every priority lane of an inbox, in [`LANES`] order (urgent, high, low).
pub fn lanes(inbox: &str) -> [String; 3] {
    LANES.map(|l| lane(inbox, l))
}

/// An inbox and some of its lanes in the order they are read: urgent, high, the inbox
/// itself (lane `None`), low.
pub fn in_read_order<T>(
    inbox: T,
    lanes: impl IntoIterator<Item = (&'static str, T)>,
) -> Vec<(Option<&'static str>, T)> {
    let rank = |lane: Option<&str>| match lane {
        Some("urgent") => 0,
        Some("high") => 1,
        None => 2,
        Some(_) => 3,
    };
    let mut all: Vec<(Option<&'static str>, T)> = vec![(None, inbox)];
    all.extend(lanes.into_iter().map(|(l, t)| (Some(l), t)));
    all.sort_by_key(|(l, _)| rank(*l));
    all
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

/// The periodic schedules of an agent's workers: `agent:<agent>:schedules`, a hash of
/// schedule name → JSON (what fires, when; see `docs/protocol.md` §12).
pub fn schedules(agent: &str) -> String {
    format!("agent:{agent}:schedules")
}

/// When each schedule of an agent last fired and fires next: `agent:<agent>:schedule_runs`,
/// a hash of schedule name → JSON (`docs/protocol.md` §12).
pub fn schedule_runs(agent: &str) -> String {
    format!("agent:{agent}:schedule_runs")
}

/// A private reply stream for `Bus::request`: `agent:<agent>:replies:<instance>`.
pub(crate) fn reply_stream(agent: &str, instance: &str) -> String {
    format!("agent:{agent}:replies:{instance}")
}

/// The state of a workflow: `fabric:workflow:{<id>}` (a hash in a slot of its own; see
/// [`crate::workflow`]).
pub fn workflow(id: &str) -> String {
    format!("fabric:workflow:{{{id}}}")
}

/// The hash tag Redis Cluster would use for `key` (the content of the first `{…}` if non-empty).
mod topics;
pub use topics::*;

#[cfg(test)]
mod tests;

/// A rate limit shared by name (`#[handler(rate_limit = "openai:60/m")]`):
/// `fabric:ratelimit:{<name>}`, a string holding the limit's GCRA state (its theoretical
/// arrival time, µs since the epoch), in its own cluster slot.
pub fn rate_limit_shared(name: &str) -> String {
    format!("fabric:ratelimit:{{{name}}}")
}

/// An agent's own rate limit (`WorkerBuilder::rate_limit` without a name):
/// `agent:<agent>:ratelimit`.
pub fn rate_limit_agent(agent: &str) -> String {
    format!("agent:{agent}:ratelimit")
}

/// The rate limit of one handler of an agent (`rate_limit = "10/s"`, without a name):
/// `agent:<agent>:ratelimit:type:<message type>`, or `agent:<agent>:ratelimit:topic:<pattern>`
/// for a handler of durable topics.
pub fn rate_limit_handler(agent: &str, message_type: &str, topic: Option<&str>) -> String {
    match topic {
        Some(t) => format!("agent:{agent}:ratelimit:topic:{t}"),
        None => format!("agent:{agent}:ratelimit:type:{message_type}"),
    }
}
