//! `fabric_message_queue_status`: the state of your own inbox.

use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, GroupName};

pub(super) const NAME: &str = "fabric_message_queue_status";

/// The arguments of `fabric_message_queue_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Whose inbox: omit it as an agent (it is you). Required when you are an admin.
    agent_id: Option<AgentId>,
    /// Consumer group the figures are for (optional; default <agent_id>_mcp, the one fabric_message_receive uses, once it exists, else <agent_id>_workers).
    consumer_group: Option<GroupName>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Inbox status",
        "Show the state of your own inbox without changing it: queue_depth (messages not yet handled = undelivered + pending), \
         pending (delivered, not yet acknowledged), consumers and how long each has been idle, the age of the oldest pending message, \
         dead letters (messages that failed for good) and scheduled retries."
            .into(),
        json!({
            "type": "object",
            "properties": {
                "agent_id": {"type": "string"},
                "stream": {"type": "string"},
                "consumer_group": {"type": "string"},
                "queue_depth": {"type": "integer"},
                "undelivered": {"type": ["integer", "null"]},
                "pending": {"type": "integer"},
                "consumers": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "pending": {"type": "integer"},
                        "idle_ms": {"type": "integer"},
                        "inactive_ms": {"type": ["integer", "null"]}
                    },
                    "required": ["name", "pending", "idle_ms"]
                }},
                "oldest_pending_age_ms": {"type": ["integer", "null"]},
                "oldest_pending_idle_ms": {"type": ["integer", "null"]},
                "stream_length": {"type": "integer"},
                "last_generated_id": {"type": ["string", "null"]},
                "first_entry_id": {"type": ["string", "null"]},
                "last_entry_id": {"type": ["string", "null"]},
                "group_exists": {"type": "boolean"},
                "dead_letters": {"type": "integer"},
                "scheduled_retries": {"type": "integer"},
                "expired": {"type": "integer", "description": "Messages whose ttl_seconds had passed when they were reached (not handled)."},
                "stream_info": {"type": ["object", "null"], "description": "XINFO STREAM of the inbox (null when the inbox does not exist yet)."}
            },
            "required": ["agent_id", "queue_depth", "pending", "dead_letters"]
        }),
        ToolAnnotations::with_title("Inbox status").read_only(true),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let agent = authorize(ctx.identity, Act::UseInbox(p.agent_id.as_ref()))?;
    let bus = ctx.bus.get().await?;
    let group = match p.consumer_group {
        Some(g) => g.0,
        None => {
            let mcp = fabric_worker::keys::mcp_group(&agent);
            let groups = ctx.run(bus.groups(&agent)).await?;
            if groups.iter().any(|g| g.name == mcp) {
                mcp
            } else {
                fabric_worker::keys::default_group(&agent)
            }
        }
    };
    let status = ctx.run(bus.queue_status(&agent, Some(&group))).await?;
    serde_json::to_value(&status).map_err(|e| ToolError(format!("cannot encode the status: {e}")))
}
