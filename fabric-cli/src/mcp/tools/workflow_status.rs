//! `fabric_workflow_status`: where a workflow stands, optionally waiting for it to finish.

use std::time::Duration;

use fabric_worker::workflow::{WorkflowId, WorkflowState, WorkflowStatus};
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallContext, ToolError};
use crate::mcp::auth::Identity;
use crate::mcp::params::Bounded;

pub(super) const NAME: &str = "fabric_workflow_status";

/// Longest wait.
const MAX_WAIT_SECONDS: u64 = 120;

/// The arguments of `fabric_workflow_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// The workflow_id fabric_workflow_start returned (32 hex digits).
    #[schemars(extend("pattern" = "^[0-9a-f]{32}$"))]
    workflow_id: String,
    /// Wait up to this many seconds for the workflow to finish (0 to 120; default 0: answer at once).
    #[schemars(extend("default" = 0))]
    wait_seconds: Option<Bounded<0, MAX_WAIT_SECONDS>>,
}

pub(super) fn definition() -> Tool {
    super::definition::<Params>(
        NAME,
        "Workflow status",
        format!(
            "Show where a workflow started with fabric_workflow_start stands: status \"running\", \"succeeded\" (result holds the final reply payload) \
             or \"failed\" (error names the step that failed, its agent and the reason, e.g. permanent_error or max_attempts; parts lists each parallel step's outcome). \
             With wait_seconds (at most {MAX_WAIT_SECONDS}) it waits for the workflow to finish first, and answers with status \"running\" if it has not by then (ask again). \
             You can only see workflows you started."
        ),
        json!({
            "type": "object",
            "properties": {
                "workflow_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["chain", "group", "chord"]},
                "status": {"type": "string", "enum": ["running", "succeeded", "failed"]},
                "step": {"type": "integer", "description": "The step running now, or the last that ran (0-based)."},
                "steps": {"type": "integer"},
                "parts": {"type": "array", "description": "Each part of that step: {status: running|succeeded|failed, result | reason, error, ...}."},
                "result": {"description": "The final result, once succeeded."},
                "error": {"type": ["object", "null"], "description": "The first failure: step, part, to_agent, message_type, reason, error."},
                "from_agent": {"type": "string"},
                "created_ms": {"type": "integer"},
                "finished_ms": {"type": ["integer", "null"]}
            },
            "required": ["workflow_id", "kind", "status", "step", "steps"]
        }),
        ToolAnnotations::with_title("Workflow status")
            .read_only(true)
            .destructive(false)
            .idempotent(true),
    )
}

pub(super) async fn run(ctx: &CallContext<'_>, p: Params) -> Result<Value, ToolError> {
    let id: WorkflowId = p
        .workflow_id
        .parse()
        .map_err(|e: fabric_worker::workflow::WorkflowError| ToolError(e.to_string()))?;
    let wait = Duration::from_secs(p.wait_seconds.map_or(0, |w| w.0));
    let bus = ctx.bus.get().await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    let status = loop {
        let st = ctx.run(bus.workflow(&id)).await?;
        if let Identity::Agent(me) = ctx.identity
            && st.from_agent != *me
        {
            return Err(ToolError(format!(
                "access denied: workflow {id} was started by agent {:?}; you are connected as {me:?} and may only see your own workflows",
                st.from_agent
            )));
        }
        let now = tokio::time::Instant::now();
        if st.state != WorkflowState::Running || now >= deadline {
            break st;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause.min(deadline - now)) => {}
            _ = ctx.cancel.cancelled() => return Err(ToolError("cancelled by the client".into())),
        }
        pause = (pause * 3 / 2).min(Duration::from_secs(1));
    };
    Ok(output(&status))
}

fn output(st: &WorkflowStatus) -> Value {
    json!({
        "workflow_id": st.id.as_str(),
        "kind": st.kind.as_str(),
        "status": st.state,
        "step": st.step,
        "steps": st.steps,
        "parts": st.parts,
        "result": st.result,
        "error": st.failure,
        "from_agent": st.from_agent,
        "created_ms": st.created_ms,
        "finished_ms": st.finished_ms,
    })
}
