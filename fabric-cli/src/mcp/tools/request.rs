//! `fabric_message_request`: send a message and wait for its reply.

use std::time::Duration;

use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::params::{AgentId, Bounded, JsonObjectArg, MessageType, PriorityArg};

pub(super) const NAME: &str = "fabric_message_request";

/// Default `timeout_ms`.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest `timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 120_000;

/// The arguments of `fabric_message_request`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// The agent that should answer, e.g. "percy".
    to_agent: AgentId,
    /// The message type the recipient handles, usually "task".
    message_type: MessageType,
    /// The message body: a JSON object (not a string), at most 1 MiB serialized. For a task, say what to do, e.g. {"task_type": "code_review", "pr_id": "123"}.
    payload: JsonObjectArg,
    /// Your own agent id (optional; defaults to you).
    from_agent: Option<AgentId>,
    /// Priority: "low", "normal" (default), "high" or "urgent", or the number 1-4.
    priority: Option<PriorityArg>,
    /// How long to wait for the reply, in milliseconds (default 30000).
    #[schemars(extend("default" = DEFAULT_TIMEOUT_MS))]
    timeout_ms: Option<Bounded<1, MAX_TIMEOUT_MS>>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Request and await a reply",
        format!(
            "Send a message to another agent and wait for its reply (request/reply). Returns the reply message; its payload holds the answer. \
             Waits at most timeout_ms milliseconds (default {DEFAULT_TIMEOUT_MS}, at most {MAX_TIMEOUT_MS}); on timeout the request stays queued \
             and you get an error saying no reply came (is a worker for that agent running?). If the recipient's handler failed for good you get its error. \
             The sender is always you (from_agent optional; any other value is refused). \
             With a progressToken you get a progress notification every second while it waits."
        ),
        super::receive::message_schema(json!({})),
        ToolAnnotations::with_title("Request and await a reply")
            .read_only(false)
            .destructive(false)
            .idempotent(false),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let timeout_ms = p.timeout_ms.map_or(DEFAULT_TIMEOUT_MS, |t| t.0);
    let m = super::send::message(
        ctx,
        p.to_agent,
        p.message_type,
        p.payload,
        p.from_agent.as_ref(),
        p.priority,
    )?;
    m.validate().map_err(ToolError::from)?;
    let bus = ctx.bus.get().await?;
    let to = m.to_agent.clone();
    let waiting = ctx.run(bus.request(m, Duration::from_millis(timeout_ms)));
    let reply = match &ctx.progress {
        None => waiting.await?,
        Some(progress) => {
            // While waiting, one progress notification a second: seconds waited of the
            // timeout (the client asked with a progressToken).
            tokio::pin!(waiting);
            let started = tokio::time::Instant::now();
            let total = Duration::from_millis(timeout_ms).as_secs_f64();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    r = &mut waiting => break r?,
                    _ = tick.tick() => {
                        let waited = started.elapsed().as_secs_f64().min(total);
                        progress
                            .notify(waited.floor(), total, format!("waiting for {to}'s reply ({waited:.0} s of {} s)", Duration::from_millis(timeout_ms).as_secs_f64()))
                            .await;
                    }
                }
            }
        }
    };
    serde_json::to_value(&reply).map_err(|e| ToolError(format!("cannot encode the reply: {e}")))
}
