//! Workflows across agents, as Celery's canvas or BullMQ's flows: a [`Workflow::chain`] (each
//! step's reply is the next step's payload), a [`Workflow::group`] (fan-out, every reply or
//! a per-part error), and a [`Workflow::chord`] (a group whose replies, in part order, feed
//! one more step).
//!
//! A workflow lives in Redis (`fabric:workflow:{<id>}`, a hash) and is driven by the
//! workers that run its steps, not by the process that started it: each step is an ordinary
//! message with the headers `fabric-workflow`, `fabric-step` and `fabric-part`; the worker
//! that handles it records the reply with one atomic `FCALL fabric_workflow_step` and sends
//! the next step (or writes the final reply) before acknowledging. So a workflow survives
//! every worker restarting midway; like any message, a step may run twice after a crash.
//! A step that is dead-lettered fails the workflow with that step's reason. See
//! `docs/protocol.md` §13.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn demo() -> fabric_worker::Result<()> {
//! use std::time::Duration;
//! use fabric_worker::Bus;
//! use fabric_worker::workflow::{Step, Workflow};
//! use serde_json::json;
//!
//! let bus = Bus::from_env().await?;
//! let id = bus
//!     .start_workflow(
//!         "coder",
//!         Workflow::chain([
//!             Step::new("coder", "review", json!({"pr": 123})),
//!             Step::new("percy", "summarize", json!({"style": "short"})),
//!             Step::new("memory", "remember", json!({})),
//!         ]),
//!     )
//!     .await?;
//! let result = bus.await_workflow(&id, Duration::from_secs(60)).await?;
//! println!("{result}");
//! # Ok(()) }
//! ```
//!
//! Workflows need direct mode for now ([`WorkflowError::NeedsDirectMode`]).

pub(crate) mod bus;

pub use crate::workflow_error::{StepFailure, WorkflowError, WorkflowId};

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::keys;

/// The header naming the workflow a step message belongs to (its [`WorkflowId`]).
pub const WORKFLOW_HEADER: &str = "fabric-workflow";
/// The header with the step's index (0-based) in its workflow.
pub const STEP_HEADER: &str = "fabric-step";
/// The header with the part's index (0-based) within its step.
pub const PART_HEADER: &str = "fabric-part";

/// Most steps a workflow has.
pub const MAX_STEPS: usize = 100;
/// Most parts one step (a group) has.
pub const MAX_PARTS: usize = 1000;
/// How long a workflow is kept after its last change, by default: 7 days.
pub const DEFAULT_KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// One message of a workflow: sent to `to`'s inbox as `message_type`.
///
/// The payload of a step after the first is the previous step's result — the reply payload
/// of the one part before it, or `{"results": [<reply of part 0>, …]}` after a group — with
/// this step's own `payload` keys added on top (they win over keys of the same name). The
/// first step's payload is its own `payload`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The agent that runs it.
    pub to: String,
    /// The message type its handler takes.
    pub message_type: String,
    /// Its own payload (a JSON object): static arguments.
    #[serde(default = "empty_object")]
    pub payload: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl Step {
    /// A step for `to`'s handler of `message_type`, with static arguments `payload` (a JSON
    /// object; `{}` for none).
    pub fn new(to: impl Into<String>, message_type: impl Into<String>, payload: Value) -> Step {
        Step {
            to: to.into(),
            message_type: message_type.into(),
            payload,
        }
    }

    fn validate(&self, where_: &str) -> Result<()> {
        keys::validate_agent(&self.to).map_err(|e| e.renamed("step agent"))?;
        keys::validate_message_type(&self.message_type)?;
        if !self.payload.is_object() {
            return Err(Error::invalid(
                "step payload",
                &self.payload.to_string(),
                format!("{where_}: must be a JSON object ({{}} for none)"),
            ));
        }
        Ok(())
    }

    /// The payload of this step's message, given the previous step's result.
    pub(crate) fn payload_after(&self, input: Option<&Value>) -> Value {
        let mut out = match input {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => Map::from_iter([("input".to_owned(), other.clone())]),
        };
        if let Value::Object(own) = &self.payload {
            out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Value::Object(out)
    }
}

/// What shape a workflow has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowKind {
    /// Steps one after the other, each one's reply the next one's payload.
    Chain,
    /// One step of parallel parts; the result is `{"results": [...]}` in part order.
    Group,
    /// A group, then one step that gets `{"results": [...]}`.
    Chord,
}

impl WorkflowKind {
    /// `chain`, `group` or `chord`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowKind::Chain => "chain",
            WorkflowKind::Group => "group",
            WorkflowKind::Chord => "chord",
        }
    }
}

impl FromStr for WorkflowKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "chain" => Ok(WorkflowKind::Chain),
            "group" => Ok(WorkflowKind::Group),
            "chord" => Ok(WorkflowKind::Chord),
            other => Err(Error::invalid(
                "workflow kind",
                other,
                "expected chain, group or chord",
            )),
        }
    }
}

/// The definition stored in the workflow's hash (field `definition`): its kind and, per
/// step, its parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Definition {
    pub(crate) kind: WorkflowKind,
    pub(crate) steps: Vec<Vec<Step>>,
}

/// A workflow to start with [`Bus::start_workflow`](crate::Bus::start_workflow).
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct Workflow {
    pub(crate) definition: Definition,
    pub(crate) reply_to: Option<String>,
    pub(crate) keep_for: Duration,
}

impl Workflow {
    fn of(kind: WorkflowKind, steps: Vec<Vec<Step>>) -> Workflow {
        Workflow {
            definition: Definition { kind, steps },
            reply_to: None,
            keep_for: DEFAULT_KEEP_FOR,
        }
    }

