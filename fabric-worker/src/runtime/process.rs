//! Handling one entry: decode it, dispatch it to its handler, then reply, acknowledge,
//! retry or dead-letter it as the [`Verdict`] says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use super::outcome::{Ran, Verdict, decide, run_handler};
use super::rate_limit::Gate;
use super::stream::{Persisted, StreamState};
use crate::broker::{DeadLetterNote, DeadReason, RawEntry, dead_letter};
use crate::bus::Mode;
use crate::context::Context;
use crate::error::Error;
use crate::hooks::Outcome;
use crate::keys;
use crate::message::{Message, fields, new_message_id, now_timestamp};

/// Why the entry is given up on, for [`StreamState::dead_letter`].
struct GiveUp<'a> {
    message: Option<&'a Message>,
    reason: DeadReason,
    error: &'a str,
    attempts: u32,
    deliveries: u64,
}

impl StreamState {
    /// Handles one entry. Returns true when its id was handed to the acker (which clears
    /// the in-flight mark after acknowledging).
    pub(crate) async fn process(self: &Arc<Self>, entry: RawEntry, deliveries: u64) -> bool {
        let spec = &self.spec;
        let span = tracing::Span::current();
        let attempt = entry.attempt();
        if let Some(why) = entry.too_large(self.config.max_entry_bytes) {
            warn!(%why, "oversized entry; moving it to dead letters");
            self.dead_letter(
                &entry,
                GiveUp {
                    message: None,
                    reason: DeadReason::TooLarge,
                    error: &why,
                    attempts: attempt,
                    deliveries,
                },
            )
            .await;
            return false;
        }
        let message = match entry.decode_as(self.bus.mode() == Mode::Secure) {
            Ok(m) => m,
            Err(reason) => {
                warn!(%reason, "invalid entry; moving it to dead letters");
                self.dead_letter(
                    &entry,
                    GiveUp {
                        message: None,
                        reason: DeadReason::InvalidEnvelope,
                        error: &reason,
                        attempts: attempt,
                        deliveries,
                    },
                )
                .await;
                return false;
            }
        };
        span.record("message_id", message.id.as_str());
        span.record("message_type", message.message_type.as_str());
        if let Some(target) = entry.get_str(fields::TARGET_GROUP)
            && target != spec.group
        {
            // A retry scheduled by another consumer group of this stream: not ours.
            return self.ack(&entry.id);
        }
        span.record("attempt", attempt);
        if deliveries > self.config.max_deliveries {
            let why = format!(
                "delivered {deliveries} times without being acknowledged (limit {}): its handler crashed or stalled the worker each time",
                self.config.max_deliveries
            );
            error!(deliveries, "poison message; moving it to dead letters");
            self.dead_letter(
                &entry,
                GiveUp {
                    message: Some(&message),
                    reason: DeadReason::DeliveryLimit,
                    error: &why,
                    attempts: attempt,
                    deliveries,
                },
            )
            .await;
            return false;
        }
        if let Some(reply_to) = &message.reply_to
            && !keys::is_reply_stream_of(&message.from_agent, reply_to)
        {
            let why = format!(
                "reply_to {reply_to:?} is not a stream of the sender {:?} (agent:<sender>:results or agent:<sender>:replies:<id>); no reply is written anywhere else",
                message.from_agent
            );
            warn!("{why}; moving it to dead letters");
            // No error reply either: there is nowhere legitimate to write it.
            self.dead_letter(
                &entry,
                GiveUp {
                    message: None,
                    reason: DeadReason::BadReplyTo,
                    error: &why,
                    attempts: attempt,
                    deliveries,
                },
            )
            .await;
            return false;
        }
        if message.is_expired_at(crate::time::now_ms()) {
            return self.expire(&entry, &message, attempt, deliveries).await;
        }
        let handler = spec.handlers.get(&message.message_type);
        let Some(handler) = handler.or(spec.catch_all.as_ref()) else {
            if self.has_mcp_group().await {
                // The agent's MCP sessions read this stream through their own group: a
                // type no handler takes is theirs (docs/protocol.md §5.8).
                debug!(
                    message_type = %message.message_type,
                    "no handler here; left to the agent's MCP sessions"
                );
                return self.ack(&entry.id);
            }
            let known: Vec<&str> = spec.handlers.keys().map(String::as_str).collect();
            let why = format!(
                "no handler for message_type {:?} in agent {:?} (handled types: {})",
                message.message_type,
                spec.agent,
                known.join(", ")
            );
            warn!("{why}; moving it to dead letters");
            self.dead_letter(
                &entry,
                GiveUp {
                    message: Some(&message),
                    reason: DeadReason::NoHandler,
                    error: &why,
                    attempts: attempt,
                    deliveries,
                },
            )
            .await;
            return false;
        };
        let (max_attempts, timeout) = handler.limits(&self.config);
        // Unlimited handlers (most) skip the gate and its boxed future.
        let limited = handler.reg.rate_limit.is_some() || self.config.rate_limit.is_some();
        let gate = if limited {
            self.rate_gate(&entry, handler).await
        } else {
            Gate::Run
        };
        match gate {
            Gate::Run => {}
            Gate::Parked | Gate::Stopped => return false,
            Gate::Failed(error) => {
                return self
                    .limiter_failed(&entry, &message, &error, max_attempts, deliveries)
                    .await;
            }
        }
        debug!(handler = handler.reg.name, "handling");
        let hooked = self.hook_before(&entry, &message, attempt, deliveries);
        let payload = message.payload.clone();
        // The context owns the message; `kept` shares it (no copy) for what follows the handler.
        let ctx = Context::new(
            self.served.clone(),
            entry.id.clone(),
            attempt,
            max_attempts,
            deliveries,
            message,
            self.bus.clone(),
        );
        let kept = ctx.clone();
        let message = kept.message();
        let mt = self.type_label(&message.message_type);
        let mm = crate::metrics::started(&spec.agent, mt, &entry.id, entry.size());
        let began = std::time::Instant::now();
        let ran: Ran = tokio::select! {
            r = run_handler(handler.reg.handler, ctx, payload, timeout) => r,
            _ = self.hard_stop.cancelled() => {
                warn!("handler cancelled by shutdown; the message stays pending for another worker");
                self.hook_after(hooked.as_ref(), Outcome::Stopped);
                return false;
            }
        };
        mm.handler_ran(began.elapsed());
        match decide(ran, attempt, max_attempts, &self.config) {
            Verdict::Succeeded { reply } => {
                match self.workflow_step_succeeded(message, &reply).await {
                    Persisted::Done => {}
                    Persisted::Stopped => return false,
                    Persisted::Failed(e) => {
                        let why = format!(
                            "the handler succeeded but its workflow could not be carried on: {e}"
                        );
                        let give_up = GiveUp {
                            message: Some(message),
                            reason: DeadReason::ReplyFailed,
                            error: &why,
                            attempts: attempt,
                            deliveries,
                        };
                        self.dead_letter(&entry, give_up).await;
                        let (reason, error) = (DeadReason::ReplyFailed, why);
                        self.hook_after(hooked.as_ref(), Outcome::DeadLetter { reason, error });
                        return false;
                    }
                }
                if let Some(reply_to) = &message.reply_to {
                    match self.send_reply(reply_to, message, "response", reply).await {
                        Persisted::Done => {}
                        // Stopping at once: the entry stays pending and is handled again.
                        Persisted::Stopped => return false,
                        // The reply can never be written there (wrong key type, ACL, …):
                        // dead-letter rather than run the handler again and again.
                        Persisted::Failed(e) => {
                            let why = format!(
                                "the handler succeeded but its reply could not be written to {reply_to:?}: {e}"
                            );
                            self.dead_letter(
                                &entry,
                                GiveUp {
                                    message: Some(message),
                                    reason: DeadReason::ReplyFailed,
                                    error: &why,
                                    attempts: attempt,
                                    deliveries,
                                },
                            )
                            .await;
                            let (reason, error) = (DeadReason::ReplyFailed, why);
                            self.hook_after(hooked.as_ref(), Outcome::DeadLetter { reason, error });
                            return false;
                        }
                    }
                }
                debug!("handled");
                mm.handled();
                let acked = self.ack(&entry.id);
                self.hook_after(hooked.as_ref(), Outcome::Ok);
                acked
            }
            Verdict::Retry {
                next_attempt,
                delay,
                error,
                ..
            } => {
                warn!(%error, next_attempt, delay_ms = crate::time::millis(delay), "attempt failed; will retry");
                mm.failed(true);
                self.schedule_retry(&entry, next_attempt, delay, &error)
                    .await;
                let retry = Outcome::Retry {
                    next_attempt,
                    delay,
                    error,
                };
                self.hook_after(hooked.as_ref(), retry);
                false
            }
            Verdict::DeadLettered { reason, error } => {
                warn!(%error, %reason, max_attempts, "moving the message to dead letters");
                mm.failed(false);
                self.dead_letter(
                    &entry,
                    GiveUp {
                        message: Some(message),
                        reason: reason.clone(),
                        error: &error,
                        attempts: attempt,
                        deliveries,
                    },
                )
                .await;
                self.hook_after(hooked.as_ref(), Outcome::DeadLetter { reason, error });
                false
            }
        }
    }

