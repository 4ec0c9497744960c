//! Durable topics in secure mode (`docs/protocol.md` §11.5): an event an agent writes into
//! its outbox with the field `topic` is copied, through `fabric_forward` (so each copy is
//! made once), into the own stream `agent:<id>:topic:<topic>` of every agent subscribed to
//! a matching pattern — found in the agents' own `agent:<id>:topic_subscriptions`, re-read
//! at most every scan interval. No agent can touch another's copy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::policy::{Delivery, Rejection};
use crate::broker::{Broker, lock};
use crate::error::{Error, Result};
use crate::keys;

/// (agent, pattern) of every subscription.
type List = Arc<Vec<(String, String)>>;

/// Every (agent, pattern) subscription, with when it was read.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    cache: Mutex<Option<(Instant, List)>>,
}

impl Subscriptions {
    /// The subscriptions, re-read when older than `every`.
    pub(crate) async fn get(&self, broker: &Broker, every: Duration) -> Result<List> {
        if let Some((at, subs)) = lock(&self.cache).as_ref()
            && at.elapsed() < every
        {
            return Ok(subs.clone());
        }
        let subs = Arc::new(read(broker).await?);
        *lock(&self.cache) = Some((Instant::now(), subs.clone()));
        Ok(subs)
    }
}

/// `SCAN … MATCH agent:*:topic_subscriptions TYPE hash`, then each one's fields
/// (`<group>/<pattern>`).
async fn read(broker: &Broker) -> Result<Vec<(String, String)>> {
    let found = broker
        .scan(&keys::agent_topic_subscriptions("*"), "hash", 1_000_000)
        .await?;
    let mut out = Vec::new();
    for key in found {
        let Some(agent) = keys::topic_subscriptions_owner(&key) else {
            continue;
        };
        if keys::validate_agent(agent).is_err() {
            continue;
        }
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(&key)
            .query_async(&mut broker.conn())
            .await
            .map_err(|e| Error::redis("HKEYS", &key, e))?;
        for f in fields {
            if let Some((_, pattern)) = keys::subscription_of(&f) {
                out.push((agent.to_owned(), pattern.to_owned()));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One copy of each topic event per subscribed agent (each agent once, whatever the number
/// of its matching patterns), with the batch index of the event.
pub(crate) fn fan_out(
    decisions: &[std::result::Result<Delivery, Rejection>],
    subs: &[(String, String)],
) -> Vec<(usize, Delivery)> {
    let mut out = Vec::new();
    for (i, d) in decisions.iter().enumerate() {
        let Ok(d) = d else { continue };
        let Some(topic) = &d.topic else { continue };
        let mut agents: Vec<&str> = subs
            .iter()
            .filter(|(_, p)| keys::topic_matches(p, topic))
            .map(|(a, _)| a.as_str())
            .collect();
        agents.dedup();
        for agent in agents {
            let mut copy = d.clone();
            copy.target = keys::agent_topic_stream(agent, topic);
            out.push((i, copy));
        }
    }
    out
}

/// After the copies are made: each subscriber's registry of topics (`SADD
/// agent:<id>:topics <topic>`) and the copy's retention (`XTRIM … MAXLEN ~`).
pub(crate) fn after_copies(pipe: &mut redis::Pipeline, copies: &[(usize, Delivery)]) {
    let mut seen: Vec<&str> = Vec::new();
    for (_, d) in copies {
        if seen.contains(&d.target.as_str()) {
            continue;
        }
        seen.push(&d.target);
        let (Some(topic), Some(agent)) = (&d.topic, owner(&d.target)) else {
            continue;
        };
        pipe.cmd("SADD").arg(keys::agent_topics(agent)).arg(topic);
        pipe.cmd("XTRIM")
            .arg(&d.target)
            .arg("MAXLEN")
            .arg("~")
            .arg(crate::bus::DEFAULT_TOPIC_RETENTION);
    }
}

/// The agent of a copy `agent:<id>:topic:<topic>`.
fn owner(copy: &str) -> Option<&str> {
    copy.strip_prefix("agent:")?.split_once(':').map(|(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_copies() {
        assert_eq!(owner("agent:percy:topic:a.b"), Some("percy"));
        assert_eq!(owner("topic:a.b"), None);
    }
}
