//! Hooks: your code told about every message a worker handles, sends or dead-letters — for
//! telemetry, archiving, auditing — without being able to lose or hold up a message.
//!
//! Implement [`Hook`] (every method has a no-op default) and give it to a worker with
//! [`WorkerBuilder::hook`](crate::runtime::WorkerBuilder::hook) or to a bus with
//! [`Bus::with_hook`](crate::Bus::with_hook). A worker's hooks are its bus's hooks: they see
//! what its handlers send too.
//!
//! # A failing or slow hook cannot lose or block messages
//!
//! Hooks are observers, called **after the fact and off the message path**:
//!
//! - Each event is put on the hook's own bounded queue (default 10,000 events,
//!   [`HookOptions::queue`]) with a non-blocking push; one task per hook drains it, calling
//!   the hook for one event at a time. Handling, acknowledging and sending never wait for a
//!   hook.
//! - Each call is bounded by a timeout (default 2 s, [`HookOptions::timeout`]): a call that
//!   takes longer is abandoned and logged (`warn`, with the hook's name, the event and the
//!   message id), and the next event is delivered.
//! - An error returned by a hook, or a panic in it, is logged the same way and counted;
//!   the message is not affected.
//! - When a hook's queue is full (it falls behind), new events for that hook are dropped and
//!   counted ([`HookStats::dropped`]), with a `warn` on the first drop and every 1,000th.
//! - When a worker stops, it waits (at most its shutdown timeout) for its hooks' queues to
//!   drain, so a clean shutdown loses no event — except a hook whose calls time out during
//!   that wait: it is not waited for.
//! - Failures are logged at `warn` (the first of each kind for a hook and every 100th, with
//!   the running total; `debug` in between), with the fields `hook`, `event`, `message_id`.
//!
//! So a hook sees every event unless it falls a whole queue behind; it never sees an event
//! before the fact it describes (e.g. `after_handle` follows the acknowledgement or the
//! retry being scheduled).

mod queue;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::broker::DeadReason;
use crate::message::Message;
pub(crate) use queue::Hooks;

/// The attribute to implement [`Hook`] with (re-exported from `async-trait`).
pub use async_trait::async_trait;

/// What a hook method returns: an error is logged (with the hook's name) and counted, and
/// has no other effect.
pub type HookResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// An observer of a worker's or a bus's messages. Every method has a no-op default;
/// implement those you need under [`#[async_trait]`](macro@async_trait) (re-exported here).
///
/// See [the module docs](self) for how hooks are called: off the message path, one event at
/// a time per hook, each call bounded by [`HookOptions::timeout`]; errors, panics and
/// timeouts are logged and counted and never affect a message.
///
/// ```
/// use fabric_worker::hooks::{Delivery, Handled, Hook, HookResult, async_trait};
///
/// struct Latency;
///
/// #[async_trait]
/// impl Hook for Latency {
///     async fn after_handle(&self, d: &Delivery, h: &Handled) -> HookResult {
///         println!("{} {} took {:?}: {}", d.agent, d.message.id, h.duration, h.outcome);
///         Ok(())
///     }
/// }
///
/// # #[allow(dead_code)]
/// # async fn demo() -> fabric_worker::Result<()> {
/// fabric_worker::Worker::builder("percy").hook(Latency).run().await
/// # }
/// ```
#[async_trait::async_trait]
pub trait Hook: Send + Sync + 'static {
    /// The name logs give this hook (default: its type's name).
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// A worker is about to run a handler for `delivery`.
    async fn before_handle(&self, delivery: &Delivery) -> HookResult {
        let _ = delivery;
        Ok(())
    }

    /// A handler ran for `delivery`, with this outcome (after the acknowledgement, or after
    /// the retry or dead letter was written).
    async fn after_handle(&self, delivery: &Delivery, handled: &Handled) -> HookResult {
        let _ = (delivery, handled);
        Ok(())
    }

    /// A message was queued by [`Bus::send`](crate::Bus::send),
    /// [`Bus::send_batch`](crate::Bus::send_batch) or
    /// [`Bus::send_once`](crate::Bus::send_once) (not a duplicate), or a worker wrote a reply.
    async fn on_send(&self, sent: &Sent) -> HookResult {
        let _ = sent;
        Ok(())
    }

    /// A worker moved an entry to its agent's dead letters.
    async fn on_dead_letter(&self, dead: &DeadLettered) -> HookResult {
        let _ = dead;
        Ok(())
    }
}

