//! `fabric_message_peek`: look at an inbox without consuming anything.

use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, Bounded, StreamIdArg};

pub(super) const NAME: &str = "fabric_message_peek";

/// Default `count`.
const DEFAULT_COUNT: u64 = 10;
/// Largest `count`.
const MAX_COUNT: u64 = 100;

/// The arguments of `fabric_message_peek`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Whose inbox: omit it as an agent (it is you). Required when you are an admin.
    agent_id: Option<AgentId>,
    /// Show entries after this stream id (default "0": from the oldest still in the inbox). Pass the previous call's next_after to page on.
    after: Option<StreamIdArg>,
    /// At most this many entries (default 10).
    #[schemars(extend("default" = DEFAULT_COUNT))]
    count: Option<Bounded<1, MAX_COUNT>>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Peek at an inbox",
        format!(
            "Read-only look at the messages in your inbox, oldest first, whether or not anyone has received them yet: nothing is consumed, acknowledged or changed \
             (use fabric_message_receive to take messages). Returns at most count entries (default {DEFAULT_COUNT}, at most {MAX_COUNT}) after the stream id `after`, \
             and next_after to continue. An admin may peek at any agent's inbox."
        ),
        json!({
            "type": "object",
            "properties": {
                "agent_id": {"type": "string"},
                "entries": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "stream_id": {"type": "string"},
                        "attempt": {"type": "integer"},
                        "message": {"type": ["object", "null"]},
                        "raw_data": {"type": ["string", "null"], "description": "The data of an entry that is not a valid message."}
                    },
                    "required": ["stream_id"]
                }},
                "next_after": {"type": "string"}
            },
            "required": ["agent_id", "entries", "next_after"]
        }),
        ToolAnnotations::with_title("Peek at an inbox").read_only(true),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let agent = authorize(ctx.identity, Act::UseInbox(p.agent_id.as_ref()))?;
    let after = p.after.map_or_else(|| "0".to_owned(), |a| a.0);
    let count = p.count.map_or(DEFAULT_COUNT, |c| c.0);
    let bus = ctx.bus.get().await?;
    let (entries, next) = ctx
        .run(bus.peek(&agent, &after, usize::try_from(count).unwrap_or(10), None))
        .await?;
    Ok(json!({"agent_id": agent, "entries": entries, "next_after": next}))
}
