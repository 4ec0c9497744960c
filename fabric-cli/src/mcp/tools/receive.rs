//! `fabric_message_receive`: take new messages from your own inbox.

use std::time::Duration;

use fabric_worker::bus::{MAX_RECEIVE_COUNT, ReceiveOptions};
use fabric_worker::keys;
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, Bounded, Flag, GroupName};

pub(super) const NAME: &str = "fabric_message_receive";

/// Default `count`.
const DEFAULT_COUNT: u64 = 10;
/// Largest `count` (the bus's own limit).
const MAX_COUNT: u64 = MAX_RECEIVE_COUNT as u64;
/// Default `block_ms`.
const DEFAULT_BLOCK_MS: u64 = 5_000;
/// Largest `block_ms`.
pub(crate) const MAX_BLOCK_MS: u64 = 60_000;

/// The arguments of `fabric_message_receive`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Whose inbox: your own agent id (optional; defaults to you). Only admins may name another agent.
    agent_id: Option<AgentId>,
    /// At most this many messages (default 10).
    #[schemars(extend("default" = DEFAULT_COUNT))]
    count: Option<Bounded<1, MAX_COUNT>>,
    /// How long to wait for a first message, in milliseconds (0 returns at once; default 5000).
    #[schemars(extend("default" = DEFAULT_BLOCK_MS))]
    block_ms: Option<Bounded<0, MAX_BLOCK_MS>>,
    /// Consumer group to read through (optional; default <agent_id>_workers, shared with the agent's workers).
    consumer_group: Option<GroupName>,
    /// Acknowledge the returned messages immediately (at-most-once; default false).
    #[schemars(extend("default" = false))]
    auto_ack: Option<Flag>,
}

/// The schema of a message as tools return it, with `extra` properties.
pub(super) fn message_schema(extra: Value) -> Value {
    let mut props = json!({
        "id": {"type": "string", "description": "Message id, msg:<uuid>."},
        "from_agent": {"type": "string"},
        "to_agent": {"type": "string"},
        "message_type": {"type": "string"},
        "payload": {"description": "The message body (normally a JSON object)."},
        "timestamp": {"type": "string", "description": "Naive UTC ISO-8601."},
        "priority": {"type": "integer", "description": "1 low, 2 normal, 3 high, 4 urgent."},
        "ttl_seconds": {"type": "integer"},
        "reply_to": {"type": ["string", "null"]},
        "correlation_id": {"type": ["string", "null"]}
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut props, extra) {
        p.extend(e);
    }
    json!({
        "type": "object",
        "properties": props,
        "required": ["id", "from_agent", "to_agent", "message_type", "payload", "timestamp", "priority"]
    })
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Receive messages",
        format!(
            "Take new messages from your own inbox (agent_id defaults to you; you cannot read another agent's inbox). \
             Waits up to block_ms milliseconds (default {DEFAULT_BLOCK_MS}, at most {MAX_BLOCK_MS}; 0 = don't wait) for the first message, then returns at most count messages (default {DEFAULT_COUNT}, at most {MAX_COUNT}). \
             An empty list just means nothing arrived in time. Each message has a _stream_id: after handling it, pass those ids to fabric_message_acknowledge, \
             otherwise it is eventually redelivered. Set auto_ack to true to acknowledge on receipt instead."
        ),
        json!({
            "type": "object",
            "properties": {
                "messages": {"type": "array", "items": message_schema(json!({
                    "_stream_id": {"type": "string", "description": "Pass this to fabric_message_acknowledge."},
                    "_consumer_group": {"type": "string"},
                    "_attempt": {"type": "integer"},
                    "_headers": {"type": "object"}
                }))},
                "count": {"type": "integer"},
                "agent_id": {"type": "string"},
                "consumer_group": {"type": "string"},
                "acknowledged": {"type": "boolean"}
            },
            "required": ["messages", "count", "agent_id"]
        }),
        ToolAnnotations::with_title("Receive messages")
            .read_only(false)
            .destructive(false)
            .idempotent(false),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let agent = authorize(ctx.identity, Act::UseInbox(p.agent_id.as_ref()))?;
    let count = p.count.map_or(DEFAULT_COUNT, |c| c.0);
    let block_ms = p.block_ms.map_or(DEFAULT_BLOCK_MS, |b| b.0);
    let auto_ack = p.auto_ack.is_some_and(|f| f.0);
    let group = p
        .consumer_group
        .map_or_else(|| keys::default_group(&agent), |g| g.0);
    let mut opts = ReceiveOptions::default()
        .count(usize::try_from(count).unwrap_or(usize::MAX))
        .group(group.clone())
        .consumer(format!("{agent}-mcp-{}", ctx.instance));
    if block_ms > 0 {
        opts = opts.block(Duration::from_millis(block_ms));
    }
    // A blocking read runs on a connection of its own; dropping the future on
    // cancellation closes that connection, which ends the read on the server too.
    let bus = ctx.bus.get().await?;
    let received = ctx.run(bus.receive(&agent, opts)).await?;
    if auto_ack && !received.is_empty() {
        let ids: Vec<String> = received.iter().map(|r| r.stream_id.clone()).collect();
        ctx.run(bus.acknowledge(&agent, &ids, Some(&group))).await?;
    }
    let messages: Vec<Value> = received
        .iter()
        .map(fabric_worker::bus::Received::to_json)
        .collect();
    Ok(json!({
        "messages": messages,
        "count": messages.len(),
        "agent_id": agent,
        "consumer_group": group,
        "acknowledged": auto_ack,
    }))
}
