//! `fabric_agents`: which agents exist, whether anything serves them, and what their
//! workers handle.

use fabric_worker::bus::AgentInfo;
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::params::AgentId;
use crate::output::now_ms;

pub(super) const NAME: &str = "fabric_agents";

/// The arguments of `fabric_agents`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// Only this agent (optional; default: every agent with an inbox).
    agent_id: Option<AgentId>,
}

/// One agent as the tool shows it.
pub(super) fn agent_json(a: &AgentInfo) -> Value {
    let workers: Vec<Value> = a
        .workers
        .iter()
        .map(|w| {
            json!({
                "consumer": w.consumer,
                "host": w.host,
                "pid": w.pid,
                "message_types": w.message_types,
                "live": w.is_live(now_ms()),
                "last_seen_ms_ago": now_ms().saturating_sub(w.seen_ms),
                "stopped": w.stopped_ms.is_some(),
            })
        })
        .collect();
    json!({
        "agent_id": a.agent,
        "live": a.is_live(),
        "has_inbox": a.inbox,
        "queue_depth": a.queue_depth,
        "handles": a.handles,
        "workers": workers,
        "worker_live": a.worker_live,
        "mcp_live": a.mcp_live,
        "mcp_last_read_ms_ago": a.mcp_idle_ms,
    })
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "List agents",
        "Discover the agents you can message: each agent with an inbox, whether anything is serving it now (live: a Rust worker process or an MCP session \
         read it recently), the message types its workers handle (send one of those as message_type), and its queue depth (messages not handled yet). \
         Use it before sending to an agent you have not talked to, to get its exact id."
            .into(),
        json!({
            "type": "object",
            "properties": {
                "you": {"type": ["string", "null"], "description": "Your own agent id."},
                "agents": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "agent_id": {"type": "string"},
                        "live": {"type": "boolean"},
                        "has_inbox": {"type": "boolean"},
                        "queue_depth": {"type": "integer"},
                        "handles": {"type": "array", "items": {"type": "string"}},
                        "workers": {"type": "array", "items": {"type": "object"}},
                        "worker_live": {"type": "boolean"},
                        "mcp_live": {"type": "boolean"},
                        "mcp_last_read_ms_ago": {"type": ["integer", "null"]}
                    },
                    "required": ["agent_id", "live", "has_inbox", "queue_depth", "handles"]
                }}
            },
            "required": ["agents"]
        }),
        ToolAnnotations::with_title("List agents").read_only(true),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let bus = ctx.bus.get().await?;
    let names = match p.agent_id {
        Some(a) => vec![a.0],
        None => ctx.run(bus.agents()).await?,
    };
    let mut agents = Vec::with_capacity(names.len());
    for name in &names {
        agents.push(agent_json(&ctx.run(bus.agent_info(name)).await?));
    }
    let you = (!ctx.identity.is_admin()).then(|| ctx.identity.name());
    Ok(json!({"you": you, "agents": agents}))
}
