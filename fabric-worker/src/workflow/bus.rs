//! The Bus side of workflows: starting one, reading its state, waiting for its result; and
//! what the runtime shares with it (sending a step's parts, `fabric_workflow_step`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Definition, PART_HEADER, PartOutcome, STEP_HEADER, StepFailure, WORKFLOW_HEADER, Workflow,
    WorkflowError, WorkflowId, WorkflowKind, WorkflowState, WorkflowStatus,
};
use crate::broker::wire;
use crate::bus::{Bus, Mode};
use crate::error::{Error, Result};
use crate::message::Message;

/// What `fabric_workflow_step` says to do after recording a part.
#[derive(Debug)]
pub(crate) enum Next {
    /// The workflow is gone (forgotten, or never started).
    Missing,
    /// Nothing to do (other parts still run, or the next step was already sent).
    Nothing,
    /// Send the parts of `step` with the previous step's result `input`.
    Send {
        step: usize,
        input: Value,
        definition: Definition,
    },
    /// The workflow is over: write the final reply to `reply_to`, then clear its mark.
    Finish {
        succeeded: bool,
        value: Value,
        reply_to: String,
        from_agent: String,
        parts: Value,
    },
}

impl Bus {
    /// Starts `workflow` as `from_agent`: stores it in Redis (`fabric:workflow:{<id>}`) and
    /// sends its first step; the workers of its agents do the rest, also across restarts.
    /// Returns its id, for [`Bus::workflow`] and [`Bus::await_workflow`].
    ///
    /// Each step's parts are ordinary messages from the agent that ran the step before (the
    /// first step's from `from_agent`) with the headers `fabric-workflow`, `fabric-step` and
    /// `fabric-part`, and no `reply_to`. Workflows need direct mode
    /// ([`WorkflowError::NeedsDirectMode`]).
    pub async fn start_workflow(&self, from_agent: &str, workflow: Workflow) -> Result<WorkflowId> {
        if self.mode() == Mode::Secure {
            return Err(WorkflowError::NeedsDirectMode.into());
        }
        workflow.validate(from_agent)?;
        self.broker().ensure_library_once().await?;
        let id = WorkflowId::new();
        let key = id.key();
        let def = &workflow.definition;
        let definition = serde_json::to_string(def).map_err(|source| Error::Encode {
            what: "workflow",
            source,
        })?;
        let keep_ms = crate::time::millis(workflow.keep_for);
        let mut fields: Vec<(String, String)> = vec![
            ("kind".into(), def.kind.as_str().into()),
            ("definition".into(), definition),
            ("status".into(), "running".into()),
            ("step".into(), "0".into()),
            ("steps".into(), def.steps.len().to_string()),
            ("from_agent".into(), from_agent.into()),
            (
                "reply_to".into(),
                workflow.reply_to.clone().unwrap_or_default(),
            ),
            ("created_ms".into(), crate::time::now_ms().to_string()),
            ("keep_ms".into(), keep_ms.to_string()),
        ];
        for (i, parts) in def.steps.iter().enumerate() {
            fields.push((format!("parts:{i}"), parts.len().to_string()));
            fields.push((format!("left:{i}"), parts.len().to_string()));
        }
        let _: () = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(&fields)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(keep_ms)
            .ignore()
            .query_async(&mut self.broker().conn())
            .await
            .map_err(|e| Error::redis("HSET", &key, e))?;
        for (part, sent) in self
            .send_workflow_step(&id, def, 0, from_agent, workflow.keep_for)
            .await
        {
            if let Err(e) = sent {
                // Nothing would ever finish it: say so in the workflow, and to the caller.
                let failure = send_failure(def, 0, part, &e);
                let _: redis::RedisResult<()> = redis::cmd("HSET")
                    .arg(&key)
                    .arg("status")
                    .arg("failed")
                    .arg("error")
                    .arg(failure.to_string())
                    .arg("finished_ms")
                    .arg(crate::time::now_ms())
                    .query_async(&mut self.broker().conn())
                    .await;
                return Err(e);
            }
        }
        tracing::debug!(workflow = %id, kind = def.kind.as_str(), from_agent, "workflow started");
        Ok(id)
    }

