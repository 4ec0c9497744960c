//! The sampler: every few seconds, the state of every agent's inbox and the counters Redis
//! keeps for it, with a short history of the counters for the charts.
//!
//! Counters per sample: entries ever added to the inbox (`XINFO STREAM` entries-added), entries
//! the workers group has acknowledged (its entries-read minus its pending: dead-lettered ones
//! included, as they are acknowledged too) and dead letters (`XLEN`). The charts show their
//! increase per interval: arrivals, processed, failed (dead-lettered). A counter that went
//! down (a stream deleted, dead letters requeued or purged) counts as no increase.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fabric_worker::Bus;
use fabric_worker::bus::{QueueStatus, WorkerPresence};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::output::now_ms;

/// One agent as the table shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct AgentRow {
    pub(crate) agent: String,
    pub(crate) group: String,
    pub(crate) has_inbox: bool,
    pub(crate) group_exists: bool,
    pub(crate) paused: bool,
    /// Not yet handled: undelivered + pending (lanes included).
    pub(crate) depth: u64,
    /// Delivered to a consumer and not acknowledged.
    pub(crate) pending: u64,
    /// Not yet delivered to the workers group.
    pub(crate) lag: Option<u64>,
    pub(crate) stream_length: u64,
    pub(crate) dead_letters: u64,
    pub(crate) scheduled_retries: u64,
    pub(crate) scheduled: u64,
    pub(crate) expired: u64,
    pub(crate) oldest_pending_age_ms: Option<u64>,
    pub(crate) consumers: Vec<ConsumerRow>,
    pub(crate) workers: Vec<WorkerRow>,
    pub(crate) live_workers: usize,
}

/// A consumer of the workers group.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ConsumerRow {
    pub(crate) name: String,
    pub(crate) pending: u64,
    pub(crate) idle_ms: u64,
    /// The worker process behind it, when it registered: `live`, `stopped` or `gone`.
    pub(crate) state: Option<&'static str>,
    pub(crate) host: Option<String>,
    pub(crate) pid: Option<u32>,
}

/// A worker process of the agent.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct WorkerRow {
    pub(crate) state: &'static str,
    #[serde(flatten)]
    pub(crate) presence: WorkerPresence,
}

/// `live`, `stopped` (said goodbye) or `gone` (stopped refreshing its record).
fn worker_state(w: &WorkerPresence, now_ms: u64) -> &'static str {
    if w.stopped_ms.is_some() {
        "stopped"
    } else if w.is_live(now_ms) {
        "live"
    } else {
        "gone"
    }
}

/// The counters of one agent at one time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    t_ms: u64,
    added: Option<u64>,
    handled: Option<u64>,
    dead: u64,
}

/// Increases per interval, for the charts: `t_ms[i]` ends interval `i`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Series {
    /// When the first interval starts.
    pub(crate) start_ms: Option<u64>,
    pub(crate) t_ms: Vec<u64>,
    pub(crate) arrived: Vec<u64>,
    pub(crate) processed: Vec<u64>,
    pub(crate) failed: Vec<u64>,
}

impl Series {
    fn from_points(points: &VecDeque<Point>) -> Series {
        let mut s = Series {
            start_ms: points.front().map(|p| p.t_ms),
            ..Series::default()
        };
        let inc = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        for (a, b) in points.iter().zip(points.iter().skip(1)) {
            s.t_ms.push(b.t_ms);
            s.arrived.push(inc(a.added, b.added));
            s.processed.push(inc(a.handled, b.handled));
            s.failed.push(b.dead.saturating_sub(a.dead));
        }
        s
    }

    /// At most `max` intervals: consecutive ones summed into one (the oldest bucket may be
    /// shorter), so that a long history stays a small answer.
    pub(crate) fn downsample(&self, max: usize) -> Series {
        let n = self.t_ms.len();
        if n <= max || max == 0 {
            return self.clone();
        }
        let size = n.div_ceil(max);
        let mut out = Series {
            start_ms: self.start_ms,
            ..Series::default()
        };
        let mut end = n;
        let mut buckets = Vec::new();
        while end > 0 {
            let start = end.saturating_sub(size);
            buckets.push(start..end);
            end = start;
        }
        for r in buckets.into_iter().rev() {
            out.t_ms.push(self.t_ms[r.end - 1]);
            out.arrived.push(self.arrived[r.clone()].iter().sum());
            out.processed.push(self.processed[r.clone()].iter().sum());
            out.failed.push(self.failed[r].iter().sum());
        }
        out
    }

