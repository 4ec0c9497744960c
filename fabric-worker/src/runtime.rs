//! The worker runtime: one consumer-group loop per served stream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::__private::{Registration, registrations};
use crate::bus::{Bus, redis_url_from_env};
use crate::context::{Context, StreamInfo};
use crate::error::{Error, Result};
use crate::handler::{HandlerError, Outcome};
use crate::keys;
use crate::message::{Message, fields, new_message_id, now_timestamp};
use crate::wire::{self, RawEntry};

/// Backoff for reconnecting to Redis: 100 ms doubling to 5 s, with jitter, forever.
pub(crate) fn reconnect_backoff() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Tunables of a [`Worker`]. Every field has a sensible default; see [`WorkerBuilder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Handlers running at once, per served stream (default 100).
    pub concurrency: usize,
    /// Most entries read per `XREADGROUP` (default 100).
    pub batch_size: usize,
    /// How long one `XREADGROUP` blocks waiting for entries (default 5 s).
    pub block: Duration,
    /// Entries pending longer than this without a lease renewal are reclaimed from their
    /// consumer (default 30 s). Running handlers renew their lease every third of it.
    pub reclaim_idle: Duration,
    /// How often to look for entries to reclaim (default: a third of `reclaim_idle`).
    pub reclaim_interval: Option<Duration>,
    /// Handler attempts before a failing message is dead-lettered (default 5).
    pub max_attempts: u32,
    /// Deliveries of one entry (crashes, stalls) before it is dead-lettered as poison (default 5).
    pub max_deliveries: u64,
    /// First retry delay (default 1 s); doubles each attempt, with jitter.
    pub backoff_base: Duration,
    /// Longest retry delay (default 10 min).
    pub backoff_max: Duration,
    /// A handler running longer is cancelled; counts as a failed attempt (default 15 min; `None`: never).
    pub handler_timeout: Option<Duration>,
    /// On shutdown, how long in-flight handlers may take to finish (default 30 s).
    pub shutdown_timeout: Duration,
    /// How often acknowledged entries are trimmed (default 10 s).
    pub trim_interval: Duration,
    /// Longest wait between checks for due retries (default 1 s).
    pub retry_poll_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 100,
            batch_size: 100,
            block: Duration::from_secs(5),
            reclaim_idle: Duration::from_secs(30),
            reclaim_interval: None,
            max_attempts: 5,
            max_deliveries: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            handler_timeout: Some(Duration::from_secs(900)),
            shutdown_timeout: Duration::from_secs(30),
            trim_interval: Duration::from_secs(10),
            retry_poll_interval: Duration::from_secs(1),
        }
    }
}

impl WorkerConfig {
    fn lease_interval(&self) -> Duration {
        (self.reclaim_idle / 3).max(Duration::from_millis(10))
    }

    fn reclaim_every(&self) -> Duration {
        self.reclaim_interval
            .unwrap_or(self.reclaim_idle / 3)
            .max(Duration::from_millis(10))
    }

    /// The delay before attempt `next_attempt` (2 = first retry).
    pub(crate) fn retry_delay(&self, next_attempt: u32) -> Duration {
        let n = next_attempt.saturating_sub(2) as usize;
        ExponentialBuilder::default()
            .with_min_delay(self.backoff_base)
            .with_max_delay(self.backoff_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(n)
            .unwrap_or(self.backoff_max)
    }
}

/// Builds a [`Worker`]: `Worker::builder("percy").from_env()?.run().await`.
#[derive(Debug)]
#[must_use]
pub struct WorkerBuilder {
    agents: Vec<String>,
    url: Option<String>,
    bus: Option<Bus>,
    group: Option<String>,
    consumer: Option<String>,
    results: bool,
    config: WorkerConfig,
}

impl WorkerBuilder {
    /// Also serve `agent`'s inbox.
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agents.push(agent.into());
        self
    }

    /// Redis URL (default: `REDIS_URL`, else `redis://127.0.0.1:6379`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Use an existing bus connection.
    pub fn bus(mut self, bus: Bus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Consumer group for every served stream (default `<agent>_workers`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Consumer name prefix (default `<hostname>-<pid>`); a random suffix keeps it unique.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Also consume each agent's results stream `agent:<agent>:results` (where replies
    /// to its tasks arrive), dispatching its entries to the same handlers (type `response`).
    pub fn consume_results(mut self, on: bool) -> Self {
        self.results = on;
        self
    }

    /// Handlers running at once per served stream.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// Most entries per read.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// How long one read blocks.
    pub fn block(mut self, d: Duration) -> Self {
        self.config.block = d;
        self
    }

    /// Reclaim entries whose consumer has not renewed their lease for this long.
    pub fn reclaim_idle(mut self, d: Duration) -> Self {
        self.config.reclaim_idle = d;
        self
    }

    /// How often to look for entries to reclaim.
    pub fn reclaim_interval(mut self, d: Duration) -> Self {
        self.config.reclaim_interval = Some(d);
        self
    }

    /// Handler attempts before dead-lettering (per-handler `max_attempts` overrides it).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// Deliveries before an entry is dead-lettered as poison.
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.config.max_deliveries = n;
        self
    }

    /// Retry backoff: first delay and cap (exponential, factor 2, with jitter).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff_base = base;
        self.config.backoff_max = max;
        self
    }

    /// Default handler timeout (per-handler `timeout` overrides it); `None` for none.
    pub fn handler_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.handler_timeout = d;
        self
    }

    /// How long in-flight handlers may take to finish on shutdown.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.config.shutdown_timeout = d;
        self
    }

    /// How often acknowledged entries are trimmed.
    pub fn trim_interval(mut self, d: Duration) -> Self {
        self.config.trim_interval = d;
        self
    }

    /// Longest wait between checks for due retries.
    pub fn retry_poll_interval(mut self, d: Duration) -> Self {
        self.config.retry_poll_interval = d;
        self
    }

    /// Reads settings from the environment: `REDIS_URL`, `FABRIC_AGENTS` (comma-separated,
    /// added to the builder's), `FABRIC_GROUP`, `FABRIC_CONCURRENCY`, `FABRIC_BATCH_SIZE`,
    /// `FABRIC_RECLAIM_IDLE_MS`, `FABRIC_MAX_ATTEMPTS`, `FABRIC_MAX_DELIVERIES`,
    /// `FABRIC_HANDLER_TIMEOUT_MS` (0 = none), `FABRIC_SHUTDOWN_TIMEOUT_MS`,
    /// `FABRIC_BACKOFF_BASE_MS`, `FABRIC_BACKOFF_MAX_MS`. A malformed value is an error naming it.
    pub fn from_env(mut self) -> Result<Self> {
        self.url = Some(redis_url_from_env());
        if let Ok(a) = std::env::var("FABRIC_AGENTS") {
            self.agents.extend(
                a.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        if let Ok(g) = std::env::var("FABRIC_GROUP")
            && !g.is_empty()
        {
            self.group = Some(g);
        }
        let c = &mut self.config;
        if let Some(v) = env_num("FABRIC_CONCURRENCY")? {
            c.concurrency = v as usize;
        }
        if let Some(v) = env_num("FABRIC_BATCH_SIZE")? {
            c.batch_size = v as usize;
        }
        if let Some(v) = env_num("FABRIC_RECLAIM_IDLE_MS")? {
            c.reclaim_idle = Duration::from_millis(v);
        }
        if let Some(v) = env_num("FABRIC_MAX_ATTEMPTS")? {
            c.max_attempts = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = env_num("FABRIC_MAX_DELIVERIES")? {
            c.max_deliveries = v;
        }
        if let Some(v) = env_num("FABRIC_HANDLER_TIMEOUT_MS")? {
            c.handler_timeout = (v > 0).then(|| Duration::from_millis(v));
        }
        if let Some(v) = env_num("FABRIC_SHUTDOWN_TIMEOUT_MS")? {
            c.shutdown_timeout = Duration::from_millis(v);
        }
        if let Some(v) = env_num("FABRIC_BACKOFF_BASE_MS")? {
            c.backoff_base = Duration::from_millis(v);
        }
        if let Some(v) = env_num("FABRIC_BACKOFF_MAX_MS")? {
            c.backoff_max = Duration::from_millis(v);
        }
        Ok(self)
    }

    fn check(&self) -> Result<()> {
        if self.agents.is_empty() {
            return Err(Error::Config("a worker needs at least one agent".into()));
        }
        for a in &self.agents {
            keys::validate_agent(a)?;
        }
        if let Some(g) = &self.group {
            keys::validate_group(g)?;
        }
        if let Some(c) = &self.consumer {
            keys::validate_consumer(c)?;
        }
        let c = &self.config;
        let positive = |name: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Error::Config(format!("{name} must be greater than zero")))
            }
        };
        positive("concurrency", c.concurrency > 0)?;
        positive("batch_size", c.batch_size > 0)?;
        positive("max_attempts", c.max_attempts > 0)?;
        positive("max_deliveries", c.max_deliveries > 0)?;
        positive("reclaim_idle", !c.reclaim_idle.is_zero())?;
        positive("block", !c.block.is_zero())?;
        if c.block > Duration::from_secs(300) {
            return Err(Error::Config("block must be at most 300 s".into()));
        }
        if c.backoff_base > c.backoff_max {
            return Err(Error::Config(format!(
                "backoff base {:?} is larger than its max {:?}",
                c.backoff_base, c.backoff_max
            )));
        }
        Ok(())
    }

    /// Connects, checks the registered handlers and returns the worker, ready to run.
    pub async fn build(self) -> Result<Worker> {
        self.check()?;
        let mut seen = HashSet::new();
        let agents: Vec<String> = self
            .agents
            .iter()
            .filter(|a| seen.insert(a.as_str()))
            .cloned()
            .collect();
        let tables = handler_tables(&agents, registrations())?;
        let bus = match self.bus {
            Some(b) => b,
            None => Bus::connect(self.url.clone().unwrap_or_else(redis_url_from_env)).await?,
        };
        let prefix = self
            .consumer
            .clone()
            .unwrap_or_else(default_consumer_prefix);
        let mut streams = Vec::new();
        for agent in &agents {
            let group = self
                .group
                .clone()
                .unwrap_or_else(|| keys::default_group(agent));
            let handlers = tables.get(agent).cloned().unwrap_or_default();
            let mut keys_for_agent = vec![keys::inbox(agent)];
            if self.results {
                keys_for_agent.push(keys::results(agent));
            }
            for stream in keys_for_agent {
                streams.push(StreamSpec {
                    agent: agent.clone(),
                    stream,
                    group: group.clone(),
                    consumer: format!(
                        "{prefix}-{}",
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    ),
                    handlers: handlers.clone(),
                });
            }
        }
        Ok(Worker {
            bus,
            streams,
            config: self.config,
        })
    }

    /// Builds and runs until SIGTERM or SIGINT (see [`Worker::run`]).
    pub async fn run(self) -> Result<()> {
        self.build().await?.run().await
    }
}