    /// The state of workflow `id`: [`WorkflowError::NotFound`] when Redis does not have it.
    pub async fn workflow(&self, id: &WorkflowId) -> Result<WorkflowStatus> {
        let key = id.key();
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.broker().conn())
            .await
            .map_err(|e| Error::redis("HGETALL", &key, e))?;
        if h.is_empty() {
            return Err(WorkflowError::NotFound { id: id.clone() }.into());
        }
        status_of(id, &h)
    }

    /// Waits up to `timeout` for workflow `id` to finish (polling its state, every 50 ms at
    /// first, then less often, at most every second). Returns its result;
    /// [`WorkflowError::Failed`] names the failed step and its reason,
    /// [`WorkflowError::Timeout`] says where it stands (it keeps running).
    pub async fn await_workflow(&self, id: &WorkflowId, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let st = self.workflow(id).await?;
            match st.state {
                WorkflowState::Succeeded => return Ok(st.result.unwrap_or(Value::Null)),
                WorkflowState::Failed => {
                    let failure = st.failure.unwrap_or_else(|| StepFailure {
                        step: st.step,
                        part: 0,
                        to_agent: String::new(),
                        message_type: String::new(),
                        reason: "unknown".into(),
                        error: "the workflow failed without a recorded reason".into(),
                        attempts: 0,
                        message_id: String::new(),
                    });
                    return Err(WorkflowError::Failed {
                        id: id.clone(),
                        failure: Box::new(failure),
                    }
                    .into());
                }
                WorkflowState::Running => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(WorkflowError::Timeout {
                    id: id.clone(),
                    timeout,
                    step: st.step,
                    steps: st.steps,
                }
                .into());
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(1));
        }
    }

    /// Sends the parts of step `step` (each once per workflow, see
    /// [`Bus::send_workflow_part`]). Returns each part's outcome.
    pub(crate) async fn send_workflow_step(
        &self,
        id: &WorkflowId,
        def: &Definition,
        step: usize,
        from_agent: &str,
        window: Duration,
    ) -> Vec<(usize, Result<()>)> {
        let n = def.steps.get(step).map_or(0, Vec::len);
        let mut out = Vec::with_capacity(n);
        for part in 0..n {
            let sent = self
                .send_workflow_part(id, def, step, part, None, from_agent, window)
                .await;
            out.push((part, sent));
        }
        out
    }

    /// Sends part `part` of step `step` with the previous step's result `input`, once per
    /// workflow: an idempotent send keyed `fabric-workflow:<id>:<step>:<part>`, so a part
    /// sent again after a crash is queued once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_workflow_part(
        &self,
        id: &WorkflowId,
        def: &Definition,
        step: usize,
        part: usize,
        input: Option<&Value>,
        from_agent: &str,
        window: Duration,
    ) -> Result<()> {
        let Some(s) = def.steps.get(step).and_then(|p| p.get(part)) else {
            return Err(Error::protocol(
                "workflow definition",
                format!("workflow {id} has no step {step} part {part}"),
            ));
        };
        let m = Message::new(from_agent, &s.to, &s.message_type, s.payload_after(input))
            .with_correlation_id(id.as_str())
            .with_header(WORKFLOW_HEADER, id.as_str())
            .with_header(STEP_HEADER, step.to_string())
            .with_header(PART_HEADER, part.to_string());
        let key = format!("fabric-workflow:{id}:{step}:{part}");
        self.send_once_as_is(m, &key, window).await.map(|_| ())
    }

    /// `FCALL fabric_workflow_step`: records part `part` of step `step` as `ok` (`value` the
    /// reply payload) or `failed` (`value` a [`StepFailure`]), and says what comes next.
    pub(crate) async fn workflow_step(
        &self,
        id: &WorkflowId,
        step: usize,
        part: usize,
        ok: bool,
        value: &str,
    ) -> Result<Next> {
        let key = id.key();
        let mut cmd = crate::broker::functions::fcall("fabric_workflow_step", &[&key]);
        cmd.arg(step)
            .arg(part)
            .arg(if ok { "ok" } else { "failed" })
            .arg(value);
        let reply: Vec<redis::Value> = self
            .broker()
            .call(&cmd, "FCALL fabric_workflow_step", &key)
            .await?;
        parse_next(&reply)
    }

    /// Clears the workflow's "final reply pending" mark once the reply is written.
    pub(crate) async fn workflow_replied(&self, id: &WorkflowId) -> Result<()> {
        let key = id.key();
        let _: i64 = redis::cmd("HDEL")
            .arg(&key)
            .arg("reply")
            .query_async(&mut self.broker().conn())
            .await
            .map_err(|e| Error::redis("HDEL", &key, e))?;
        Ok(())
    }
}

