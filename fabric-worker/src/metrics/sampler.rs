//! The queue sampler: every few seconds, the depth, pending count, lag and oldest-pending
//! age of each agent's inbox, as gauges (sampled, not counted per message).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::bus::Bus;

/// Samples the queues of `agents` (or, with `None`, of every agent that has an inbox, found
/// again at each sample) every `every`, for consumer group `group` (default
/// `<agent>_workers`), into the gauges `fabric_queue_*`, until `stop` is cancelled.
/// Records nothing unless metrics are [enabled](super::enabled). A failed sample is logged
/// at debug level and counted in `fabric_redis_errors_total` (operation `sample`).
pub async fn sample_queues(
    bus: Bus,
    agents: Option<Vec<String>>,
    group: Option<String>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        if !super::enabled() {
            continue;
        }
        let list = match &agents {
            Some(a) => a.clone(),
            None => match bus.agents().await {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "cannot list the agents to sample their queues");
                    super::redis_error("", "sample");
                    continue;
                }
            },
        };
        for agent in list {
            match bus.queue_status(&agent, group.as_deref()).await {
                Ok(q) => super::queue(
                    &agent,
                    q.queue_depth,
                    q.pending,
                    q.undelivered.unwrap_or(0),
                    Duration::from_millis(q.oldest_pending_age_ms.unwrap_or(0)),
                ),
                Err(e) => {
                    debug!(%agent, error = %e, "cannot sample the agent's queue");
                    super::redis_error(&agent, "sample");
                }
            }
        }
    }
}
