//! The bus client: [`Bus`] and its [`BusBuilder`], and the rows its operations return.
//!
//! | file | operations |
//! | --- | --- |
//! | `send.rs` | [`Bus::send`], [`Bus::send_batch`] |
//! | `consume.rs` | [`Bus::receive`], [`Bus::acknowledge`] |
//! | `request.rs` | [`Bus::request`] and the reply listener |
//! | `topics.rs` | [`Bus::publish`], [`Bus::subscribe`] |
//! | `durable.rs` | [`Bus::publish_durable`] (durable topics) |
//! | `inspect.rs` | [`Bus::queue_status`], [`Bus::pending`], [`Bus::peek`], [`Bus::agents`], [`Bus::groups`], [`Bus::stream_info`], [`Bus::create_group`] |
//! | `schedules.rs` | [`Bus::schedules`] (periodic tasks) |
//! | `retries.rs` | [`Bus::retries`], [`Bus::retry_now`], [`Bus::delete_retry`] |
//! | `claim.rs` | [`Bus::claim_pending`], [`Bus::ack_pending`] |
//! | `lookup.rs` | [`Bus::message`] (one message by id, wherever it is) |
//! | `hooks.rs` | [`Bus::with_hook`], [`Bus::hook_stats`] |
//! | `dead_letters.rs` | [`Bus::dead_letters`], [`Bus::requeue_dead_letters`], [`Bus::purge_dead_letters`] |
//! | `../workflow/bus.rs` | [`Bus::start_workflow`], [`Bus::workflow`], [`Bus::await_workflow`] (workflows) |
//!
//! Argument conventions, the same for every operation: an agent is named `agent`, a consumer
//! group `group` (`None` means the agent's default group, `<agent>_workers`); required values
//! are positional; an operation with more than one optional setting takes an options struct
//! with a `Default`.

mod admin;
mod claim;
mod consume;
mod credentials;
mod dead_letters;
mod delivery;
mod durable;
mod hooks;
mod inspect;
mod lanes;
mod lookup;
mod notify;
mod pause;
mod presence;
mod replicas;
mod request;
mod retries;
mod scan;
mod schedules;
pub(crate) mod send;
mod send_once;
mod topics;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

pub use crate::broker::DeadReason;
use crate::broker::tls::{PemFile, TlsFiles};
use crate::broker::{Broker, Conn};
use crate::env;
use crate::error::{Error, Result};
use crate::keys;
pub use crate::mode::Mode;

pub use crate::credentials::Credentials;
pub use consume::{AckResult, MAX_BLOCK, MAX_RECEIVE_COUNT, ReceiveOptions, Received, Source};
pub use credentials::{CREDENTIAL_LIFETIME, CREDENTIAL_USER_PREFIX};
pub use dead_letters::DeadLetter;
pub use durable::{DEFAULT_TOPIC_RETENTION, TOPIC_FIELD, TopicMessage, TopicReceipt};
pub use inspect::{
    ConsumerStatus, GroupStatus, PeekedEntry, PendingEntry, QueueStatus, StreamInfo,
};
pub use lanes::LaneStatus;
pub use lookup::{GroupView, MESSAGE_ID_SCAN_LIMIT, MessageDetails, MessageLocation};
pub use presence::{AgentInfo, MCP_LIVE_FOR, PRESENCE_INTERVAL, PRESENCE_LIVE_FOR, WorkerPresence};
pub(crate) use replicas::ReplicaWait;
pub use retries::ScheduledRetry;
pub use send::{FailedSend, SendReceipt};
pub use send_once::{DEFAULT_DEDUP_WINDOW, MAX_IDEMPOTENCY_KEY_LEN};
pub use topics::{Subscription, TopicEvent};

/// Default Redis URL when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = env::DEFAULT_REDIS_URL;

/// `REDIS_URL`, or the default `redis://127.0.0.1:6379`.
pub fn redis_url_from_env() -> String {
    env::process().redis_url()
}

/// Checks a Redis URL setting without connecting: one URL, or comma-separated cluster seed
/// URLs, each of a form redis-rs accepts (`redis://[user:password@]host[:port][/db]`,
/// `rediss://…` for TLS, `unix:///path`). `rediss://…#insecure` (no check that the server's
/// certificate names its host) is refused.
pub fn validate_url(url: &str) -> Result<()> {
    crate::broker::conn::check_urls(url)
}