fn env_num(name: &'static str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Error::Config(format!("{name}={v:?} is not a whole number"))),
        _ => Ok(None),
    }
}

fn default_consumer_prefix() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
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

#[derive(Clone, Debug)]
struct HandlerSpec {
    reg: &'static Registration,
}

impl HandlerSpec {
    fn location(&self) -> String {
        format!("{} ({}:{})", self.reg.name, self.reg.file, self.reg.line)
    }
}

type HandlerTable = Arc<BTreeMap<String, HandlerSpec>>;

/// Builds, per agent, the message type → handler table; rejects duplicates and empty tables.
/// A handler restricted to an agent (`agent = "..."`) wins over an unrestricted one for the
/// same message type.
fn handler_tables(
    agents: &[String],
    regs: impl Iterator<Item = &'static Registration>,
) -> Result<HashMap<String, HandlerTable>> {
    let mut regs: Vec<&'static Registration> = regs.collect();
    regs.sort_by_key(|r| (r.message_type, r.agent, r.name, r.line));
    let mut out = HashMap::new();
    for agent in agents {
        let mut table: BTreeMap<String, HandlerSpec> = BTreeMap::new();
        for specific in [true, false] {
            for r in regs
                .iter()
                .copied()
                .filter(|r| r.agent.is_some() == specific)
            {
                if r.agent.is_some_and(|a| a != agent) {
                    continue;
                }
                let spec = HandlerSpec { reg: r };
                match table.get(r.message_type) {
                    Some(existing) if existing.reg.agent.is_some() == specific => {
                        return Err(Error::DuplicateHandler {
                            message_type: r.message_type.to_owned(),
                            agent: r.agent.map(str::to_owned),
                            first: existing.location(),
                            second: spec.location(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        table.insert(r.message_type.to_owned(), spec);
                    }
                }
            }
        }
        if table.is_empty() {
            return Err(Error::NoHandlers {
                agent: agent.clone(),
            });
        }
        out.insert(agent.clone(), Arc::new(table));
    }
    Ok(out)
}

#[derive(Clone, Debug)]
struct StreamSpec {
    agent: String,
    stream: String,
    group: String,
    consumer: String,
    handlers: HandlerTable,
}

/// A worker: serves the inboxes of one or more agents until shut down.
///
/// ```no_run
/// use fabric_worker::prelude::*;
///
/// #[derive(Deserialize)]
/// struct CodeReview { task_type: String, pr_id: String }
///
/// #[derive(Serialize)]
/// struct Review { pr_id: String, approved: bool }
///
/// #[handler(message_type = "task")]
/// async fn review(ctx: Context, task: CodeReview) -> Result<Review, HandlerError> {
///     tracing::info!(from = ctx.from_agent(), kind = %task.task_type, "reviewing");
///     Ok(Review { pr_id: task.pr_id, approved: true })
/// }
///
/// #[tokio::main]
/// async fn main() -> anyhow::Result<()> {
///     Worker::builder("percy").from_env()?.run().await?; // until SIGTERM/SIGINT
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Worker {
    bus: Bus,
    streams: Vec<StreamSpec>,
    config: WorkerConfig,
}

impl Worker {
    /// A builder serving `agent`'s inbox.
    pub fn builder(agent: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            agents: vec![agent.into()],
            url: None,
            bus: None,
            group: None,
            consumer: None,
            results: false,
            config: WorkerConfig::default(),
        }
    }

    /// The bus this worker uses.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The consumer names this worker reads as (one per served stream).
    pub fn consumers(&self) -> Vec<String> {
        self.streams.iter().map(|s| s.consumer.clone()).collect()
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully: stops reading, lets
    /// in-flight handlers finish (up to the shutdown timeout), acknowledges what finished
    /// and returns. A second signal stops waiting: unfinished entries stay pending and
    /// are reclaimed by another worker.
    pub async fn run(self) -> Result<()> {
        use futures::StreamExt;
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals =
            signal_hook_tokio::Signals::new([SIGTERM, SIGINT]).map_err(|source| Error::Io {
                context: "cannot install SIGTERM/SIGINT handlers",
                source,
            })?;
        let handle = signals.handle();
        let hard = CancellationToken::new();
        let hard2 = hard.clone();
        let first = async move {
            if let Some(sig) = signals.next().await {
                info!(
                    signal = sig,
                    "signal received; shutting down gracefully (send it again to stop at once)"
                );
            }
            tokio::spawn(async move {
                if let Some(sig) = signals.next().await {
                    warn!(
                        signal = sig,
                        "second signal; not waiting for in-flight handlers"
                    );
                    hard2.cancel();
                }
            });
        };
        let r = self.run_inner(first, hard).await;
        handle.close();
        r
    }

    /// Runs until `shutdown` completes, then shuts down gracefully (see [`Worker::run`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        self.run_inner(shutdown, CancellationToken::new()).await
    }

    async fn run_inner(
        self,
        shutdown: impl Future<Output = ()> + Send,
        hard: CancellationToken,
    ) -> Result<()> {
        let stop_reading = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let acks_done = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut readers = Vec::new();
        let mut background = Vec::new();
        let mut ackers = Vec::new();
        let mut states = Vec::new();
        for spec in &self.streams {
            self.bus.ensure_group(&spec.stream, &spec.group).await?;
        }
        for spec in self.streams {
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            let info = Arc::new(StreamInfo {
                agent: spec.agent.clone(),
                stream: spec.stream.clone(),
                group: spec.group.clone(),
                consumer: spec.consumer.clone(),
            });
            let st = Arc::new(StreamState {
                spec,
                info,
                bus: self.bus.clone(),
                config: self.config.clone(),
                sem: Arc::new(Semaphore::new(self.config.concurrency)),
                in_flight: Mutex::new(HashSet::new()),
                ack_tx,
                retry_notify: Notify::new(),
                tracker: tracker.clone(),
                hard_stop: hard.clone(),
            });
            info!(
                agent = %st.spec.agent,
                stream = %st.spec.stream,
                group = %st.spec.group,
                consumer = %st.spec.consumer,
                handlers = ?st.spec.handlers.keys().collect::<Vec<_>>(),
                "serving"
            );
            ackers.push(tokio::spawn(acker(st.clone(), ack_rx, acks_done.clone())));
            readers.push(tokio::spawn(reader(st.clone(), stop_reading.clone())));
            readers.push(tokio::spawn(reclaimer(st.clone(), stop_reading.clone())));
            background.push(tokio::spawn(leaser(st.clone(), stop_background.clone())));
            background.push(tokio::spawn(promoter(st.clone(), stop_background.clone())));
            background.push(tokio::spawn(trimmer(st.clone(), stop_background.clone())));
            states.push(st);
        }
        shutdown.await;
        info!("stopping: no new reads; waiting for in-flight handlers");
        stop_reading.cancel();
        join_all(readers).await;
        tracker.close();
        let in_flight: usize = states.iter().map(|s| s.in_flight_len()).sum();
        let timeout = self.config.shutdown_timeout;
        tokio::select! {
            _ = tracker.wait() => info!("in-flight handlers finished"),
            _ = tokio::time::sleep(timeout) => {
                warn!(in_flight, timeout_ms = timeout.as_millis() as u64, "shutdown timeout: unfinished handlers are cancelled; their messages stay pending for another worker");
                hard.cancel();
            }
            _ = hard.cancelled() => {}
        }
        tracker.wait().await;
        // Every handler task is done: flush the acknowledgements.
        acks_done.cancel();
        join_all(ackers).await;
        drop(states);
        stop_background.cancel();
        join_all(background).await;
        info!("worker stopped");
        Ok(())
    }
}

async fn join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        if let Err(e) = h.await
            && e.is_panic()
        {
            error!("a worker task panicked: {e}");
        }
    }
}

