//! # fabric-worker
//!
//! Asynchronous agent-to-agent messaging and background work on Redis Streams.
//!
//! Each agent has a durable, ordered inbox (the stream `agent:<id>:inbox`) read through a
//! consumer group, so many worker processes share one agent's load. Handlers are plain
//! `async fn`s annotated with [`handler`](macro@handler); the [`Worker`] runs a consumer-group loop per
//! inbox, renews the lease of running handlers, reclaims entries from crashed workers
//! with `XAUTOCLAIM`, retries failures with backoff, dead-letters what cannot succeed,
//! and acknowledges on success only. The [`Bus`] sends, receives, publishes and makes
//! request/reply calls from any program.
//!
//! The wire format is compatible with the user's Python bus and documented in
//! `docs/protocol.md`.
//!
//! ```no_run
//! use fabric_worker::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct CodeReview { task_type: String, pr_id: String }
//!
//! #[derive(Serialize)]
//! struct Review { pr_id: String, verdict: String }
//!
//! #[handler(message_type = "task", max_attempts = 8, timeout = "30s")]
//! async fn review(ctx: Context, task: CodeReview) -> Result<Review, HandlerError> {
//!     tracing::info!(from = ctx.from_agent(), kind = %task.task_type, "reviewing");
//!     Ok(Review { pr_id: task.pr_id, verdict: "approved".into() })
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     Worker::builder("percy").from_env()?.run().await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Delivery guarantees
//! At least once: an entry is acknowledged only after its handler succeeded (and its reply,
//! if any, was written). A handler may therefore run more than once for one message —
//! after a worker crash, or a lost lease — so make handlers idempotent, keyed on
//! [`Context::message_id`].
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]

pub mod acl;
mod broker;
pub mod bus;
mod context;
pub mod credentials;
mod env;
mod error;
pub mod handler;
pub mod hooks;
pub mod keys;
pub mod message;
pub mod metrics;
mod mode;
#[cfg(feature = "otel")]
pub mod otel;
mod priority;
mod receipt;
pub mod router;
pub mod runtime;
pub mod schedule;
pub mod testing;
mod time;
pub mod trace_context;
pub mod workflow;
mod workflow_error;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use bus::Bus;
pub use context::Context;
pub use error::{Error, Result};
pub use handler::HandlerError;
pub use message::{Message, Priority};
pub use runtime::Worker;

/// Registers an `async fn` as the handler of a message type.
///
/// ```text
/// #[handler(message_type = "task")]                       // message_type or topic: one of the two
/// #[handler(message_type = "task", agent = "percy")]      // only for agent percy
/// #[handler(message_type = "task", max_attempts = 8, timeout = "30s")]
/// #[handler(topic = "analytics.*")]                       // durable topics (a `*` glob, or a name)
/// ```
///
/// A `topic` handler takes every event of the durable topics it matches (published with
/// [`Bus::publish_durable`]), whatever their `message_type`, read from each topic's stream
/// through the agent's consumer group (`docs/protocol.md` §11); [`Context::topic`] says
/// which topic. Durable topics need direct mode.
///
/// The function takes, in any order, an optional [`Context`] and an optional payload
/// argument of any `Deserialize` type (decoded from the message payload; a payload that
/// does not decode sends the message to dead letters). Which argument is which is decided
/// by its type (see [`handler::HandlerArg`]), so an alias of `Context` works, and so does a
/// payload type of yours named `Context`. It returns `()` or `Result<T, E>` with
/// `T: Serialize` (the reply payload, sent to the message's `reply_to`) and
/// `E: Into<HandlerError>`. The function itself is left as written.
#[cfg(feature = "macros")]
pub use fabric_worker_macros::handler;

/// The usual imports: `use fabric_worker::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "macros")]
    pub use crate::handler;
    pub use crate::{Bus, Context, HandlerError, Message, Worker};
    pub use serde::{Deserialize, Serialize};
}

/// The README's examples, compiled as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