/// How a [`Bus`] connects and behaves.
///
/// Settings given explicitly win over the environment, whatever the call order:
/// `Bus::builder(url).notify(false).from_env()` keeps `notify` off even when
/// `FABRIC_NOTIFY=true`.
///
/// # TLS
///
/// A `rediss://` URL connects over TLS (rustls) and checks the server's certificate: by
/// default against the Mozilla root certificates built in, or, with
/// [`tls_ca_file`](BusBuilder::tls_ca_file), against the CA certificates of that file only.
/// [`tls_client_cert`](BusBuilder::tls_client_cert) adds a client certificate for servers
/// that require one (mutual TLS). Every connection of the bus uses them: the shared one, the
/// dedicated ones of blocking reads, Pub/Sub subscriptions, and every node of a cluster.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> fabric_worker::Result<()> {
/// use fabric_worker::Bus;
///
/// let bus = Bus::builder("rediss://redis.internal:6380")
///     .tls_ca_file("/etc/fabric/ca.pem")
///     .tls_client_cert("/etc/fabric/percy.crt", "/etc/fabric/percy.key")
///     .connect()
///     .await?;
/// # drop(bus); Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct BusBuilder {
    credentials: Option<Arc<dyn crate::credentials::CredentialSource>>,
    url: String,
    cluster: Option<bool>,
    notify: Option<bool>,
    mode: Option<Mode>,
    response_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tls_ca: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
    topic_retention: Option<u64>,
    wait_replicas: Option<ReplicaWait>,
    from_env: BusEnv,
}

/// Settings read from the environment (below explicit ones).
#[derive(Clone, Debug, Default)]
struct BusEnv {
    cluster: Option<bool>,
    notify: Option<bool>,
    mode: Option<Mode>,
    response_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tls: TlsFiles,
    /// `FABRIC_CREDENTIALS_URL` and `FABRIC_AGENT_TOKEN_FILE`.
    credentials: Option<(String, PathBuf)>,
    topic_retention: Option<u64>,
    wait_replicas: Option<u32>,
    wait_timeout: Option<Duration>,
}