struct StreamState {
    spec: StreamSpec,
    info: Arc<StreamInfo>,
    bus: Bus,
    config: WorkerConfig,
    sem: Arc<Semaphore>,
    in_flight: Mutex<HashSet<String>>,
    ack_tx: mpsc::UnboundedSender<String>,
    retry_notify: Notify,
    tracker: TaskTracker,
    hard_stop: CancellationToken,
}

impl StreamState {
    fn in_flight_len(&self) -> usize {
        self.in_flight.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn mark_in_flight(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .map(|mut s| s.insert(id.to_owned()))
            .unwrap_or(false)
    }

    fn done(&self, id: &str) {
        if let Ok(mut s) = self.in_flight.lock() {
            s.remove(id);
        }
    }

    fn in_flight_ids(&self) -> Vec<String> {
        self.in_flight
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Hands an entry to a handler task holding `permit`. `deliveries` is its delivery count.
    fn dispatch(self: &Arc<Self>, entry: RawEntry, deliveries: u64, permit: OwnedSemaphorePermit) {
        if !self.mark_in_flight(&entry.id) {
            // Already being handled here (e.g. reclaimed from ourselves): nothing to do.
            return;
        }
        let st = self.clone();
        let span = info_span!(
            "message",
            agent = %self.spec.agent,
            stream = %self.spec.stream,
            stream_id = %entry.id,
            message_id = tracing::field::Empty,
            message_type = tracing::field::Empty,
            attempt = tracing::field::Empty,
            delivery = deliveries,
        );
        self.tracker.spawn(
            async move {
                let id = entry.id.clone();
                let acked = st.process(entry, deliveries).await;
                if !acked {
                    st.done(&id);
                }
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Handles one entry. Returns true when its id was handed to the acker (which clears
    /// the in-flight mark after acknowledging).
    async fn process(self: &Arc<Self>, entry: RawEntry, deliveries: u64) -> bool {
        let spec = &self.spec;
        let span = tracing::Span::current();
        let message = match entry.decode() {
            Ok(m) => m,
            Err(reason) => {
                warn!(%reason, "invalid entry; moving it to dead letters");
                self.dead_letter(
                    &entry,
                    None,
                    "invalid_envelope",
                    &reason,
                    entry.attempt(),
                    deliveries,
                )
                .await;
                return false;
            }
        };
        span.record("message_id", message.id.as_str());
        span.record("message_type", message.message_type.as_str());
        if let Some(target) = entry.get_str(fields::TARGET_GROUP)
            && target != spec.group
        {
            // A retry scheduled by another consumer group of this stream: not ours.
            return self.ack(&entry.id);
        }
        let attempt = entry.attempt();
        span.record("attempt", attempt);
        if deliveries > self.config.max_deliveries {
            let why = format!(
                "delivered {deliveries} times without being acknowledged (limit {}): its handler crashed or stalled the worker each time",
                self.config.max_deliveries
            );
            error!(deliveries, "poison message; moving it to dead letters");
            self.dead_letter(
                &entry,
                Some(&message),
                "delivery_limit",
                &why,
                attempt,
                deliveries,
            )
            .await;
            return false;
        }
        let Some(handler) = spec.handlers.get(&message.message_type) else {
            let known: Vec<&str> = spec.handlers.keys().map(String::as_str).collect();
            let why = format!(
                "no handler for message_type {:?} in agent {:?} (handled types: {})",
                message.message_type,
                spec.agent,
                known.join(", ")
            );
            warn!("{why}; moving it to dead letters");
            self.dead_letter(
                &entry,
                Some(&message),
                "no_handler",
                &why,
                attempt,
                deliveries,
            )
            .await;
            return false;
        };
        let max_attempts = handler
            .reg
            .max_attempts
            .unwrap_or(self.config.max_attempts)
            .max(1);
        let timeout = handler
            .reg
            .timeout_ms
            .map(Duration::from_millis)
            .or(self.config.handler_timeout);
        debug!(handler = handler.reg.name, "handling");
        let payload = message.payload.clone();
        // The context owns the message; `kept` shares it (no copy) for what follows the handler.
        let ctx = Context::new(
            self.info.clone(),
            entry.id.clone(),
            attempt,
            max_attempts,
            deliveries,
            message,
            self.bus.clone(),
        );
        let kept = ctx.clone();
        let message = kept.message();
        let fut = std::panic::AssertUnwindSafe((handler.reg.handler)(ctx, payload)).catch_unwind();
        let run = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| t),
                None => Ok(fut.await),
            }
        };
        let outcome = tokio::select! {
            r = run => match r {
                Ok(Ok(o)) => o,
                Ok(Err(panic)) => Outcome::Failed(HandlerError::new(format!("handler panicked: {}", panic_text(&panic)))),
                Err(t) => Outcome::Failed(HandlerError::new(format!("handler timed out after {} ms", t.as_millis()))),
            },
            _ = self.hard_stop.cancelled() => {
                warn!("handler cancelled by shutdown; the message stays pending for another worker");
                return false;
            }
        };
        match outcome {
            Outcome::Reply(value) => {
                if let Some(reply_to) = &message.reply_to {
                    match self
                        .send_reply(reply_to, message, "response", reply_payload(value))
                        .await
                    {
                        Persisted::Done => {}
                        // Stopping at once: the entry stays pending and is handled again.
                        Persisted::Stopped => return false,
                        // The reply can never be written there (wrong key type, ACL, …):
                        // dead-letter rather than run the handler again and again.
                        Persisted::Failed(e) => {
                            let why = format!(
                                "the handler succeeded but its reply could not be written to {reply_to:?}: {e}"
                            );
                            self.dead_letter(
                                &entry,
                                Some(message),
                                "reply_failed",
                                &why,
                                attempt,
                                deliveries,
                            )
                            .await;
                            return false;
                        }
                    }
                }
                debug!("handled");
                self.ack(&entry.id)
            }
            Outcome::BadPayload(why) => {
                warn!(reason = %why, "bad payload; moving it to dead letters");
                self.dead_letter(
                    &entry,
                    Some(message),
                    "bad_payload",
                    &why,
                    attempt,
                    deliveries,
                )
                .await;
                false
            }
            Outcome::Failed(err) => {
                if err.is_permanent() {
                    warn!(error = %err, "permanent failure; moving it to dead letters");
                    self.dead_letter(
                        &entry,
                        Some(message),
                        "permanent_error",
                        err.message(),
                        attempt,
                        deliveries,
                    )
                    .await;
                } else if attempt >= max_attempts {
                    warn!(error = %err, max_attempts, "last attempt failed; moving it to dead letters");
                    self.dead_letter(
                        &entry,
                        Some(message),
                        "max_attempts",
                        err.message(),
                        attempt,
                        deliveries,
                    )
                    .await;
                } else {
                    let delay = err
                        .retry_after()
                        .unwrap_or_else(|| self.config.retry_delay(attempt + 1));
                    warn!(error = %err, next_attempt = attempt + 1, delay_ms = delay.as_millis() as u64, "attempt failed; will retry");
                    self.schedule_retry(&entry, attempt + 1, delay, err.message())
                        .await;
                }
                false
            }
        }
    }

    fn ack(&self, id: &str) -> bool {
        self.ack_tx.send(id.to_owned()).is_ok()
    }

    /// Runs a Redis operation until it succeeds, retrying connection errors with backoff;
    /// gives up on other errors or when the worker is stopped hard (the entry then stays
    /// pending and is reclaimed later).
    async fn persist<F, Fut>(&self, what: &'static str, mut op: F) -> Persisted
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mut backoff = reconnect_backoff();
        loop {
            match op().await {
                Ok(()) => return Persisted::Done,
                Err(e) if e.is_connection_error() => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    warn!(error = %e, retry_in_ms = d.as_millis() as u64, "{what} failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.hard_stop.cancelled() => return Persisted::Stopped,
                    }
                }
                Err(e) => {
                    error!(error = %e, "{what} failed");
                    return Persisted::Failed(e);
                }
            }
        }
    }

    /// Boxed, so that the per-message task stays small (this path is rare).
    fn dead_letter<'a>(
        &'a self,
        entry: &'a RawEntry,
        message: Option<&'a Message>,
        reason: &'a str,
        error: &'a str,
        attempts: u32,
        deliveries: u64,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.dead_letter_now(entry, message, reason, error, attempts, deliveries))
    }