/// The failure of a part whose message could not be sent.
pub(crate) fn send_failure(def: &Definition, step: usize, part: usize, e: &Error) -> Value {
    let s = def.steps.get(step).and_then(|p| p.get(part));
    json!({
        "status": "failed",
        "step": step,
        "part": part,
        "to_agent": s.map(|s| s.to.as_str()).unwrap_or_default(),
        "message_type": s.map(|s| s.message_type.as_str()).unwrap_or_default(),
        "reason": "send_failed",
        "error": e.to_string(),
        "attempts": 0,
        "message_id": "",
    })
}

fn json_of(v: Option<&redis::Value>, what: &str) -> Result<Value> {
    let text = v.and_then(wire::as_string).unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| {
        Error::protocol(
            "FCALL fabric_workflow_step",
            format!("{what} is not JSON ({e}): {text:.200}"),
        )
    })
}

fn parse_next(reply: &[redis::Value]) -> Result<Next> {
    let word = reply.first().and_then(wire::as_string).unwrap_or_default();
    match word.as_str() {
        "missing" => Ok(Next::Missing),
        "wait" | "done" => Ok(Next::Nothing),
        "next" => {
            let step = reply
                .get(1)
                .and_then(wire::as_u64)
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| Error::protocol("FCALL fabric_workflow_step", "no step number"))?;
            let input = json_of(reply.get(2), "the step input")?;
            let definition = serde_json::from_value(json_of(reply.get(3), "the definition")?)
                .map_err(|e| {
                    Error::protocol(
                        "FCALL fabric_workflow_step",
                        format!("unreadable definition: {e}"),
                    )
                })?;
            Ok(Next::Send {
                step,
                input,
                definition,
            })
        }
        "finish" => Ok(Next::Finish {
            succeeded: reply.get(1).and_then(wire::as_string).as_deref() == Some("succeeded"),
            value: json_of(reply.get(2), "the result")?,
            reply_to: reply.get(3).and_then(wire::as_string).unwrap_or_default(),
            from_agent: reply.get(4).and_then(wire::as_string).unwrap_or_default(),
            parts: json_of(reply.get(5), "the parts")?,
        }),
        other => Err(Error::protocol(
            "FCALL fabric_workflow_step",
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// A workflow's state from its hash.
fn status_of(id: &WorkflowId, h: &HashMap<String, String>) -> Result<WorkflowStatus> {
    let num = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok());
    let idx = |f: &str| num(f).and_then(|v| usize::try_from(v).ok()).unwrap_or(0);
    let bad = |what: String| Error::protocol("HGETALL fabric:workflow", what);
    let kind: WorkflowKind = h
        .get("kind")
        .ok_or_else(|| bad(format!("workflow {id} has no kind")))?
        .parse()?;
    let state = match h.get("status").map(String::as_str) {
        Some("running") => WorkflowState::Running,
        Some("succeeded") => WorkflowState::Succeeded,
        Some("failed") => WorkflowState::Failed,
        other => return Err(bad(format!("workflow {id} has status {other:?}"))),
    };
    let step = idx("step");
    let n = idx(&format!("parts:{step}"));
    let parts = (0..n)
        .map(|p| {
            if let Some(r) = h.get(&format!("result:{step}:{p}")) {
                PartOutcome::Succeeded {
                    result: serde_json::from_str(r).unwrap_or(Value::Null),
                }
            } else if let Some(f) = h
                .get(&format!("error:{step}:{p}"))
                .and_then(|e| serde_json::from_str::<StepFailure>(e).ok())
            {
                PartOutcome::Failed(f)
            } else {
                PartOutcome::Running
            }
        })
        .collect();
    Ok(WorkflowStatus {
        id: id.clone(),
        kind,
        state,
        step,
        steps: idx("steps"),
        parts,
        result: h.get("result").and_then(|r| serde_json::from_str(r).ok()),
        failure: h.get("error").and_then(|e| serde_json::from_str(e).ok()),
        from_agent: h.get("from_agent").cloned().unwrap_or_default(),
        reply_to: h.get("reply_to").filter(|r| !r.is_empty()).cloned(),
        created_ms: num("created_ms").unwrap_or(0),
        finished_ms: num("finished_ms"),
    })
}
