//! The worker runtime: one set of loops per served stream, as asynq keeps each background
//! loop in its own file.
//!
//! | file | what |
//! | --- | --- |
//! | `builder.rs` | [`WorkerBuilder`]: settings in code and from the environment |
//! | `config.rs` | the tunables, their defaults and checks |
//! | `registry.rs` | `#[handler]` registrations → a handler table per agent |
//! | `stream.rs` | the state a served stream's loops share |
//! | `reader.rs` | `XREADGROUP` loop: blocking on its own connection, or (many inboxes) on the shared one when woken |
//! | `lanes.rs` | how a read shares its slots among an inbox's priority lanes |
//! | `notes.rs` | listening to `agent.<id>.new_message`: wakes shared readers, and promoters for delayed messages |
//! | `process.rs` | one entry: decode, dispatch, reply, acknowledge, retry or dead-letter |
//! | `outcome.rs` | running a handler and the [`Verdict`] on its message (shared with `testing`) |
//! | `acker.rs` | batched `XACK` |
//! | `lease.rs` | lease renewal of running handlers' entries |
//! | `reclaim.rs` | `XAUTOCLAIM` of stalled entries; `janitor.rs` removes dead consumers |
//! | `retry.rs` | scheduling retries; promoting due retries and delayed messages |
//! | `trim.rs` | trimming handled entries |
//! | `presence.rs` | the worker's presence and message types in `agent:<id>:workers` |
//! | `startup.rs` | waiting for a Redis that is unreachable or still loading, at start |
//! | `topics.rs` | durable topic handlers: finding matching topics, serving their streams |
//! | `periodic.rs` | periodic tasks: one loop per schedule, sending each period once |
//! | `observe.rs` | metrics and health: the server and the queue sampler of a worker |

mod acker;
mod builder;
pub(crate) mod config;
mod hooks;
mod janitor;
mod lanes;
mod lease;
mod notes;
mod observe;
pub(crate) mod outcome;
mod pause;
mod periodic;
mod presence;
mod process;
mod rate_limit;
mod rate_spec;
mod reader;
mod reclaim;
pub(crate) mod registry;
mod reply;
mod retry;
mod schedules;
mod startup;
mod stream;
mod topics;
mod trim;
mod workflow;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use builder::WorkerBuilder;
pub use outcome::{Failure, Verdict};

