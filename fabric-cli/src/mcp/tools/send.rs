//! `fabric_message_send`: queue a message in another agent's inbox.

use fabric_worker::bus::Mode;
use fabric_worker::{Message, keys};
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{
    AgentId, CorrelationId, IdempotencyKey, JsonObjectArg, MAX_PAYLOAD_BYTES, MessageType,
    PriorityArg, StreamKey,
};

pub(super) const NAME: &str = "fabric_message_send";

/// The arguments of `fabric_message_send`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// The recipient agent id, e.g. "percy" (letters, digits, _ and -).
    to_agent: AgentId,
    /// What kind of message this is; the recipient dispatches on it. Usually "task"; also "event", "response", or any type the recipient handles.
    message_type: MessageType,
    /// The message body: a JSON object (not a string), at most 1 MiB serialized. For a task, say what to do, e.g. {"task_type": "code_review", "pr_id": "123"}.
    payload: JsonObjectArg,
    /// Your own agent id (optional: defaults to the identity you are connected as; any other value is refused).
    from_agent: Option<AgentId>,
    /// Priority: "low", "normal" (default), "high" or "urgent", or the number 1-4. The recipient's workers take urgent messages first, even behind a long backlog; low ones still move.
    priority: Option<PriorityArg>,
    /// Stream key where the recipient should send its reply (optional; a task defaults to agent:<from_agent>:results).
    reply_to: Option<StreamKey>,
    /// Optional id to correlate replies with (a fresh one is generated otherwise).
    correlation_id: Option<CorrelationId>,
    /// Optional: send once per key. If you may call again for the same message (a timeout, a retry), give the same key: a second send within a day queues nothing and returns the first receipt with status "duplicate".
    idempotency_key: Option<IdempotencyKey>,
    /// Optional: deliver in this many seconds instead of now (0 to 31536000, e.g. 3600 for an hour). The message waits in the recipient's schedule until then; nobody sees it before.
    delay_seconds: Option<f64>,
    /// Optional: deliver at this time instead of now, RFC 3339 (e.g. "2026-11-28T15:00:00Z"). Give delay_seconds or deliver_at, not both.
    deliver_at: Option<String>,
}

/// The message a send or a request builds: the sender is whoever `authorize` says.
pub(super) fn message(
    ctx: &CallContext<'_>,
    to_agent: AgentId,
    message_type: MessageType,
    payload: JsonObjectArg,
    from_agent: Option<&AgentId>,
    priority: Option<PriorityArg>,
) -> Result<Message, ToolError> {
    let from = authorize(ctx.identity, Act::SendAs(from_agent))?;
    let m = Message::new(from, to_agent.0, message_type.0, Value::Object(payload.0))
        .with_priority(priority.map(|p| p.0).unwrap_or_default());
    Ok(m)
}

