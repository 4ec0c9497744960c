//! Credentials kept fresh for redis-rs: fetched at start from a
//! [`CredentialSource`](crate::credentials::CredentialSource), renewed two thirds through
//! their life, and streamed to every connection (which logs in again with them).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::credentials::{CredentialSource, Credentials};
use crate::error::Result;

/// The newest credentials, and the task that renews them.
pub(crate) struct Renewing {
    rx: watch::Receiver<redis::auth::BasicAuth>,
    first: Credentials,
}

impl std::fmt::Debug for Renewing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewing")
            .field("user", &self.first.user)
            .finish_non_exhaustive()
    }
}

fn basic(c: &Credentials) -> redis::auth::BasicAuth {
    redis::auth::BasicAuth::new(c.user.clone(), c.password.clone())
}

/// When to renew credentials expiring at `expires_at_ms`: two thirds of the way from now.
fn renew_in(expires_at_ms: u64) -> Duration {
    let left = expires_at_ms.saturating_sub(crate::time::now_ms());
    Duration::from_millis(left * 2 / 3).max(Duration::from_millis(100))
}

impl Renewing {
    /// Fetches the first credentials and starts renewing them (until nothing listens).
    pub(crate) async fn start(source: Arc<dyn CredentialSource>) -> Result<Arc<Renewing>> {
        let first = source.fetch().await?;
        info!(user = %first.user, expires_at_ms = first.expires_at_ms, "logged in with short-lived credentials");
        let (tx, rx) = watch::channel(basic(&first));
        let expires = first.expires_at_ms;
        tokio::spawn(renew(source, tx, expires));
        Ok(Arc::new(Renewing { rx, first }))
    }

    /// The newest credentials.
    pub(crate) fn current(&self) -> redis::auth::BasicAuth {
        self.rx.borrow().clone()
    }
}

async fn renew(
    source: Arc<dyn CredentialSource>,
    tx: watch::Sender<redis::auth::BasicAuth>,
    mut expires_at_ms: u64,
) {
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(renew_in(expires_at_ms)) => {}
        }
        let mut backoff = super::reconnect_backoff();
        let next = loop {
            match source.fetch().await {
                Ok(c) => break c,
                Err(e) => {
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    warn!(error = %e, retry_in_ms = crate::time::millis(d), "could not renew the credentials; retrying before they expire");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        };
        debug!(user = %next.user, expires_at_ms = next.expires_at_ms, "renewed the credentials");
        expires_at_ms = next.expires_at_ms;
        if tx.send(basic(&next)).is_err() {
            return;
        }
    }
}

impl redis::auth::StreamingCredentialsProvider for Renewing {
    fn subscribe(
        &self,
    ) -> Pin<Box<dyn Stream<Item = redis::RedisResult<redis::auth::BasicAuth>> + Send + 'static>>
    {
        let rx = self.rx.clone();
        Box::pin(futures::stream::unfold(
            (rx, true),
            |(mut rx, first)| async move {
                if !first {
                    rx.changed().await.ok()?;
                }
                let v = rx.borrow_and_update().clone();
                Some((Ok(v), (rx, false)))
            },
        ))
    }
}

/// `Arc<Renewing>` as the provider redis-rs takes (it wants a `'static` value it owns).
#[derive(Clone, Debug)]
pub(crate) struct Provider(pub(crate) Arc<Renewing>);

impl redis::auth::StreamingCredentialsProvider for Provider {
    fn subscribe(
        &self,
    ) -> Pin<Box<dyn Stream<Item = redis::RedisResult<redis::auth::BasicAuth>> + Send + 'static>>
    {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_two_thirds_of_the_way() {
        let now = crate::time::now_ms();
        let d = renew_in(now + 3_000);
        assert!(
            d <= Duration::from_millis(2_000) && d > Duration::from_millis(1_900),
            "{d:?}"
        );
        assert_eq!(renew_in(now.saturating_sub(5)), Duration::from_millis(100));
    }
}
