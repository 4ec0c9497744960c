//! `fabric_message_publish`: broadcast on a Pub/Sub topic.

use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, JsonObjectArg, TopicName};

pub(super) const NAME: &str = "fabric_message_publish";

/// The arguments of `fabric_message_publish`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Topic (channel) name: printable ASCII without spaces, e.g. "analytics.insights".
    topic: TopicName,
    /// The message: a JSON object, at most 1 MiB serialized.
    message: JsonObjectArg,
    /// Your own agent id (optional; defaults to you; any other value is refused).
    from_agent: Option<AgentId>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Publish on a topic",
        "Broadcast a message on a Pub/Sub topic (e.g. \"analytics.insights\", \"system.alerts\") to whoever is subscribed right now. \
         Fire-and-forget: nothing is stored, and subscribers that are not connected miss it. Returns how many subscribers received it. \
         To reach one agent reliably, use fabric_message_send instead. Agents may publish only on the server's topic patterns (by default analytics.*, system.*, shared:*)."
            .into(),
        json!({
            "type": "object",
            "properties": {
                "topic": {"type": "string"},
                "recipients": {"type": "integer", "minimum": 0},
                "published": {"type": "boolean"}
            },
            "required": ["topic", "recipients", "published"]
        }),
        ToolAnnotations::with_title("Publish on a topic")
            .read_only(false)
            .destructive(false)
            .idempotent(false),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let from = authorize(ctx.identity, Act::SendAs(p.from_agent.as_ref()))?;
    // Agents publish on topics only: not on the bus's own channels (agent.<id>.new_message),
    // keyspace notifications or anything else an admin may need.
    if !ctx.identity.is_admin()
        && !ctx
            .topics
            .iter()
            .any(|pattern| crate::mcp::limits::glob_match(pattern, &p.topic.0))
    {
        return Err(ToolError(format!(
            "refused: agents may publish only on topics matching {}; {:?} is not one (the bus's own channels are for admins)",
            ctx.topics.join(", "),
            p.topic.0
        )));
    }
    let bus = ctx.bus.get().await?;
    let n = ctx
        .run(bus.publish(&p.topic.0, Value::Object(p.message.0), Some(&from)))
        .await?;
    Ok(json!({"topic": p.topic.0, "recipients": n, "published": true}))
}