pub(super) fn definition() -> Tool {
    debug_assert_eq!(
        MAX_PAYLOAD_BYTES,
        1024 * 1024,
        "the payload description says 1 MiB"
    );
    super::definition::<Params>(
        NAME,
        "Send a message",
        "Send a message to another agent's inbox (durable: it waits there until that agent's worker handles it). \
         Returns at once with the message id; it does not wait for an answer (use fabric_message_request for that). \
         A reply to a task sent here arrives later in your replies: read it with fabric_message_receive, source \"replies\". \
         If the recipient has no inbox and nothing serves it, the result carries a warning (check the id with fabric_agents). \
         The sender is always you: from_agent may be omitted, and if given it must be your own agent id."
            .into(),
        json!({
            "type": "object",
            "properties": {
                "message_id": {"type": "string"},
                "status": {"type": "string", "enum": ["queued", "scheduled", "duplicate"], "description": "scheduled: sent with delay_seconds or deliver_at, delivered at deliver_at_ms. duplicate: a message with this idempotency_key was already sent; nothing was queued and this is the first one's receipt."},
                "stream_id": {"type": "string", "description": "Entry id in the recipient's inbox (empty while scheduled)."},
                "deliver_at_ms": {"type": "integer", "description": "For a scheduled message: when it is delivered, ms since the epoch."},
                "timestamp": {"type": "string"},
                "to_agent": {"type": "string"},
                "reply": {"type": "string", "description": "Where a reply to this message will arrive."},
                "warning": {"type": "string", "description": "Present when the recipient has no inbox and nothing serves it (a mistyped id?)."}
            },
            "required": ["message_id", "status", "stream_id", "timestamp"]
        }),
        ToolAnnotations::with_title("Send a message")
            .read_only(false)
            .destructive(false)
            .idempotent(false),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let mut m = message(
        ctx,
        p.to_agent,
        p.message_type,
        p.payload,
        p.from_agent.as_ref(),
        p.priority,
    )?;
    if let Some(r) = p.reply_to {
        m = m.with_reply_to(r.0);
    }
    if let Some(c) = p.correlation_id {
        m = m.with_correlation_id(c.0);
    }
    m = schedule(m, p.delay_seconds, p.deliver_at.as_deref())?;
    m.validate().map_err(ToolError::from)?;
    let bus = ctx.bus.get().await?;
    let warning = ctx
        .run(unknown_recipient_warning(&bus, &m.to_agent))
        .await?;
    // A task's reply goes to the sender's results stream unless reply_to says otherwise.
    let replies_come_back = match &m.reply_to {
        Some(r) => *r == keys::results(&m.from_agent),
        None => m.message_type == "task",
    };
    let receipt = match &p.idempotency_key {
        Some(k) => {
            ctx.run(bus.send_once(m, &k.0, fabric_worker::bus::DEFAULT_DEDUP_WINDOW))
                .await?
        }
        None => ctx.run(bus.send(m)).await?,
    };
    let mut out = serde_json::to_value(&receipt)
        .map_err(|e| ToolError(format!("cannot encode the receipt: {e}")))?;
    if let Value::Object(o) = &mut out {
        if replies_come_back {
            o.insert(
                "reply".into(),
                json!("a reply, if any, arrives in your replies: fabric_message_receive with source \"replies\""),
            );
        }
        if let Some(w) = warning {
            o.insert("warning".into(), json!(w));
        }
    }
    Ok(out)
}

/// Applies `delay_seconds` / `deliver_at`.
fn schedule(m: Message, delay: Option<f64>, at: Option<&str>) -> Result<Message, ToolError> {
    match (delay, at) {
        (Some(_), Some(_)) => Err(ToolError(
            "give delay_seconds or deliver_at, not both".into(),
        )),
        (Some(s), None) if !(s.is_finite() && (0.0..=31_536_000.0).contains(&s)) => Err(ToolError(
            format!("delay_seconds {s}: give a number of seconds between 0 and 31536000"),
        )),
        (Some(s), None) => Ok(m.with_delay(std::time::Duration::from_secs_f64(s))),
        (None, Some(t)) => {
            let when = chrono::DateTime::parse_from_rfc3339(t.trim()).map_err(|_| {
                ToolError(format!(
                    "deliver_at {t:?}: give an RFC 3339 time such as \"2026-11-28T15:00:00Z\""
                ))
            })?;
            Ok(m.deliver_at(std::time::SystemTime::from(when.to_utc())))
        }
        (None, None) => Ok(m),
    }
}

/// A warning when `to` has no inbox and nothing serves it: the message is queued (the agent
/// may start later), but a mistyped id would otherwise go unnoticed.
pub(super) async fn unknown_recipient_warning(
    bus: &fabric_worker::Bus,
    to: &str,
) -> Result<Option<String>, fabric_worker::Error> {
    let info = bus.agent_info(to).await?;
    if info.inbox || info.is_live() {
        return Ok(None);
    }
    let known = bus.agents().await?;
    let known = if known.is_empty() {
        "no agent has an inbox yet".to_owned()
    } else {
        format!("the agents with an inbox are {}", known.join(", "))
    };
    let fate = match bus.mode() {
        Mode::Direct => format!("the message is queued and waits until an agent \"{to}\" starts"),
        Mode::Secure => format!(
            "in secure mode the router rejects messages to an agent nobody registered: register it (fabric setup --agent {to}) or it ends in your outbox's dead letters"
        ),
    };
    Ok(Some(format!(
        "agent \"{to}\" has no inbox and nothing is serving it: {fate}. If the id is mistyped, {known} (see fabric_agents)."
    )))
}
