//! `fabric_message_receive`: take messages from your own inbox, or the replies to what you
//! sent. Every MCP session of an agent reads as one consumer (`<agent>-mcp`) of the group
//! `<agent>_mcp`; what was received and not acknowledged within the visibility timeout is
//! received again (by any session), and message types the agent's Rust workers handle are
//! left to them.

use std::time::Duration;

use fabric_worker::bus::{MAX_RECEIVE_COUNT, ReceiveOptions};
use fabric_worker::keys;
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, Bounded, Flag, GroupName, SourceArg};

pub(super) const NAME: &str = "fabric_message_receive";

/// Default `count`.
const DEFAULT_COUNT: u64 = 10;
/// Largest `count` (the bus's own limit).
const MAX_COUNT: u64 = MAX_RECEIVE_COUNT as u64;
/// Default `block_ms`.
const DEFAULT_BLOCK_MS: u64 = 5_000;
/// Largest `block_ms`.
pub(crate) const MAX_BLOCK_MS: u64 = 60_000;

/// A message received more often than this without being acknowledged goes to dead letters.
pub(crate) const MAX_DELIVERIES: u64 = 10;

/// The arguments of `fabric_message_receive`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Whose messages: omit it as an agent (it is you; another value is refused). Required when you are an admin.
    agent_id: Option<AgentId>,
    /// "inbox" (default): messages sent to you. "replies": the replies to messages you sent with fabric_message_send (they arrive in your results stream).
    source: Option<SourceArg>,
    /// At most this many messages (default 10).
    #[schemars(extend("default" = DEFAULT_COUNT))]
    count: Option<Bounded<1, MAX_COUNT>>,
    /// How long to wait for a first message, in milliseconds (0 returns at once; default 5000).
    #[schemars(extend("default" = DEFAULT_BLOCK_MS))]
    block_ms: Option<Bounded<0, MAX_BLOCK_MS>>,
    /// Consumer group to read through (optional; default <agent_id>_mcp, shared by your MCP sessions and separate from your Rust workers' group).
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

pub(super) fn definition(visibility: Duration) -> Tool {
    let vis = visibility.as_secs();
    super::definition::<Params>(
        NAME,
        "Receive messages",
        format!(
            "Take messages sent to you (source \"inbox\", the default), or the replies to messages you sent with fabric_message_send (source \"replies\"). \
             Waits up to block_ms milliseconds (default {DEFAULT_BLOCK_MS}, at most {MAX_BLOCK_MS}; 0 = don't wait) for the first message, then returns at most count messages (default {DEFAULT_COUNT}, at most {MAX_COUNT}). \
             An empty list just means nothing arrived in time. After handling a message, pass its _stream_id to fabric_message_acknowledge (with the same source). \
             A message not acknowledged within {vis} s is received again (by you or your next session; _deliveries counts the deliveries), \
             and after {MAX_DELIVERIES} deliveries it goes to dead letters. Set auto_ack to true to acknowledge on receipt instead (then it is never redelivered). \
             Message types your agent's Rust workers handle go to them, not here."
        ),
        json!({
            "type": "object",
            "properties": {
                "messages": {"type": "array", "items": message_schema(json!({
                    "_stream_id": {"type": "string", "description": "Pass this to fabric_message_acknowledge."},
                    "_consumer_group": {"type": "string"},
                    "_attempt": {"type": "integer"},
                    "_deliveries": {"type": "integer", "description": "1 the first time; more when it was received before and not acknowledged in time."},
                    "_headers": {"type": "object"}
                }))},
                "count": {"type": "integer"},
                "agent_id": {"type": "string"},
                "consumer_group": {"type": "string"},
                "source": {"type": "string", "enum": ["inbox", "replies"]},
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
    let source = p.source.unwrap_or_default();
    let count = p.count.map_or(DEFAULT_COUNT, |c| c.0);
    let block_ms = p.block_ms.map_or(DEFAULT_BLOCK_MS, |b| b.0);
    let auto_ack = p.auto_ack.is_some_and(|f| f.0);
    let group = p
        .consumer_group
        .map_or_else(|| keys::mcp_group(&agent), |g| g.0);
    // Each blocking read holds a Redis connection of its own: capped per identity and in all.
    let _permit = if block_ms > 0 {
        Some(ctx.limits.blocking(ctx.identity.name())?)
    } else {
        None
    };
    let mut opts = ReceiveOptions::default()
        .count(usize::try_from(count).unwrap_or(usize::MAX))
        .group(group.clone())
        .consumer(keys::mcp_consumer(&agent))
        .source(source.source())
        .redeliver_after(ctx.visibility)
        .max_deliveries(MAX_DELIVERIES)
        .leave_worker_types(true);
    if block_ms > 0 {
        opts = opts.block(Duration::from_millis(block_ms));
    }
    // A blocking read runs on a connection of its own; dropping the future on
    // cancellation closes that connection, which ends the read on the server too.
    let bus = ctx.bus.get().await?;
    if let Err(e) = bus.mark_mcp_seen(&agent).await {
        tracing::debug!(agent, error = %e, "could not record this MCP session as live");
    }
    let received = ctx.run(bus.receive(&agent, opts)).await?;
    if auto_ack && !received.is_empty() {
        let ids: Vec<String> = received.iter().map(|r| r.stream_id.clone()).collect();
        ctx.run(bus.acknowledge_in(&agent, source.source(), &ids, Some(&group)))
            .await?;
    }
    if source == SourceArg::Inbox {
        forget_old_consumers(ctx, &agent).await;
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
        "source": source.name(),
        "acknowledged": auto_ack,
    }))
}

/// Removes the per-process MCP consumers (`<agent>-mcp-<instance>`) earlier versions left
/// in `<agent>_workers`, once they have nothing pending.
async fn forget_old_consumers(ctx: &CallContext<'_>, agent: &str) {
    // At most once per visibility timeout per agent: they are removed once idle that long.
    static LAST: std::sync::Mutex<Vec<(String, std::time::Instant)>> =
        std::sync::Mutex::new(Vec::new());
    {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.iter_mut().find(|(a, _)| a == agent) {
            Some((_, at)) if at.elapsed() < ctx.visibility => return,
            Some((_, at)) => *at = std::time::Instant::now(),
            None => last.push((agent.to_owned(), std::time::Instant::now())),
        }
    }
    let Ok(bus) = ctx.bus.get().await else { return };
    let prefix = format!("{}-", keys::mcp_consumer(agent));
    // Idle for the visibility timeout: such a session would have read again by now.
    let idle = u64::try_from(ctx.visibility.as_millis()).unwrap_or(u64::MAX);
    match bus
        .remove_idle_consumers(agent, &keys::default_group(agent), &prefix, idle)
        .await
    {
        Ok(removed) if !removed.is_empty() => {
            info!(
                agent,
                ?removed,
                "removed consumers left by earlier MCP sessions"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(agent, error = %e, "could not look for old MCP consumers"),
    }
}
