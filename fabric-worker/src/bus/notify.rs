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

/// Per recipient with a notification in flight: what was written for it since.
#[derive(Default)]
pub(super) struct Notifier {
    in_flight: Mutex<HashMap<String, Owed>>,
}

/// Messages written for one recipient while its notification was in flight.
#[derive(Default)]
struct Owed {
    count: usize,
    last: Option<Noted>,
}

/// What a notification says of the message it names.
pub(super) struct Noted {
    from: String,
    message_id: String,
    priority: u8,
    kind: String,
    deliver_at_ms: Option<u64>,
}

impl Noted {
    fn of(m: &Message) -> Noted {
        Noted {
            from: m.from_agent.clone(),
            message_id: m.id.clone(),
            priority: m.priority.as_u8(),
            kind: m.message_type.clone(),
            deliver_at_ms: m.deliver_at_ms,
        }
    }
}

/// A `new_message` notification (docs/protocol.md §4.1), written straight from the message
/// (building a `serde_json::Value` first cost a tenth of a `send`). Fields in the order the
/// protocol's examples and earlier versions wrote them: by name.
#[derive(serde::Serialize)]
struct Note<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at_ms: Option<u64>,
    from: &'a str,
    message_id: &'a str,
    priority: u8,
    #[serde(rename = "type")]
    kind: &'a str,
}

/// The text of the notification for `count` messages, the last `m` (`"count"` only when
/// more than one; `deliver_at_ms` for a scheduled message: it wakes the recipient's
/// promoter, no message is in the inbox yet).
pub(crate) fn note_text(m: &Message, count: usize) -> String {
    let note = Note {
        count: (count > 1).then_some(count),
        deliver_at_ms: m.deliver_at_ms,
        from: &m.from_agent,
        message_id: &m.id,
        priority: m.priority.as_u8(),
        kind: &m.message_type,
    };
    serde_json::to_string(&note).unwrap_or_default()
}

fn noted_text(n: &Noted, count: usize) -> String {
    let note = Note {
        count: (count > 1).then_some(count),
        deliver_at_ms: n.deliver_at_ms,
        from: &n.from,
        message_id: &n.message_id,
        priority: n.priority,
        kind: &n.kind,
    };
    serde_json::to_string(&note).unwrap_or_default()
}

/// What one send claimed: the recipients whose notification it publishes in its own
/// pipeline, and the messages it owes a notification for. Settled when dropped, whether
/// the send finished or was cancelled.
pub(super) struct Claim {
    bus: Bus,
    /// Recipients (`to_agent`) this send publishes for.
    pub(super) publishing: Vec<String>,
    /// Per other recipient: how many of this send's messages went to it, and the last one.
    owing: Vec<(String, usize, Noted)>,
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
            if let Some(o) = claim.owing.iter_mut().find(|o| o.0 == m.to_agent) {
                o.1 += 1;
                o.2 = Noted::of(m);
            } else if state.contains_key(&m.to_agent) {
                claim.owing.push((m.to_agent.clone(), 1, Noted::of(m)));
            } else {
                state.insert(m.to_agent.clone(), Owed::default());
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
            for (to, count, last) in self.owing.drain(..) {
                match state.get_mut(&to) {
                    // Still in flight: its sender publishes for us once it is answered.
                    Some(o) => {
                        o.count += count;
                        o.last = Some(last);
                    }
                    // Answered already: nobody will; we do.
                    None => {
                        state.insert(to.clone(), Owed::default());
                        follow_ups.push((to, (count, last)));
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
fn take_owed(state: &mut HashMap<String, Owed>, to: &str) -> Option<(usize, Noted)> {
    let owed = state.get_mut(to)?;
    match owed.last.take() {
        Some(last) => Some((std::mem::take(&mut owed.count), last)),
        None => {
            state.remove(to);
            None
        }
    }
}

/// Publishes the owed notification for `to`, and again while more is owed when it is answered.
async fn publish_owed(bus: Bus, to: String, mut note: (usize, Noted)) {
    loop {
        let (count, last) = &note;
        let text = noted_text(last, *count);
        let channel = keys::new_message_channel(&to);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&channel).arg(&text);
        let sent = if bus.is_cluster() {
            // On the primary of the inbox's slot, as the sends' own notifications.
            let inbox = keys::inbox(&to);
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                crate::broker::conn::slot(&inbox),
                SlotAddr::Master,
            )));
            bus.conn().route(cmd, route).await.map(drop)
        } else {
            cmd.query_async::<()>(&mut bus.conn()).await
        };
        if let Err(e) = sent {
            super::send::log_unpublished(&channel, &e);
        }
        let next = take_owed(&mut lock(&bus.inner.notifier.in_flight), &to);
        match next {
            Some(more) => note = more,
            None => return,
        }
    }
}
