//! Durable topics in workers (`docs/protocol.md` §11): the `#[handler(topic = "...")]`
//! handlers of each served agent, matched against the registry of topics
//! (`fabric:topics`) at start and every `topic_poll_interval`; each matching topic's stream
//! `topic:<T>` is served through the agent's group (`<agent>_workers`) by a worker of its
//! own — the same loops as an inbox (acknowledge, retries, dead letters, reclaim, leases,
//! trim) — whose every entry goes to the topic handler, whatever its `message_type`.
//!
//! In secure mode (§11.5) the same, on the agent's own keys: its subscriptions in
//! `agent:<id>:topic_subscriptions`, the topics the router copied to it in
//! `agent:<id>:topics`, each served from its copy `agent:<id>:topic:<T>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Worker;
use super::config::WorkerConfig;
use super::registry::HandlerSpec;
use super::stream::StreamSpec;
use crate::__private::Registration;
use crate::broker::lock;
use crate::bus::Bus;
use crate::error::{Error, Result};
use crate::keys;

/// How often the registry of topics is read again by default.
pub(crate) const DEFAULT_TOPIC_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// One agent's topic subscriptions.
#[derive(Clone, Debug)]
pub(crate) struct TopicPlan {
    pub(crate) agent: String,
    pub(crate) group: String,
    pub(crate) consumer_prefix: String,
    /// Its topic handlers (each has `reg.topic`).
    pub(crate) handlers: Vec<HandlerSpec>,
}

/// Every served agent's topic subscriptions, and how often to look for new topics.
#[derive(Clone, Debug)]
pub(crate) struct Topics {
    pub(crate) plans: Vec<TopicPlan>,
    pub(crate) poll: Duration,
}

/// Per agent, its topic handlers: unrestricted ones and those restricted to it. Two handlers
/// with the same pattern and the same restriction are refused, naming both.
pub(crate) fn topic_handlers(
    agents: &[String],
    regs: impl Iterator<Item = &'static Registration>,
) -> Result<HashMap<String, Vec<HandlerSpec>>> {
    let mut regs: Vec<&'static Registration> = regs.filter(|r| r.topic.is_some()).collect();
    regs.sort_by_key(|r| (r.topic, r.agent, r.name, r.line));
    let mut out = HashMap::new();
    for agent in agents {
        let mut mine: Vec<HandlerSpec> = Vec::new();
        for r in regs.iter().copied() {
            if r.agent.is_some_and(|a| a != agent) {
                continue;
            }
            let pattern = r.topic.unwrap_or_default();
            keys::validate_topic_pattern(pattern)?;
            let spec = HandlerSpec { reg: r };
            if let Some(first) = mine
                .iter()
                .find(|h| h.reg.topic == r.topic && h.reg.agent == r.agent)
            {
                return Err(Error::Config(format!(
                    "two handlers for topic {pattern:?}{}: {} and {}; remove one or restrict it with `agent = \"...\"`",
                    r.agent
                        .map(|a| format!(" of agent {a:?}"))
                        .unwrap_or_default(),
                    first.location(),
                    spec.location()
                )));
            }
            mine.push(spec);
        }
        if !mine.is_empty() {
            out.insert(agent.clone(), mine);
        }
    }
    Ok(out)
}

/// The topic subscriptions of a worker, or `None` without topic handlers.
pub(crate) fn plan(plans: Vec<TopicPlan>, poll: Option<Duration>) -> Result<Option<Topics>> {
    if plans.is_empty() {
        return Ok(None);
    }
    let poll = poll.unwrap_or(DEFAULT_TOPIC_POLL_INTERVAL);
    if poll.is_zero() {
        return Err(Error::Config(
            "topic_poll_interval must be greater than zero".into(),
        ));
    }
    Ok(Some(Topics { plans, poll }))
}

/// Which of an agent's topic handlers takes `topic`: a handler restricted to the agent
/// before an unrestricted one, then an exact name before a glob, then the longer pattern,
/// then the handler's name (so the choice is the same in every process).
pub(crate) fn pick<'a>(handlers: &'a [HandlerSpec], topic: &str) -> Option<&'a HandlerSpec> {
    handlers
        .iter()
        .filter(|h| keys::topic_matches(h.reg.topic.unwrap_or_default(), topic))
        .min_by_key(|h| {
            let p = h.reg.topic.unwrap_or_default();
            (
                h.reg.agent.is_none(),
                p.contains('*'),
                std::cmp::Reverse(p.len()),
                h.reg.name,
            )
        })
}