impl std::fmt::Debug for dyn Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hook({})", self.name())
    }
}

/// How a hook is called: see [the module docs](self).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct HookOptions {
    /// Longest one call may take before it is abandoned (default 2 s).
    pub timeout: Duration,
    /// Events waiting for the hook before new ones are dropped (default 10,000; at least 1).
    pub queue: usize,
}

impl Default for HookOptions {
    fn default() -> Self {
        HookOptions {
            timeout: Duration::from_secs(2),
            queue: 10_000,
        }
    }
}

impl HookOptions {
    /// These options with `timeout` per call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// These options with a queue of `n` events.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
}

/// A message a worker handles.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Delivery {
    /// The agent whose handler runs.
    pub agent: String,
    /// The stream it was read from (`agent:<id>:inbox`, …).
    pub stream: String,
    /// Its entry id in that stream.
    pub stream_id: String,
    /// The message, with its headers.
    pub message: Arc<Message>,
    /// The 1-based attempt.
    pub attempt: u32,
    /// How many times Redis delivered this entry (1 unless reclaimed).
    pub delivery_count: u64,
    /// When the handler started.
    pub started_at: SystemTime,
}

/// The outcome of a handler run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It succeeded (and its reply, if any, was written).
    Ok,
    /// It failed and will run again (attempt `next_attempt`, after `delay`).
    Retry {
        /// The attempt that will run.
        next_attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// What failed.
        error: String,
    },
    /// It failed for good; the message went to dead letters.
    DeadLetter {
        /// Why.
        reason: DeadReason,
        /// What failed.
        error: String,
    },
    /// The worker stopped while it ran; the message stays pending for another worker.
    Stopped,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Retry {
                next_attempt,
                error,
                ..
            } => write!(f, "retry (attempt {next_attempt} next): {error}"),
            Outcome::DeadLetter { reason, error } => write!(f, "dead letter ({reason}): {error}"),
            Outcome::Stopped => f.write_str("stopped"),
        }
    }
}

/// How a handler run ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Handled {
    /// Its outcome.
    pub outcome: Outcome,
    /// From the handler's start until its outcome was written (reply, retry or dead
    /// letter).
    pub duration: Duration,
}

/// A message queued by a send or a reply.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Sent {
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// Its `message_type`.
    pub message_type: String,
    /// Its id.
    pub message_id: String,
    /// The size of its payload, JSON-encoded, in bytes.
    pub payload_size: usize,
    /// The entry id it got (empty when scheduled for later).
    pub stream_id: String,
    /// Its correlation id.
    pub correlation_id: Option<String>,
    /// Its `traceparent` header, if any.
    pub traceparent: Option<String>,
}

/// An entry moved to dead letters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLettered {
    /// The agent.
    pub agent: String,
    /// The stream it was read from.
    pub stream: String,
    /// Its entry id there.
    pub stream_id: String,
    /// The message, when the entry could be decoded.
    pub message: Option<Arc<Message>>,
    /// Why.
    pub reason: DeadReason,
    /// The error text stored with it.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
}

/// Counters of one hook (since the process started).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookStats {
    /// The hook's name.
    pub name: String,
    /// Calls that returned `Ok`.
    pub delivered: u64,
    /// Calls that returned an error.
    pub failed: u64,
    /// Calls that panicked.
    pub panicked: u64,
    /// Calls abandoned after the timeout.
    pub timed_out: u64,
    /// Events dropped because the hook's queue was full.
    pub dropped: u64,
}

/// The size of `payload` JSON-encoded, for [`Sent::payload_size`].
pub(crate) fn payload_size(payload: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, payload);
    c.0
}

/// The `Sent` event of a message queued as `stream_id`.
pub(crate) fn sent_event(m: &Message, stream_id: &str) -> Sent {
    Sent {
        from: m.from_agent.clone(),
        to: m.to_agent.clone(),
        message_type: m.message_type.clone(),
        message_id: m.id.clone(),
        payload_size: payload_size(&m.payload),
        stream_id: stream_id.to_owned(),
        correlation_id: m.correlation_id.clone(),
        traceparent: m.headers.get(crate::trace_context::TRACEPARENT).cloned(),
    }
}
