//! Listening to the served agents' `agent.<id>.new_message` notifications, on one Pub/Sub
//! connection per worker process: a notification with `deliver_at_ms` announces a delayed
//! message, which may be due before what the agent's promoter is sleeping for, so it wakes
//! the promoter. Lost notifications cost only lateness: the promoter also polls
//! (`retry_poll_interval`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::reconnect_backoff;
use crate::bus::Bus;
use crate::keys;

/// Wakes `wake[agent]` for every notification announcing a delayed message to `agent`,
/// until `stop`; resubscribes with backoff when the connection drops.
pub(super) async fn listen(bus: Bus, wake: Vec<(String, Arc<Notify>)>, stop: CancellationToken) {
    let channels: Vec<String> = wake
        .iter()
        .map(|(a, _)| keys::new_message_channel(a))
        .collect();
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut backoff = reconnect_backoff();
    let mut warned = false;
    loop {
        let sub = tokio::select! {
            _ = stop.cancelled() => return,
            s = bus.subscribe(&refs) => s,
        };
        match sub {
            Ok(mut sub) => {
                backoff = reconnect_backoff();
                loop {
                    let ev = tokio::select! {
                        _ = stop.cancelled() => return,
                        ev = sub.next() => ev,
                    };
                    let Some(ev) = ev else { break };
                    if ev.data.get("deliver_at_ms").is_none() {
                        continue;
                    }
                    if let Some((_, n)) = wake
                        .iter()
                        .find(|(a, _)| keys::new_message_channel(a) == ev.topic)
                    {
                        n.notify_one();
                    }
                }
                debug!("notification connection closed; subscribing again");
            }
            Err(e) => {
                if !warned {
                    warn!(error = %e, "cannot subscribe to new-message notifications: delayed messages are promoted by polling (retry_poll_interval), so up to that late");
                    warned = true;
                }
            }
        }
        let d = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
    }
}
