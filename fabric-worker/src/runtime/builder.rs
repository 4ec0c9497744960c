//! [`WorkerBuilder`]: settings given in code or read from the environment.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Worker;
use super::config::Settings;
use super::registry::handler_tables;
use super::stream::StreamSpec;
use crate::__private::registrations;
use crate::bus::{Bus, BusBuilder};
use crate::env::{self, Vars};
use crate::error::{Error, Result};
use crate::keys;

/// Builds a [`Worker`]: `Worker::builder("percy").from_env()?.run().await`.
///
/// Every setting has a method and an environment variable (read by
/// [`WorkerBuilder::from_env`]). A setting given with a method wins over the environment,
/// whatever the order of the calls: `.concurrency(4).from_env()?` and
/// `.from_env()?.concurrency(4)` both run 4 handlers at once, whatever
/// `FABRIC_CONCURRENCY` says.
#[derive(Debug)]
#[must_use]
pub struct WorkerBuilder {
    agents: Vec<String>,
    bus: Option<Bus>,
    explicit: Settings,
    /// Serve the agents' inboxes (default true).
    inbox: bool,
    /// Short-lived credentials for the bus the worker connects.
    credentials: Option<std::sync::Arc<dyn crate::credentials::CredentialSource>>,
    /// What `from_env` read: settings, `FABRIC_AGENTS`, and the bus's own settings.
    env: Option<(Settings, Vec<String>, BusBuilder)>,
    /// Periodic tasks registered in code.
    schedules: Vec<crate::schedule::Schedule>,
    /// Hooks added to the worker's bus (`crate::hooks`).
    hooks: Vec<(
        std::sync::Arc<dyn crate::hooks::Hook>,
        crate::hooks::HookOptions,
    )>,
}

impl WorkerBuilder {
    pub(super) fn new(agent: String) -> Self {
        WorkerBuilder {
            agents: vec![agent],
            bus: None,
            explicit: Settings::default(),
            inbox: true,
            credentials: None,
            env: None,
            schedules: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// Tell `hook` about every message this worker handles, dead-letters or sends (its
    /// handlers' sends and replies included), with the default [`HookOptions`]
    /// (2 s per call, 10,000 events queued). See [`crate::hooks`]: a failing or slow hook
    /// cannot lose or block messages.
    ///
    /// [`HookOptions`]: crate::hooks::HookOptions
    pub fn hook(self, hook: impl crate::hooks::Hook) -> Self {
        self.hook_with_options(hook, crate::hooks::HookOptions::default())
    }

    /// [`hook`](WorkerBuilder::hook) with other options.
    pub fn hook_with_options(
        mut self,
        hook: impl crate::hooks::Hook,
        options: crate::hooks::HookOptions,
    ) -> Self {
        self.hooks.push((std::sync::Arc::new(hook), options));
        self
    }

    /// Also run this periodic task (besides those declared with `#[handler(every = …)]` or
    /// `cron = …`): every period, the agent is sent one message, however many worker
    /// processes run it (see [`crate::schedule`]). Without
    /// [`Schedule::agent`](crate::schedule::Schedule::agent) it runs for every served agent
    /// with a handler for its message type.
    pub fn schedule(mut self, schedule: crate::schedule::Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Also serve `agent`'s inbox. Env: `FABRIC_AGENTS` (comma-separated, added to these).
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agents.push(agent.into());
        self
    }

    /// Redis URL; several comma-separated seed URLs mean a Redis Cluster (default
    /// `redis://127.0.0.1:6379`). Env: `REDIS_URL`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.explicit.url = Some(url.into());
        self
    }

    /// Use an existing bus connection (then the URL settings are not used). This one has no
    /// environment variable: it is a live connection, made in code.
    pub fn bus(mut self, bus: Bus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Consumer group for every served stream (default `<agent>_workers`). Env: `FABRIC_GROUP`.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.explicit.group = Some(group.into());
        self
    }

    /// Consumer name prefix (default `<hostname>-<pid>`); a random suffix keeps it unique.
    /// Env: `FABRIC_CONSUMER_NAME`.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.explicit.consumer = Some(name.into());
        self
    }

