//! The queue sampler: every few seconds, the depth, pending count, lag and oldest-pending
//! age of each agent's inbox (with its priority lanes), as gauges (sampled, not counted per
//! message). Each sample is a few cheap commands per stream (`XINFO GROUPS`, the `XPENDING`
//! summary), never a walk of the stream.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::keys;

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
        for (agent, n) in super::health::in_flight() {
            super::in_flight(&agent, n);
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
            let group = group.clone().unwrap_or_else(|| keys::default_group(&agent));
            match sample(&bus, &agent, &group).await {
                Ok(s) => super::queue(&agent, s.pending + s.lag, s.pending, s.lag, s.oldest_age),
                Err(e) => {
                    debug!(%agent, error = %e, "cannot sample the agent's queue");
                    super::redis_error(&agent, "sample");
                }
            }
        }
    }
}

#[derive(Default)]
struct Sample {
    pending: u64,
    lag: u64,
    oldest_age: Duration,
}

/// The inbox's and its lanes' figures for `group`, summed.
async fn sample(bus: &Bus, agent: &str, group: &str) -> Result<Sample> {
    let inbox = keys::inbox(agent);
    let mut s = Sample::default();
    let now = crate::time::now_ms();
    for stream in std::iter::once(inbox.clone()).chain(keys::lanes(&inbox)) {
        let groups = bus.stream_groups(&stream).await?;
        let Some(g) = groups.into_iter().find(|g| g.name == group) else {
            continue;
        };
        s.pending += g.pending;
        s.lag += match g.lag {
            Some(l) => l,
            None => lag_bound(bus, &stream, &g.last_delivered_id, g.pending).await?,
        };
        if g.pending > 0 {
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(&stream)
                .arg(group)
                .query_async(&mut bus.broker().conn())
                .await
                .map_err(|e| Error::redis("XPENDING", &stream, e))?;
            let oldest = crate::broker::wire::as_array(&summary)
                .and_then(|p| p.get(1))
                .and_then(crate::broker::wire::as_string)
                .and_then(|id| {
                    id.split_once('-')
                        .and_then(|(ms, _)| ms.parse::<u64>().ok())
                });
            if let Some(ms) = oldest {
                s.oldest_age = s
                    .oldest_age
                    .max(Duration::from_millis(now.saturating_sub(ms)));
            }
        }
    }
    Ok(s)
}

/// The lag when Redis cannot tell it (entries deleted after the group's position): 0 when
/// the group has read up to the last entry, else the stream's length less the pending
/// entries (an upper bound: handled entries not trimmed yet count too).
async fn lag_bound(bus: &Bus, stream: &str, last_delivered: &str, pending: u64) -> Result<u64> {
    let mut conn = bus.broker().conn();
    let (last, len): (redis::Value, u64) = redis::pipe()
        .cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .xlen(stream)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("XREVRANGE", stream, e))?;
    let last_id = crate::broker::wire::parse_entries(&last)?
        .pop()
        .map(|e| e.id);
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    match last_id {
        None => Ok(0),
        Some(id) if parse(&id) <= parse(last_delivered) => Ok(0),
        Some(_) => Ok(len.saturating_sub(pending)),
    }
}