    async fn dead_letter_now(
        &self,
        entry: &RawEntry,
        message: Option<&Message>,
        reason: &str,
        error: &str,
        attempts: u32,
        deliveries: u64,
    ) {
        let spec = &self.spec;
        let ok = self
            .persist("dead-lettering", || {
                self.bus.dead_letter(
                    &spec.stream,
                    &spec.group,
                    entry,
                    reason,
                    error,
                    attempts,
                    deliveries,
                )
            })
            .await;
        if !ok.done() {
            // Not dead-lettered: the entry stays pending and is handled again after the
            // reclaim idle time (or it was stopped by shutdown).
            return;
        }
        if let Some(m) = message
            && let Some(reply_to) = &m.reply_to
        {
            let payload = json!({
                "error": error,
                "reason": reason,
                "attempts": attempts,
                "message_id": m.id,
            });
            self.send_reply(reply_to, m, "error", payload).await;
        }
    }

    /// Boxed, so that the per-message task stays small.
    fn schedule_retry<'a>(
        &'a self,
        entry: &'a RawEntry,
        next_attempt: u32,
        delay: Duration,
        error: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.schedule_retry_now(entry, next_attempt, delay, error))
    }

    async fn schedule_retry_now(
        &self,
        entry: &RawEntry,
        next_attempt: u32,
        delay: Duration,
        error: &str,
    ) {
        let spec = &self.spec;
        let mut flat: Vec<String> = Vec::new();
        for (k, v) in &entry.fields {
            if k == fields::ATTEMPT || k == fields::TARGET_GROUP || k == fields::LAST_ERROR {
                continue;
            }
            flat.push(k.clone());
            flat.push(String::from_utf8_lossy(v).into_owned());
        }
        flat.extend([
            fields::ATTEMPT.to_owned(),
            next_attempt.to_string(),
            fields::TARGET_GROUP.to_owned(),
            spec.group.clone(),
            fields::LAST_ERROR.to_owned(),
            error.chars().take(2000).collect(),
        ]);
        let member = json!({ "fields": flat, "from": entry.id }).to_string();
        let retries = keys::retries(&spec.stream);
        let ok = self
            .persist("scheduling a retry", || async {
                let mut conn = self.bus.conn();
                let _: i64 = wire::SCHEDULE_RETRY
                    .key(&spec.stream)
                    .key(&retries)
                    .arg(&spec.group)
                    .arg(&entry.id)
                    .arg(delay.as_millis() as u64)
                    .arg(&member)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("EVALSHA schedule_retry", &spec.stream, e))?;
                Ok(())
            })
            .await;
        if ok.done() {
            self.retry_notify.notify_one();
        }
    }

    /// Boxed, so that the per-message task stays small.
    fn send_reply<'a>(
        &'a self,
        reply_to: &'a str,
        request: &'a Message,
        message_type: &'a str,
        payload: Value,
    ) -> Pin<Box<dyn Future<Output = Persisted> + Send + 'a>> {
        Box::pin(self.send_reply_now(reply_to, request, message_type, payload))
    }

    async fn send_reply_now(
        &self,
        reply_to: &str,
        request: &Message,
        message_type: &str,
        payload: Value,
    ) -> Persisted {
        let reply = Message {
            id: new_message_id(),
            from_agent: self.spec.agent.clone(),
            to_agent: request.from_agent.clone(),
            message_type: message_type.to_owned(),
            payload,
            timestamp: now_timestamp(),
            priority: request.priority,
            ttl_seconds: request.ttl_seconds,
            reply_to: None,
            correlation_id: request
                .correlation_id
                .clone()
                .or_else(|| Some(request.id.clone())),
            headers: Default::default(),
        };
        let data = match reply.to_data() {
            Ok(d) => d,
            Err(e) => {
                error!(error = %e, "cannot encode the reply");
                return Persisted::Failed(e);
            }
        };
        let ok = self
            .persist("sending the reply", || async {
                let mut conn = self.bus.conn();
                let _: String = redis::cmd("XADD")
                    .arg(reply_to)
                    .arg("*")
                    .arg(fields::DATA)
                    .arg(&data)
                    .arg(fields::IN_REPLY_TO)
                    .arg(&request.id)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XADD", reply_to, e))?;
                Ok(())
            })
            .await;
        if ok.done() {
            debug!(reply_to, reply_id = %reply.id, "reply sent");
        }
        ok
    }
}