/// The Redis server's clock, ms since the epoch (stream ids use it).
async fn server_ms(bus: &Bus) -> Result<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut bus.broker().conn())
        .await
        .map_err(|e| Error::redis("TIME", "", e))?;
    Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
}

/// Where durable topics live for `agent`: the shared keys of direct mode, the agent's own
/// in secure mode.
struct Where<'a> {
    secure: bool,
    agent: &'a str,
}

impl Where<'_> {
    fn of<'a>(bus: &Bus, agent: &'a str) -> Where<'a> {
        Where {
            secure: bus.mode() == crate::bus::Mode::Secure,
            agent,
        }
    }

    fn subscriptions(&self) -> String {
        if self.secure {
            keys::agent_topic_subscriptions(self.agent)
        } else {
            keys::TOPIC_SUBSCRIPTIONS.to_owned()
        }
    }

    fn registry(&self) -> String {
        if self.secure {
            keys::agent_topics(self.agent)
        } else {
            keys::TOPICS_REGISTRY.to_owned()
        }
    }

    fn stream(&self, topic: &str) -> String {
        if self.secure {
            keys::agent_topic_stream(self.agent, topic)
        } else {
            keys::topic_stream(topic)
        }
    }

    /// Where a new group starts: after the subscription was first seen on the shared
    /// stream; at the start of the agent's own copy (the router copies only what was
    /// published for it).
    fn group_start(&self, since_ms: u64) -> String {
        if self.secure {
            "0".to_owned()
        } else {
            group_start(since_ms)
        }
    }
}

/// When the subscription (group, pattern) was first seen, ms (server clock): recorded now
/// with `HSETNX` unless it already was, then read back.
async fn subscribed_since(bus: &Bus, at: &Where<'_>, group: &str, pattern: &str) -> Result<u64> {
    let field = keys::subscription_field(group, pattern);
    let key = at.subscriptions();
    let now = server_ms(bus).await?;
    let mut conn = bus.broker().conn();
    let (_, since): (i64, Option<String>) = redis::pipe()
        .cmd("HSETNX")
        .arg(&key)
        .arg(&field)
        .arg(now)
        .cmd("HGET")
        .arg(&key)
        .arg(&field)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("HSETNX", &key, e))?;
    Ok(since.and_then(|s| s.trim().parse().ok()).unwrap_or(now))
}

/// The id a new group on a topic stream starts after, so that it gets every entry written
/// from `since_ms` on: `<since_ms − 1>-<largest sequence>`.
pub(crate) fn group_start(since_ms: u64) -> String {
    format!("{}-{}", since_ms.saturating_sub(1), u64::MAX)
}

/// Before a stream is trimmed, when it is a shared topic stream (`topic:T`, direct mode):
/// creates the group of every recorded subscription matching `T` that has none on the
/// stream yet (its worker has not come to the topic yet, or is down), where its subscription
/// starts; and returns the server time read before the subscriptions, from which the trim
/// keeps every entry (a subscription recorded meanwhile starts after it). `None` for any
/// other stream. Without this, the first subscriber to handle a new topic's events trimmed
/// them before the others' groups existed (§11.3: a group gets everything published from its
/// subscription's first-seen time on).
pub(crate) async fn adopt_subscribers(bus: &Bus, stream: &str) -> Result<Option<u64>> {
    let Some(topic) = keys::topic_of_stream(stream).filter(|t| keys::topic_stream(t) == stream)
    else {
        return Ok(None);
    };
    let now = server_ms(bus).await?;
    let key = keys::TOPIC_SUBSCRIPTIONS;
    let subscriptions: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut bus.broker().conn())
        .await
        .map_err(|e| Error::redis("HGETALL", key, e))?;
    for (field, since) in &subscriptions {
        let Some((group, pattern)) = keys::subscription_of(field) else {
            continue;
        };
        let Ok(since) = since.trim().parse::<u64>() else {
            continue;
        };
        if keys::validate_group(group).is_ok() && keys::topic_matches(pattern, topic) {
            bus.broker()
                .ensure_group_from(stream, group, async || Ok(group_start(since)))
                .await?;
        }
    }
    Ok(Some(now))
}

