//! Credentials that renew themselves: a worker or a [`Bus`](crate::Bus) that starts from an
//! identity (an agent's JWT) instead of a long-lived password.
//!
//! A [`CredentialSource`] hands out short-lived [`Credentials`] — the built-in
//! [`HttpCredentialSource`] (feature `credentials-http`) asks `POST /credentials` of
//! `fabric mcp --http --issue-credentials-as …` with the agent's bearer token. Given one
//! (`BusBuilder::credentials`, or `FABRIC_CREDENTIALS_URL` with `FABRIC_AGENT_TOKEN_FILE`
//! through `from_env`), the bus logs in with the first credentials, fetches new ones when two
//! thirds of their life have passed, and has every open connection log in again with them
//! (`AUTH`), new connections using the newest: connections are never dropped, so nothing
//! being read or acknowledged is lost.
//!
//! ```no_run
//! # #[cfg(feature = "credentials-http")]
//! # async fn demo() -> fabric_worker::Result<()> {
//! use fabric_worker::credentials::HttpCredentialSource;
//!
//! let source = HttpCredentialSource::token_file(
//!     "https://fabric.example/credentials",
//!     "/run/secrets/percy.jwt",
//! );
//! let bus = fabric_worker::Bus::builder("rediss://redis.example:6379")
//!     .credentials(source)
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use crate::bus::Credentials;
#[cfg(feature = "credentials-http")]
use crate::error::Error;
use crate::error::Result;

/// What [`CredentialSource::fetch`] returns.
pub type CredentialFuture = Pin<Box<dyn Future<Output = Result<Credentials>> + Send>>;

/// Where short-lived credentials come from. Any `Fn() -> impl Future<Output =
/// Result<Credentials>>` is one.
pub trait CredentialSource: Send + Sync + 'static {
    /// New credentials.
    fn fetch(&self) -> CredentialFuture;
}

impl<F, Fut> CredentialSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Credentials>> + Send + 'static,
{
    fn fetch(&self) -> CredentialFuture {
        Box::pin(self())
    }
}

/// `POST <url>` with `Authorization: Bearer <token>`, answered with the JSON of
/// [`Credentials`] (what `fabric mcp --http --issue-credentials-as` serves).
#[cfg(feature = "credentials-http")]
#[derive(Clone)]
pub struct HttpCredentialSource {
    url: String,
    token: Token,
    client: reqwest::Client,
}

#[cfg(feature = "credentials-http")]
#[derive(Clone)]
enum Token {
    Fixed(String),
    /// Read at every fetch: whatever renews the identity token can rewrite the file.
    File(std::path::PathBuf),
}

#[cfg(feature = "credentials-http")]
impl std::fmt::Debug for HttpCredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCredentialSource")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "credentials-http")]
impl HttpCredentialSource {
    /// Asks `url` with the bearer token `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self::with(url.into(), Token::Fixed(token.into()))
    }

    /// Asks `url` with the bearer token in the file `path` (read at every fetch).
    pub fn token_file(url: impl Into<String>, path: impl Into<std::path::PathBuf>) -> Self {
        Self::with(url.into(), Token::File(path.into()))
    }

    fn with(url: String, token: Token) -> Self {
        HttpCredentialSource {
            url,
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn ask(self) -> Result<Credentials> {
        let failed = |why: String| Error::Credentials {
            url: self.url.clone(),
            why,
        };
        let token = match &self.token {
            Token::Fixed(t) => t.clone(),
            Token::File(p) => std::fs::read_to_string(p)
                .map_err(|e| failed(format!("cannot read the token file {}: {e}", p.display())))?
                .trim()
                .to_owned(),
        };
        let r = self
            .client
            .post(&self.url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| failed(format!("request failed: {e}")))?;
        let status = r.status();
        if !status.is_success() {
            let body = r.text().await.unwrap_or_default();
            return Err(failed(format!(
                "answered {status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        r.json::<Credentials>()
            .await
            .map_err(|e| failed(format!("unreadable answer: {e}")))
    }
}

#[cfg(feature = "credentials-http")]
impl CredentialSource for HttpCredentialSource {
    fn fetch(&self) -> CredentialFuture {
        Box::pin(self.clone().ask())
    }
}

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
        let mut backoff = crate::broker::reconnect_backoff();
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
