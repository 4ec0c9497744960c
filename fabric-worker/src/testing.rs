//! Run your `#[handler]` functions in your own tests, without Redis — Celery's eager mode,
//! apalis's test worker.
//!
//! A [`TestWorker`] takes the handlers registered for an agent exactly as a
//! [`Worker`](crate::Worker) would (the same table, the same duplicate and agent rules),
//! hands a [`Message`] to the one for its type with the same payload decoding, timeout,
//! panic catching and error mapping as the runtime, and returns the [`Verdict`]: the reply
//! payload, a retry with its attempt and delay, or a dead letter with its reason.
//!
//! ```standalone_crate
//! use fabric_worker::prelude::*;
//! use fabric_worker::testing::{Failure, TestWorker, Verdict};
//! use fabric_worker::bus::DeadReason;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Review { pr_id: String }
//!
//! #[handler(message_type = "task", agent = "percy", max_attempts = 3)]
//! async fn review(task: Review) -> Result<serde_json::Value, HandlerError> {
//!     match task.pr_id.as_str() {
//!         "" => Err(HandlerError::permanent("a review needs a pr_id")),
//!         "flaky" => Err(HandlerError::new("the LLM timed out")),
//!         id => Ok(json!({"pr_id": id, "verdict": "approve"})),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> fabric_worker::Result<()> {
//! let percy = TestWorker::new("percy")?;
//! let task = |pr: &str| Message::new("coder", "percy", "task", json!({"pr_id": pr}));
//!
//! let ok = percy.handle(task("123")).await;
//! assert_eq!(ok.reply(), Some(&json!({"pr_id": "123", "verdict": "approve"})));
//!
//! let retry = percy.handle(task("flaky")).await;
//! assert!(matches!(retry, Verdict::Retry { next_attempt: 2, failure: Failure::Error, .. }));
//!
//! // The third attempt is the last one this handler allows.
//! let last = percy.handle_attempt(task("flaky"), 3).await;
//! assert_eq!(last.dead_reason(), Some(&DeadReason::MaxAttempts));
//!
//! let bad = percy.handle(Message::new("coder", "percy", "task", json!({"pr": 1}))).await;
//! assert_eq!(bad.dead_reason(), Some(&DeadReason::BadPayload));
//! # Ok(()) }
//! ```
//!
//! (Each doc example of a crate that registers handlers should be a `standalone_crate`
//! doc-test: merged doc-tests share one binary, and with it one handler registry.)
//!
//! Inside a handler under test, [`Context::bus`](crate::Context::bus) is a bus with no
//! Redis behind it: its operations fail with [`Error::NotConnected`](crate::Error::NotConnected).
//! Give the test worker a connected bus with [`TestWorker::bus`] when a handler must send.

use std::sync::Arc;
use std::time::Duration;

use crate::__private::registrations;
use crate::broker::DeadReason;
use crate::bus::Bus;
use crate::context::{Context, ServedStream};
use crate::error::Result;
use crate::keys;
use crate::message::Message;
use crate::runtime::config::WorkerConfig;
use crate::runtime::outcome::{decide, run_handler};
use crate::runtime::registry::{HandlerTable, handler_tables};

pub use crate::runtime::outcome::{Failure, Verdict};

/// Runs the handlers registered for one agent, in process, without Redis.
#[derive(Debug)]
pub struct TestWorker {
    agent: String,
    handlers: HandlerTable,
    config: WorkerConfig,
    bus: Bus,
}

impl TestWorker {
    /// The handlers registered (with `#[handler]`, linked into this test binary) for
    /// `agent`, with the worker's default settings. Fails as [`Worker::build`](crate::runtime::WorkerBuilder::build)
    /// would: an invalid agent id, two handlers for one message type, or none at all.
    pub fn new(agent: impl Into<String>) -> Result<TestWorker> {
        let agent = agent.into();
        keys::validate_agent(&agent)?;
        let mut tables = handler_tables(std::slice::from_ref(&agent), registrations())?;
        let handlers = tables.remove(&agent).unwrap_or_default();
        Ok(TestWorker {
            agent,
            handlers,
            config: WorkerConfig::default(),
            bus: Bus::offline(),
        })
    }

    /// Attempts before dead-lettering, for handlers that set none (default 5).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n.max(1);
        self
    }

    /// The timeout for handlers that set none (default 15 min); `None` for none.
    #[must_use]
    pub fn handler_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.handler_timeout = d;
        self
    }

    /// Retry backoff: first delay and cap (default 1 s and 10 min).
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.backoff_base = base;
        self.config.backoff_max = max.max(base);
        self
    }

    /// The bus handlers get in their [`Context`] (default: one with no Redis behind it).
    #[must_use]
    pub fn bus(mut self, bus: Bus) -> Self {
        self.bus = bus;
        self
    }

    /// The message types this agent has handlers for.
    pub fn message_types(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }

    /// Handles `message` as its first attempt.
    pub async fn handle(&self, message: Message) -> Verdict {
        self.handle_attempt(message, 1).await
    }

    /// Handles `message` as attempt `attempt` (1-based): as the runtime does for a message
    /// whose earlier attempts failed.
    pub async fn handle_attempt(&self, message: Message, attempt: u32) -> Verdict {
        let attempt = attempt.max(1);
        let Some(handler) = self.handlers.get(&message.message_type) else {
            let known: Vec<&str> = self.message_types();
            return Verdict::DeadLettered {
                reason: DeadReason::NoHandler,
                error: format!(
                    "no handler for message_type {:?} in agent {:?} (handled types: {})",
                    message.message_type,
                    self.agent,
                    known.join(", ")
                ),
            };
        };
        let (max_attempts, timeout) = handler.limits(&self.config);
        let served = Arc::new(ServedStream {
            agent: self.agent.clone(),
            stream: keys::inbox(&self.agent),
            group: keys::default_group(&self.agent),
            consumer: "test-worker".into(),
        });
        let ctx = Context::new(
            served,
            "0-1".into(),
            attempt,
            max_attempts,
            1,
            crate::broker::Head { message, raw: None },
            self.bus.clone(),
        );
        let never = std::future::pending::<std::convert::Infallible>();
        let ran = match run_handler(handler.reg.handler, ctx, timeout, never).await {
            Ok(ran) => ran,
            Err(never) => match never {},
        };
        decide(ran, attempt, max_attempts, &self.config)
    }
}