/// The registered durable topics, sorted; names that break the rule are skipped (logged
/// once).
async fn registered_topics(
    bus: &Bus,
    registry: &str,
    skipped: &mut HashSet<String>,
) -> Result<Vec<String>> {
    let mut names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(registry)
        .query_async(&mut bus.broker().conn())
        .await
        .map_err(|e| Error::redis("SMEMBERS", registry, e))?;
    names.retain(|t| match keys::validate_durable_topic(t) {
        Ok(()) => true,
        Err(e) => {
            if skipped.insert(t.clone()) {
                warn!(topic = %t, %registry, error = %e, "ignoring a name in the registry of topics that is not a durable topic");
            }
            false
        }
    });
    names.sort();
    Ok(names)
}

/// Serves the agents' topics until `stop`: looks for matching topics now and every
/// `poll`, and runs one stream worker per (agent, topic); on `stop`, each shuts down as a
/// worker does (in-flight handlers finish, up to the shutdown timeout; `hard` stops them).
///
/// Boxed: a stream worker's `run_inner` starts no watcher of its own, but the compiler
/// cannot see that through two opaque futures.
pub(super) fn watch(
    bus: Bus,
    config: WorkerConfig,
    topics: Topics,
    slots: Option<Arc<tokio::sync::Semaphore>>,
    stop: CancellationToken,
    hard: CancellationToken,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(watch_inner(bus, config, topics, slots, stop, hard))
}

async fn watch_inner(
    bus: Bus,
    config: WorkerConfig,
    topics: Topics,
    slots: Option<Arc<tokio::sync::Semaphore>>,
    stop: CancellationToken,
    hard: CancellationToken,
) {
    // (agent, topic) served now; a stream worker that fails removes itself, to be tried again.
    let served: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    // (group, pattern) → first seen, ms.
    let mut since: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut skipped = HashSet::new();
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    let mut tick = tokio::time::interval(topics.poll.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = stop.cancelled() => break, _ = tick.tick() => {} }
        if let Err(e) = resolve(&bus, &topics, &mut since, &mut skipped, &served, |spec| {
            debug!(agent = %spec.agent, stream = %spec.stream, "serving a durable topic");
            let w = Worker {
                bus: bus.clone(),
                streams: vec![spec],
                config: config.clone(),
                topics: None,
                schedules: Vec::new(),
                observe: Default::default(),
                group: None,
                slots: slots.clone(),
            };
            let (stop, hard, served) = (stop.clone(), hard.clone(), served.clone());
            running.push(tokio::spawn(async move {
                let agent = w.streams[0].agent.clone();
                let stream = w.streams[0].stream.clone();
                if let Err(e) = w.run_inner(stop.cancelled_owned(), hard).await {
                    warn!(%agent, %stream, error = %e, "serving a durable topic failed; it is tried again at the next check");
                    let topic = keys::topic_of_stream(&stream).unwrap_or_default().to_owned();
                    lock(&served).remove(&(agent, topic));
                }
            }));
        })
        .await
        {
            warn!(error = %e, "cannot look for durable topics now; trying again at the next check");
        }
    }
    super::join_all(running).await;
}