    /// Also consume each agent's results stream `agent:<agent>:results` (where replies
    /// to its tasks arrive), dispatching its entries to the same handlers (type `response`).
    /// Env: `FABRIC_CONSUME_RESULTS`.
    pub fn consume_results(mut self, on: bool) -> Self {
        self.explicit.results = Some(on);
        self
    }

    /// Log in with short-lived credentials from `source`, renewed before they expire (see
    /// [`BusBuilder::credentials`](crate::bus::BusBuilder::credentials)); ignored when a bus
    /// is given with [`bus`](WorkerBuilder::bus). Env: `FABRIC_CREDENTIALS_URL` with
    /// `FABRIC_AGENT_TOKEN_FILE`, through [`from_env`](WorkerBuilder::from_env).
    pub fn credentials(mut self, source: impl crate::credentials::CredentialSource) -> Self {
        self.credentials = Some(std::sync::Arc::new(source));
        self
    }

    /// Serve each agent's inbox (default true). `consume_inbox(false)` with
    /// `consume_results(true)` serves only the results stream: a process that sends tasks
    /// and handles their replies, and leaves the agent's inbox to its other workers.
    pub fn consume_inbox(mut self, on: bool) -> Self {
        self.inbox = on;
        self
    }

    /// What to do with a message whose `ttl_seconds` had passed when it is reached: move it
    /// to dead letters as `expired` (the default), or, with `true`, drop it (acknowledge it
    /// unhandled). Either way it is counted (`QueueStatus::expired`). Env:
    /// `FABRIC_DROP_EXPIRED`.
    pub fn drop_expired(mut self, on: bool) -> Self {
        self.explicit.drop_expired = Some(on);
        self
    }

    /// How long a starting worker waits for Redis when it is unreachable or still loading
    /// its dataset (after a restart with persistence), retrying with backoff and saying
    /// what it waits for (default 60 s; zero: exit at once). Env: `FABRIC_STARTUP_WAIT_MS`.
    /// A wrong password, a TLS failure or a missing ACL permission is not waited for.
    pub fn startup_wait(mut self, d: Duration) -> Self {
        self.explicit.startup_wait = Some(d);
        self
    }

    /// Whether to honour priorities through the inbox's lanes (default on,
    /// `FABRIC_PRIORITY_LANES`): the worker creates `agent:<id>:inbox:urgent{…}`, `:high{…}`
    /// and `:low{…}` beside the inbox, senders then put non-normal messages there, and each
    /// read takes urgent entries first (`docs/protocol.md` §5.9). Off: one FIFO inbox, the
    /// lanes are neither created nor read (a lane left by an earlier worker is still read, so
    /// nothing sent there is stranded).
    pub fn priority_lanes(mut self, on: bool) -> Self {
        self.explicit.priority_lanes = Some(on);
        self
    }

