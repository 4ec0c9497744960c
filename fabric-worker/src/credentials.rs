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
//! # #[allow(dead_code)]
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
//! # drop(bus);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
#[cfg(feature = "credentials-http")]
use std::time::Duration;

#[cfg(feature = "credentials-http")]
use crate::error::Error;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// A Redis user name and password that stop working at `expires_at_ms`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The agent they act as.
    pub agent: String,
    /// The Redis user (`cred.<agent>.<expiry ms>.<nonce>`).
    pub user: String,
    /// Its password.
    pub password: String,
    /// When the user is deleted, ms since the epoch.
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("agent", &self.agent)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// What [`CredentialSource::fetch`] returns.
pub type CredentialFuture = Pin<Box<dyn Future<Output = Result<Credentials>> + Send>>;

/// Where short-lived credentials come from. Any `Fn() -> impl Future<Output =
/// Result<Credentials>>` is one.
pub trait CredentialSource: Send + Sync + 'static {
    /// New credentials.
    fn fetch(&self) -> CredentialFuture;
}

impl std::fmt::Debug for dyn CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialSource")
    }
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
