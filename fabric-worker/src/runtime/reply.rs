//! Replies: what a task's handler returns, written to the sender's `reply_to` as a
//! `response` (or an `error` when the task is given up on), with `in_reply_to` beside the
//! envelope (docs/protocol.md §4.3).
//!
//! A handler's `response` is not written by the handler's task: it is handed to the
//! stream's acker with the entry, and the acker writes every reply it has queued in one
//! pipeline, then acknowledges the entries whose reply was written (the at-least-once rule:
//! an entry is acknowledged only once its reply is in Redis). One awaited round trip per
//! reply cost more than half of the worker's time per task (`fabric-bench`, drain of tasks).
//! Error replies and a workflow's final reply are rare and written at once
//! ([`StreamState::send_reply`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tracing::{debug, error, warn};

use super::process::GiveUp;
use super::stream::{GaveUp, Persisted, StreamState};
use crate::broker::{DeadReason, RawEntry};
use crate::bus::Mode;
use crate::context::Context;
use crate::error::Error;
use crate::hooks::{Delivery, Outcome};
use crate::keys;
use crate::message::{Message, fields, new_message_id, now_timestamp};
use crate::metrics::MessageMetrics;

/// A reply ready to be written: its `XADD`, its id (for logs), and the reply itself when
/// the worker has hooks (for `on_send`; else it is dropped where it was made, not in the
/// acker: freeing it on the acker's thread cost 3 % of a drain of tasks).
pub(crate) struct Prepared {
    cmd: redis::Cmd,
    /// The key the `XADD` writes to: `reply_to`, or in secure mode this agent's outbox.
    target: String,
    reply_id: String,
    for_hooks: Option<Message>,
}

/// A handled task whose reply the acker writes before acknowledging it.
pub(crate) struct PendingReply {
    pub(super) prepared: Prepared,
    /// The request's entry and handler context: to dead-letter it if the reply cannot be
    /// written, and for the hooks.
    pub(super) entry: RawEntry,
    pub(super) request: Context,
    pub(super) hooked: Option<Arc<Delivery>>,
    pub(super) attempt: u32,
    pub(super) deliveries: u64,
    pub(super) metrics: MessageMetrics,
}

/// What a handler task hands to its stream's acker.
pub(crate) enum Handled {
    /// An entry to acknowledge.
    Ack(String),
    /// A reply to write, then its entry to acknowledge.
    Reply(Box<PendingReply>),
}

/// What became of a batch of replies.
pub(super) enum Written {
    /// Each reply's outcome, in order (connection errors were retried until they passed).
    Each(Vec<Result<(), Error>>),
    /// None is to be acknowledged: the worker is stopping at once, or too few replicas
    /// confirmed the writes (`wait_for_replicas`). The entries stay pending and are handled
    /// again.
    Stopped,
}

impl StreamState {
    /// Builds the reply (`response` or `error`) to `request`: straight to `reply_to` in
    /// direct mode; in secure mode into this agent's outbox with `deliver_to`, for the
    /// router to deliver. It carries the handler span's trace context.
    pub(super) fn prepare_reply(
        &self,
        reply_to: &str,
        request: &Message,
        message_type: &str,
        payload: Value,
    ) -> Result<Prepared, Error> {
        let mut reply = Message {
            id: new_message_id(),
            from_agent: self.spec.agent.clone(),
            to_agent: request.from_agent.clone(),
            message_type: message_type.to_owned(),
            payload,
            timestamp: now_timestamp(),
            priority: request.priority,
            ttl_seconds: request.ttl_seconds,
            reply_to: None,
            correlation_id: request
                .correlation_id
                .clone()
                .or_else(|| Some(request.id.clone())),
            headers: Default::default(),
            sender: None,
            deliver_at_ms: None,
        };
        // The handler span's trace context (trace_context.rs).
        crate::trace_context::propagate(&mut reply.headers);
        let data = reply.to_data().inspect_err(|e| {
            error!(error = %e, "cannot encode the reply");
        })?;
        let target = match self.bus.mode() {
            Mode::Direct => reply_to.to_owned(),
            Mode::Secure => keys::outbox(&self.spec.agent),
        };
        let headers = reply.headers_json().ok().flatten();
        // Sized for its arguments at once (growing it as they were added cost reallocations).
        let secure = self.bus.mode() == Mode::Secure;
        let size = target.len()
            + data.len()
            + request.id.len()
            + headers.as_ref().map_or(0, String::len)
            + if secure { reply_to.len() } else { 0 }
            + 64;
        let mut cmd = redis::Cmd::with_capacity(11, size);
        cmd.arg("XADD")
            .arg(&target)
            .arg("*")
            .arg(fields::DATA)
            .arg(&data)
            .arg(fields::IN_REPLY_TO)
            .arg(&request.id);
        if let Some(h) = headers {
            cmd.arg(fields::HEADERS).arg(h);
        }
        if secure {
            cmd.arg(fields::DELIVER_TO).arg(reply_to);
        }
        let (reply_id, for_hooks) = if self.bus.hooks().is_empty() {
            (reply.id, None)
        } else {
            (reply.id.clone(), Some(reply))
        };
        Ok(Prepared {
            cmd,
            target,
            reply_id,
            for_hooks,
        })
    }