fn reply_payload(v: Value) -> Value {
    match v {
        Value::Object(_) => v,
        other => {
            let mut m = Map::new();
            m.insert("result".into(), other);
            Value::Object(m)
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Reads new entries and dispatches them, on a connection of its own.
async fn reader(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let block = st.config.block;
    let mut conn: Option<crate::conn::Conn> = None;
    let mut backoff = reconnect_backoff();
    let mut failing = false;
    loop {
        // Wait for capacity before reading, and read no more than can start at once.
        // Permits are taken per entry after the read, so a blocked read holds none (the
        // reclaimer needs them too).
        tokio::select! {
            _ = stop.cancelled() => return,
            p = st.sem.acquire() => match p { Ok(p) => drop(p), Err(_) => return },
        }
        let count = st.sem.available_permits().clamp(1, st.config.batch_size);
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match st.bus.dedicated_connection(block).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    if !failing {
                        warn!(agent = %spec.agent, stream = %spec.stream, error = %e, "cannot reach Redis; retrying with backoff");
                        failing = true;
                    }
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
                    continue;
                }
            },
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&spec.group)
            .arg(&spec.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&spec.stream)
            .arg(">");
        let read = cmd.query_async::<redis::Value>(c);
        let reply = tokio::select! {
            // Dropping a blocked read: drop the connection too, so the server unblocks it.
            _ = stop.cancelled() => return,
            r = read => r,
        };
        match reply {
            Ok(v) => {
                if failing {
                    info!(agent = %spec.agent, stream = %spec.stream, "reconnected to Redis; reading again");
                    failing = false;
                }
                backoff = reconnect_backoff();
                match wire::parse_read_reply(&v) {
                    Ok(streams) => {
                        for entry in streams.into_iter().flat_map(|(_, e)| e) {
                            // Normally free at once (we read no more than were available).
                            let Ok(p) = st.sem.clone().acquire_owned().await else {
                                return;
                            };
                            st.dispatch(entry, 1, p);
                        }
                    }
                    Err(e) => {
                        error!(stream = %spec.stream, error = %e, "unreadable XREADGROUP reply")
                    }
                }
            }
            Err(e) if wire::is_nogroup(&e) => {
                warn!(stream = %spec.stream, group = %spec.group, "consumer group missing (stream deleted?); recreating it");
                st.bus.forget_group(&spec.stream, &spec.group);
                if let Err(e) = st.bus.ensure_group(&spec.stream, &spec.group).await {
                    warn!(error = %e, "cannot recreate the consumer group");
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                }
            }
            Err(e) => {
                conn = None;
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                if !failing {
                    warn!(agent = %spec.agent, stream = %spec.stream, error = %e, retry_in_ms = d.as_millis() as u64, "read failed; reconnecting with backoff");
                    failing = true;
                }
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
            }
        }
    }
}