impl std::fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusBuilder")
            .field("url", &crate::broker::conn::mask_url(&self.url))
            .field("cluster", &self.cluster)
            .field("mode", &self.mode)
            .field("credentials", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl BusBuilder {
    /// Log in with short-lived credentials from `source`, renewed before they expire (every
    /// connection logs in again with the new ones; none is dropped), instead of the URL's
    /// user and password. See [`crate::credentials`]. Env: `FABRIC_CREDENTIALS_URL` (the
    /// `POST /credentials` endpoint) with `FABRIC_AGENT_TOKEN_FILE` (the agent's token), with
    /// the feature `credentials-http`.
    pub fn credentials(mut self, source: impl crate::credentials::CredentialSource) -> Self {
        self.credentials = Some(Arc::new(source));
        self
    }

    /// Publish the `agent.<to>.new_message` notification on every send (default: on, as the
    /// Python bus does). Env: `FABRIC_NOTIFY`.
    pub fn notify(mut self, on: bool) -> Self {
        self.notify = Some(on);
        self
    }

    /// How messages travel: [`Mode::Direct`] (the default) or [`Mode::Secure`] (through
    /// outboxes and the router). Env: `FABRIC_MODE` (`direct` or `secure`).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// How many entries each durable topic keeps: [`Bus::publish_durable`] appends with
    /// `MAXLEN ~ n` (default 100,000; at least 1). Env: `FABRIC_TOPIC_RETENTION`.
    pub fn topic_retention(mut self, n: u64) -> Self {
        self.topic_retention = Some(n);
        self
    }

    /// Before [`send`](Bus::send) returns `Ok`, and before a worker counts a reply as
    /// written (and acknowledges its request), wait until `replicas` replicas of the primary
    /// holding the stream have the write (`WAIT`), for at most `timeout`. Without it, a
    /// primary that dies before its asynchronous replication reached the replica that
    /// replaces it loses writes it had acknowledged (a few milliseconds' worth; the README's
    /// Redis Cluster section has the figures). `WAIT` holds the connection it runs on until
    /// the replicas answer, so what is queued behind it waits too: `fabric-bench --only
    /// replicas` measured 0.27× the sends per second of the same primary without the wait, and
    /// while a replica is down every send waits the whole `timeout`.
    ///
    /// A send that fewer replicas confirmed in time is
    /// [`Error::Unreplicated`]: queued on the primary, but not
    /// yet safe from its failure. A reply that fewer replicas confirmed leaves its request
    /// pending, to be handled again. Env: `FABRIC_WAIT_REPLICAS` and
    /// `FABRIC_WAIT_TIMEOUT_MS` (default 1,000).
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_replicas = Some(ReplicaWait { replicas, timeout });
        self
    }

    /// Treat the URL as a Redis Cluster seed node even when only one is given (several
    /// comma-separated URLs always mean a cluster). Env: `FABRIC_CLUSTER`.
    pub fn cluster(mut self, on: bool) -> Self {
        self.cluster = Some(on);
        self
    }

    /// Time to wait for the reply to a non-blocking command (default 5 s).
    /// Env: `FABRIC_RESPONSE_TIMEOUT_MS`.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = Some(d);
        self
    }

    /// Time to wait for a TCP connection (default 2 s). Env: `FABRIC_CONNECT_TIMEOUT_MS`.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Check the server's TLS certificate against the CA certificate(s) in this PEM file
    /// only, instead of the Mozilla roots built in (for a private CA, or to pin one). Needs a
    /// `rediss://` URL. The file is read when connecting; an unreadable or malformed one is
    /// an [`Error::Config`] naming it. Env: `FABRIC_TLS_CA_FILE`.
    pub fn tls_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.tls_ca = Some(path.as_ref().to_owned());
        self
    }

    /// Present this client certificate (PEM; intermediates may follow it in the file) and
    /// its private key (PEM: PKCS#8, PKCS#1 or SEC1) to servers that ask for one (mutual TLS,
    /// `tls-auth-clients yes`). Needs a `rediss://` URL; the files are read and checked
    /// (the key must belong to the certificate) when connecting.
    /// Env: `FABRIC_TLS_CERT_FILE` and `FABRIC_TLS_KEY_FILE` (both or neither).
    pub fn tls_client_cert(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.tls_client = Some((cert.as_ref().to_owned(), key.as_ref().to_owned()));
        self
    }

    /// Reads `FABRIC_MODE`, `FABRIC_NOTIFY`, `FABRIC_CLUSTER`, `FABRIC_RESPONSE_TIMEOUT_MS`,
    /// `FABRIC_CONNECT_TIMEOUT_MS`, `FABRIC_TLS_CA_FILE`, `FABRIC_TLS_CERT_FILE`,
    /// `FABRIC_TLS_KEY_FILE`, `FABRIC_TOPIC_RETENTION`, `FABRIC_WAIT_REPLICAS` and
    /// `FABRIC_WAIT_TIMEOUT_MS` for the settings not given explicitly. (The URL is the
    /// one given to [`Bus::builder`]; [`Bus::from_env`] takes it from `REDIS_URL`.)
    pub fn from_env(self) -> Result<Self> {
        self.with_vars(&env::process())
    }

    pub(crate) fn with_vars<F: Fn(&str) -> Option<String>>(
        mut self,
        vars: &env::Vars<F>,
    ) -> Result<Self> {
        self.from_env = BusEnv {
            cluster: vars.bool("FABRIC_CLUSTER")?,
            mode: vars
                .string("FABRIC_MODE")
                .map(|m| m.parse::<Mode>())
                .transpose()
                .map_err(|e| Error::Config(format!("FABRIC_MODE: {e}")))?,
            notify: vars.bool("FABRIC_NOTIFY")?,
            response_timeout: vars.millis("FABRIC_RESPONSE_TIMEOUT_MS")?,
            connect_timeout: vars.millis("FABRIC_CONNECT_TIMEOUT_MS")?,
            tls: tls_from_vars(vars)?,
            topic_retention: vars.u64("FABRIC_TOPIC_RETENTION")?,
            wait_replicas: vars.u32("FABRIC_WAIT_REPLICAS")?,
            wait_timeout: vars.millis("FABRIC_WAIT_TIMEOUT_MS")?,
            credentials: match (
                vars.string("FABRIC_CREDENTIALS_URL"),
                vars.string("FABRIC_AGENT_TOKEN_FILE"),
            ) {
                (Some(url), Some(file)) => Some((url, PathBuf::from(file))),
                (None, None) => None,
                _ => {
                    return Err(Error::Config(
                        "FABRIC_CREDENTIALS_URL and FABRIC_AGENT_TOKEN_FILE go together: set both (the credentials endpoint and the file holding the agent's token) or neither".into(),
                    ));
                }
            },
        };
        Ok(self)
    }

    /// The TLS files in force: each one given with a method over the environment's.
    fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: match &self.tls_ca {
                Some(p) => Some(PemFile::from_method(p, "BusBuilder::tls_ca_file")),
                None => self.from_env.tls.ca.clone(),
            },
            client: match &self.tls_client {
                Some((c, k)) => Some((
                    PemFile::from_method(c, "BusBuilder::tls_client_cert"),
                    PemFile::from_method(k, "BusBuilder::tls_client_cert"),
                )),
                None => self.from_env.tls.client.clone(),
            },
        }
    }

    /// [`credentials`](BusBuilder::credentials) with a source already shared.
    pub(crate) fn credentials_shared(
        mut self,
        source: Arc<dyn crate::credentials::CredentialSource>,
    ) -> Self {
        self.credentials = Some(source);
        self
    }

    /// The credentials in force: the method's over the environment's.
    fn credential_source(&self) -> Result<Option<Arc<dyn crate::credentials::CredentialSource>>> {
        if let Some(s) = &self.credentials {
            return Ok(Some(s.clone()));
        }
        match &self.from_env.credentials {
            None => Ok(None),
            #[cfg(feature = "credentials-http")]
            Some((url, file)) => Ok(Some(Arc::new(
                crate::credentials::HttpCredentialSource::token_file(url.clone(), file.clone()),
            ))),
            #[cfg(not(feature = "credentials-http"))]
            Some(_) => Err(Error::Config(
                "FABRIC_CREDENTIALS_URL is set, but this program was built without fabric-worker's feature `credentials-http`; enable it in Cargo.toml".into(),
            )),
        }
    }

    /// The same settings for another URL.
    pub(crate) fn with_url(mut self, url: String) -> Self {
        self.url = url;
        self
    }

    fn response(&self) -> Duration {
        self.response_timeout
            .or(self.from_env.response_timeout)
            .unwrap_or(Duration::from_secs(5))
    }

    fn connect_time(&self) -> Duration {
        self.connect_timeout
            .or(self.from_env.connect_timeout)
            .unwrap_or(Duration::from_secs(2))
    }

    /// Checks the settings without connecting: the URL (each seed of a cluster), and the TLS
    /// files — readable, well-formed, the key the client certificate's — against it (TLS
    /// files need `rediss://` URLs). [`connect`](BusBuilder::connect) does the same first;
    /// this lets a program that connects later (at first use) refuse a bad setting at start.
    pub fn check(&self) -> Result<()> {
        crate::broker::conn::check_urls(&self.url)?;
        let files = self.tls_files();
        files.check_urls(&crate::broker::conn::split_urls(&self.url))?;
        files.load()?;
        Ok(())
    }

    /// Connects (one `PING` proves the server answers). A URL listing several
    /// comma-separated nodes (`redis://a:7000,redis://b:7001`) connects to a Redis Cluster.
    pub async fn connect(self) -> Result<Bus> {
        let retention = self
            .topic_retention
            .or(self.from_env.topic_retention)
            .unwrap_or(durable::DEFAULT_TOPIC_RETENTION);
        if retention == 0 {
            return Err(Error::Config(
                "topic_retention (FABRIC_TOPIC_RETENTION) must be at least 1: it is how many entries each durable topic keeps".into(),
            ));
        }
        let wait_replicas = self.replica_wait()?;
        let cluster = self.cluster.or(self.from_env.cluster).unwrap_or(false);
        let credentials = match self.credential_source()? {
            Some(source) => Some(crate::broker::renew::Renewing::start(source).await?),
            None => None,
        };
        let broker = Broker::connect(
            &self.url,
            cluster,
            self.response(),
            self.connect_time(),
            &self.tls_files(),
            credentials,
        )
        .await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut broker.conn())
            .await
            .map_err(|source| crate::broker::conn::connect_error(broker.url(), source))?;
        let notify = self.notify.or(self.from_env.notify).unwrap_or(true);
        let mode = self.mode.or(self.from_env.mode).unwrap_or_default();
        let mut bus = Bus::with_broker(broker, notify, mode);
        if let Some(inner) = Arc::get_mut(&mut bus.inner) {
            inner.topic_retention = retention;
            inner.wait_replicas = wait_replicas;
        }
        Ok(bus)
    }
}

