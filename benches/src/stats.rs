//! What the consumer processes (our worker and the raw baseline) share: the payload they
//! parse, the send → handler-start latency recorder, and the stats file they leave behind.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The payload of every benchmark message. Both consumers deserialize it completely.
/// `sent_us` (µs since the Unix epoch, same machine clock) is set by the latency sender;
/// 0 means "do not record a latency".
#[derive(Debug, Deserialize)]
pub(crate) struct BenchPayload {
    pub task_type: String,
    pub pr_id: String,
    #[serde(default)]
    pub repo: String,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub sent_us: u64,
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Counts handled messages and records send → handler-start latencies: one atomic
/// increment per message, plus one uncontended mutex + histogram bump for timed ones.
#[derive(Debug)]
pub(crate) struct Recorder {
    handled: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            handled: AtomicU64::new(0),
            first_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            hist: Mutex::new(
                Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            ),
        }
    }
}

impl Recorder {
    /// Called at handler start with the payload just parsed.
    pub(crate) fn record(&self, p: &BenchPayload) {
        let now = now_us();
        if self.first_us.load(Ordering::Relaxed) == 0 {
            let _ = self
                .first_us
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.last_us.fetch_max(now, Ordering::Relaxed);
        if p.sent_us > 0 {
            let lat = now.saturating_sub(p.sent_us).max(1);
            if let Ok(mut h) = self.hist.lock() {
                h.saturating_record(lat);
            }
        }
        // Touch the parsed fields so nothing is optimised away.
        std::hint::black_box(p.task_type.len() + p.pr_id.len() + p.repo.len() + p.files.len());
        self.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// What this process did, for its stats file.
    pub(crate) fn snapshot(&self) -> ProcStats {
        let latency = self.hist.lock().ok().and_then(|h| {
            (!h.is_empty()).then(|| LatencySummary {
                count: h.len(),
                p50_us: h.value_at_quantile(0.50),
                p99_us: h.value_at_quantile(0.99),
                p999_us: h.value_at_quantile(0.999),
                max_us: h.max(),
                mean_us: h.mean(),
            })
        });
        ProcStats {
            handled: self.handled.load(Ordering::Relaxed),
            first_us: self.first_us.load(Ordering::Relaxed),
            last_us: self.last_us.load(Ordering::Relaxed),
            latency,
        }
    }
}

/// The stats file a consumer process writes when it stops.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ProcStats {
    pub handled: u64,
    /// When the first handler started (µs since the epoch; 0: none).
    pub first_us: u64,
    /// When the last handler started.
    pub last_us: u64,
    pub latency: Option<LatencySummary>,
}

/// Send → handler-start latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Writes `stats` to `path` (JSON).
pub(crate) fn write_stats(path: &Path, stats: &ProcStats) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec(stats)?)?;
    Ok(())
}
