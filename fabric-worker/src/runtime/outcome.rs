//! Running a handler and deciding what becomes of its message: the rules the worker and
//! `fabric_worker::testing` share, so that a test sees exactly what the runtime would do.

use std::time::Duration;

use futures::FutureExt;
use serde_json::{Map, Value};

use super::config::WorkerConfig;
use crate::__private::HandlerFn;
use crate::broker::DeadReason;
use crate::context::Context;
use crate::handler::Outcome;

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The handler returned an error.
    Error,
    /// The handler panicked.
    Panic,
    /// The handler ran past its timeout and was cancelled.
    Timeout,
}

/// What becomes of a message after one delivery to its handler.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Verdict {
    /// The handler succeeded: the entry is acknowledged, and `reply` is the payload of the
    /// `response` message written to the message's `reply_to` (when it has one). A handler
    /// returning `()` replies `{"result": null}`; a non-object value `v`, `{"result": v}`.
    Succeeded {
        /// The reply payload.
        reply: Value,
    },
    /// The attempt failed and the message is parked for attempt `next_attempt` after `delay`.
    Retry {
        /// The attempt that comes next (2 after the first failure).
        next_attempt: u32,
        /// How long it waits (the backoff's delay, or the handler's `with_retry_after`).
        delay: Duration,
        /// The error text.
        error: String,
        /// What failed.
        failure: Failure,
    },
    /// The message is moved to the agent's dead letters (and, when it has a `reply_to`, an
    /// `error` message carrying `error` is written there).
    DeadLettered {
        /// Why.
        reason: DeadReason,
        /// The error text.
        error: String,
    },
}

impl Verdict {
    /// The reply payload of a success.
    pub fn reply(&self) -> Option<&Value> {
        match self {
            Verdict::Succeeded { reply } => Some(reply),
            _ => None,
        }
    }