    /// Builds and writes a reply now (error replies, a workflow's final reply). Boxed, so
    /// that the per-message task stays small.
    pub(super) fn send_reply<'a>(
        &'a self,
        reply_to: &'a str,
        request: &'a Message,
        message_type: &'a str,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = Persisted> + Send + 'a>> {
        Box::pin(async move {
            let prepared = match self.prepare_reply(reply_to, request, message_type, payload) {
                Ok(p) => p,
                Err(e) => return Persisted::Failed(e),
            };
            let mut prepared = prepared;
            match self.write_replies(&mut [&mut prepared]).await {
                Written::Stopped => Persisted::Stopped,
                Written::Each(mut each) => match each.pop() {
                    Some(Ok(())) | None => Persisted::Done,
                    Some(Err(e)) => Persisted::Failed(e),
                },
            }
        })
    }

    /// Writes `replies`: one pipeline per target key (usually one: a sender's replies go to
    /// its results stream), with `WAIT` when the bus asks for replicas; retries connection
    /// errors with backoff. Calls the `on_sent` hooks of those written. Each reply's `XADD`
    /// is moved into the pipeline (written once; a copy per reply cost an allocation).
    pub(super) async fn write_replies(&self, replies: &mut [&mut Prepared]) -> Written {
        let mut targets: Vec<String> = Vec::new();
        for p in replies.iter() {
            if !targets.contains(&p.target) {
                targets.push(p.target.clone());
            }
        }
        let wait = self.bus.replica_wait();
        let mut each: Vec<Option<Result<(), Error>>> = replies.iter().map(|_| None).collect();
        for target in targets.iter().map(String::as_str) {
            let mut pipe = redis::Pipeline::with_capacity(replies.len() + 1);
            pipe.ignore_errors();
            let mut index = Vec::new();
            for (i, p) in replies.iter_mut().enumerate() {
                if p.target == target {
                    pipe.add_command(std::mem::take(&mut p.cmd));
                    index.push(i);
                }
            }
            if let Some(w) = wait {
                crate::bus::send::add_wait(&mut pipe, w);
            }
            let written = self
                .persist_for("sending replies", || async {
                    pipe.query_async::<Vec<redis::Value>>(&mut self.broker.conn())
                        .await
                        .map_err(|e| Error::redis("XADD", target, e))
                })
                .await;
            let mut got = match written {
                Ok(got) => got,
                Err(GaveUp::Stopped) => return Written::Stopped,
                Err(GaveUp::Failed(e)) => {
                    // The whole pipeline was refused (not one command of it).
                    let why = e.to_string();
                    for &i in &index {
                        each[i] = Some(Err(Error::protocol("XADD", why.clone())));
                    }
                    continue;
                }
            };
            if let Some(w) = wait {
                let n = crate::bus::send::replicas_acked(got.pop());
                if n < w.replicas {
                    // Not acknowledging: the requests are handled again after the reclaim
                    // idle time, rather than risk replies lost with their primary.
                    warn!(
                        reply_to = target,
                        replicas = n,
                        wanted = w.replicas,
                        "replies written, but too few replicas confirmed them (WAIT); the requests stay pending"
                    );
                    return Written::Stopped;
                }
            }
            for (&i, v) in index
                .iter()
                .zip(got.into_iter().map(Some).chain(std::iter::repeat(None)))
            {
                each[i] = Some(match v {
                    Some(redis::Value::ServerError(e)) => {
                        Err(Error::redis("XADD", target, redis::RedisError::from(e)))
                    }
                    Some(_) => Ok(()),
                    None => Err(Error::protocol("XADD", "no reply for a pipelined XADD")),
                });
            }
        }
        let each: Vec<Result<(), Error>> = each
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::protocol("XADD", "reply not written"))))
            .collect();
        for (p, r) in replies.iter().zip(&each) {
            if r.is_ok() {
                debug!(reply_to = %p.target, reply_id = %p.reply_id, "reply sent");
                if let Some(reply) = &p.for_hooks {
                    self.hook_sent(reply);
                }
            }
        }
        Written::Each(each)
    }

    /// Hands a handled task's reply to the acker, which writes it and then acknowledges
    /// the entry. True when handed over (the acker clears the in-flight mark).
    pub(super) fn queue_reply(&self, pending: PendingReply) -> bool {
        self.hand_to_acker(Handled::Reply(Box::new(pending)))
    }

    /// The handler succeeded but what must follow can never be done (its reply written to
    /// `reply_to`: a wrong key type, an ACL, …; its workflow carried on): the entry goes to
    /// dead letters as `reply_failed`, with `why`, rather than running the handler again and
    /// again.
    pub(super) async fn succeeded_but(
        &self,
        entry: &RawEntry,
        request: &Message,
        hooked: Option<&Arc<Delivery>>,
        (attempt, deliveries): (u32, u64),
        why: String,
    ) {
        let give_up = GiveUp {
            message: Some(request),
            reason: DeadReason::ReplyFailed,
            error: &why,
            attempts: attempt,
            deliveries,
        };
        self.dead_letter(entry, give_up).await;
        let (reason, error) = (DeadReason::ReplyFailed, why);
        self.hook_after(hooked, Outcome::DeadLetter { reason, error });
    }
}

/// Why a handled task is dead-lettered when its reply cannot be written.
pub(super) fn unwritable(request: &Message, e: &Error) -> String {
    let reply_to = request.reply_to.as_deref().unwrap_or_default();
    format!("the handler succeeded but its reply could not be written to {reply_to:?}: {e}")
}