/// One pass: records the subscriptions not recorded yet, reads the registry, and starts
/// serving every (agent, topic) that matches and is not served yet.
async fn resolve(
    bus: &Bus,
    topics: &Topics,
    since: &mut BTreeMap<(String, String), u64>,
    skipped: &mut HashSet<String>,
    served: &Mutex<HashSet<(String, String)>>,
    mut serve: impl FnMut(StreamSpec),
) -> Result<()> {
    for plan in &topics.plans {
        for h in &plan.handlers {
            let pattern = h.reg.topic.unwrap_or_default();
            let key = (plan.group.clone(), pattern.to_owned());
            if let std::collections::btree_map::Entry::Vacant(slot) = since.entry(key) {
                let ms = subscribed_since(bus, &Where::of(bus, &plan.agent), &plan.group, pattern)
                    .await?;
                info!(agent = %plan.agent, group = %plan.group, topic = pattern, since_ms = ms, "subscribed to durable topics");
                slot.insert(ms);
            }
        }
    }
    let mut registries: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for plan in &topics.plans {
        let at = Where::of(bus, &plan.agent);
        let registry = at.registry();
        if !registries.contains_key(&registry) {
            let names = registered_topics(bus, &registry, skipped).await?;
            registries.insert(registry.clone(), names);
        }
        for topic in registries.get(&registry).into_iter().flatten() {
            if lock(served).contains(&(plan.agent.clone(), topic.clone())) {
                continue;
            }
            let Some(handler) = pick(&plan.handlers, topic) else {
                continue;
            };
            let pattern = handler.reg.topic.unwrap_or_default();
            let from = since
                .get(&(plan.group.clone(), pattern.to_owned()))
                .copied()
                .unwrap_or(0);
            let stream = at.stream(topic);
            let start = at.group_start(from);
            bus.broker()
                .ensure_group_from(&stream, &plan.group, async || Ok(start))
                .await?;
            info!(agent = %plan.agent, %topic, %stream, group = %plan.group, handler = handler.reg.name, "serving durable topic");
            lock(served).insert((plan.agent.clone(), topic.clone()));
            serve(StreamSpec {
                agent: plan.agent.clone(),
                stream,
                group: plan.group.clone(),
                consumer: format!(
                    "{}-{}",
                    plan.consumer_prefix,
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
                handlers: Arc::new(BTreeMap::new()),
                catch_all: Some(handler.clone()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::__private::{HandlerFuture, Value};
    use crate::Context;

    fn shim(_ctx: Context) -> HandlerFuture {
        Box::pin(async { crate::handler::Outcome::Reply(Value::Null) })
    }

    fn reg(
        topic: &'static str,
        agent: Option<&'static str>,
        name: &'static str,
    ) -> &'static Registration {
        Box::leak(Box::new(Registration {
            message_type: "",
            topic: Some(topic),
            agent,
            name,
            file: "src/topics.rs",
            line: 3,
            max_attempts: None,
            timeout_ms: None,
            handler: shim,
            schedule: None,
            rate_limit: None,
        }))
    }

    #[test]
    fn topic_globs_match_with_star_only() {
        for (p, t) in [
            ("analytics.*", "analytics.insights"),
            ("analytics.*", "analytics."),
            ("analytics.*", "analytics.a.b"),
            ("*", "x"),
            ("*.errors", "billing.errors"),
            ("a*b*c", "a-b-x-c"),
            ("a**", "a"),
            ("exact", "exact"),
        ] {
            assert!(keys::topic_matches(p, t), "{p} ~ {t}");
        }
        for (p, t) in [
            ("analytics.*", "analytics"),
            ("analytics.*", "other.analytics.x"),
            ("exact", "exactly"),
            ("exact", "exac"),
            ("a*b*c", "a-b-x-d"),
            ("*.errors", "errors"),
        ] {
            assert!(!keys::topic_matches(p, t), "{p} !~ {t}");
        }
    }

    #[test]
    fn the_most_specific_handler_takes_a_topic() {
        let agents = vec!["percy".to_owned(), "coder".to_owned()];
        let regs = [
            reg("analytics.*", None, "all_analytics"),
            reg("analytics.insights", None, "insights"),
            reg("*", Some("percy"), "percy_everything"),
            reg("analytics.e*", None, "e_events"),
        ];
        let t = topic_handlers(&agents, regs.into_iter()).unwrap();
        let name = |agent: &str, topic: &str| pick(&t[agent], topic).map(|h| h.reg.name);
        assert_eq!(name("coder", "analytics.insights"), Some("insights"));
        assert_eq!(name("coder", "analytics.errors"), Some("e_events"));
        assert_eq!(name("coder", "analytics.x"), Some("all_analytics"));
        assert_eq!(name("coder", "billing"), None);
        // Restricted to the agent: first.
        assert_eq!(
            name("percy", "analytics.insights"),
            Some("percy_everything")
        );
    }

    #[test]
    fn two_handlers_for_one_pattern_are_refused() {
        let regs = [reg("a.*", None, "one"), reg("a.*", None, "two")];
        let e = topic_handlers(&["percy".to_owned()], regs.into_iter())
            .unwrap_err()
            .to_string();
        assert!(e.contains("two handlers for topic \"a.*\""), "{e}");
        assert!(
            e.contains("one (src/topics.rs:3) and two (src/topics.rs:3)"),
            "{e}"
        );
    }

    #[test]
    fn a_new_group_starts_at_the_subscription() {
        assert_eq!(
            group_start(1_700_000_000_000),
            "1699999999999-18446744073709551615"
        );
        assert_eq!(group_start(0), "0-18446744073709551615");
    }
}
