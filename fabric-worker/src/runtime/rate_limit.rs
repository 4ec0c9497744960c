//! Rate limits, enforced in Redis for every worker process together: before a handler
//! runs, its message takes a turn from each limit that applies (the worker's
//! [`rate_limit`](super::WorkerBuilder::rate_limit), then the handler's
//! `#[handler(rate_limit = "...")]`) with `FCALL fabric_rate_limit`, the generic cell rate
//! algorithm (GCRA) on the server's clock (see `lua/fabric.lua`).
//!
//! A turn is a reservation: when it is due now the handler runs; when it is due later the
//! entry is parked, attempt unchanged, in the stream's retry set until then (atomically
//! with its acknowledgement, as a retry is, and back into its lane if it came from one),
//! marked with the field `rate_reserved` so that, back in the stream, it runs without
//! taking another turn (the limiter only checks, by the server's clock, that it is not
//! late by more than the burst's tolerance, at least 25 ms: a turn missed by more — a
//! starved or restarted worker — is not run late, which would bunch starts, but replaced by
//! a new one). So a limited message never holds a concurrency slot while it waits and
//! never counts as a failed attempt, and parked messages do not come back all at once.
//!
//! Reservations reach at most the horizon ahead (`rate_limit_horizon`, default 60 s): a
//! message whose turn would be further away takes nothing, and is parked, unmarked, to ask
//! again when its turn would be about within the horizon (after the wait minus the
//! horizon, at least half the horizon). A long backlog thus asks about twice per horizon
//! per message, instead of holding reservations for days that a purge would waste.

use std::time::Duration;

use tracing::debug;

use super::rate_spec::RateLimit;
use super::registry::HandlerSpec;
use super::stream::{GaveUp, Persisted, StreamState};
use crate::broker::RawEntry;
use crate::broker::functions::fcall;
use crate::keys;
use crate::message::fields;

/// The stream-entry field of a message parked by a rate limit: the time (ms since the
/// epoch, by the server's clock) its turn was reserved for. Back in the stream, an entry
/// with it runs without asking the limits again.
pub(crate) const RATE_RESERVED: &str = "rate_reserved";

/// What the rate limits say about one message.
pub(super) enum Gate {
    /// Run it now.
    Run,
    /// Parked for later (and acknowledged): nothing more to do.
    Parked,
    /// Stopped by shutdown, or the limiter refused the call: the entry stays pending.
    Stopped,
    /// The limiter cannot be used (not a connection error): the message fails this attempt.
    Failed(String),
}

/// One turn asked from one limit.
struct Turn {
    wait_ms: u64,
    taken: bool,
    due_at_ms: u64,
}

impl StreamState {
    /// The limits that apply to `handler`'s messages: the worker's, then the handler's.
    fn limits_of(&self, handler: &HandlerSpec) -> Vec<(String, RateLimit)> {
        let mut out = Vec::new();
        if let Some(l) = &self.config.rate_limit {
            let key = match &l.name {
                Some(n) => keys::rate_limit_shared(n),
                None => keys::rate_limit_agent(&self.spec.agent),
            };
            out.push((key, l.clone()));
        }
        if let Some(d) = &handler.reg.rate_limit {
            let key = match d.name {
                Some(n) => keys::rate_limit_shared(n),
                None => keys::rate_limit_handler(
                    &self.spec.agent,
                    handler.reg.message_type,
                    handler.reg.topic,
                ),
            };
            out.push((key, RateLimit::from(d)));
        }
        out
    }

    /// Takes the message's turn from every limit of `handler`, and parks the entry when
    /// the turn is not now. Boxed, so that the per-message task stays small.
    pub(super) fn rate_gate<'a>(
        &'a self,
        entry: &'a RawEntry,
        handler: &'a HandlerSpec,
    ) -> std::pin::Pin<Box<dyn Future<Output = Gate> + Send + 'a>> {
        Box::pin(async move {
            if handler.reg.rate_limit.is_none() && self.config.rate_limit.is_none() {
                return Gate::Run;
            }
            // A turn reserved before it was parked: the limiter runs it now unless it came
            // back too late (then it takes a new turn).
            let reserved: Option<u64> = entry.get_str(RATE_RESERVED).and_then(|s| s.parse().ok());
            let horizon = crate::time::millis(self.config.rate_limit_horizon);
            let (mut wait, mut due, mut taken) = (0u64, 0u64, true);
            for (key, limit) in self.limits_of(handler) {
                let turn = match self.take_turn(&key, &limit, horizon, reserved).await {
                    Ok(t) => t,
                    Err(g) => return g,
                };
                wait = wait.max(turn.wait_ms);
                due = due.max(turn.due_at_ms);
                if !turn.taken {
                    // Turns taken from earlier limits are spent (they run a little under
                    // their rate meanwhile); no later limit is asked.
                    taken = false;
                    break;
                }
            }
            if taken && wait == 0 {
                return Gate::Run;
            }
            let delay = if taken {
                wait
            } else {
                wait.saturating_sub(horizon).max(horizon / 2).max(1)
            };
            debug!(
                wait_ms = wait,
                delay_ms = delay,
                reserved = taken,
                missed_turn = reserved.is_some(),
                "rate limited; parked until its turn"
            );
            self.park_limited(entry, Duration::from_millis(delay), taken.then_some(due))
                .await
        })
    }

    /// `FCALL fabric_rate_limit` on `key`, retried through connection errors.
    async fn take_turn(
        &self,
        key: &str,
        limit: &RateLimit,
        horizon_ms: u64,
        reserved: Option<u64>,
    ) -> Result<Turn, Gate> {
        let reply = self
            .persist_for("asking the rate limiter", || async {
                let mut cmd = fcall("fabric_rate_limit", &[key]);
                cmd.arg(limit.count)
                    .arg(limit.period_ms)
                    .arg(limit.burst)
                    .arg(horizon_ms);
                if let Some(r) = reserved {
                    cmd.arg(r);
                }
                self.broker
                    .call::<(i64, i64, i64)>(&cmd, "FCALL fabric_rate_limit", key)
                    .await
            })
            .await;
        let (wait, taken, due) = match reply {
            Ok(r) => r,
            Err(GaveUp::Stopped) => return Err(Gate::Stopped),
            Err(GaveUp::Failed(e)) => {
                return Err(Gate::Failed(format!(
                    "rate limit {key:?} could not be checked: {e}"
                )));
            }
        };
        Ok(Turn {
            wait_ms: u64::try_from(wait).unwrap_or(0),
            taken: taken == 1,
            due_at_ms: u64::try_from(due).unwrap_or(0),
        })
    }

    /// Parks the entry in the retry set for `delay`, attempt unchanged, marked with its
    /// reserved turn (`due`) if it has one, and acknowledges it (`fabric_schedule_retry`).
    async fn park_limited(&self, entry: &RawEntry, delay: Duration, due: Option<u64>) -> Gate {
        let mut set = vec![(fields::TARGET_GROUP, self.spec.group.clone())];
        if let Some(due) = due {
            set.push((RATE_RESERVED, due.to_string()));
        }
        let replaced = [fields::TARGET_GROUP, RATE_RESERVED];
        let ok = self
            .park(
                entry,
                delay,
                &replaced,
                &set,
                "parking a rate-limited message",
            )
            .await;
        match ok {
            Persisted::Done => Gate::Parked,
            Persisted::Stopped => Gate::Stopped,
            Persisted::Failed(e) => {
                Gate::Failed(format!("a rate-limited message could not be parked: {e}"))
            }
        }
    }
}