    /// Handlers running at once per served stream (default 100). Env: `FABRIC_CONCURRENCY`.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.explicit.concurrency = Some(n);
        self
    }

    /// Most entries per read (default 100). Env: `FABRIC_BATCH_SIZE`.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.explicit.batch_size = Some(n);
        self
    }

    /// How long one read blocks (default 5 s, at most 300 s). Env: `FABRIC_BLOCK_MS`.
    pub fn block(mut self, d: Duration) -> Self {
        self.explicit.block = Some(d);
        self
    }

    /// Reclaim entries whose consumer has not renewed their lease for this long (default
    /// 30 s; running handlers renew theirs every third of it). Env: `FABRIC_RECLAIM_IDLE_MS`.
    pub fn reclaim_idle(mut self, d: Duration) -> Self {
        self.explicit.reclaim_idle = Some(d);
        self
    }

    /// How often to look for entries to reclaim (default a third of the reclaim idle time).
    /// Env: `FABRIC_RECLAIM_INTERVAL_MS`.
    pub fn reclaim_interval(mut self, d: Duration) -> Self {
        self.explicit.reclaim_interval = Some(d);
        self
    }

    /// Handler attempts before dead-lettering (default 5; a handler's own `max_attempts`
    /// wins). Env: `FABRIC_MAX_ATTEMPTS`.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.explicit.max_attempts = Some(n);
        self
    }

    /// Deliveries before an entry is dead-lettered as poison (default 5).
    /// Env: `FABRIC_MAX_DELIVERIES`.
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.explicit.max_deliveries = Some(n);
        self
    }

    /// Retry backoff: the first delay, doubling per attempt with up to 100% jitter, and the
    /// longest delay, jitter included (default 1 s and 10 min).
    /// Env: `FABRIC_BACKOFF_BASE_MS`, `FABRIC_BACKOFF_MAX_MS`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.explicit.backoff_base = Some(base);
        self.explicit.backoff_max = Some(max);
        self
    }

    /// Default handler timeout (default 15 min; a handler's own `timeout` wins); `None` for
    /// none. Env: `FABRIC_HANDLER_TIMEOUT_MS` (0 = none).
    pub fn handler_timeout(mut self, d: Option<Duration>) -> Self {
        self.explicit.handler_timeout = Some(d);
        self
    }

    /// How long in-flight handlers may take to finish on shutdown (default 30 s).
    /// Env: `FABRIC_SHUTDOWN_TIMEOUT_MS`.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.explicit.shutdown_timeout = Some(d);
        self
    }

    /// How often acknowledged entries are trimmed (default 10 s). Env: `FABRIC_TRIM_INTERVAL_MS`.
    pub fn trim_interval(mut self, d: Duration) -> Self {
        self.explicit.trim_interval = Some(d);
        self
    }

    /// Longest wait between checks for due retries (default 1 s).
    /// Env: `FABRIC_RETRY_POLL_INTERVAL_MS`.
    pub fn retry_poll_interval(mut self, d: Duration) -> Self {
        self.explicit.retry_poll_interval = Some(d);
        self
    }

    /// How often the registry of durable topics (`fabric:topics`) is read again to find new
    /// topics matching the agents' `#[handler(topic = "...")]` patterns (default 2 s).
    /// Env: `FABRIC_TOPIC_POLL_INTERVAL_MS`.
    pub fn topic_poll_interval(mut self, d: Duration) -> Self {
        self.explicit.topic_poll_interval = Some(d);
        self
    }

    /// Entries larger than this (field names and values, in bytes), or with more than 64
    /// fields, are dead-lettered with reason `too_large` without being decoded (default
    /// 1 MiB). Env: `FABRIC_MAX_ENTRY_BYTES`.
    pub fn max_entry_bytes(mut self, n: usize) -> Self {
        self.explicit.max_entry_bytes = Some(n);
        self
    }

    /// A rate limit on every message of each served agent, on top of the handlers' own
    /// (`#[handler(rate_limit = "...")]`): `"10/s"` is per agent (each served agent has its
    /// own), `"openai:60/m,burst=5"` shares the named limit with every worker and handler
    /// that names it. Units `s`, `m`, `h`; see the README's "Rate limits". A malformed value
    /// is an error from [`build`](WorkerBuilder::build). Env: `FABRIC_RATE_LIMIT`.
    pub fn rate_limit(mut self, limit: impl Into<String>) -> Self {
        self.explicit.rate_limit = Some(limit.into());
        self
    }

    /// The most handlers running at once in this process, over every agent and stream it
    /// serves (default: no process-wide limit; each served stream still has its own,
    /// [`concurrency`](Self::concurrency)). Streams wait their turn for a free slot in
    /// order, so one agent with a deep backlog does not starve the others.
    /// Env: `FABRIC_MAX_IN_FLIGHT`.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.explicit.max_in_flight = Some(n);
        self
    }

    /// A process serving at most `n` inboxes (default 16) reads each on a blocking
    /// connection of its own, the lowest latency. Serving more, it keeps a bounded number of
    /// connections: it reads every inbox on its shared connection when the inbox's
    /// `agent.<id>.new_message` notification arrives (one Pub/Sub connection for all), and
    /// every [`read_poll_interval`](Self::read_poll_interval) otherwise. Zero: always so.
    /// Env: `FABRIC_BLOCKING_READERS`.
    pub fn blocking_readers(mut self, n: usize) -> Self {
        self.explicit.blocking_readers = Some(n);
        self
    }

    /// With shared reads (see [`blocking_readers`](Self::blocking_readers)), how often an
    /// idle inbox is read without a notification (default 5 s): the safety net for
    /// messages written without one (`notify(false)`, a plain `XADD`, a lost notification).
    /// Env: `FABRIC_READ_POLL_MS`.
    pub fn read_poll_interval(mut self, d: Duration) -> Self {
        self.explicit.read_poll_interval = Some(d);
        self
    }

    /// How far ahead a rate-limited message may reserve its turn (default 60 s, at most
    /// 1 h): a message whose turn is further away is parked without a reservation and asks
    /// again later. Env: `FABRIC_RATE_LIMIT_HORIZON_MS`.
    pub fn rate_limit_horizon(mut self, d: Duration) -> Self {
        self.explicit.rate_limit_horizon = Some(d);
        self
    }

    /// Serve Prometheus metrics at `addr` (e.g. `127.0.0.1:9464`; port 0 for any free
    /// port), with `/healthz` (liveness) and `/readyz` (readiness) beside `/metrics`; see
    /// [`crate::metrics`] and `docs/observability.md`. Installs a Prometheus recorder as the
    /// process's global `metrics` recorder. Needs the `prometheus` feature. An address in
    /// use is an error from [`build`](WorkerBuilder::build). Env: `FABRIC_METRICS_ADDR`.
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.explicit.metrics_addr = Some(addr);
        self
    }

    /// Record metrics through the [`metrics`](https://docs.rs/metrics) facade into the
    /// recorder the application installed (any exporter), without serving them (default
    /// off, unless a [`metrics_addr`](WorkerBuilder::metrics_addr) is set).
    pub fn metrics(mut self, on: bool) -> Self {
        self.explicit.metrics = Some(on);
        self
    }

    /// Reads the environment variable of every setting (listed on each method, and in the
    /// README) and the bus's (see [`BusBuilder::from_env`]). Settings given with a method
    /// win, before or after this call. A malformed value is an error naming the variable.
    pub fn from_env(self) -> Result<Self> {
        self.with_vars(&env::process())
    }

    pub(crate) fn with_vars<F: Fn(&str) -> Option<String>>(
        mut self,
        vars: &Vars<F>,
    ) -> Result<Self> {
        let settings = Settings::from_vars(vars)?;
        let bus = Bus::builder(String::new()).with_vars(vars)?;
        self.env = Some((settings, vars.list("FABRIC_AGENTS"), bus));
        Ok(self)
    }

    /// The settings in force: explicit ones over the environment's.
    fn settings(&self) -> Settings {
        match &self.env {
            Some((env, _, _)) => self.explicit.clone().over(env.clone()),
            None => self.explicit.clone(),
        }
    }

    /// The agents served: the builder's, then `FABRIC_AGENTS`, without repeats.
    fn agents(&self) -> Result<Vec<String>> {
        let from_env = self
            .env
            .as_ref()
            .map(|(_, a, _)| a.as_slice())
            .unwrap_or(&[]);
        let mut seen = HashSet::new();
        let agents: Vec<String> = self
            .agents
            .iter()
            .chain(from_env)
            .filter(|a| seen.insert(a.as_str()))
            .cloned()
            .collect();
        if agents.is_empty() {
            return Err(Error::Config("a worker needs at least one agent".into()));
        }
        for a in &agents {
            keys::validate_agent(a)?;
        }
        Ok(agents)
    }

    /// Connects, checks the registered handlers and returns the worker, ready to run.
    pub async fn build(self) -> Result<Worker> {
        let settings = self.settings();
        let config = settings.config()?;
        let agents = self.agents()?;
        let tables = handler_tables(&agents, registrations())?;
        let topic_handlers = super::topics::topic_handlers(&agents, registrations())?;
        let bus = match self.bus {
            Some(b) => b,
            None => {
                let url = settings
                    .url
                    .clone()
                    .unwrap_or_else(|| env::DEFAULT_REDIS_URL.to_owned());
                let mut builder = match self.env {
                    Some((_, _, bus)) => bus.with_url(url),
                    None => Bus::builder(url),
                };
                if let Some(source) = self.credentials {
                    builder = builder.credentials_shared(source);
                }
                super::startup::wait_for_redis(config.startup_wait, "connecting", || {
                    builder.clone().connect()
                })
                .await?
            }
        };
        let bus = self
            .hooks
            .into_iter()
            .fold(bus, |bus, (hook, options)| bus.with_hook_arc(hook, options));
        let prefix = settings
            .consumer
            .clone()
            .unwrap_or_else(default_consumer_prefix);
        let mut streams = Vec::new();
        let mut topic_plans = Vec::new();
        for agent in &agents {
            let group = settings
                .group
                .clone()
                .unwrap_or_else(|| keys::default_group(agent));
            let handlers = tables.get(agent).cloned().unwrap_or_default();
            if let Some(topic) = topic_handlers.get(agent) {
                topic_plans.push(super::topics::TopicPlan {
                    agent: agent.clone(),
                    group: group.clone(),
                    consumer_prefix: prefix.clone(),
                    handlers: topic.clone(),
                });
            }
            let mut served = Vec::new();
            // An agent with topic handlers only has no inbox here.
            if self.inbox && !handlers.is_empty() {
                served.push(keys::inbox(agent));
            }
            if settings.results.unwrap_or(false) {
                served.push(keys::results(agent));
            }
            for stream in served {
                streams.push(StreamSpec {
                    agent: agent.clone(),
                    stream,
                    group: group.clone(),
                    consumer: format!(
                        "{prefix}-{}",
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    ),
                    handlers: handlers.clone(),
                    catch_all: None,
                });
            }
        }
        let topics = super::topics::plan(topic_plans, settings.topic_poll_interval)?;
        let inbox_agents: Vec<String> = if self.inbox {
            agents
                .iter()
                .filter(|a| tables.get(*a).is_some_and(|t| !t.is_empty()))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let schedules = super::schedules::plan(&agents, &inbox_agents, &tables, self.schedules)?;
        let observe =
            super::observe::Observe::prepare(settings.metrics_addr, settings.metrics == Some(true))
                .await?;
        if streams.is_empty() && topics.is_none() {
            return Err(Error::invalid(
                "consume_inbox",
                "false",
                "with consume_results off too there is nothing to serve: keep the inbox, or turn consume_results on",
            ));
        }
        let slots = config
            .max_in_flight
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        Ok(Worker {
            slots,
            bus,
            streams,
            config,
            topics,
            schedules,
            observe,
            group: settings.group.clone(),
        })
    }

    /// Builds and runs until SIGTERM or SIGINT (see [`Worker::run`]).
    pub async fn run(self) -> Result<()> {
        self.build().await?.run().await
    }
}

