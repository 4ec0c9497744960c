//! `fabric_message_acknowledge`: acknowledge handled messages of your own inbox.

use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, GroupName, StreamIds};

pub(super) const NAME: &str = "fabric_message_acknowledge";

/// The arguments of `fabric_message_acknowledge`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Whose inbox: your own agent id (optional; defaults to you).
    agent_id: Option<AgentId>,
    /// The _stream_id values of the received messages (e.g. "1732565756123-0"; not the msg: ids).
    message_ids: StreamIds,
    /// The consumer group they were received through (optional; default <agent_id>_workers).
    consumer_group: Option<GroupName>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Acknowledge messages",
        "Acknowledge messages of your own inbox that you have handled, by their _stream_id (as returned by fabric_message_receive, e.g. \"1732565756123-0\"; not the msg: id). \
         Acknowledged messages are never redelivered. Reports for each id whether it was pending."
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
    let group = p.consumer_group.as_ref().map(|g| g.0.as_str());
    let bus = ctx.bus.get().await?;
    let results = ctx
        .run(bus.acknowledge(&agent, &p.message_ids.0, group))
        .await?;
    Ok(json!({"acknowledged": results, "agent_id": agent}))
}
