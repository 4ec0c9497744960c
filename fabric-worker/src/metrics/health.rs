//! Liveness and readiness.
//!
//! Liveness: every read loop of the process (one per served inbox or results stream) keeps
//! a [`Beat`]. A loop is *stalled* when it has been trying to read for longer than its bound
//! without one read completing: reads failing (Redis gone, a reconnect that never
//! succeeds), or one read hanging. A loop waiting on purpose (all handlers busy, agent
//! paused) after a read that completed is not stalled. The bound is
//! [`liveness_bound`]: twice the read's block time plus 5 s (15 s with the default 5 s
//! block), since a healthy blocking read returns within the block time plus a round trip.
//!
//! Readiness: Redis answers `PING` within [`READY_PING_TIMEOUT`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use crate::bus::Bus;

/// How long `/readyz` waits for Redis's answer to `PING`.
pub const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a read loop may try to read without completing one before it counts as stalled.
pub(crate) fn liveness_bound(block: Duration) -> Duration {
    block * 2 + Duration::from_secs(5)
}

struct BeatInner {
    agent: String,
    /// The loop's handler slots, and how many there are: the slots taken are the messages
    /// in flight (sampled into `fabric_messages_in_flight`, not counted per message).
    slots: Arc<tokio::sync::Semaphore>,
    capacity: usize,
    stream: String,
    bound: Duration,
    /// When the loop started trying to read without success since (ms since the epoch);
    /// 0 when its last read completed.
    busy_since: AtomicU64,
}

/// The read loops of this process.
static BEATS: Mutex<Vec<Weak<BeatInner>>> = Mutex::new(Vec::new());

/// A read loop's heartbeat: registered while the loop lives, dropped with it.
pub(crate) struct Beat(Arc<BeatInner>);

impl Beat {
    /// Registers a loop of `agent` reading `stream` (trying from now on), whose handlers
    /// take `slots` (`capacity` in all).
    pub(crate) fn register(
        agent: &str,
        stream: &str,
        bound: Duration,
        slots: Arc<tokio::sync::Semaphore>,
        capacity: usize,
    ) -> Beat {
        let inner = Arc::new(BeatInner {
            agent: agent.to_owned(),
            slots,
            capacity,
            stream: stream.to_owned(),
            bound,
            busy_since: AtomicU64::new(crate::time::now_ms().max(1)),
        });
        let mut beats = crate::broker::lock(&BEATS);
        beats.retain(|w| w.strong_count() > 0);
        beats.push(Arc::downgrade(&inner));
        Beat(inner)
    }

    /// The loop is about to read (or reconnect): from now on it is trying, unless it
    /// already was.
    pub(crate) fn reading(&self) {
        let now = crate::time::now_ms().max(1);
        let _ = self
            .0
            .busy_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A read completed.
    pub(crate) fn read_done(&self) {
        self.0.busy_since.store(0, Ordering::Relaxed);
    }
}

/// Messages in flight per agent: the handler slots taken in every read loop of this process.
pub(crate) fn in_flight() -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for b in crate::broker::lock(&BEATS).iter().filter_map(Weak::upgrade) {
        let used = b.capacity.saturating_sub(b.slots.available_permits());
        *out.entry(b.agent.clone()).or_insert(0) += used;
    }
    out
}

/// The answer of a health check: whether it passed, and a small JSON body saying why.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Healthy (HTTP 200) or not (HTTP 503).
    pub ok: bool,
    /// `{"status": "ok", …}` or `{"status": "unhealthy" | "unready", "reason": …}`.
    pub body: Value,
}

/// Liveness of this process: every read loop completed a read recently (see the module
/// documentation for the bound). A process without read loops (e.g. `fabric mcp`) is live.
pub fn liveness() -> Probe {
    let now = crate::time::now_ms();
    let beats: Vec<Arc<BeatInner>> = crate::broker::lock(&BEATS)
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let stalled: Vec<Value> = beats
        .iter()
        .filter_map(|b| {
            let since = b.busy_since.load(Ordering::Relaxed);
            let stuck_ms = if since == 0 {
                0
            } else {
                now.saturating_sub(since)
            };
            (Duration::from_millis(stuck_ms) > b.bound).then(|| {
                json!({
                    "agent": b.agent,
                    "stream": b.stream,
                    "without_read_ms": stuck_ms,
                    "bound_ms": crate::time::millis(b.bound),
                })
            })
        })
        .collect();
    if stalled.is_empty() {
        Probe {
            ok: true,
            body: json!({"status": "ok", "read_loops": beats.len()}),
        }
    } else {
        Probe {
            ok: false,
            body: json!({
                "status": "unhealthy",
                "reason": format!("{} of {} read loops completed no read within their bound (Redis unreachable, or a loop stuck)", stalled.len(), beats.len()),
                "stalled": stalled,
            }),
        }
    }
}

/// Readiness: Redis answers `PING` within [`READY_PING_TIMEOUT`].
pub async fn readiness(bus: &Bus) -> Probe {
    let started = std::time::Instant::now();
    let ping = async {
        redis::cmd("PING")
            .query_async::<String>(&mut bus.broker().conn())
            .await
    };
    let why = match tokio::time::timeout(READY_PING_TIMEOUT, ping).await {
        Ok(Ok(_)) => {
            return Probe {
                ok: true,
                body: json!({
                    "status": "ok",
                    "redis": "reachable",
                    "ping_ms": crate::time::millis(started.elapsed()),
                }),
            };
        }
        Ok(Err(e)) => format!("Redis PING failed: {e}"),
        Err(_) => format!(
            "Redis did not answer PING within {} ms",
            crate::time::millis(READY_PING_TIMEOUT)
        ),
    };
    Probe {
        ok: false,
        body: json!({"status": "unready", "reason": why, "redis": bus.broker().url()}),
    }
}