/// A handle to the message bus. Cheap to clone; clones share connections.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> fabric_worker::Result<()> {
/// use fabric_worker::{Bus, Message};
/// use serde_json::json;
///
/// let bus = Bus::from_env().await?; // REDIS_URL, default redis://127.0.0.1:6379
/// let receipt = bus
///     .send(Message::task("coder", "percy", "code_review", json!({"pr_id": "123"})))
///     .await?;
/// println!("queued {} as {}", receipt.message_id, receipt.stream_id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
    /// Told about what this bus sends and its worker handles (`hooks.rs`).
    hooks: crate::hooks::Hooks,
}

struct BusInner {
    broker: Broker,
    notify: bool,
    mode: Mode,
    /// `MAXLEN ~` of durable topics.
    topic_retention: u64,
    /// `WAIT` after sends and replies.
    wait_replicas: Option<ReplicaWait>,
    /// Names this process's consumers and reply streams.
    instance: String,
    /// One reply listener per requesting agent.
    replies: Mutex<HashMap<String, Arc<request::ReplyListener>>>,
    /// The recipients whose new-message notification is in flight (notify.rs).
    notifier: notify::Notifier,
    /// Stops the reply listeners when the last clone is dropped.
    cancel: CancellationToken,
    _guard: DropGuard,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.inner.broker.url())
            .field("notify", &self.inner.notify)
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A builder for `url`.
    pub fn builder(url: impl Into<String>) -> BusBuilder {
        BusBuilder {
            credentials: None,
            url: url.into(),
            cluster: None,
            notify: None,
            mode: None,
            response_timeout: None,
            connect_timeout: None,
            tls_ca: None,
            tls_client: None,
            topic_retention: None,
            wait_replicas: None,
            from_env: BusEnv::default(),
        }
    }

    /// Connects to `url` with default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Bus> {
        Bus::builder(url).connect().await
    }

    /// Connects to `REDIS_URL` (default `redis://127.0.0.1:6379`) with the settings of
    /// [`BusBuilder::from_env`].
    pub async fn from_env() -> Result<Bus> {
        Bus::builder(redis_url_from_env())
            .from_env()?
            .connect()
            .await
    }

    pub(crate) fn with_broker(broker: Broker, notify: bool, mode: Mode) -> Bus {
        let cancel = CancellationToken::new();
        Bus {
            inner: Arc::new(BusInner {
                broker,
                notify,
                mode,
                topic_retention: durable::DEFAULT_TOPIC_RETENTION,
                wait_replicas: None,
                instance: uuid::Uuid::new_v4().simple().to_string(),
                replies: Mutex::new(HashMap::new()),
                notifier: notify::Notifier::default(),
                cancel: cancel.clone(),
                _guard: cancel.drop_guard(),
            }),
            hooks: crate::hooks::Hooks::default(),
        }
    }

    /// A bus with no Redis behind it: every operation fails with [`Error::NotConnected`].
    pub(crate) fn offline() -> Bus {
        Bus::with_broker(Broker::offline(), false, Mode::Direct)
    }

    /// The server URL, password masked.
    pub fn url(&self) -> &str {
        self.inner.broker.url()
    }

    /// How this bus sends: straight into inboxes, or through outboxes and the router.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Whether this bus talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.broker.is_cluster()
    }

    /// The Redis layer under this bus.
    pub(crate) fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The `WAIT` sends and replies make, if any ([`BusBuilder::wait_for_replicas`]).
    pub(crate) fn replica_wait(&self) -> Option<ReplicaWait> {
        self.inner.wait_replicas
    }

    /// The shared connection for ordinary (non-blocking) commands (a cheap clone).
    fn conn(&self) -> Conn {
        self.inner.broker.conn()
    }
}

