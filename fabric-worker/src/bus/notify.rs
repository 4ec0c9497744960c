//! Coalesced new-message notifications: while one send's `PUBLISH agent.<to>.new_message`
//! is in flight, concurrent sends to the same agent publish nothing of their own; once it is
//! answered, one more notification covers them all (`"count"`, naming the last message).
//!
//! A `send` from many tasks at once paid a `PUBLISH` per message: a second command in each
//! pipeline, its notification built and its reply read, and as much work again for Redis —
//! a tenth of the time of a `send` (`fabric-bench`, `send` from 64 tasks). A reader needs one
//! wake-up for all the messages that arrived meanwhile, as `send_batch` always did.
//!
//! The rule that keeps every message woken for: a send that skipped its notification
//! registers its message as owed *after* its entry is written, and the owed notification is
//! published only after that (by the send whose `PUBLISH` was in flight, once it is
//! answered, or by the registering send itself when none is in flight any more; both under
//! one lock). A send cancelled midway still registers its messages: a notification for an
//! entry that was not written is harmless (the reader finds nothing new), a missing one is
//! not (the entry would wait for the reader's slow poll).

use std::collections::HashMap;
use std::sync::Mutex;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::Bus;
use crate::broker::lock;
use crate::keys;
use crate::message::Message;

/// Per recipient with a notification in flight: the notification owed for what was
/// written for it since (`None`: nothing yet).
#[derive(Default)]
pub(super) struct Notifier {
    in_flight: Mutex<HashMap<String, Option<Note<String>>>>,
}

/// A `new_message` notification (docs/protocol.md §4.1) for `count` messages, naming the
/// last: borrowed from the message when published at once, owned while owed. Written
/// straight from its fields (building a `serde_json::Value` first cost a tenth of a `send`),
/// in the order the protocol's examples and earlier versions wrote them: by name.
#[derive(serde::Serialize)]
struct Note<S> {
    /// `"count"` only when more than one.
    #[serde(skip_serializing_if = "alone")]
    count: usize,
    /// A scheduled message: it wakes the recipient's promoter, no message is in the inbox yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at_ms: Option<u64>,
    from: S,
    message_id: S,
    priority: u8,
    #[serde(rename = "type")]
    kind: S,
}

fn alone(count: &usize) -> bool {
    *count <= 1
}

impl<'a> Note<&'a str> {
    fn of(m: &'a Message, count: usize) -> Self {
        Note {
            count,
            deliver_at_ms: m.deliver_at_ms,
            from: &m.from_agent,
            message_id: &m.id,
            priority: m.priority.as_u8(),
            kind: &m.message_type,
        }
    }

    fn to_owned(&self) -> Note<String> {
        Note {
            count: self.count,
            deliver_at_ms: self.deliver_at_ms,
            from: self.from.to_owned(),
            message_id: self.message_id.to_owned(),
            priority: self.priority,
            kind: self.kind.to_owned(),
        }
    }
}

impl<S: serde::Serialize> Note<S> {
    fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The text of the notification for `count` messages, the last `m`.
pub(crate) fn note_text(m: &Message, count: usize) -> String {
    Note::of(m, count).text()
}

/// `PUBLISH`es `note` on `channel`, the channel of the agent whose inbox is `inbox`; in a
/// cluster on the primary that holds that inbox (redis-rs would route it by the channel's
/// slot, whose primary may be the one that just failed; a `PUBLISH` reaches the whole
/// cluster from any node). A refusal is logged, never an error: the messages are queued.
pub(super) async fn publish(bus: &Bus, inbox: &str, channel: &str, note: &str) {
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(channel).arg(note);
    let sent = if bus.is_cluster() {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            crate::broker::conn::slot(inbox),
            SlotAddr::Master,
        )));
        bus.conn().route(cmd, route).await.map(drop)
    } else {
        cmd.query_async::<()>(&mut bus.conn()).await
    };
    if let Err(e) = sent {
        super::send::log_unpublished(channel, &e);
    }
}

/// What one send claimed: the recipients whose notification it publishes in its own
/// pipeline, and the messages it owes a notification for. Settled when dropped, whether
/// the send finished or was cancelled.
pub(super) struct Claim {
    bus: Bus,
    /// Recipients (`to_agent`) this send publishes for.
    pub(super) publishing: Vec<String>,
    /// Per other recipient: the notification owed for this send's messages to it.
    owing: Vec<(String, Note<String>)>,
}

impl Notifier {
    /// Claims the notifications of `messages`: a recipient with none in flight is this
    /// send's to publish; the others are owed.
    pub(super) fn claim<'a>(
        &self,
        bus: &Bus,
        messages: impl Iterator<Item = &'a Message>,
    ) -> Claim {
        let mut claim = Claim {
            bus: bus.clone(),
            publishing: Vec::new(),
            owing: Vec::new(),
        };
        let mut state = lock(&self.in_flight);
        for m in messages {
            if claim.publishing.contains(&m.to_agent) {
                continue;
            }
            if let Some((_, owed)) = claim.owing.iter_mut().find(|o| o.0 == m.to_agent) {
                *owed = Note::of(m, owed.count + 1).to_owned();
            } else if state.contains_key(&m.to_agent) {
                claim
                    .owing
                    .push((m.to_agent.clone(), Note::of(m, 1).to_owned()));
            } else {
                state.insert(m.to_agent.clone(), None);
                claim.publishing.push(m.to_agent.clone());
            }
        }
        claim
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut follow_ups = Vec::new();
        {
            let mut state = lock(&self.bus.inner.notifier.in_flight);
            // Ours answered (or abandoned): what was owed meanwhile is published now.
            for to in self.publishing.drain(..) {
                if let Some(note) = take_owed(&mut state, &to) {
                    follow_ups.push((to, note));
                }
            }
            for (to, note) in self.owing.drain(..) {
                match state.get_mut(&to) {
                    // Still in flight: its sender publishes for us once it is answered.
                    Some(owed) => {
                        let count = owed.as_ref().map_or(0, |o| o.count) + note.count;
                        *owed = Some(Note { count, ..note });
                    }
                    // Answered already: nobody will; we do.
                    None => {
                        state.insert(to.clone(), None);
                        follow_ups.push((to, note));
                    }
                }
            }
        }
        if follow_ups.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime (dropped at exit): nothing can be sent; free the claims.
            let mut state = lock(&self.bus.inner.notifier.in_flight);
            for (to, _) in follow_ups {
                state.remove(&to);
            }
            return;
        };
        for (to, note) in follow_ups {
            runtime.spawn(publish_owed(self.bus.clone(), to, note));
        }
    }
}

/// Takes what is owed to `to`, keeping its notification in flight; or, nothing being owed,
/// ends it.
fn take_owed(state: &mut HashMap<String, Option<Note<String>>>, to: &str) -> Option<Note<String>> {
    let owed = state.get_mut(to)?.take();
    if owed.is_none() {
        state.remove(to);
    }
    owed
}

/// Publishes the owed notification for `to`, and again while more is owed when it is answered.
async fn publish_owed(bus: Bus, to: String, mut note: Note<String>) {
    let (inbox, channel) = (keys::inbox(&to), keys::new_message_channel(&to));
    loop {
        publish(&bus, &inbox, &channel, &note.text()).await;
        match take_owed(&mut lock(&bus.inner.notifier.in_flight), &to) {
            Some(more) => note = more,
            None => return,
        }
    }
}
