//! The worker's part in workflows (`crate::workflow`): when a handled message is a step of
//! one (its `fabric-workflow`, `fabric-step` and `fabric-part` headers), its outcome is
//! recorded with `FCALL fabric_workflow_step` and what that says is done — the next step
//! sent, or the final reply written — all before the entry is acknowledged (or
//! dead-lettered), so a crash in between redelivers the entry and the idempotent record
//! makes the redo safe.

use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::stream::{GaveUp, Persisted, StreamState};
use crate::broker::DeadReason;
use crate::bus::Mode;
use crate::message::{DEFAULT_TTL_SECONDS, Message, Priority};
use crate::workflow::bus::{Next, send_failure};
use crate::workflow::{PART_HEADER, STEP_HEADER, WORKFLOW_HEADER, WorkflowId};

/// The workflow step a message is.
#[derive(Clone, Debug)]
struct StepRef {
    id: WorkflowId,
    step: usize,
    part: usize,
}

impl StepRef {
    /// The step `m` is, if it carries the workflow headers (malformed ones are logged and
    /// ignored: the message is then handled as any other).
    fn of(m: &Message, mode: Mode) -> Option<StepRef> {
        let id = m.headers.get(WORKFLOW_HEADER)?;
        if mode == Mode::Secure {
            warn!(workflow = %id, "a workflow step in secure mode: workflows need direct mode, so it is handled as a plain message");
            return None;
        }
        let parsed = (|| {
            Some(StepRef {
                id: id.parse().ok()?,
                step: m.headers.get(STEP_HEADER)?.parse().ok()?,
                part: m.headers.get(PART_HEADER)?.parse().ok()?,
            })
        })();
        if parsed.is_none() {
            warn!(workflow = %id, "malformed workflow headers; handled as a plain message");
        }
        parsed
    }
}

impl StreamState {
    /// A step's handler succeeded with `reply`: record it and carry the workflow on.
    /// `Done` for a message that is no step.
    pub(super) async fn workflow_step_succeeded(&self, m: &Message, reply: &Value) -> Persisted {
        let Some(at) = StepRef::of(m, self.bus.mode()) else {
            return Persisted::Done;
        };
        // Boxed: the per-message task stays small for the messages that are no step.
        Box::pin(self.carry_on(at, true, reply.to_string())).await
    }

    /// A step is being dead-lettered: the workflow fails with its reason (recorded before
    /// the dead letter, so a crash in between cannot lose it). `Done` for a message that is
    /// no step.
    pub(super) async fn workflow_step_failed(
        &self,
        m: &Message,
        reason: &DeadReason,
        error: &str,
        attempts: u32,
    ) -> Persisted {
        let Some(at) = StepRef::of(m, self.bus.mode()) else {
            return Persisted::Done;
        };
        let failure = json!({
            "status": "failed",
            "step": at.step,
            "part": at.part,
            "to_agent": m.to_agent,
            "message_type": m.message_type,
            "reason": reason,
            "error": error,
            "attempts": attempts,
            "message_id": m.id,
        });
        self.carry_on(at, false, failure.to_string()).await
    }