    /// Adds `other` interval by interval (aligned on the latest).
    fn add(&mut self, other: &Series) {
        self.start_ms = match (self.start_ms, other.start_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if other.t_ms.len() > self.t_ms.len() {
            let extra = other.t_ms.len() - self.t_ms.len();
            let pad = |v: &mut Vec<u64>| {
                let mut n = vec![0; extra];
                n.append(v);
                *v = n;
            };
            let mut t = other.t_ms[..extra].to_vec();
            t.append(&mut self.t_ms);
            self.t_ms = t;
            pad(&mut self.arrived);
            pad(&mut self.processed);
            pad(&mut self.failed);
        }
        let off = self.t_ms.len() - other.t_ms.len();
        for i in 0..other.t_ms.len() {
            self.arrived[off + i] += other.arrived[i];
            self.processed[off + i] += other.processed[i];
            self.failed[off + i] += other.failed[i];
        }
    }

    /// Sums of the intervals that ended within `window_ms` of the last one:
    /// (arrived, processed, failed, covered ms).
    pub(crate) fn recent(&self, window_ms: u64) -> (u64, u64, u64, u64) {
        let Some(&last) = self.t_ms.last() else {
            return (0, 0, 0, 0);
        };
        let (mut a, mut p, mut f, mut first) = (0, 0, 0, last);
        for i in (0..self.t_ms.len()).rev() {
            if last - self.t_ms[i] >= window_ms {
                break;
            }
            a += self.arrived[i];
            p += self.processed[i];
            f += self.failed[i];
            first = if i > 0 {
                self.t_ms[i - 1]
            } else {
                self.start_ms.unwrap_or(self.t_ms[i])
            };
        }
        (a, p, f, last - first)
    }
}

struct Inner {
    rows: BTreeMap<String, AgentRow>,
    points: BTreeMap<String, VecDeque<Point>>,
    last_ok_ms: Option<u64>,
    error: Option<String>,
    error_since_ms: Option<u64>,
    url: Option<String>,
}

/// The latest state of every agent and the recent counters.
pub(crate) struct History {
    pub(crate) interval: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

/// What the overview answers.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) rows: Vec<(AgentRow, Series)>,
    pub(crate) total: Series,
    pub(crate) last_ok_ms: Option<u64>,
    pub(crate) error: Option<String>,
    pub(crate) error_since_ms: Option<u64>,
    pub(crate) url: Option<String>,
}

impl History {
    pub(crate) fn new(interval: Duration, keep: Duration) -> History {
        let interval = interval.max(Duration::from_millis(100));
        let n = keep.as_millis() / interval.as_millis().max(1);
        History {
            interval,
            capacity: usize::try_from(n).unwrap_or(usize::MAX).clamp(2, 10_000) + 1,
            inner: Mutex::new(Inner {
                rows: BTreeMap::new(),
                points: BTreeMap::new(),
                last_ok_ms: None,
                error: None,
                error_since_ms: None,
                url: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, t_ms: u64, url: String, sampled: Vec<(AgentRow, Point)>) {
        let mut g = self.lock();
        g.last_ok_ms = Some(t_ms);
        g.error = None;
        g.error_since_ms = None;
        g.url = Some(url);
        let names: Vec<String> = sampled.iter().map(|(r, _)| r.agent.clone()).collect();
        g.rows.retain(|k, _| names.contains(k));
        g.points.retain(|k, _| names.contains(k));
        for (row, point) in sampled {
            let cap = self.capacity;
            let q = g.points.entry(row.agent.clone()).or_default();
            q.push_back(point);
            while q.len() > cap {
                q.pop_front();
            }
            g.rows.insert(row.agent.clone(), row);
        }
    }

    fn failed(&self, t_ms: u64, error: String) {
        let mut g = self.lock();
        if g.error_since_ms.is_none() {
            g.error_since_ms = Some(t_ms);
        }
        g.error = Some(error);
    }

    /// The agents `visible` lets through, with their series, and the total of their series.
    pub(crate) fn snapshot(&self, visible: impl Fn(&str) -> bool) -> Snapshot {
        let g = self.lock();
        let mut total = Series::default();
        let rows = g
            .rows
            .values()
            .filter(|r| visible(&r.agent))
            .map(|r| {
                let s = g
                    .points
                    .get(&r.agent)
                    .map(Series::from_points)
                    .unwrap_or_default();
                total.add(&s);
                (r.clone(), s)
            })
            .collect();
        Snapshot {
            rows,
            total,
            last_ok_ms: g.last_ok_ms,
            error: g.error.clone(),
            error_since_ms: g.error_since_ms,
            url: g.url.clone(),
        }
    }
}

/// One agent's row and counters.
async fn sample_agent(
    bus: &Bus,
    agent: &str,
    now: u64,
) -> fabric_worker::Result<(AgentRow, Point)> {
    let st: QueueStatus = bus.queue_status(agent, None).await?;
    let groups = bus.groups(agent).await?;
    let workers = bus.workers(agent).await?;
    let handled = groups
        .iter()
        .find(|g| g.name == st.group)
        .and_then(fabric_worker::bus::GroupStatus::acknowledged);
    let point = Point {
        t_ms: now,
        added: st.stream_info.as_ref().and_then(|i| i.entries_added),
        handled,
        dead: st.dead_letters,
    };
    let consumers = st
        .consumers
        .iter()
        .map(|c| {
            let w = workers.iter().find(|w| w.consumer == c.name);
            ConsumerRow {
                name: c.name.clone(),
                pending: c.pending,
                idle_ms: c.idle_ms,
                state: w.map(|w| worker_state(w, now)),
                host: w.map(|w| w.host.clone()),
                pid: w.map(|w| w.pid),
            }
        })
        .collect();
    let mut workers: Vec<WorkerRow> = workers
        .into_iter()
        .map(|w| WorkerRow {
            state: worker_state(&w, now),
            presence: w,
        })
        .collect();
    workers.sort_by_key(|w| std::cmp::Reverse(w.presence.seen_ms));
    let row = AgentRow {
        agent: agent.to_owned(),
        group: st.group.clone(),
        has_inbox: st.stream_length > 0 || st.last_generated_id.is_some(),
        group_exists: st.group_exists,
        paused: st.paused,
        depth: st.queue_depth,
        pending: st.pending,
        lag: st.undelivered,
        stream_length: st.stream_length,
        dead_letters: st.dead_letters,
        scheduled_retries: st.scheduled_retries,
        scheduled: st.scheduled,
        expired: st.expired,
        oldest_pending_age_ms: st.oldest_pending_age_ms,
        consumers,
        live_workers: workers.iter().filter(|w| w.state == "live").count(),
        workers,
    };
    Ok((row, point))
}

async fn sample(state: &AppState) -> fabric_worker::Result<()> {
    let started = std::time::Instant::now();
    let bus = state.bus.bus().await?;
    let agents = bus.agents().await?;
    let now = now_ms();
    let mut out = Vec::with_capacity(agents.len());
    for a in &agents {
        out.push(sample_agent(&bus, a, now).await?);
    }
    state.history.record(now, bus.url().to_owned(), out);
    let took = started.elapsed();
    tracing::debug!(
        agents = agents.len(),
        took_ms = took.as_millis(),
        "dashboard: inboxes sampled"
    );
    if took > state.history.interval {
        tracing::warn!(
            agents = agents.len(),
            took_ms = took.as_millis(),
            "dashboard: sampling takes longer than --sample-interval-ms; the charts get fewer points"
        );
    }
    Ok(())
}

/// Samples every interval until `stop`.
pub(super) async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.history.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sample(&state).await {
            tracing::warn!(error = %e, "dashboard: sampling the inboxes failed; trying again");
            state.history.failed(now_ms(), e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t_ms: u64, added: u64, handled: u64, dead: u64) -> Point {
        Point {
            t_ms,
            added: Some(added),
            handled: Some(handled),
            dead,
        }
    }

    #[test]
    fn series_are_increases_and_never_negative() {
        let pts: VecDeque<Point> = [
            p(1000, 10, 5, 0),
            p(3000, 15, 9, 1),
            p(5000, 15, 15, 0), // dead letters requeued: no failure counted
            p(7000, 2, 16, 0),  // stream re-created: no arrival counted
        ]
        .into();
        let s = Series::from_points(&pts);
        assert_eq!(s.t_ms, vec![3000, 5000, 7000]);
        assert_eq!(s.arrived, vec![5, 0, 0]);
        assert_eq!(s.processed, vec![4, 6, 1]);
        assert_eq!(s.failed, vec![1, 0, 0]);
        assert_eq!(s.recent(60_000), (5, 11, 1, 6000));
        assert_eq!(s.recent(3000), (0, 7, 0, 4000));
    }

    #[test]
    fn downsampling_sums_buckets_ending_at_the_latest() {
        let pts: VecDeque<Point> = (0..=7).map(|i| p(i * 10, i, i * 2, 0)).collect();
        let s = Series::from_points(&pts);
        assert_eq!(s.t_ms.len(), 7);
        let d = s.downsample(3);
        assert_eq!(d.t_ms, vec![10, 40, 70]);
        assert_eq!(d.arrived, vec![1, 3, 3]);
        assert_eq!(d.processed, vec![2, 6, 6]);
        assert_eq!(d.start_ms, Some(0));
        assert_eq!(s.downsample(10), s);
        assert_eq!(s.recent(1000), d.recent(1000));
    }

    #[test]
    fn totals_align_on_the_latest_interval() {
        let a = Series::from_points(&[p(1, 0, 0, 0), p(2, 1, 1, 0), p(3, 3, 2, 1)].into());
        let b = Series::from_points(&[p(2, 0, 0, 0), p(3, 5, 5, 0)].into());
        let mut t = Series::default();
        t.add(&b);
        t.add(&a);
        assert_eq!(t.t_ms, vec![2, 3]);
        assert_eq!(t.arrived, vec![1, 7]);
        assert_eq!(t.processed, vec![1, 6]);
        assert_eq!(t.failed, vec![0, 1]);
    }

    #[test]
    fn history_keeps_a_bounded_window() {
        let h = History::new(Duration::from_secs(1), Duration::from_secs(3));
        for i in 0..10 {
            h.record(i * 1000, "redis://x".into(), Vec::new());
        }
        assert_eq!(h.capacity, 4);
        h.failed(20_000, "down".into());
        h.failed(22_000, "still down".into());
        let s = h.snapshot(|_| true);
        assert_eq!(s.error.as_deref(), Some("still down"));
        assert_eq!(s.error_since_ms, Some(20_000));
        assert_eq!(s.last_ok_ms, Some(9000));
    }
}