/// How a write to Redis ended.
#[derive(Debug)]
enum Persisted {
    /// Written.
    Done,
    /// Given up because the worker is stopping at once (the entry stays pending).
    Stopped,
    /// Refused for a reason retrying cannot fix (e.g. a wrong key type, an ACL).
    Failed(Error),
}

impl Persisted {
    fn done(&self) -> bool {
        matches!(self, Persisted::Done)
    }
}

/// Most ids in one XACK.
const ACK_BATCH_MAX: usize = 1000;
/// Below this many ids, the acker waits [`ACK_LINGER`] for more before sending.
const ACK_BATCH_TARGET: usize = 50;
/// How long the acker waits for more ids to batch.
const ACK_LINGER: Duration = Duration::from_millis(1);

/// Acknowledges handled entries in batches: whatever has queued up goes in one XACK.
/// Runs until `done` (set once every handler task has finished), then flushes and returns.
async fn acker(
    st: Arc<StreamState>,
    mut rx: mpsc::UnboundedReceiver<String>,
    done: CancellationToken,
) {
    let stream = &st.spec.stream;
    let group = &st.spec.group;
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, ACK_BATCH_MAX) => {
                if n == 0 {
                    return;
                }
                if batch.len() < ACK_BATCH_TARGET && !done.is_cancelled() {
                    // Let more handlers finish, so one XACK covers many entries (this
                    // delays only the acknowledgement, never a handler).
                    tokio::time::sleep(ACK_LINGER).await;
                    while batch.len() < ACK_BATCH_MAX {
                        match rx.try_recv() {
                            Ok(id) => batch.push(id),
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = done.cancelled() => {
                while let Ok(id) = rx.try_recv() {
                    batch.push(id);
                }
                if batch.is_empty() {
                    return;
                }
            }
        }
        let ids = std::mem::take(&mut batch);
        let ok = st
            .persist("acknowledging", || async {
                let mut conn = st.bus.conn();
                let _: i64 = redis::cmd("XACK")
                    .arg(stream)
                    .arg(group)
                    .arg(&ids)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XACK", stream, e))?;
                Ok(())
            })
            .await;
        if !ok.done() {
            warn!(
                count = ids.len(),
                "entries not acknowledged; they will be handled again after the reclaim idle time"
            );
        }
        for id in &ids {
            st.done(id);
        }
    }
}

/// Keeps the lease of in-flight entries fresh, so no other consumer reclaims them while
/// their handler runs.
async fn leaser(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let mut tick = tokio::time::interval(st.config.lease_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        let ids = st.in_flight_ids();
        if ids.is_empty() {
            continue;
        }
        for chunk in ids.chunks(500) {
            let r: Result<Vec<String>> = async {
                let mut conn = st.bus.conn();
                let mut inv = wire::LEASE.key(&spec.stream);
                inv.arg(&spec.group).arg(&spec.consumer);
                for id in chunk {
                    inv.arg(id);
                }
                inv.invoke_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("EVALSHA lease", &spec.stream, e))
            }
            .await;
            match r {
                Ok(lost) => {
                    let still: Vec<_> = {
                        let set = st.in_flight.lock().map(|s| s.clone()).unwrap_or_default();
                        lost.into_iter().filter(|id| set.contains(id)).collect()
                    };
                    if !still.is_empty() {
                        warn!(stream = %spec.stream, ids = ?still, "lease lost: another consumer claimed these entries while they were being handled here");
                    }
                }
                Err(e) if e.is_connection_error() => {
                    debug!(stream = %spec.stream, error = %e, "lease renewal failed")
                }
                Err(e) => warn!(stream = %spec.stream, error = %e, "lease renewal failed"),
            }
        }
    }
}

