//! The state each served stream's loops share: its names, handlers, concurrency permits,
//! in-flight entries, and the channel to its acker.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info_span, warn};

use super::config::WorkerConfig;
use super::registry::HandlerTable;
use crate::broker::{Broker, RawEntry, lock, reconnect_backoff};
use crate::bus::Bus;
use crate::context::ServedStream;
use crate::error::{Error, Result};

/// What the worker serves: one stream of one agent, read through one group as one consumer.
#[derive(Clone, Debug)]
pub(crate) struct StreamSpec {
    pub(crate) agent: String,
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) handlers: HandlerTable,
    /// The handler of every entry whatever its type (a durable topic's handler), if any.
    pub(crate) catch_all: Option<super::registry::HandlerSpec>,
}

/// The state shared by the loops of one served stream.
pub(crate) struct StreamState {
    pub(crate) spec: StreamSpec,
    /// The names every context of this stream shares.
    pub(crate) served: Arc<ServedStream>,
    pub(crate) broker: Broker,
    /// The handle handlers get in their context.
    pub(crate) bus: Bus,
    pub(crate) config: WorkerConfig,
    /// One permit per running handler.
    pub(crate) sem: Arc<Semaphore>,
    /// The process-wide handler slots every served stream shares (`max_in_flight`), if set.
    pub(crate) global: Option<Arc<Semaphore>>,
    /// Wakes the reader of a shared-read inbox (shared by its lanes): a notification came,
    /// or the promoter moved entries in. `None`: the reader blocks on its own connection.
    pub(crate) read_wake: Option<Arc<Notify>>,
    in_flight: Mutex<HashSet<String>>,
    ack_tx: mpsc::UnboundedSender<super::reply::Handled>,
    /// Wakes the promoter (of the inbox, shared by its lanes) when a retry was scheduled or a
    /// delayed message announced.
    pub(crate) retry_notify: Arc<Notify>,
    tracker: TaskTracker,
    /// Cancelled when the worker must stop at once (second signal, shutdown timeout).
    pub(crate) hard_stop: CancellationToken,
    /// Whether the agent's MCP sessions read this stream (`<agent>_mcp` exists), and when
    /// that was last checked.
    mcp_group: Mutex<Option<(std::time::Instant, bool)>>,
    /// Whether an operator paused the agent (shared by the inbox and its lanes).
    pub(crate) pause: super::pause::PauseSwitch,
    /// Set by the acker, cleared by the trimmer: something was acknowledged since the last
    /// trim.
    pub(crate) acked_since_trim: std::sync::atomic::AtomicBool,
    /// Notified when an entry starts being handled (the leaser waits for it while idle);
    /// shared by an inbox and its lanes.
    pub(crate) started: Arc<Notify>,
}

/// A handler's slot: a permit of its stream's limit and, when set, of the process-wide one.
pub(crate) struct Slot {
    _stream: OwnedSemaphorePermit,
    _process: Option<OwnedSemaphorePermit>,
}

/// How a write to Redis ended.
#[derive(Debug)]
pub(crate) enum Persisted {
    /// Written.
    Done,
    /// Given up without failing (the entry stays pending, to be handled again): the worker
    /// is stopping at once, or a reply was written but too few replicas confirmed it.
    Stopped,
    /// Refused for a reason retrying cannot fix (e.g. a wrong key type, an ACL).
    Failed(Error),
}

/// Why [`StreamState::persist_for`] gave up: as [`Persisted::Stopped`] and
/// [`Persisted::Failed`].
#[derive(Debug)]
pub(crate) enum GaveUp {
    Stopped,
    Failed(Error),
}

impl Persisted {
    pub(crate) fn done(&self) -> bool {
        matches!(self, Persisted::Done)
    }
}

