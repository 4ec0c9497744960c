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

/// Keys in one `EXISTS` of the watcher.
const EXISTS_CHUNK: usize = 100;

/// Checks every [`PAUSE_POLL`] whether each agent's pause key exists and flips its switch.
/// A failed check leaves the switch as it was (a worker does not pause, or resume, because
/// Redis was briefly unreachable).
///
/// One `EXISTS` covers up to [`EXISTS_CHUNK`] agents not paused (on a cluster, redis-rs
/// splits it by slot): its answer is 0 unless one of them was just paused, and only then
/// are they asked one by one. Paused agents are asked one by one (for their resume). A
/// process serving 1,000 agents sends ~10 commands a tick, not 1,000.
pub(crate) async fn watch(bus: Bus, agents: Vec<(String, PauseSwitch)>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PAUSE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keys: Vec<String> = agents
        .iter()
        .map(|(a, _)| crate::keys::paused(&crate::keys::inbox(a)))
        .collect();
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        let (paused, running): (Vec<usize>, Vec<usize>) =
            (0..agents.len()).partition(|i| *agents[*i].1.borrow());
        let mut ask: Vec<usize> = paused;
        for chunk in running.chunks(EXISTS_CHUNK) {
            let mut cmd = redis::cmd("EXISTS");
            for i in chunk {
                cmd.arg(&keys[*i]);
            }
            match cmd.query_async::<i64>(&mut bus.broker().conn()).await {
                Ok(0) => {}
                Ok(_) => ask.extend_from_slice(chunk),
                Err(e) => debug!(error = %e, "cannot check whether the agents are paused"),
            }
        }
        let checks = ask.iter().map(|i| bus.is_paused(&agents[*i].0));
        let states = futures::future::join_all(checks).await;
        for (i, state) in ask.iter().zip(states) {
            let (agent, switch) = &agents[*i];
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