/// Most `XAUTOCLAIM` steps per reclaim tick.
const RECLAIM_CALLS_PER_TICK: usize = 10;

/// Reclaims entries whose consumer stopped renewing their lease (crashed, killed, stuck),
/// walking the whole pending list with `XAUTOCLAIM`, and removes long-gone consumers.
async fn reclaimer(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let mut tick = tokio::time::interval(st.config.reclaim_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweeps: u64 = 0;
    // The cursor survives across ticks: each tick walks at most RECLAIM_CALLS_PER_TICK steps
    // (each scans up to 10 x COUNT pending entries), so a huge pending list costs a bounded
    // amount per tick, and the walk starts over once it reaches the end.
    let mut cursor = "0-0".to_string();
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        for _ in 0..RECLAIM_CALLS_PER_TICK {
            let free = st.sem.available_permits().min(st.config.batch_size);
            if free == 0 || stop.is_cancelled() {
                break;
            }
            match reclaim_once(&st, &cursor, free).await {
                Ok((next, claimed, deleted)) => {
                    if !deleted.is_empty() {
                        warn!(stream = %spec.stream, ids = ?deleted, "pending entries were deleted from the stream before being handled; dropped from the pending list");
                    }
                    for (entry, deliveries) in claimed {
                        info!(stream = %spec.stream, stream_id = %entry.id, deliveries, "reclaimed a stalled entry");
                        let Ok(p) = st.sem.clone().acquire_owned().await else {
                            return;
                        };
                        st.dispatch(entry, deliveries, p);
                    }
                    let at_end = next == "0-0";
                    cursor = next;
                    if at_end {
                        break;
                    }
                }
                Err(e) => {
                    if e.is_connection_error() {
                        debug!(stream = %spec.stream, error = %e, "reclaim failed");
                    } else {
                        warn!(stream = %spec.stream, error = %e, "reclaim failed");
                    }
                    break;
                }
            }
        }
        sweeps += 1;
        if sweeps % 20 == 1 {
            remove_dead_consumers(&st).await;
        }
    }
}

