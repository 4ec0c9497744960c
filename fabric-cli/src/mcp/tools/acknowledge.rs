//! `fabric_message_acknowledge`: acknowledge handled messages of your own inbox (or
//! replies).

use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, GroupName, SourceArg, StreamIds};
use fabric_worker::keys;

pub(super) const NAME: &str = "fabric_message_acknowledge";

/// The arguments of `fabric_message_acknowledge`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Whose messages: omit it as an agent (it is you). Required when you are an admin.
    agent_id: Option<AgentId>,
    /// The _stream_id values of the received messages (e.g. "1732565756123-0"; not the msg: ids).
    message_ids: StreamIds,
    /// Where they were received from: "inbox" (default) or "replies", as given to fabric_message_receive.
    source: Option<SourceArg>,
    /// The consumer group they were received through (optional; default <agent_id>_mcp, as fabric_message_receive).
    consumer_group: Option<GroupName>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Acknowledge messages",
        "Acknowledge messages you received and handled, by their _stream_id (as returned by fabric_message_receive, e.g. \"1732565756123-0\"; not the msg: id), \
         with the same source (\"inbox\", the default, or \"replies\"). Acknowledged messages are never delivered again; others are, after the visibility timeout. \
         Reports for each id whether it was pending (false: already acknowledged, or not received through this group)."
            .into(),
        json!({
            "type": "object",
            "properties": {
                "acknowledged": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "acked": {"type": "boolean"}},
                    "required": ["id", "acked"]
                }},
                "agent_id": {"type": "string"}
            },
            "required": ["acknowledged"]
        }),
        ToolAnnotations::with_title("Acknowledge messages")
            .read_only(false)
            .destructive(false)
            .idempotent(true),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let agent = authorize(ctx.identity, Act::UseInbox(p.agent_id.as_ref()))?;
    let source = p.source.unwrap_or_default();
    let group = p
        .consumer_group
        .map_or_else(|| keys::mcp_group(&agent), |g| g.0);
    let bus = ctx.bus.get().await?;
    let results = ctx
        .run(bus.acknowledge_in(&agent, source.source(), &p.message_ids.0, Some(&group)))
        .await?;
    Ok(json!({"acknowledged": results, "agent_id": agent, "source": source.name()}))
}