use crate::bus::Bus;
use crate::error::{Error, Result};
use config::WorkerConfig;
use stream::{StreamSpec, StreamState};

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
    /// The agents' durable topic handlers, if any (served by `topics::watch`).
    topics: Option<topics::Topics>,
    /// The periodic schedules this process runs, with their agent.
    schedules: Vec<(String, crate::schedule::Schedule)>,
    /// Metrics and health, when enabled.
    observe: observe::Observe,
    /// The consumer group set with `group` / `FABRIC_GROUP` (for the queue gauges).
    group: Option<String>,
    /// The process-wide handler slots (`max_in_flight`), shared with the topics' streams.
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl Worker {
    /// A builder serving `agent`'s inbox.
    pub fn builder(agent: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder::new(agent.into())
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
        use futures::{StreamExt, TryStreamExt};
        let stop_reading = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let acks_done = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut readers = Vec::new();
        let mut background = Vec::new();
        let mut ackers = Vec::new();
        let mut states = Vec::new();
        let stop_observe = CancellationToken::new();
        let _stop_observe_on_error = stop_observe.clone().drop_guard();
        let observed = self.observe.start(
            &self.bus,
            inbox_agents(&self.streams),
            self.group.clone(),
            &stop_observe,
        );
        let broker = self.bus.broker();
        let wait = self.config.startup_wait;
        startup::wait_for_redis(wait, "loading the function library", || {
            broker.ensure_library()
        })
        .await?;
        // Agents are set up concurrently (SETUP_AT_ONCE at a time): one after another, a
        // process serving 100 agents read the first for 20-30 ms before the last had its group.
        // (Futures collected first: a lazy `map` in the stream trips the `Send` check of the
        // topics' spawned workers.)
        let groups: Vec<_> = self
            .streams
            .iter()
            .map(|spec| {
                startup::wait_for_redis(wait, "creating the consumer group", || {
                    broker.ensure_group(&spec.stream, &spec.group)
                })
            })
            .collect();
        futures::stream::iter(groups)
            .buffer_unordered(SETUP_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        let mut wake = Vec::new();
        let mut pausable = Vec::new();
        // The new-message notifications are listened to before any inbox is read: a message
        // sent once reading began is then always announced (a shared reader waits for that),
        // instead of waiting for the subscription to come up (and wake every reader once).
        let notified: Vec<String> = self
            .streams
            .iter()
            .filter(|s| s.stream == crate::keys::inbox(&s.agent))
            .map(|s| crate::keys::new_message_channel(&s.agent))
            .collect();
        let first_subscription = if notified.is_empty() {
            None
        } else {
            let channels: Vec<&str> = notified.iter().map(String::as_str).collect();
            self.bus.subscribe(&channels).await.ok()
        };
        let stop_topics = CancellationToken::new();
        let topic_watch = self.topics.map(|t| {
            let (bus, config) = (self.bus.clone(), self.config.clone());
            tokio::spawn(topics::watch(
                bus,
                config,
                t,
                self.slots.clone(),
                stop_topics.clone(),
                hard.clone(),
            ))
        });
        // Serving more inboxes than `blocking_readers`: shared reads, woken by notifications
        // (reader.rs), so that the connections do not grow with the agents.
        let inboxes = notified.len();
        let shared_reads = inboxes > self.config.blocking_readers;
        if shared_reads {
            info!(
                inboxes,
                blocking_readers = self.config.blocking_readers,
                poll_ms = crate::time::millis(self.config.read_poll_interval),
                "reading the inboxes on the shared connection, woken by their notifications"
            );
        }
        let mut made = Vec::new();
        for spec in self.streams {
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            let is_inbox = spec.stream == crate::keys::inbox(&spec.agent);
            let mut st = StreamState::new(
                spec,
                self.bus.clone(),
                self.config.clone(),
                ack_tx,
                tracker.clone(),
                hard.clone(),
            );
            st.global = self.slots.clone();
            if shared_reads && is_inbox {
                st.read_wake = Some(Arc::new(tokio::sync::Notify::new()));
            }
            made.push((Arc::new(st), ack_rx, is_inbox));
        }
        // Every agent's presence, pause state and lanes, before any reader starts.
        let lanes_on = self.config.priority_lanes;
        let inboxes: Vec<_> = made
            .iter()
            .map(|(st, _, is_inbox)| set_up_inbox(&self.bus, st, *is_inbox, lanes_on))
            .collect();
        let results: Vec<Result<Option<InboxSetUp>>> = futures::stream::iter(inboxes)
            .buffered(SETUP_AT_ONCE)
            .collect()
            .await;
        let mut set_up = Vec::with_capacity(results.len());
        let mut failed = None;
        for r in results {
            set_up.push(r.unwrap_or_else(|e| {
                failed.get_or_insert(e);
                None
            }));
        }
        if let Some(e) = failed {
            // Not starting: the agents registered meanwhile are marked stopped, so that
            // discovery does not list a worker that never reads.
            for ((st, _, _), s) in made.iter().zip(&set_up) {
                if let Some(s) = s {
                    presence::mark_stopped(st, s.started).await;
                }
            }
            return Err(e);
        }
        for ((st, ack_rx, _), set_up) in made.into_iter().zip(set_up) {
            let mut lanes = Vec::new();
            if let Some(InboxSetUp {
                started,
                lanes: names,
            }) = set_up
            {
                background.push(tokio::spawn(presence::refresher(
                    st.clone(),
                    started,
                    stop_background.clone(),
                )));
                wake.push((
                    st.spec.agent.clone(),
                    notes::Wake {
                        promoter: st.retry_notify.clone(),
                        reader: st.read_wake.clone(),
                    },
                ));
                pausable.push((st.spec.agent.clone(), st.pause.clone()));
                // The lanes read with this stream, in priority order (the stream itself is
                // the normal lane).
                for (i, name) in names {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let lane = Arc::new(StreamState::lane(&st, name, tx));
                    ackers.push(tokio::spawn(acker::acker(
                        lane.clone(),
                        rx,
                        acks_done.clone(),
                    )));
                    lanes.push((crate::keys::LANES[i], lane.clone()));
                    states.push(lane);
                }
            }
            let read_with: Vec<Arc<StreamState>> = crate::keys::in_read_order(st.clone(), lanes)
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            info!(
                agent = %st.spec.agent,
                stream = %st.spec.stream,
                group = %st.spec.group,
                consumer = %st.spec.consumer,
                lanes = read_with.len(),
                handlers = ?st.spec.handlers.keys().collect::<Vec<_>>(),
                "serving"
            );
            ackers.push(tokio::spawn(acker::acker(
                st.clone(),
                ack_rx,
                acks_done.clone(),
            )));
            readers.push(tokio::spawn(reader::reader(
                read_with.clone(),
                stop_reading.clone(),
            )));
            // One set of housekeeping loops for the inbox and its lanes.
            spawn_loops(
                read_with.clone(),
                &stop_reading,
                &stop_background,
                &mut readers,
                &mut background,
            );
            background.push(tokio::spawn(retry::promoter(
                st.clone(),
                stop_background.clone(),
            )));
            states.push(st);
        }
        if !pausable.is_empty() {
            background.push(tokio::spawn(pause::watch(
                self.bus.clone(),
                pausable,
                stop_background.clone(),
            )));
        }
        if !wake.is_empty() {
            background.push(tokio::spawn(notes::listen(
                self.bus.clone(),
                wake,
                first_subscription,
                stop_background.clone(),
            )));
        }
        for (agent, schedule) in self.schedules {
            info!(%agent, schedule = schedule.name(), spec = %schedule.describe(), message_type = schedule.message_type(), "running schedule");
            readers.push(tokio::spawn(periodic::run(
                self.bus.clone(),
                agent,
                schedule,
                stop_reading.clone(),
            )));
        }
        shutdown.await;
        info!("stopping: no new reads; waiting for in-flight handlers");
        stop_reading.cancel();
        stop_topics.cancel();
        join_all(readers).await;
        for st in &states {
            reader::drain_own(st).await;
        }
        tracker.close();
        let in_flight: usize = states.iter().map(|s| s.in_flight_len()).sum();
        let timeout = self.config.shutdown_timeout;
        tokio::select! {
            _ = tracker.wait() => info!("in-flight handlers finished"),
            _ = tokio::time::sleep(timeout) => {
                warn!(in_flight, timeout_ms = crate::time::millis(timeout), "shutdown timeout: unfinished handlers are cancelled; their messages stay pending for another worker");
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
        join_all(topic_watch.into_iter().collect()).await;
        stop_observe.cancel();
        join_all(observed).await;
        // The hooks' queued events (hooks.rs), at most the shutdown timeout.
        self.bus.hooks().flush(timeout).await;
        info!("worker stopped");
        Ok(())
    }
}

/// The loops every served stream has besides its reader and acker: reclaim, lease renewal,
/// trimming; one set for an inbox and its lanes (`streams`).
fn spawn_loops(
    streams: Vec<Arc<StreamState>>,
    stop_reading: &CancellationToken,
    stop_background: &CancellationToken,
    readers: &mut Vec<JoinHandle<()>>,
    background: &mut Vec<JoinHandle<()>>,
) {
    readers.push(tokio::spawn(reclaim::reclaimer(
        streams.clone(),
        stop_reading.clone(),
    )));
    background.push(tokio::spawn(lease::leaser(
        streams.clone(),
        stop_background.clone(),
    )));
    background.push(tokio::spawn(trim::trimmer(
        streams,
        stop_background.clone(),
    )));
}

/// How many agents are set up at once at start (groups, presence, pause state, lanes).
const SETUP_AT_ONCE: usize = 64;

/// What [`set_up_inbox`] found.
struct InboxSetUp {
    /// When this worker's presence was registered, ms since the epoch.
    started: u64,
    /// The inbox's lanes (see [`lane_names`]).
    lanes: Vec<(usize, String)>,
}

/// Sets up an inbox before it is read (nothing for another stream): finds its lanes (creating
/// their groups), starts it paused if an operator paused the agent, and last registers this
/// worker's presence (so a worker whose set-up failed is never listed as serving it).
async fn set_up_inbox(
    bus: &Bus,
    st: &StreamState,
    is_inbox: bool,
    lanes_on: bool,
) -> Result<Option<InboxSetUp>> {
    if !is_inbox {
        return Ok(None);
    }
    let lanes = lane_names(st, lanes_on).await?;
    // Paused before this worker started: start paused, before the first read.
    match bus.is_paused(&st.spec.agent).await {
        Ok(paused) => {
            st.pause.send_replace(paused);
        }
        Err(e) => {
            warn!(agent = %st.spec.agent, error = %e, "cannot check whether the agent is paused; the pause watcher checks again");
        }
    }
    let started = crate::time::now_ms();
    if let Err(e) = presence::register(st, started).await {
        warn!(agent = %st.spec.agent, error = %e, "could not register this worker's presence: discovery will not list it, and the agent's MCP sessions will also receive its message types");
    }
    Ok(Some(InboxSetUp { started, lanes }))
}

/// The priority lanes to read with an inbox, as (index in `keys::LANES`, key): all of them,
/// created with the group, when lanes are on; when off, those that exist (left by an
/// earlier worker, so nothing sent there is stranded).
async fn lane_names(inbox: &StreamState, on: bool) -> Result<Vec<(usize, String)>> {
    let spec = &inbox.spec;
    // Asked directly, not through `has_mcp_group`, whose answer is kept for a while: an MCP
    // session may start right after this worker.
    let mcp = crate::keys::mcp_group(&spec.agent);
    let mcp_reads = inbox
        .bus
        .stream_groups(&spec.stream)
        .await?
        .iter()
        .any(|g| g.name == mcp);
    let mut out = Vec::new();
    for (i, key) in crate::keys::lanes(&spec.stream).into_iter().enumerate() {
        if !on {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut inbox.broker.conn())
                .await
                .map_err(|e| Error::redis("EXISTS", &key, e))?;
            if exists == 0 {
                continue;
            }
        }
        inbox.broker.ensure_group(&key, &spec.group).await?;
        if mcp_reads {
            // The agent's MCP sessions read the lanes too: what the workers leave to them
            // there must wait for them.
            inbox.broker.ensure_group(&key, &mcp).await?;
        }
        out.push((i, key));
    }
    Ok(out)
}

/// The agents whose inbox is served (for the queue gauges).
fn inbox_agents(streams: &[StreamSpec]) -> Vec<String> {
    let mut agents: Vec<String> = streams
        .iter()
        .filter(|s| s.stream == crate::keys::inbox(&s.agent))
        .map(|s| s.agent.clone())
        .collect();
    agents.dedup();
    agents
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