    /// The dead-letter reason, if dead-lettered.
    pub fn dead_reason(&self) -> Option<&DeadReason> {
        match self {
            Verdict::DeadLettered { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether another attempt follows.
    pub fn is_retry(&self) -> bool {
        matches!(self, Verdict::Retry { .. })
    }
}

/// How running a handler ended.
pub(crate) enum Ran {
    /// It returned (or its payload did not decode).
    Returned(Outcome),
    /// It panicked, with this message.
    Panicked(String),
    /// It was cancelled after this long.
    TimedOut(Duration),
}

/// Runs a handler: panics are caught, and it is cancelled after `timeout`, or when `stop`
/// completes (then `Err` with its output).
///
/// The handler is polled once before any timer or `stop` is polled: a handler that
/// finishes at once (most quick ones) never arms a timer nor registers a waiter. Doing both
/// for every message cost about a tenth of the worker's time per message (`fabric-bench`).
/// The deadline still counts from the start.
pub(crate) async fn run_handler<S: std::future::Future>(
    handler: HandlerFn,
    ctx: Context,
    timeout: Option<Duration>,
    stop: S,
) -> Result<Ran, S::Output> {
    let deadline = timeout.map(|t| (tokio::time::Instant::now() + t, t));
    let mut fut = std::pin::pin!(std::panic::AssertUnwindSafe(handler(ctx)).catch_unwind());
    let r = match futures::poll!(fut.as_mut()) {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => {
            let guarded = async {
                match deadline {
                    Some((d, t)) => tokio::time::timeout_at(d, fut).await.map_err(|_| t),
                    None => Ok(fut.await),
                }
            };
            tokio::select! {
                r = guarded => r,
                s = stop => return Err(s),
            }
        }
    };
    Ok(match r {
        Ok(Ok(outcome)) => Ran::Returned(outcome),
        Ok(Err(panic)) => Ran::Panicked(crate::error::panic_text(panic.as_ref())),
        Err(t) => Ran::TimedOut(t),
    })
}

/// The verdict for attempt `attempt` (1-based) of at most `max_attempts`.
pub(crate) fn decide(ran: Ran, attempt: u32, max_attempts: u32, config: &WorkerConfig) -> Verdict {
    let (error, failure, retry_after) = match ran {
        Ran::Returned(Outcome::Reply(v)) => {
            return Verdict::Succeeded {
                reply: reply_payload(v),
            };
        }
        Ran::Returned(Outcome::BadPayload(why)) => {
            return Verdict::DeadLettered {
                reason: DeadReason::BadPayload,
                error: why,
            };
        }
        Ran::Returned(Outcome::Failed(err)) if err.is_permanent() => {
            return Verdict::DeadLettered {
                reason: DeadReason::PermanentError,
                error: err.message().to_owned(),
            };
        }
        Ran::Returned(Outcome::Failed(err)) => {
            (err.message().to_owned(), Failure::Error, err.retry_after())
        }
        Ran::Panicked(text) => (format!("handler panicked: {text}"), Failure::Panic, None),
        Ran::TimedOut(t) => (
            format!("handler timed out after {} ms", crate::time::millis(t)),
            Failure::Timeout,
            None,
        ),
    };
    if attempt >= max_attempts {
        return Verdict::DeadLettered {
            reason: DeadReason::MaxAttempts,
            error,
        };
    }
    let next_attempt = attempt + 1;
    Verdict::Retry {
        next_attempt,
        delay: retry_after.unwrap_or_else(|| config.retry_delay(next_attempt)),
        error,
        failure,
    }
}

/// A reply payload is always an object: anything else is wrapped as `{"result": v}`.
pub(crate) fn reply_payload(v: Value) -> Value {
    match v {
        Value::Object(_) => v,
        other => {
            let mut m = Map::new();
            m.insert("result".into(), other);
            Value::Object(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HandlerError;
    use serde_json::json;

    fn config() -> WorkerConfig {
        WorkerConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..WorkerConfig::default()
        }
    }

    #[test]
    fn outcomes_map_to_verdicts() {
        let c = config();
        let ok = decide(Ran::Returned(Outcome::Reply(json!(3))), 1, 5, &c);
        assert_eq!(ok.reply(), Some(&json!({"result": 3})));
        let ok = decide(Ran::Returned(Outcome::Reply(json!({"a": 1}))), 1, 5, &c);
        assert_eq!(ok.reply(), Some(&json!({"a": 1})));
        let bad = decide(Ran::Returned(Outcome::BadPayload("nope".into())), 1, 5, &c);
        assert_eq!(bad.dead_reason(), Some(&DeadReason::BadPayload));
        let perm = decide(
            Ran::Returned(Outcome::Failed(HandlerError::permanent("gone"))),
            1,
            5,
            &c,
        );
        assert_eq!(perm.dead_reason(), Some(&DeadReason::PermanentError));
        match decide(Ran::Panicked("boom".into()), 2, 5, &c) {
            Verdict::Retry {
                next_attempt,
                delay,
                error,
                failure,
            } => {
                assert_eq!(next_attempt, 3);
                assert!(delay >= Duration::from_millis(200) && delay <= Duration::from_millis(400));
                assert_eq!(error, "handler panicked: boom");
                assert_eq!(failure, Failure::Panic);
            }
            other => panic!("{other:?}"),
        }
        let last = decide(Ran::TimedOut(Duration::from_millis(30)), 5, 5, &c);
        assert_eq!(
            last,
            Verdict::DeadLettered {
                reason: DeadReason::MaxAttempts,
                error: "handler timed out after 30 ms".into()
            }
        );
        let asked = decide(
            Ran::Returned(Outcome::Failed(
                HandlerError::new("slow down").with_retry_after(Duration::from_secs(7)),
            )),
            1,
            5,
            &c,
        );
        assert!(matches!(asked, Verdict::Retry { delay, .. } if delay == Duration::from_secs(7)));
    }
}
