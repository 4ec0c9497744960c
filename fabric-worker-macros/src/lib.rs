//! Procedural macros for [`fabric-worker`].
//!
//! Do not depend on this crate directly: use the macros through their
//! re-exports, `fabric_worker::handler` (also part of
//! `fabric_worker::prelude`). The generated code refers to
//! `::fabric_worker`, so that crate must be a dependency of the crate using
//! the macros.
//!
//! # `#[handler]`
//!
//! Registers a free `async fn` as the handler for one message type. The
//! function itself is left exactly as written (so unit tests can call it
//! directly); a type-erased registration is added beside it and collected at
//! start-up by the worker.
//!
//! ```
//! use fabric_worker::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct CodeReview {
//!     task_type: String,
//!     pr_id: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Review {
//!     approved: bool,
//! }
//!
//! #[handler(message_type = "task", max_attempts = 8, timeout = "30s")]
//! async fn review(ctx: Context, task: CodeReview) -> Result<Review, HandlerError> {
//!     Ok(Review { approved: true })
//! }
//! ```
//!
//! ## Arguments
//!
//! | argument | required | value |
//! | --- | --- | --- |
//! | `message_type` | yes | string of `[A-Za-z0-9_.:-]`, starting with a letter or digit, at most 64 characters |
//! | `agent` | no | string matching `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`; restricts the handler to that agent |
//! | `max_attempts` | no | integer literal `>= 1` |
//! | `timeout` | no | string: an integer followed by `ms`, `s`, `m` or `h` (`"500ms"`, `"30s"`, `"2m"`, `"1h"`) |
//! | `every` | no | a periodic task: send the agent this message type every interval, `"90s"`, `"1h"`, `"1d"` (at least `"1s"`; aligned to the Unix epoch); not with `cron` or `topic` |
//! | `cron` | no | a periodic task at the instants of a cron expression with seconds, `"0 0 3 * * *"`; not with `every` or `topic` |
//! | `tz` | no | with `cron`: an IANA time zone (`"Europe/Paris"`; default UTC) |
//! | `missed` | no | with `every`/`cron`: `"catch_up"` (default: one message for the latest period missed while no worker ran) or `"skip"` |
//! | `rate_limit` | no | string `[<name>:]<count>/[<n>]<unit>[,burst=<b>]`, unit `s`, `m` or `h` (`"10/s"`: per agent and handler; `"openai:60/m,burst=5"`: shared by every handler and agent naming `openai`); enforced in Redis across all workers (GCRA) |
//!
//! ## The function
//!
//! The function must be a free, non-generic `async fn` taking zero, one or
//! two owned arguments, in any order. What each argument receives is decided
//! by its *type*, through the trait `fabric_worker::handler::HandlerArg`:
//!
//! * `fabric_worker::Context` (under any name: `use fabric_worker::Context as Ctx;`
//!   works) receives the worker context;
//! * any other type implementing `serde::Deserialize` receives the payload,
//!   deserialized from the message payload (a type of yours named `Context`
//!   is a payload like any other);
//! * at most one of each; anything else is a compile error at the argument.
//!
//! The return type must implement `fabric_worker::handler::IntoHandlerResult`.
//!
//! ## Debugging
//!
//! Set `FABRIC_MACROS_DEBUG=1` while compiling to print every generated
//! registration to stderr.
//!
//! [`fabric-worker`]: https://docs.rs/fabric-worker

mod args;
mod generate;
mod handler;
mod rate_limit;
mod schedule;
#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Registers an `async fn` as the handler for a message type.
///
/// See the [crate documentation](crate) for the accepted arguments and
/// function shapes. Use it as `fabric_worker::handler`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}
