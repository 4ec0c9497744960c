//! The Redis layer that both the [`Bus`](crate::Bus) and the worker runtime stand on:
//! connections, consumer groups, dead-lettering, the Lua scripts, parsing of replies and the
//! reconnect backoff. Neither `bus` nor `runtime` reaches Redis except through this module
//! or with commands built from its pieces, so every rule about the wire lives here once.
//!
//! Module dependencies run one way: `broker` → (`keys`, `message`, `error`); `bus` → `broker`;
//! `runtime` → `broker` (and `bus` only for the [`Bus`](crate::Bus) handle a handler's
//! [`Context`](crate::Context) carries). The `module_graph` test checks there is no cycle.

mod backoff;
mod cluster;
pub(crate) mod conn;
mod dead_letter;
pub(crate) mod functions;
mod groups;
pub(crate) mod renew;
pub(crate) mod tls;
pub(crate) mod wire;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use backoff::{capped_backoff, reconnect_backoff};
pub(crate) use conn::Conn;
pub use dead_letter::DeadReason;
pub(crate) use dead_letter::{DeadLetterNote, dead_letter};
pub(crate) use wire::{Head, RawEntry};

use crate::error::Result;
use conn::{Backend, Timeouts};

/// Counts one expired message of `stream` (`<stream>:expired{<stream>}`, of its inbox for a
/// priority lane).
pub(crate) async fn count_expired(broker: &Broker, stream: &str) -> Result<()> {
    let key = crate::keys::expired_count(crate::keys::home(stream));
    let _: i64 = redis::cmd("INCR")
        .arg(&key)
        .query_async(&mut broker.conn())
        .await
        .map_err(|e| crate::error::Error::redis("INCR", &key, e))?;
    Ok(())
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: every
/// mutex of this crate guards a map or set that a panic cannot leave half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Redis, as the bus and the runtime see it: one shared connection for ordinary commands,
/// dedicated ones for blocking reads, and the consumer groups known to exist. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Broker {
    inner: Arc<BrokerInner>,
}

struct BrokerInner {
    backend: Backend,
    timeouts: Timeouts,
    /// The URL(s), passwords masked.
    url: String,
    /// `(stream, group)` pairs created (or found) by this process.
    groups: Mutex<HashSet<(String, String)>>,
    /// Whether the function library was found (or loaded) at this code's version.
    library_ok: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Connects to one server (one URL) or a cluster (several comma-separated seed URLs,
    /// or `cluster` set); `rediss://` URLs over TLS, with the CA and client certificate of
    /// `tls` when set.
    pub(crate) async fn connect(
        url: &str,
        cluster: bool,
        response: Duration,
        connect: Duration,
        tls: &tls::TlsFiles,
        credentials: Option<std::sync::Arc<renew::Renewing>>,
    ) -> Result<Broker> {
        let urls = conn::split_urls(url);
        let timeouts = Timeouts { response, connect };
        let certs = if urls.is_empty() {
            None
        } else {
            tls.check_urls(&urls)?;
            tls.load()?
        };
        let backend = Backend::open(&urls, cluster, timeouts, certs.as_ref(), credentials).await?;
        Ok(Broker::new(backend, timeouts, conn::mask_urls(&urls)))
    }

    /// A broker with no server behind it: every command fails with
    /// [`Error::NotConnected`](crate::Error::NotConnected) (see `fabric_worker::testing`).
    pub(crate) fn offline() -> Broker {
        let t = Timeouts {
            response: Duration::from_secs(1),
            connect: Duration::from_secs(1),
        };
        Broker::new(Backend::Offline, t, "(not connected)".into())
    }

    fn new(backend: Backend, timeouts: Timeouts, url: String) -> Broker {
        Broker {
            inner: Arc::new(BrokerInner {
                backend,
                timeouts,
                url,
                groups: Mutex::new(HashSet::new()),
                library_ok: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The server URL(s), passwords masked.
    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.inner.backend.is_cluster()
    }

    /// The shared connection for ordinary (non-blocking) commands (a cheap clone).
    pub(crate) fn conn(&self) -> Conn {
        self.inner.backend.conn()
    }

    /// A new connection of its own, for a blocking command that must not hold up others:
    /// its response timeout exceeds `block`.
    pub(crate) async fn dedicated(&self, block: Duration) -> Result<Conn> {
        self.inner
            .backend
            .dedicated(block, self.inner.timeouts, &self.inner.url)
            .await
    }

    /// The client a Pub/Sub subscription connects with (the first node of a cluster:
    /// `PUBLISH` reaches every node).
    pub(crate) fn pubsub_client(&self) -> Option<redis::Client> {
        self.inner.backend.pubsub_client()
    }

    /// Every key matching `pattern` whose type is `kind`, found with `SCAN … MATCH … TYPE`
    /// on every primary (never `KEYS`), sorted and deduplicated. At most `limit` keys.
    pub(crate) async fn scan(
        &self,
        pattern: &str,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let backend = &self.inner.backend;
        let nodes: Vec<Option<conn::NodeAddr>> = if backend.is_cluster() {
            backend.primaries().await?.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let mut found = std::collections::BTreeSet::new();
        for node in &nodes {
            let mut cursor = "0".to_string();
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(&cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("TYPE")
                    .arg(kind);
                let v = backend
                    .query_node(&cmd, node.as_ref())
                    .await
                    .map_err(|e| crate::Error::redis("SCAN", pattern, e))?;
                let (next, keys) = wire::parse_scan(&v)?;
                found.extend(keys);
                if next == "0" || found.len() >= limit {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found.into_iter().take(limit).collect())
    }

    /// Makes sure `group` exists on `stream` (cached per process).
    pub(crate) async fn ensure_group(&self, stream: &str, group: &str) -> Result<()> {
        let key = (stream.to_owned(), group.to_owned());
        if lock(&self.inner.groups).contains(&key) {
            return Ok(());
        }
        groups::create(&mut self.conn(), stream, group).await?;
        lock(&self.inner.groups).insert(key);
        Ok(())
    }

    /// Makes sure `group` exists on `stream`, created (if it is not) to deliver the entries
    /// after the id `start` gives (cached per process).
    pub(crate) async fn ensure_group_from<F>(
        &self,
        stream: &str,
        group: &str,
        start: F,
    ) -> Result<()>
    where
        F: AsyncFnOnce() -> Result<String>,
    {
        let key = (stream.to_owned(), group.to_owned());
        if lock(&self.inner.groups).contains(&key) {
            return Ok(());
        }
        let start = start().await?;
        groups::create_at(&mut self.conn(), stream, group, &start).await?;
        lock(&self.inner.groups).insert(key);
        Ok(())
    }

    /// Forgets that `group` exists (after a `NOGROUP`: the stream was deleted).
    pub(crate) fn forget_group(&self, stream: &str, group: &str) {
        lock(&self.inner.groups).remove(&(stream.to_owned(), group.to_owned()));
    }
}