    /// Records the outcome of `at`, then does what the workflow needs next; a part whose
    /// message cannot be sent is recorded as failed in turn.
    async fn carry_on(&self, at: StepRef, ok: bool, value: String) -> Persisted {
        let mut todo = vec![(at, ok, value)];
        while let Some((at, ok, value)) = todo.pop() {
            let recorded = self
                .persist_for("recording a workflow step", || {
                    self.bus.workflow_step(&at.id, at.step, at.part, ok, &value)
                })
                .await;
            let next = match recorded {
                Ok(next) => next,
                Err(GaveUp::Stopped) => return Persisted::Stopped,
                Err(GaveUp::Failed(e)) => return Persisted::Failed(e),
            };
            match next {
                Next::Missing => {
                    warn!(workflow = %at.id, step = at.step, "step of a workflow Redis no longer has (forgotten after its keep_for?); nothing to carry on");
                }
                Next::Nothing => {}
                Next::Send {
                    step,
                    input,
                    definition,
                } => {
                    let window = self.keep_for(&at.id).await;
                    let parts = definition.steps.get(step).map_or(0, Vec::len);
                    for part in 0..parts {
                        let sent = self
                            .persist("sending a workflow step", || {
                                self.bus.send_workflow_part(
                                    &at.id,
                                    &definition,
                                    step,
                                    part,
                                    Some(&input),
                                    &self.spec.agent,
                                    window,
                                )
                            })
                            .await;
                        match sent {
                            Persisted::Done => {}
                            stopped @ Persisted::Stopped => return stopped,
                            Persisted::Failed(e) => {
                                warn!(workflow = %at.id, step, part, error = %e, "workflow step cannot be sent; the workflow fails");
                                let f = send_failure(&definition, step, part, &e);
                                let at = StepRef {
                                    id: at.id.clone(),
                                    step,
                                    part,
                                };
                                todo.push((at, false, f.to_string()));
                            }
                        }
                    }
                    debug!(workflow = %at.id, step, "next workflow step sent");
                }
                Next::Finish {
                    succeeded,
                    value,
                    reply_to,
                    from_agent,
                    parts,
                } => {
                    let r = self
                        .finish(&at.id, succeeded, value, &reply_to, &from_agent, parts)
                        .await;
                    if !r.done() {
                        return r;
                    }
                }
            }
        }
        Persisted::Done
    }

    /// The workflow's keep time (the idempotency window of its step sends).
    async fn keep_for(&self, id: &WorkflowId) -> std::time::Duration {
        let ms: Option<u64> = redis::cmd("HGET")
            .arg(id.key())
            .arg("keep_ms")
            .query_async(&mut self.broker.conn())
            .await
            .ok()
            .flatten();
        ms.filter(|ms| *ms > 0).map_or(
            crate::workflow::DEFAULT_KEEP_FOR,
            std::time::Duration::from_millis,
        )
    }

    /// Writes the final reply (a `response` with the result, or an `error` naming the
    /// failed step) to the workflow's `reply_to`, then clears its pending mark.
    async fn finish(
        &self,
        id: &WorkflowId,
        succeeded: bool,
        value: Value,
        reply_to: &str,
        from_agent: &str,
        parts: Value,
    ) -> Persisted {
        info!(workflow = %id, succeeded, "workflow finished");
        let (message_type, payload) = if succeeded {
            let payload = match value {
                Value::Object(_) => value,
                other => json!({ "result": other }),
            };
            ("response", payload)
        } else {
            let text = serde_json::from_value::<crate::workflow::StepFailure>(value.clone())
                .map_or_else(|_| value.to_string(), |f| f.to_string());
            let mut payload = json!({
                "error": format!("workflow {id} failed: {text}"),
                "workflow_id": id.as_str(),
                "parts": parts,
            });
            if let (Value::Object(p), Value::Object(f)) = (&mut payload, &value) {
                for k in [
                    "reason",
                    "step",
                    "part",
                    "to_agent",
                    "message_type",
                    "attempts",
                    "message_id",
                ] {
                    if let Some(v) = f.get(k) {
                        p.insert(k.to_owned(), v.clone());
                    }
                }
            }
            ("error", payload)
        };
        // The reply answers the workflow: in_reply_to and correlation_id are its id.
        let request = Message {
            id: id.as_str().to_owned(),
            from_agent: from_agent.to_owned(),
            to_agent: self.spec.agent.clone(),
            message_type: "workflow".into(),
            payload: Value::Null,
            timestamp: String::new(),
            priority: Priority::Normal,
            ttl_seconds: DEFAULT_TTL_SECONDS,
            reply_to: Some(reply_to.to_owned()),
            correlation_id: Some(id.as_str().to_owned()),
            headers: Default::default(),
            sender: None,
            deliver_at_ms: None,
        };
        match self
            .send_reply(reply_to, &request, message_type, payload)
            .await
        {
            Persisted::Done => {}
            Persisted::Failed(e) => {
                // The workflow's state says how it ended; only this copy of it is lost.
                warn!(workflow = %id, %reply_to, error = %e, "the workflow's final reply cannot be written; its state in Redis has the outcome");
            }
            stopped @ Persisted::Stopped => return stopped,
        }
        self.persist("clearing a workflow's reply mark", || {
            self.bus.workflow_replied(id)
        })
        .await
    }
}