type Reclaimed = (String, Vec<(RawEntry, u64)>, Vec<String>);

async fn reclaim_once(st: &StreamState, cursor: &str, count: usize) -> Result<Reclaimed> {
    let spec = &st.spec;
    let mut conn = st.bus.conn();
    let v: redis::Value = wire::RECLAIM
        .key(&spec.stream)
        .arg(&spec.group)
        .arg(&spec.consumer)
        .arg(st.config.reclaim_idle.as_millis() as u64)
        .arg(cursor)
        .arg(count)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| {
            if wire::is_nogroup(&e) {
                st.bus.forget_group(&spec.stream, &spec.group);
            }
            Error::redis("EVALSHA reclaim", &spec.stream, e)
        })?;
    let parts = wire::as_array(&v)
        .filter(|p| p.len() == 4)
        .ok_or_else(|| Error::protocol("reclaim script", format!("{v:?}")))?;
    let next = wire::as_string(&parts[0]).unwrap_or_else(|| "0-0".into());
    let entries = wire::parse_entries(&parts[1])?;
    let deleted = wire::as_array(&parts[2])
        .unwrap_or(&[])
        .iter()
        .filter_map(wire::as_string)
        .collect();
    let counts: Vec<u64> = wire::as_array(&parts[3])
        .unwrap_or(&[])
        .iter()
        .map(|c| wire::as_i64(c).unwrap_or(1).max(1) as u64)
        .collect();
    let claimed = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let d = counts.get(i).copied().unwrap_or(1);
            (e, d)
        })
        .collect();
    Ok((next, claimed, deleted))
}

/// Deletes consumers that have nothing pending and have not been seen for a long time
/// (dead processes; consumer names are unique per process, so they would pile up).
async fn remove_dead_consumers(st: &StreamState) {
    let spec = &st.spec;
    let gone_after = (st.config.reclaim_idle * 20).max(Duration::from_secs(3600));
    let r: Result<()> = async {
        let mut conn = st.bus.conn();
        let v: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&spec.stream)
            .arg(&spec.group)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XINFO CONSUMERS", &spec.stream, e))?;
        for c in wire::as_array(&v).unwrap_or(&[]).iter().filter_map(wire::as_map) {
            let name = c.get("name").and_then(wire::as_string).unwrap_or_default();
            let pending = c.get("pending").and_then(wire::as_i64).unwrap_or(1);
            let idle = c.get("idle").and_then(wire::as_i64).unwrap_or(0);
            if pending == 0 && idle as u128 > gone_after.as_millis() && name != spec.consumer {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&spec.stream)
                    .arg(&spec.group)
                    .arg(&name)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XGROUP DELCONSUMER", &spec.stream, e))?;
                info!(stream = %spec.stream, consumer = %name, idle_ms = idle, "removed a long-idle consumer with nothing pending");
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        debug!(error = %e, "consumer cleanup failed");
    }
}

/// Moves due retries back into the stream.
async fn promoter(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let retries = keys::retries(&spec.stream);
    let poll = st.config.retry_poll_interval.max(Duration::from_millis(5));
    loop {
        let r: Result<(i64, i64)> = async {
            let mut conn = st.bus.conn();
            wire::PROMOTE
                .key(&spec.stream)
                .key(&retries)
                .arg(100)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| Error::redis("EVALSHA promote", &spec.stream, e))
        }
        .await;
        let wait = match r {
            Ok((moved, next)) => {
                if moved > 0 {
                    debug!(stream = %spec.stream, moved, "retries due; back in the stream");
                }
                if moved >= 100 {
                    Duration::ZERO
                } else if next >= 0 {
                    Duration::from_millis(next as u64).min(poll)
                } else {
                    poll
                }
            }
            Err(e) => {
                debug!(stream = %spec.stream, error = %e, "retry promotion failed");
                poll
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = st.retry_notify.notified() => {}
        }
    }
}

/// Trims entries every group has been delivered and acknowledged.
async fn trimmer(st: Arc<StreamState>, stop: CancellationToken) {
    let spec = &st.spec;
    let mut tick = tokio::time::interval(st.config.trim_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tick.tick() => {} }
        let r: Result<i64> = async {
            let mut conn = st.bus.conn();
            wire::TRIM
                .key(&spec.stream)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| Error::redis("EVALSHA trim", &spec.stream, e))
        }
        .await;
        match r {
            Ok(n) if n > 0 => debug!(stream = %spec.stream, trimmed = n, "trimmed handled entries"),
            Ok(_) => {}
            Err(e) => debug!(stream = %spec.stream, error = %e, "trim failed"),
        }
    }
}
