//! Listening to the served agents' `agent.<id>.new_message` notifications, on one Pub/Sub
//! connection per worker process:
//! - a notification with `deliver_at_ms` announces a delayed message, which may be due
//!   before what the agent's promoter is sleeping for, so it wakes the promoter;
//! - any other announces entries in the inbox: with shared reads (`reader.rs`) it wakes the
//!   inbox's reader.
//!
//! Lost notifications cost only lateness: the promoter polls (`retry_poll_interval`) and a
//! shared-read inbox is read every `read_poll_interval`. After each (re)subscription every
//! shared reader is woken once, for what was sent while no subscription was listening.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::reconnect_backoff;
use crate::bus::{Bus, Subscription};
use crate::keys;

/// What a served agent's notifications wake.
pub(super) struct Wake {
    /// The inbox's promoter (for delayed messages).
    pub(super) promoter: Arc<Notify>,
    /// The inbox's reader, when it reads on the shared connection.
    pub(super) reader: Option<Arc<Notify>>,
}

/// Wakes `wake[agent]` for every notification to `agent`, until `stop`; resubscribes with
/// backoff when the connection drops. `first`: the subscription to every served agent's
/// channel made before the readers started (what was published since is buffered in it),
/// if that succeeded.
pub(super) async fn listen(
    bus: Bus,
    wake: Vec<(String, Wake)>,
    mut first: Option<Subscription>,
    stop: CancellationToken,
) {
    let by_channel: HashMap<String, Wake> = wake
        .into_iter()
        .map(|(a, w)| (keys::new_message_channel(&a), w))
        .collect();
    let channels: Vec<&str> = by_channel.keys().map(String::as_str).collect();
    let mut backoff = reconnect_backoff();
    let mut warned = false;
    loop {
        // Made before the readers started: they read what came before it themselves.
        let before_readers = first.is_some();
        let sub = match first.take() {
            Some(sub) => Ok(sub),
            None => tokio::select! {
                _ = stop.cancelled() => return,
                s = bus.subscribe(&channels) => s,
            },
        };
        match sub {
            Ok(mut sub) => {
                backoff = reconnect_backoff();
                warned = false;
                // What was sent before this subscription listened is read now, not at the poll.
                if !before_readers {
                    for r in by_channel.values().filter_map(|w| w.reader.as_ref()) {
                        r.notify_one();
                    }
                }
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = sub.next() => ev,
                    };
                    let Some(ev) = ev else { break };
                    let Some(w) = by_channel.get(ev.topic.as_str()) else {
                        continue;
                    };
                    if ev.data.get("deliver_at_ms").is_some() {
                        w.promoter.notify_one();
                    } else if let Some(r) = &w.reader {
                        r.notify_one();
                    }
                }
                debug!("notification connection closed; subscribing again");
            }
            Err(e) => {
                if !warned {
                    warn!(error = %e, "cannot subscribe to new-message notifications: delayed messages are promoted by polling (retry_poll_interval) and inboxes read on the shared connection are read by polling (read_poll_interval), so up to that late");
                    warned = true;
                }
            }
        }
        let d = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
    }
}