impl StreamState {
    pub(crate) fn new(
        spec: StreamSpec,
        bus: Bus,
        config: WorkerConfig,
        ack_tx: mpsc::UnboundedSender<super::reply::Handled>,
        tracker: TaskTracker,
        hard_stop: CancellationToken,
    ) -> StreamState {
        let served = Arc::new(ServedStream {
            agent: spec.agent.clone(),
            stream: spec.stream.clone(),
            group: spec.group.clone(),
            consumer: spec.consumer.clone(),
        });
        StreamState {
            spec,
            served,
            broker: bus.broker().clone(),
            bus,
            sem: Arc::new(Semaphore::new(config.concurrency)),
            global: None,
            read_wake: None,
            config,
            in_flight: Mutex::new(HashSet::new()),
            ack_tx,
            retry_notify: Arc::new(Notify::new()),
            tracker,
            hard_stop,
            mcp_group: Mutex::new(None),
            pause: super::pause::switch(),
            acked_since_trim: std::sync::atomic::AtomicBool::new(false),
            started: Arc::new(Notify::new()),
        }
    }

    /// The state of a priority lane of `home`'s inbox: its own stream and acknowledgements,
    /// the inbox's permits (one concurrency limit for the agent) and promoter.
    pub(crate) fn lane(
        home: &StreamState,
        stream: String,
        ack_tx: mpsc::UnboundedSender<super::reply::Handled>,
    ) -> StreamState {
        let spec = StreamSpec {
            stream,
            ..home.spec.clone()
        };
        let mut st = StreamState::new(
            spec,
            home.bus.clone(),
            home.config.clone(),
            ack_tx,
            home.tracker.clone(),
            home.hard_stop.clone(),
        );
        st.sem = home.sem.clone();
        st.global = home.global.clone();
        st.read_wake = home.read_wake.clone();
        st.retry_notify = home.retry_notify.clone();
        st.pause = home.pause.clone();
        st.started = home.started.clone();
        st
    }

    /// Whether MCP sessions read this agent's stream through `<agent>_mcp` (checked at most
    /// every 5 s): then a message no handler takes is theirs, not a dead letter.
    pub(crate) async fn has_mcp_group(&self) -> bool {
        if let Some((at, yes)) = *lock(&self.mcp_group)
            && at.elapsed() < Duration::from_secs(5)
        {
            return yes;
        }
        let mcp = crate::keys::mcp_group(&self.spec.agent);
        // A lane's MCP group goes with its inbox's (the worker creates it with the lane).
        let yes = match self
            .bus
            .stream_groups(crate::keys::home(&self.spec.stream))
            .await
        {
            Ok(groups) => groups.iter().any(|g| g.name == mcp),
            Err(e) => {
                warn!(stream = %self.spec.stream, error = %e, "cannot tell whether MCP sessions read this stream; treating a message without a handler as a dead letter");
                false
            }
        };
        *lock(&self.mcp_group) = Some((std::time::Instant::now(), yes));
        yes
    }

    /// Waits for a handler slot: one of this stream's, then one of the process's (in turn
    /// with the other streams: the semaphore is fair, so a stream with a deep backlog does
    /// not starve the others). `None` when the worker is closing.
    pub(crate) async fn slot(&self) -> Option<Slot> {
        let stream = self.sem.clone().acquire_owned().await.ok()?;
        let process = match &self.global {
            Some(g) => Some(g.clone().acquire_owned().await.ok()?),
            None => None,
        };
        Some(Slot {
            _stream: stream,
            _process: process,
        })
    }

    /// How many handlers could start now.
    pub(crate) fn free_slots(&self) -> usize {
        let own = self.sem.available_permits();
        match &self.global {
            Some(g) => own.min(g.available_permits()),
            None => own,
        }
    }

    pub(crate) fn in_flight_len(&self) -> usize {
        lock(&self.in_flight).len()
    }

    fn mark_in_flight(&self, id: &str) -> bool {
        let mut set = lock(&self.in_flight);
        if set.is_empty() {
            // The leaser may be waiting for a first entry (a kept permit if not).
            self.started.notify_one();
        }
        set.insert(id.to_owned())
    }

    /// Whether `id` is being handled here.
    pub(crate) fn is_in_flight(&self, id: &str) -> bool {
        lock(&self.in_flight).contains(id)
    }

    /// Clears the in-flight mark of `id`.
    pub(crate) fn done(&self, id: &str) {
        lock(&self.in_flight).remove(id);
    }

    pub(crate) fn in_flight_ids(&self) -> Vec<String> {
        lock(&self.in_flight).iter().cloned().collect()
    }

