//! Handling one entry: decode it, dispatch it to its handler, then reply, acknowledge,
//! retry or dead-letter it as the [`Verdict`] says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;
use tracing::{debug, error, info, warn};

use super::outcome::{Verdict, decide, run_handler};
use super::rate_limit::Gate;
use super::reply::PendingReply;
use super::stream::{Persisted, StreamState};
use crate::broker::{DeadLetterNote, DeadReason, RawEntry, dead_letter};
use crate::bus::Mode;
use crate::context::Context;
use crate::hooks::Outcome;
use crate::keys;
use crate::message::{Message, fields};

/// Why the entry is given up on, for [`StreamState::dead_letter`].
pub(super) struct GiveUp<'a> {
    pub(super) message: Option<&'a Message>,
    pub(super) reason: DeadReason,
    pub(super) error: &'a str,
    pub(super) attempts: u32,
    pub(super) deliveries: u64,
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
        // Everything but the payload: a typed handler argument is decoded from its text.
        let head = match entry.decode_head(self.bus.mode() == Mode::Secure) {
            Ok(h) => h,
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
        let message = &head.message;
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
                    message: Some(message),
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
        if message.is_expired_now() {
            return Box::pin(self.expire(&entry, message, attempt, deliveries)).await;
        }
        let handler = spec.handlers.get(&message.message_type);
        let Some(handler) = handler.or(spec.catch_all.as_ref()) else {
            if Box::pin(self.has_mcp_group()).await {
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
                    message: Some(message),
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
            Box::pin(self.rate_gate(&entry, handler)).await
        } else {
            Gate::Run
        };
        match gate {
            Gate::Run => {}
            Gate::Parked | Gate::Stopped => return false,
            Gate::Failed(error) => {
                let failed = self.limiter_failed(&entry, message, &error, max_attempts, deliveries);
                return Box::pin(failed).await;
            }
        }
        debug!(handler = handler.reg.name, "handling");
        // The context owns the message; `kept` shares it (no copy) for what follows the handler.
        let ctx = Context::new(
            self.served.clone(),
            entry.id.clone(),
            attempt,
            max_attempts,
            deliveries,
            head,
            self.bus.clone(),
        );
        let kept = ctx.clone();
        let hooked = self.hook_before(&entry, &kept, attempt, deliveries);
        // Everything but the payload, which the runtime never reads.
        let message = kept.head();
        let mt = self.type_label(&message.message_type);
        let mm = crate::metrics::started(&spec.agent, mt, &entry.id, entry.size());
        let began = mm.clock();
        let run = run_handler(
            handler.reg.handler,
            ctx,
            timeout,
            self.hard_stop.cancelled(),
        );
        let Ok(ran) = run.await else {
            warn!("handler cancelled by shutdown; the message stays pending for another worker");
            self.hook_after(hooked.as_ref(), Outcome::Stopped);
            return false;
        };
        mm.handler_ran(began);
        match decide(ran, attempt, max_attempts, &self.config) {
            Verdict::Succeeded { reply } => {
                match self.workflow_step_succeeded(message, &reply).await {
                    Persisted::Done => {}
                    Persisted::Stopped => return false,
                    Persisted::Failed(e) => {
                        let why = format!(
                            "the handler succeeded but its workflow could not be carried on: {e}"
                        );
                        let (h, tries) = (hooked.as_ref(), (attempt, deliveries));
                        Box::pin(self.succeeded_but(&entry, message, h, tries, why)).await;
                        return false;
                    }
                }
                if let Some(reply_to) = &message.reply_to {
                    let prepared = match self.prepare_reply(reply_to, message, "response", reply) {
                        Ok(p) => p,
                        Err(e) => {
                            let why = super::reply::unwritable(message, &e);
                            let (h, tries) = (hooked.as_ref(), (attempt, deliveries));
                            Box::pin(self.succeeded_but(&entry, message, h, tries, why)).await;
                            return false;
                        }
                    };
                    debug!("handled; the acker writes the reply, then acknowledges");
                    return self.queue_reply(PendingReply {
                        prepared,
                        entry,
                        request: kept,
                        hooked,
                        attempt,
                        deliveries,
                        metrics: mm,
                    });
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
    pub(super) fn dead_letter<'a>(
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
}
