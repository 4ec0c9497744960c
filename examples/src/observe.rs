//! The seed plan's two observers as [`Hook`]s: a **telemetry recorder** (every message is a
//! telemetry event `a2a.message` with from, to, latency_ms and payload_size, as the plan's
//! `atp.record_event` does) and a **memory archiver** (every message stored with the tags
//! `a2a`, its sender and its recipient, as the plan's `triad.store_message` does). Both write
//! to Redis; give them to a worker with `WorkerBuilder::hook` (see `bin/observed_worker.rs`).
//!
//! Redis layout (this example's, not part of the fabric protocol):
//!
//! - `fabric:telemetry` — a stream (capped near 1,000,000 entries), one entry per handled or
//!   dead-lettered message: `event a2a.message`, `from`, `to`, `message_id`, `message_type`,
//!   `latency_ms` (sent → handler start), `payload_size` (bytes of the JSON payload),
//!   `outcome` (`ok`, `retry`, `dead_letter:<reason>`, `stopped`), `duration_ms`, `trace_id`.
//! - `memory:message:<id>` — a hash: `envelope` (the message as JSON), `headers`, `tags`
//!   (comma-separated), `layer` (`short_term`, or `long_term` for high and urgent messages),
//!   `outcome`, `archived_at_ms`; `memory:tag:<tag>` — a set of message ids per tag;
//!   `memory:timeline` — a sorted set of ids by archive time (ms).

use fabric_worker::Message;
use fabric_worker::hooks::{
    DeadLettered, Delivery, Handled, Hook, HookResult, Outcome, async_trait,
};
use fabric_worker::trace_context::TraceContext;
use redis::aio::ConnectionManager;

/// The telemetry stream.
pub const TELEMETRY_STREAM: &str = "fabric:telemetry";

/// Ms since the epoch now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Ms since the epoch of a message's `timestamp` (naive UTC, as the Python bus writes it).
fn sent_ms(m: &Message) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(&m.timestamp, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Retry { .. } => "retry".into(),
        Outcome::DeadLetter { reason, .. } => format!("dead_letter:{reason}"),
        _ => "stopped".into(),
    }
}

async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new(redis::Client::open(url)?).await
}

/// Records one `a2a.message` telemetry event per handled (or dead-lettered) message into
/// the stream [`TELEMETRY_STREAM`].
#[derive(Clone)]
pub struct TelemetryRecorder {
    conn: ConnectionManager,
}

impl std::fmt::Debug for TelemetryRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelemetryRecorder")
    }
}

impl TelemetryRecorder {
    /// Connects to the Redis that stores the events.
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        Ok(TelemetryRecorder {
            conn: connect(url).await?,
        })
    }

    async fn record(
        &self,
        m: &Message,
        latency_ms: i64,
        outcome: &str,
        duration_ms: u128,
    ) -> HookResult {
        let payload_size = serde_json::to_vec(&m.payload)?.len();
        let trace_id = TraceContext::from_headers(&m.headers)
            .map(|c| c.trace_id_hex())
            .unwrap_or_default();
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(TELEMETRY_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(1_000_000)
            .arg("*")
            .arg(&[
                ("event", "a2a.message".to_owned()),
                ("from", m.from_agent.clone()),
                ("to", m.to_agent.clone()),
                ("message_id", m.id.clone()),
                ("message_type", m.message_type.clone()),
                ("latency_ms", latency_ms.to_string()),
                ("payload_size", payload_size.to_string()),
                ("outcome", outcome.to_owned()),
                ("duration_ms", duration_ms.to_string()),
                ("trace_id", trace_id),
            ])
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Hook for TelemetryRecorder {
    fn name(&self) -> &str {
        "telemetry"
    }

    async fn after_handle(&self, d: &Delivery, h: &Handled) -> HookResult {
        let started = chrono::DateTime::<chrono::Utc>::from(d.started_at).timestamp_millis();
        let latency = sent_ms(&d.message).map_or(0, |sent| (started - sent).max(0));
        let outcome = outcome_text(&h.outcome);
        self.record(&d.message, latency, &outcome, h.duration.as_millis())
            .await
    }

    async fn on_dead_letter(&self, dead: &DeadLettered) -> HookResult {
        // Handled messages were recorded by after_handle; these never reached a handler.
        match &dead.message {
            Some(m) if !handled_reason(&dead.reason) => {
                let latency = sent_ms(m).map_or(0, |sent| (now_ms() - sent).max(0));
                let outcome = format!("dead_letter:{}", dead.reason);
                self.record(m, latency, &outcome, 0).await
            }
            _ => Ok(()),
        }
    }
}

/// Whether a dead letter of this reason comes after a handler ran (so `after_handle` saw it).
fn handled_reason(r: &fabric_worker::bus::DeadReason) -> bool {
    use fabric_worker::bus::DeadReason as R;
    matches!(
        r,
        R::MaxAttempts | R::PermanentError | R::BadPayload | R::ReplyFailed
    )
}

/// Stores every message handled (or dead-lettered) with its tags, for the agents' memory.
#[derive(Clone)]
pub struct MemoryArchiver {
    conn: ConnectionManager,
}

impl std::fmt::Debug for MemoryArchiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryArchiver")
    }
}

impl MemoryArchiver {
    /// Connects to the Redis that stores the archive.
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        Ok(MemoryArchiver {
            conn: connect(url).await?,
        })
    }

    /// The tags a message is stored with: `a2a`, its sender, its recipient.
    pub fn tags(m: &Message) -> [String; 3] {
        ["a2a".to_owned(), m.from_agent.clone(), m.to_agent.clone()]
    }

    /// Stores `m` (again: storing is idempotent, keyed by the message id).
    async fn store(&self, m: &Message, outcome: &str) -> HookResult {
        let tags = Self::tags(m);
        let layer = if m.priority >= fabric_worker::Priority::High {
            "long_term"
        } else {
            "short_term"
        };
        let key = format!("memory:message:{}", m.id);
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET").arg(&key).arg(&[
            ("envelope", m.to_data()?),
            ("headers", serde_json::to_string(&m.headers)?),
            ("tags", tags.join(",")),
            ("layer", layer.to_owned()),
            ("outcome", outcome.to_owned()),
            ("archived_at_ms", now.to_string()),
        ]);
        for t in &tags {
            pipe.cmd("SADD").arg(format!("memory:tag:{t}")).arg(&m.id);
        }
        pipe.cmd("ZADD").arg("memory:timeline").arg(now).arg(&m.id);
        let mut conn = self.conn.clone();
        let _: redis::Value = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}

#[async_trait]
impl Hook for MemoryArchiver {
    fn name(&self) -> &str {
        "memory"
    }

    async fn after_handle(&self, d: &Delivery, h: &Handled) -> HookResult {
        self.store(&d.message, &outcome_text(&h.outcome)).await
    }

    async fn on_dead_letter(&self, dead: &DeadLettered) -> HookResult {
        match &dead.message {
            Some(m) => self.store(m, &format!("dead_letter:{}", dead.reason)).await,
            None => Ok(()),
        }
    }
}
