//! How hooks are called: one bounded queue and one task per hook, each call bounded by a
//! timeout, failures logged and counted (see the module docs of [`crate::hooks`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;

use super::{DeadLettered, Delivery, Handled, Hook, HookOptions, HookStats, Outcome, Sent};

/// One event for a hook.
enum Event {
    Before(Arc<Delivery>),
    After(Arc<Delivery>, Handled),
    Send(Arc<Sent>),
    Dead(Arc<DeadLettered>),
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::Before(_) => "before_handle",
            Event::After(..) => "after_handle",
            Event::Send(_) => "on_send",
            Event::Dead(_) => "on_dead_letter",
        }
    }

    fn message_id(&self) -> &str {
        match self {
            Event::Before(d) | Event::After(d, _) => &d.message.id,
            Event::Send(s) => &s.message_id,
            Event::Dead(d) => d.message.as_ref().map_or(d.stream_id.as_str(), |m| &m.id),
        }
    }
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
    dropped: AtomicU64,
    /// Events queued and not yet finished.
    waiting: AtomicU64,
}

/// One hook, its queue (started at the first event, inside the runtime) and its counters.
struct Slot {
    hook: Arc<dyn Hook>,
    options: HookOptions,
    tx: OnceLock<mpsc::Sender<Event>>,
    counters: Arc<Counters>,
}

impl Slot {
    fn push(&self, event: Event) {
        let tx = self.tx.get_or_init(|| self.start());
        self.counters.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = tx.try_send(event) {
            self.counters.waiting.fetch_sub(1, Ordering::SeqCst);
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                let event = match &e {
                    mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => {
                        ev.kind()
                    }
                };
                tracing::warn!(
                    hook = self.hook.name(),
                    event,
                    dropped_total = n,
                    queue = self.options.queue,
                    "hook falls behind: its queue is full, event dropped (the message is not affected)"
                );
            }
        }
    }

    fn start(&self) -> mpsc::Sender<Event> {
        let (tx, mut rx) = mpsc::channel::<Event>(self.options.queue.max(1));
        let hook = self.hook.clone();
        let counters = self.counters.clone();
        let timeout = self.options.timeout;
        let run = async move {
            while let Some(event) = rx.recv().await {
                call(&*hook, &event, timeout, &counters).await;
                counters.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(run);
            }
            Err(_) => tracing::warn!(
                hook = self.hook.name(),
                "no Tokio runtime: this hook's events are dropped"
            ),
        }
        tx
    }
}

async fn call(hook: &dyn Hook, event: &Event, timeout: Duration, counters: &Counters) {
    let fut = match event {
        Event::Before(d) => hook.before_handle(d),
        Event::After(d, h) => hook.after_handle(d, h),
        Event::Send(s) => hook.on_send(s),
        Event::Dead(d) => hook.on_dead_letter(d),
    };
    let r = tokio::time::timeout(timeout, std::panic::AssertUnwindSafe(fut).catch_unwind()).await;
    let (kind, message_id, name) = (event.kind(), event.message_id(), hook.name());
    // Each failure is logged; a hook failing on every event is logged at `warn` on its
    // first failure of a kind and every 100th, at `debug` in between.
    let loud = |n: u64| n == 1 || n.is_multiple_of(100);
    match r {
        Ok(Ok(Ok(()))) => {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(Err(error))) => {
            let n = counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
            if loud(n) {
                tracing::warn!(hook = name, event = kind, message_id, %error, failed_total = n, "hook failed (the message is not affected)");
            } else {
                tracing::debug!(hook = name, event = kind, message_id, %error, "hook failed");
            }
        }
        Ok(Err(panic)) => {
            let n = counters.panicked.fetch_add(1, Ordering::Relaxed) + 1;
            let why = crate::error::panic_text(panic.as_ref());
            if loud(n) {
                tracing::warn!(hook = name, event = kind, message_id, panic = %why, panicked_total = n, "hook panicked (the message is not affected)");
            } else {
                tracing::debug!(hook = name, event = kind, message_id, panic = %why, "hook panicked");
            }
        }
        Err(_) => {
            let n = counters.timed_out.fetch_add(1, Ordering::Relaxed) + 1;
            let timeout_ms = crate::time::millis(timeout);
            if loud(n) {
                tracing::warn!(
                    hook = name,
                    event = kind,
                    message_id,
                    timeout_ms,
                    timed_out_total = n,
                    "hook call timed out and was abandoned (the message is not affected)"
                );
            } else {
                tracing::debug!(
                    hook = name,
                    event = kind,
                    message_id,
                    timeout_ms,
                    "hook call timed out"
                );
            }
        }
    }
}

/// The hooks of a bus (shared by its worker). Cheap to clone; free without hooks (no
/// shared counter to touch on every message).
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    slots: Option<Arc<[Arc<Slot>]>>,
}

impl Hooks {
    /// These hooks and `hook`.
    pub(crate) fn with(&self, hook: Arc<dyn Hook>, options: HookOptions) -> Hooks {
        let mut slots: Vec<Arc<Slot>> = self.slots().to_vec();
        slots.push(Arc::new(Slot {
            hook,
            options,
            tx: OnceLock::new(),
            counters: Arc::default(),
        }));
        Hooks {
            slots: Some(slots.into()),
        }
    }

    fn slots(&self) -> &[Arc<Slot>] {
        self.slots.as_deref().unwrap_or_default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_none()
    }

    fn push(&self, make: impl Fn() -> Event) {
        for s in self.slots().iter() {
            s.push(make());
        }
    }

    pub(crate) fn before(&self, d: &Arc<Delivery>) {
        self.push(|| Event::Before(d.clone()));
    }

    pub(crate) fn after(&self, d: &Arc<Delivery>, outcome: Outcome) {
        let duration = d.started_at.elapsed().unwrap_or_default();
        let handled = Handled { outcome, duration };
        self.push(|| Event::After(d.clone(), handled.clone()));
    }

    pub(crate) fn sent(&self, s: Sent) {
        let s = Arc::new(s);
        self.push(|| Event::Send(s.clone()));
    }

    pub(crate) fn dead(&self, d: DeadLettered) {
        let d = Arc::new(d);
        self.push(|| Event::Dead(d.clone()));
    }

    /// Waits until every queued event was handled by its hook, or `timeout` passed; a hook
    /// whose calls time out meanwhile is not waited for (its events would take a timeout
    /// each). Returns whether every event was delivered.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out_before: Vec<u64> = self
            .slots()
            .iter()
            .map(|s| s.counters.timed_out.load(Ordering::Relaxed))
            .collect();
        loop {
            let mut waiting = 0;
            let mut abandoned = 0;
            for (s, before) in self.slots().iter().zip(&timed_out_before) {
                let w = s.counters.waiting.load(Ordering::SeqCst);
                if s.counters.timed_out.load(Ordering::Relaxed) > *before {
                    abandoned += w;
                } else {
                    waiting += w;
                }
            }
            if waiting == 0 || tokio::time::Instant::now() >= deadline {
                let lost = waiting + abandoned;
                if lost > 0 {
                    tracing::warn!(
                        events = lost,
                        "hook events still queued at shutdown are not delivered (a hook timing out, or the shutdown timeout reached)"
                    );
                }
                return lost == 0;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn stats(&self) -> Vec<HookStats> {
        self.slots()
            .iter()
            .map(|s| {
                let c = &s.counters;
                HookStats {
                    name: s.hook.name().to_owned(),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    panicked: c.panicked.load(Ordering::Relaxed),
                    timed_out: c.timed_out.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots().iter().map(|s| s.hook.name()))
            .finish()
    }
}
