//! The workflow types the crate's [`Error`](crate::Error) carries: a workflow's id, a failed
//! step, and [`WorkflowError`]. Re-exported from `crate::workflow` (kept apart so that
//! `error` does not depend on the workflow machinery).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A workflow's id: 32 lowercase hex digits (the hash is `fabric:workflow:{<id>}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkflowId(String);

impl WorkflowId {
    pub(crate) fn new() -> WorkflowId {
        WorkflowId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkflowId {
    type Err = WorkflowError;

    fn from_str(s: &str) -> Result<Self, WorkflowError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(WorkflowId(s.to_owned()))
        } else {
            let mut shown: String = s.chars().take(80).collect();
            if shown.len() < s.len() {
                shown.push('…');
            }
            Err(WorkflowError::InvalidId { id: shown })
        }
    }
}

impl TryFrom<String> for WorkflowId {
    type Error = WorkflowError;

    fn try_from(s: String) -> Result<Self, WorkflowError> {
        s.parse()
    }
}

impl From<WorkflowId> for String {
    fn from(id: WorkflowId) -> String {
        id.0
    }
}

/// A part of a step that failed for good: which, where, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepFailure {
    /// The step (0-based).
    pub step: usize,
    /// The part within the step (0-based).
    pub part: usize,
    /// The agent that was to run it.
    pub to_agent: String,
    /// Its message type.
    pub message_type: String,
    /// The dead-letter reason (`permanent_error`, `max_attempts`, `expired`, …), or
    /// `send_failed` when its message could not be sent.
    pub reason: String,
    /// The error text.
    pub error: String,
    /// Handler attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Its message's id.
    #[serde(default)]
    pub message_id: String,
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} part {} ({} at agent {}) failed: {}: {}",
            self.step, self.part, self.message_type, self.to_agent, self.reason, self.error
        )
    }
}

/// Why a workflow could not be started or awaited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// A step failed for good.
    #[error("workflow {id} failed: {failure}")]
    Failed {
        /// The workflow.
        id: WorkflowId,
        /// The first part that failed.
        failure: Box<StepFailure>,
    },
    /// It did not finish in time (it keeps running).
    #[error(
        "workflow {id} has not finished within {timeout:?} (it is at step {step} of {steps}; it keeps running: ask again later with Bus::workflow or Bus::await_workflow; are workers running for its agents?)"
    )]
    Timeout {
        /// The workflow.
        id: WorkflowId,
        /// How long was waited.
        timeout: Duration,
        /// The step running.
        step: usize,
        /// Its number of steps.
        steps: usize,
    },
    /// No such workflow in Redis.
    #[error(
        "no workflow {id}: it was never started on this Redis, or it was forgotten (a workflow is kept for its keep_for, 7 days by default, after its last change)"
    )]
    NotFound {
        /// The id asked for.
        id: WorkflowId,
    },
    /// Not a workflow id.
    #[error(
        "invalid workflow id {id:?}: expected 32 lowercase hex digits, as start_workflow returns"
    )]
    InvalidId {
        /// What was given (at most 80 characters).
        id: String,
    },
    /// The bus is in secure mode.
    #[error(
        "workflows need direct mode for now: in secure mode each agent may write only its own agent:<id>:* keys, and a workflow's state (fabric:workflow:{{<id>}}) is shared by every agent that runs one of its steps; run the agents of workflows in direct mode (FABRIC_MODE=direct)"
    )]
    NeedsDirectMode,
}