    /// Moves the entry to dead letters (retrying through connection errors) and, when the
    /// message asked for a reply, tells the sender with an `error` message.
    /// Boxed, so that the per-message task stays small (this path is rare).
    fn dead_letter<'a>(
        &'a self,
        entry: &'a RawEntry,
        give_up: GiveUp<'a>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let spec = &self.spec;
            // A workflow step fails its workflow first: a crash after would lose that.
            if let Some(m) = give_up.message {
                let (reason, error) = (&give_up.reason, give_up.error);
                let r = self
                    .workflow_step_failed(m, reason, error, give_up.attempts)
                    .await;
                if matches!(r, Persisted::Stopped) {
                    return;
                }
            }
            let note = DeadLetterNote {
                reason: &give_up.reason,
                error: give_up.error,
                attempts: give_up.attempts,
                deliveries: give_up.deliveries,
            };
            let ok = self
                .persist("dead-lettering", || {
                    dead_letter(&self.broker, &spec.stream, &spec.group, entry, &note)
                })
                .await;
            if !ok.done() {
                // Not dead-lettered: the entry stays pending and is handled again after the
                // reclaim idle time (or it was stopped by shutdown).
                return;
            }
            let mt = give_up
                .message
                .map_or("other", |m| self.type_label(&m.message_type));
            crate::metrics::dead_lettered(&spec.agent, mt, give_up.reason.as_str());
            let (message, reason) = (give_up.message, &give_up.reason);
            self.hook_dead(entry, message, reason, give_up.error, give_up.attempts);
            if let Some(m) = give_up.message
                && let Some(reply_to) = &m.reply_to
            {
                let payload = json!({
                    "error": give_up.error,
                    "reason": give_up.reason,
                    "attempts": give_up.attempts,
                    "message_id": m.id,
                });
                self.send_reply(reply_to, m, "error", payload).await;
            }
        })
    }

    /// The rate limiter could not be used (an ACL, a library that cannot be loaded): the
    /// attempt fails with that error, retried or dead-lettered like a handler's failure.
    async fn limiter_failed(
        &self,
        entry: &RawEntry,
        message: &Message,
        error: &str,
        max_attempts: u32,
        deliveries: u64,
    ) -> bool {
        let attempt = entry.attempt();
        if attempt < max_attempts {
            let next = attempt + 1;
            let delay = self.config.retry_delay(next);
            warn!(%error, next_attempt = next, "rate limiter failed; will retry");
            crate::metrics::retried(&self.spec.agent, self.type_label(&message.message_type));
            self.schedule_retry(entry, next, delay, error).await;
        } else {
            warn!(%error, max_attempts, "rate limiter failed; moving the message to dead letters");
            self.dead_letter(
                entry,
                GiveUp {
                    message: Some(message),
                    reason: DeadReason::MaxAttempts,
                    error,
                    attempts: attempt,
                    deliveries,
                },
            )
            .await;
        }
        false
    }

    /// A message whose time was up: counted, then dead-lettered as `expired` or dropped.
    async fn expire(
        self: &Arc<Self>,
        entry: &RawEntry,
        message: &Message,
        attempt: u32,
        deliveries: u64,
    ) -> bool {
        let why = format!(
            "ttl_seconds {} passed (sent {}) before a worker reached it; not handled",
            message.ttl_seconds, message.timestamp
        );
        crate::metrics::expired(&self.spec.agent, self.type_label(&message.message_type));
        if let Err(e) = crate::broker::count_expired(&self.broker, &self.spec.stream).await {
            warn!(error = %e, "could not count an expired message");
        }
        if self.config.drop_expired {
            let failed = self.workflow_step_failed(message, &DeadReason::Expired, &why, attempt);
            if matches!(failed.await, Persisted::Stopped) {
                return false;
            }
            info!(%why, "expired message dropped");
            return self.ack(&entry.id);
        }
        info!(%why, "expired message moved to dead letters");
        self.dead_letter(
            entry,
            GiveUp {
                message: Some(message),
                reason: DeadReason::Expired,
                error: &why,
                attempts: attempt,
                deliveries,
            },
        )
        .await;
        false
    }

    /// Writes a reply (`response` or `error`) to `reply_to`, with `in_reply_to` beside the
    /// envelope: straight there in direct mode; in secure mode into this agent's outbox with
    /// `deliver_to`, for the router to deliver. Boxed, so that the per-message task stays small.
    pub(super) fn send_reply<'a>(
        &'a self,
        reply_to: &'a str,
        request: &'a Message,
        message_type: &'a str,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = Persisted> + Send + 'a>> {
        Box::pin(async move {
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
            let data = match reply.to_data() {
                Ok(d) => d,
                Err(e) => {
                    error!(error = %e, "cannot encode the reply");
                    return Persisted::Failed(e);
                }
            };
            let mut cmd = redis::cmd("XADD");
            let target = match self.bus.mode() {
                Mode::Direct => reply_to.to_owned(),
                Mode::Secure => keys::outbox(&self.spec.agent),
            };
            cmd.arg(&target)
                .arg("*")
                .arg(fields::DATA)
                .arg(&data)
                .arg(fields::IN_REPLY_TO)
                .arg(&request.id);
            if let Ok(Some(h)) = reply.headers_json() {
                cmd.arg(fields::HEADERS).arg(h);
            }
            if self.bus.mode() == Mode::Secure {
                cmd.arg(fields::DELIVER_TO).arg(reply_to);
            }
            let wait = self.bus.replica_wait();
            let mut pipe = redis::pipe();
            pipe.add_command(cmd);
            if let Some(w) = wait {
                crate::bus::send::add_wait(&mut pipe, w);
            }
            // The replicas that confirmed the reply (unset: no WAIT asked for).
            let acked = std::sync::atomic::AtomicU32::new(u32::MAX);
            let ok = self
                .persist("sending the reply", || async {
                    let mut replies: Vec<redis::Value> = pipe
                        .query_async(&mut self.broker.conn())
                        .await
                        .map_err(|e| Error::redis("XADD", &target, e))?;
                    if wait.is_some() {
                        let n = crate::bus::send::replicas_acked(replies.pop());
                        acked.store(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(())
                })
                .await;
            let n = acked.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(w) = wait
                && ok.done()
                && n < w.replicas
            {
                // Not acknowledging: the request is handled again after the reclaim idle
                // time, rather than risk a reply lost with its primary.
                warn!(
                    reply_to,
                    replicas = n,
                    wanted = w.replicas,
                    "reply written, but too few replicas confirmed it (WAIT); the request stays pending"
                );
                return Persisted::Stopped;
            }
            if ok.done() {
                debug!(reply_to, reply_id = %reply.id, "reply sent");
                self.hook_sent(&reply);
            }
            ok
        })
    }
}