    /// Steps one after the other: step `n + 1` gets step `n`'s reply payload (plus its own
    /// payload's keys); the result is the last step's reply payload.
    pub fn chain(steps: impl IntoIterator<Item = Step>) -> Workflow {
        Workflow::of(
            WorkflowKind::Chain,
            steps.into_iter().map(|s| vec![s]).collect(),
        )
    }

    /// Parts run in parallel; the result is `{"results": [<reply payload of part 0>, …]}`,
    /// or, when a part fails, the workflow fails with each part's outcome.
    pub fn group(parts: impl IntoIterator<Item = Step>) -> Workflow {
        Workflow::of(WorkflowKind::Group, vec![parts.into_iter().collect()])
    }

    /// A group, then `callback`, whose payload is `{"results": [...]}` (the parts' reply
    /// payloads in part order) plus its own payload's keys; the result is its reply payload.
    pub fn chord(parts: impl IntoIterator<Item = Step>, callback: Step) -> Workflow {
        Workflow::of(
            WorkflowKind::Chord,
            vec![parts.into_iter().collect(), vec![callback]],
        )
    }

    /// Also write the final reply (a `response` with the result, or an `error` naming the
    /// failed step) to this stream of the starting agent: `agent:<from_agent>:results` or
    /// `agent:<from_agent>:replies:<id>`, with `in_reply_to` and `correlation_id` the
    /// workflow id. Without it, ask with [`Bus::workflow`](crate::Bus::workflow) or
    /// [`Bus::await_workflow`](crate::Bus::await_workflow).
    pub fn with_reply_to(mut self, stream: impl Into<String>) -> Workflow {
        self.reply_to = Some(stream.into());
        self
    }

    /// How long the workflow is kept in Redis after its last change (default 7 days,
    /// [`DEFAULT_KEEP_FOR`]; at least a second): a finished one is forgotten that long after
    /// it finished, a running one that long after its last step finished.
    pub fn keep_for(mut self, d: Duration) -> Workflow {
        self.keep_for = d;
        self
    }

    /// Its kind.
    pub fn kind(&self) -> WorkflowKind {
        self.definition.kind
    }

    /// Checks everything before anything is written.
    pub(crate) fn validate(&self, from_agent: &str) -> Result<()> {
        keys::validate_agent(from_agent).map_err(|e| e.renamed("from_agent"))?;
        let steps = &self.definition.steps;
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(Error::invalid(
                "workflow",
                &format!("{} steps", steps.len()),
                format!("a workflow has 1 to {MAX_STEPS} steps"),
            ));
        }
        for (i, parts) in steps.iter().enumerate() {
            if parts.is_empty() || parts.len() > MAX_PARTS {
                return Err(Error::invalid(
                    "workflow",
                    &format!("step {i} with {} parts", parts.len()),
                    format!("a group has 1 to {MAX_PARTS} parts"),
                ));
            }
            for (p, s) in parts.iter().enumerate() {
                s.validate(&format!("step {i} part {p}"))?;
            }
        }
        if self.definition.kind == WorkflowKind::Chord
            && let Some(cb) = steps.last().and_then(|s| s.first())
            && cb.payload.get("results").is_some()
        {
            return Err(Error::invalid(
                "chord callback payload",
                &cb.payload.to_string(),
                "may not have a key \"results\": that is where the group's replies go",
            ));
        }
        if let Some(r) = &self.reply_to {
            keys::validate_stream_key(r).map_err(|e| e.renamed("reply_to"))?;
            if !keys::is_reply_stream_of(from_agent, r) {
                return Err(Error::invalid(
                    "reply_to",
                    r,
                    format!(
                        "the final reply may only go to a stream of the starting agent {from_agent:?}: agent:{from_agent}:results, or agent:{from_agent}:replies:<id>"
                    ),
                ));
            }
        }
        if self.keep_for < Duration::from_secs(1) {
            return Err(Error::invalid(
                "keep_for",
                &format!("{:?}", self.keep_for),
                "must be at least a second",
            ));
        }
        Ok(())
    }
}

/// Where a workflow stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    /// Steps are still running.
    Running,
    /// Every step succeeded; the result is there.
    Succeeded,
    /// A step failed for good (was dead-lettered); the failure says which and why.
    Failed,
}

/// What one part of a step came to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum PartOutcome {
    /// Not finished yet.
    Running,
    /// Replied.
    Succeeded {
        /// The reply payload.
        result: Value,
    },
    /// Failed for good.
    Failed(StepFailure),
}

/// A workflow's state, as [`Bus::workflow`](crate::Bus::workflow) reads it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkflowStatus {
    /// Its id.
    pub id: WorkflowId,
    /// Its kind.
    pub kind: WorkflowKind,
    /// Running, succeeded or failed.
    pub state: WorkflowState,
    /// The step running now, or the last one that ran.
    pub step: usize,
    /// How many steps it has.
    pub steps: usize,
    /// Each part of `step`, in order.
    pub parts: Vec<PartOutcome>,
    /// The result, once succeeded.
    pub result: Option<Value>,
    /// The first failure, once failed.
    pub failure: Option<StepFailure>,
    /// The agent that started it.
    pub from_agent: String,
    /// Where its final reply goes, if anywhere.
    pub reply_to: Option<String>,
    /// When it started, ms since the epoch.
    pub created_ms: u64,
    /// When it finished, ms since the epoch.
    pub finished_ms: Option<u64>,
}

impl WorkflowId {
    /// Its hash in Redis: `fabric:workflow:{<id>}`.
    pub fn key(&self) -> String {
        keys::workflow(self.as_str())
    }
}

#[cfg(test)]
mod tests;
