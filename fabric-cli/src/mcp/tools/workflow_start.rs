//! `fabric_workflow_start`: start a chain, group or chord of steps across agents.

use std::time::Duration;

use fabric_worker::keys;
use fabric_worker::workflow::{MAX_PARTS, MAX_STEPS, Step, Workflow};
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::authz::{Act, authorize};
use crate::mcp::params::{AgentId, Bounded, Flag, JsonObjectArg, MessageType};

pub(super) const NAME: &str = "fabric_workflow_start";

/// Most days a workflow may be kept.
const MAX_KEEP_DAYS: u64 = 30;

/// What shape the workflow has.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// Steps one after the other; each reply is the next step's payload.
    Chain,
    /// Steps in parallel; the result is {"results": [...]}.
    Group,
    /// A group, then the callback with {"results": [...]}.
    Chord,
}

/// One step: a message to an agent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StepArg {
    /// The agent that runs the step, e.g. "percy".
    to_agent: AgentId,
    /// The message type its handler takes.
    message_type: MessageType,
    /// Static arguments (a JSON object, optional): the first step's payload; later steps get the previous result with these keys on top.
    payload: Option<JsonObjectArg>,
}

impl StepArg {
    fn step(self) -> Step {
        let payload = self.payload.map(|p| p.0).unwrap_or_default();
        Step::new(self.to_agent.0, self.message_type.0, Value::Object(payload))
    }
}

/// The arguments of `fabric_workflow_start`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// "chain" (steps in order, each reply feeding the next), "group" (steps in parallel) or "chord" (a group, then callback).
    kind: Kind,
    /// The steps: in order for a chain; the parallel parts for a group or chord.
    #[schemars(extend("minItems" = 1, "maxItems" = MAX_PARTS))]
    steps: Vec<StepArg>,
    /// Chord only (required there): the step that gets {"results": [<reply of each part>, ...]} in part order.
    callback: Option<StepArg>,
    /// Your own agent id (optional; defaults to you).
    from_agent: Option<AgentId>,
    /// Also send the final result (or the error) to your results stream, to read with fabric_message_receive source "replies" (default false).
    reply_to_results: Option<Flag>,
    /// How many days the workflow's state is kept after its last change (default 7).
    #[schemars(extend("default" = 7))]
    keep_days: Option<Bounded<1, MAX_KEEP_DAYS>>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Start a workflow",
        format!(
            "Start a durable pipeline of steps across agents and get its workflow_id at once; then wait for its result with fabric_workflow_status. \
             kind \"chain\": the steps run one after the other, each step's reply becoming the next step's payload (plus that step's own payload keys); the result is the last reply. \
             kind \"group\": the steps run in parallel; the result is {{\"results\": [each reply, in step order]}}, or, if one fails, an error listing each step's outcome. \
             kind \"chord\": a group, then callback, which gets {{\"results\": [...]}}; the result is the callback's reply. \
             At most {MAX_STEPS} chain steps or {MAX_PARTS} parallel steps. The workflow is run by the agents' workers and survives their restarts; a step that fails for good fails the workflow with that step's reason. \
             The first steps are sent from you (from_agent optional; any other value is refused)."
        ),
        json!({
            "type": "object",
            "properties": {
                "workflow_id": {"type": "string", "description": "Pass it to fabric_workflow_status."},
                "kind": {"type": "string", "enum": ["chain", "group", "chord"]},
                "steps": {"type": "integer", "description": "How many steps (a group is one step of parallel parts)."},
                "status": {"type": "string", "enum": ["running"]},
                "reply_to": {"type": ["string", "null"]}
            },
            "required": ["workflow_id", "kind", "steps", "status"]
        }),
        ToolAnnotations::with_title("Start a workflow")
            .read_only(false)
            .destructive(false)
            .idempotent(false),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let from = authorize(ctx.identity, Act::SendAs(p.from_agent.as_ref()))?;
    if p.steps.is_empty() || p.steps.len() > MAX_PARTS {
        return Err(ToolError(format!(
            "steps must hold 1 to {MAX_PARTS} steps, got {}",
            p.steps.len()
        )));
    }
    let steps = p.steps.into_iter().map(StepArg::step);
    let workflow = match (p.kind, p.callback) {
        (Kind::Chain, None) => Workflow::chain(steps),
        (Kind::Group, None) => Workflow::group(steps),
        (Kind::Chord, Some(cb)) => Workflow::chord(steps, cb.step()),
        (Kind::Chord, None) => {
            return Err(ToolError(
                "kind \"chord\" needs a callback: the step that gets the group's results".into(),
            ));
        }
        (Kind::Chain | Kind::Group, Some(_)) => {
            return Err(ToolError(
                "callback is for kind \"chord\" only; for a chain, put the step last in steps"
                    .into(),
            ));
        }
    };
    let workflow = match p.keep_days {
        Some(d) => workflow.keep_for(Duration::from_secs(d.0 * 24 * 3600)),
        None => workflow,
    };
    let reply_to = p
        .reply_to_results
        .is_some_and(|f| f.0)
        .then(|| keys::results(&from));
    let workflow = match &reply_to {
        Some(r) => workflow.with_reply_to(r),
        None => workflow,
    };
    let kind = workflow.kind();
    let bus = ctx.bus.get().await?;
    let id = ctx.run(bus.start_workflow(&from, workflow)).await?;
    let status = ctx.run(bus.workflow(&id)).await?;
    Ok(json!({
        "workflow_id": id.as_str(),
        "kind": kind.as_str(),
        "steps": status.steps,
        "status": "running",
        "reply_to": reply_to,
    }))
}
