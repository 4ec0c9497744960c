//! Pausing an agent's consumption: an operator sets `<inbox>:paused{<inbox>}`
//! ([`keys::paused`](crate::keys::paused); `fabric pause`, [`Bus::pause`](crate::Bus::pause)),
//! and every worker serving the agent stops starting handlers within a second — its reader
//! reads nothing and its reclaimer takes nothing — until the key is deleted (`fabric resume`).
//! Handlers already running finish and are acknowledged; retries and delayed messages still
//! move into the inbox, where they wait.
//!
//! One watcher per worker process checks the served agents' keys every [`PAUSE_POLL`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::bus::Bus;

/// How often the watcher checks whether a served agent was paused or resumed.
pub(crate) const PAUSE_POLL: Duration = Duration::from_millis(400);

/// Whether an agent is paused, shared by its inbox, its lanes and the watcher.
pub(crate) type PauseSwitch = Arc<watch::Sender<bool>>;

/// A switch that starts "not paused".
pub(crate) fn switch() -> PauseSwitch {
    Arc::new(watch::channel(false).0)
}

/// Waits while `switch` says paused; returns false when `stop` fired first.
pub(crate) async fn wait_while_paused(switch: &PauseSwitch, stop: &CancellationToken) -> bool {
    let mut rx = switch.subscribe();
    tokio::select! {
        r = rx.wait_for(|paused| !*paused) => r.is_ok(),
        _ = stop.cancelled() => false,
    }
}

/// Resolves when `switch` turns to paused (never, if the switch is dropped).
pub(crate) async fn paused(switch: &PauseSwitch) {
    let mut rx = switch.subscribe();
    if rx.wait_for(|paused| *paused).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Checks every [`PAUSE_POLL`] whether each agent's pause key exists and flips its switch.
/// A failed check leaves the switch as it was (a worker does not pause, or resume, because
/// Redis was briefly unreachable).
pub(crate) async fn watch(bus: Bus, agents: Vec<(String, PauseSwitch)>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PAUSE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        let checks = agents.iter().map(|(agent, _)| bus.is_paused(agent));
        let states = futures::future::join_all(checks).await;
        for ((agent, switch), state) in agents.iter().zip(states) {
            match state {
                Ok(now) => {
                    let was = switch.send_replace(now);
                    if was != now {
                        if now {
                            info!(agent = %agent, "paused by an operator: no new messages are started until it is resumed");
                        } else {
                            info!(agent = %agent, "resumed: reading again");
                        }
                    }
                }
                Err(e) => {
                    debug!(agent = %agent, error = %e, "cannot check whether the agent is paused");
                }
            }
        }
    }
}
