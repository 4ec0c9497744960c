//! Telling a worker's hooks ([`crate::hooks`]) what happens to the messages it handles.
//! Each call only queues an event (nothing is awaited), and nothing is built when the worker
//! has no hooks.

use std::sync::Arc;

use super::stream::StreamState;
use crate::broker::{DeadReason, RawEntry};
use crate::context::Context;
use crate::hooks::{DeadLettered, Delivery, Outcome};
use crate::message::Message;

impl StreamState {
    /// The handler for `message` is about to run: `before_handle`. Returns what
    /// [`hook_after`](StreamState::hook_after) needs (`None` without hooks).
    pub(super) fn hook_before(
        &self,
        entry: &RawEntry,
        ctx: &Context,
        attempt: u32,
        deliveries: u64,
    ) -> Option<Arc<Delivery>> {
        let hooks = self.bus.hooks();
        if hooks.is_empty() {
            return None;
        }
        let d = Arc::new(Delivery {
            agent: self.spec.agent.clone(),
            stream: self.spec.stream.clone(),
            stream_id: entry.id.clone(),
            message: Arc::new(ctx.message().clone()),
            attempt,
            delivery_count: deliveries,
            started_at: std::time::SystemTime::now(),
        });
        hooks.before(&d);
        Some(d)
    }

    /// The handler's run ended with `outcome`: `after_handle`.
    pub(super) fn hook_after(&self, delivery: Option<&Arc<Delivery>>, outcome: Outcome) {
        if let Some(d) = delivery {
            self.bus.hooks().after(d, outcome);
        }
    }

    /// The entry was moved to dead letters: `on_dead_letter`.
    pub(super) fn hook_dead(
        &self,
        entry: &RawEntry,
        message: Option<&Message>,
        reason: &DeadReason,
        error: &str,
        attempts: u32,
    ) {
        let hooks = self.bus.hooks();
        if hooks.is_empty() {
            return;
        }
        hooks.dead(DeadLettered {
            agent: self.spec.agent.clone(),
            stream: self.spec.stream.clone(),
            stream_id: entry.id.clone(),
            // The runtime's copy may lack its payload (a worker decodes it only for a
            // handler): the hooks get the whole message, decoded again from the entry.
            message: message.map(|m| {
                let stamped = self.bus.mode() == crate::bus::Mode::Secure;
                Arc::new(entry.decode_as(stamped).unwrap_or_else(|_| m.clone()))
            }),
            reason: reason.clone(),
            error: error.to_owned(),
            attempts,
        });
    }

    /// A reply was written: `on_send`.
    pub(super) fn hook_sent(&self, reply: &Message) {
        let hooks = self.bus.hooks();
        if !hooks.is_empty() {
            hooks.sent(crate::hooks::sent_event(reply, ""));
        }
    }
}