/// `<hostname>-<pid>`, with the hostname's odd characters replaced.
/// This machine's host name, as the kernel or `HOSTNAME` says.
pub(super) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

fn default_consumer_prefix() -> String {
    let host = hostname().unwrap_or_else(|| "host".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!(
        "{}-{}",
        if host.is_empty() { "host".into() } else { host },
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::from_pairs;

    #[test]
    fn explicit_settings_win_over_the_environment_whatever_the_order() {
        let vars = from_pairs(&[
            ("REDIS_URL", "redis://from-env:1"),
            ("FABRIC_CONCURRENCY", "50"),
            ("FABRIC_BATCH_SIZE", "7"),
            ("FABRIC_AGENTS", "coder, memory"),
        ]);
        let before = Worker::builder("percy")
            .url("redis://explicit:2")
            .concurrency(3)
            .with_vars(&vars)
            .unwrap();
        let after = Worker::builder("percy")
            .with_vars(&vars)
            .unwrap()
            .url("redis://explicit:2")
            .concurrency(3);
        for b in [before, after] {
            let s = b.settings();
            assert_eq!(s.url.as_deref(), Some("redis://explicit:2"));
            let c = s.config().unwrap();
            assert_eq!(c.concurrency, 3);
            assert_eq!(c.batch_size, 7, "unset explicitly: the environment's");
            assert_eq!(b.agents().unwrap(), ["percy", "coder", "memory"]);
        }
    }

    #[test]
    fn agents_are_checked_and_deduplicated() {
        let b = Worker::builder("percy").agent("percy").agent("coder");
        assert_eq!(b.agents().unwrap(), ["percy", "coder"]);
        let e = Worker::builder("per cy").agents().unwrap_err().to_string();
        assert!(e.starts_with("invalid agent id"), "{e}");
    }
}
