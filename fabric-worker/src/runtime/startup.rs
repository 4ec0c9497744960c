//! Waiting for Redis at start: a worker started before its Redis is reachable, or while
//! Redis is still loading its dataset after a restart (`BUSY LOADING`), retries with backoff
//! for up to `startup_wait`, saying what it waits for, instead of exiting. Errors that
//! waiting cannot fix (a wrong password, TLS, an ACL) are returned at once.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::broker::reconnect_backoff;
use crate::error::{Error, Result};

/// Whether `e` says Redis is not there yet (refused, unreachable, timed out) or is loading
/// its dataset, as opposed to refusing this client for good.
pub(crate) fn worth_waiting(e: &Error) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    let transient = |s: &redis::RedisError| {
        s.is_connection_refusal()
            || s.is_io_error()
            || s.is_timeout()
            || s.is_connection_dropped()
            || matches!(
                s.kind(),
                ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown)
            )
    };
    match e {
        Error::Connect { source, .. } | Error::Redis { source, .. } => transient(source),
        // The shared connection is reconnecting.
        Error::NotConnected { .. } => true,
        _ => false,
    }
}

/// Runs `op` until it succeeds, retrying (with backoff, a log line per change of state)
/// while Redis is not there yet, for up to `wait`.
pub(crate) async fn wait_for_redis<T, F, Fut>(wait: Duration, doing: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut backoff = reconnect_backoff();
    let mut waited = false;
    loop {
        match op().await {
            Ok(v) => {
                if waited {
                    info!(
                        waited_ms = crate::time::millis(started.elapsed()),
                        "Redis is ready; {doing} done, starting"
                    );
                }
                return Ok(v);
            }
            Err(e) if worth_waiting(&e) && started.elapsed() < wait => {
                let d = backoff
                    .next()
                    .unwrap_or(Duration::from_secs(5))
                    .min(wait.saturating_sub(started.elapsed()))
                    .max(Duration::from_millis(10));
                warn!(
                    error = %e,
                    retry_in_ms = crate::time::millis(d),
                    gives_up_in_ms = crate::time::millis(wait.saturating_sub(started.elapsed())),
                    "waiting for Redis ({doing}): it is unreachable or still loading its dataset"
                );
                waited = true;
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(line: &[u8]) -> redis::RedisError {
        match redis::parse_redis_value(line) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("not a server error: {other:?}"),
        }
    }

    #[test]
    fn loading_and_refusals_are_waited_for_refusals_of_this_client_are_not() {
        let loading = server_error(b"-LOADING Redis is loading the dataset in memory\r\n");
        assert!(worth_waiting(&Error::redis("XREADGROUP", "s", loading)));
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(worth_waiting(&Error::Connect {
            url: "redis://127.0.0.1:1".into(),
            source: refused,
        }));
        let wrongpass = server_error(b"-WRONGPASS invalid username-password pair\r\n");
        assert!(!worth_waiting(&Error::Connect {
            url: "redis://u@127.0.0.1:6379".into(),
            source: wrongpass,
        }));
        let noperm = server_error(b"-NOPERM this user has no permissions\r\n");
        assert!(!worth_waiting(&Error::redis("FCALL", "s", noperm)));
        assert!(!worth_waiting(&Error::Config("x".into())));
    }
}