/// `FABRIC_TLS_CA_FILE`, and `FABRIC_TLS_CERT_FILE` with `FABRIC_TLS_KEY_FILE` (both or neither).
fn tls_from_vars<F: Fn(&str) -> Option<String>>(vars: &env::Vars<F>) -> Result<TlsFiles> {
    const CA: &str = "FABRIC_TLS_CA_FILE";
    const CERT: &str = "FABRIC_TLS_CERT_FILE";
    const KEY: &str = "FABRIC_TLS_KEY_FILE";
    let client = match (vars.string(CERT), vars.string(KEY)) {
        (Some(c), Some(k)) => Some((PemFile::from_env(c, CERT), PemFile::from_env(k, KEY))),
        (None, None) => None,
        (Some(_), None) => return Err(half_a_pair(CERT, KEY)),
        (None, Some(_)) => return Err(half_a_pair(KEY, CERT)),
    };
    Ok(TlsFiles {
        ca: vars.string(CA).map(|p| PemFile::from_env(p, CA)),
        client,
    })
}

fn half_a_pair(set: &str, unset: &str) -> Error {
    Error::Config(format!(
        "{set} is set but {unset} is not; mutual TLS needs both the client certificate (FABRIC_TLS_CERT_FILE) and its private key (FABRIC_TLS_KEY_FILE): set both, or neither"
    ))
}

/// Checks `agent` and the consumer group (default `<agent>_workers`); returns the group.
fn agent_group(agent: &str, group: Option<&str>) -> Result<String> {
    keys::validate_agent(agent)?;
    let group = group
        .map(str::to_owned)
        .unwrap_or_else(|| keys::default_group(agent));
    keys::validate_group(&group)?;
    Ok(group)
}

#[cfg(test)]
mod tests;