    /// Hands an entry to a handler task holding `permit`. `deliveries` is its delivery count.
    pub(crate) fn dispatch(self: &Arc<Self>, entry: RawEntry, deliveries: u64, permit: Slot) {
        if let Some(run) = self.handling(entry, deliveries, permit) {
            self.tracker.spawn(run);
        }
    }

    /// Hands the entries of one read to one task that runs their handlers concurrently
    /// (each in its own span, with its own slot, timeout and panic guard). One task per read
    /// instead of one per entry: a task per entry cost about 12 % more CPU per message in
    /// `fabric-bench`'s drain (6.6 µs against 5.7 µs), much of it waking the runtime's other
    /// threads for each. The price: a handler that holds the thread without awaiting delays
    /// the others of its read (the README says to use `spawn_blocking` for such work).
    pub(crate) fn dispatch_batch(batch: Vec<(Arc<StreamState>, RawEntry, Slot)>) {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut tracker = None;
        let mut runs: Vec<_> = batch
            .into_iter()
            .filter_map(|(st, entry, permit)| {
                tracker.get_or_insert_with(|| st.tracker.clone());
                st.handling(entry, 1, permit)
            })
            .collect();
        let Some(tracker) = tracker else { return };
        if runs.len() == 1 {
            if let Some(run) = runs.pop() {
                tracker.spawn(run);
            }
        } else if !runs.is_empty() {
            let all: FuturesUnordered<_> = runs.into_iter().collect();
            tracker.spawn(all.for_each(|()| async {}));
        }
    }

    /// The future that handles one entry (marked in flight), or `None` when it is already
    /// being handled here.
    fn handling(
        self: &Arc<Self>,
        entry: RawEntry,
        deliveries: u64,
        permit: Slot,
    ) -> Option<impl Future<Output = ()> + Send + use<>> {
        if !self.mark_in_flight(&entry.id) {
            // Already being handled here (e.g. reclaimed from ourselves): nothing to do.
            return None;
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
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
        );
        // Child of the sender's span (`traceparent` header) or a new trace (trace_context.rs).
        let headers = entry.get(crate::message::fields::HEADERS);
        let trace = crate::trace_context::handler_context(&span, headers);
        let run = async move {
            let id = entry.id.clone();
            let acked = st.process(entry, deliveries).await;
            if !acked {
                st.done(&id);
            }
            drop(permit);
        };
        // Boxed: the task-local wrapper around the (large) future in place cost ~0.4 µs a message.
        Some(trace.scope(Box::pin(run)).instrument(span))
    }

    /// Hands `id` to the acker, which clears its in-flight mark once acknowledged.
    pub(crate) fn ack(&self, id: &str) -> bool {
        self.hand_to_acker(super::reply::Handled::Ack(id.to_owned()))
    }

    /// Hands a handled entry to the acker. False when the acker is gone (the worker stopped).
    pub(crate) fn hand_to_acker(&self, handled: super::reply::Handled) -> bool {
        self.ack_tx.send(handled).is_ok()
    }

    /// Runs a Redis operation until it succeeds, retrying connection errors with backoff;
    /// gives up on other errors or when the worker is stopped hard (the entry then stays
    /// pending and is reclaimed later).
    pub(crate) async fn persist<F, Fut>(&self, what: &'static str, op: F) -> Persisted
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        match self.persist_for(what, op).await {
            Ok(()) => Persisted::Done,
            Err(GaveUp::Stopped) => Persisted::Stopped,
            Err(GaveUp::Failed(e)) => Persisted::Failed(e),
        }
    }

    /// [`persist`](Self::persist) for an operation whose reply is wanted: that reply, or why
    /// it was given up on.
    pub(crate) async fn persist_for<T, F, Fut>(
        &self,
        what: &'static str,
        mut op: F,
    ) -> std::result::Result<T, GaveUp>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = reconnect_backoff();
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_connection_error() => {
                    crate::metrics::redis_error(&self.spec.agent, what);
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    warn!(error = %e, retry_in_ms = crate::time::millis(d), "{what} failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.hard_stop.cancelled() => return Err(GaveUp::Stopped),
                    }
                }
                Err(e) => {
                    error!(error = %e, "{what} failed");
                    return Err(GaveUp::Failed(e));
                }
            }
        }
    }
}
