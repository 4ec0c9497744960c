//! Connections: a single Redis server or a Redis Cluster.
//!
//! Ordinary commands of every task share one multiplexed connection — redis-rs's
//! `ConnectionManager`, which reconnects by itself, or, for a cluster, one cluster
//! connection that routes each command to its slot's node. Concurrent commands are
//! pipelined on the socket, and no command pays an extra round trip for a pool health check.
//! Every blocking read gets a dedicated connection whose response timeout exceeds its `BLOCK`
//! (a blocking command on the shared connection would hold up everything queued behind it).
//! With `rediss://` URLs every one of them — shared, dedicated, Pub/Sub, every cluster node —
//! is a TLS connection with the same certificates (`tls.rs`).

use std::time::Duration;

use super::cluster::{ClusterConn, Watched};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, TlsCertificates, Value};

use crate::broker::renew::{Provider, Renewing};
use crate::broker::{tls, wire};
use crate::error::{Error, NOT_CONNECTED, Result};
use std::sync::Arc;

/// Where the bus connects.
#[derive(Clone)]
pub(crate) enum Backend {
    Single {
        shared: ConnectionManager,
        client: redis::Client,
        /// Short-lived credentials renewed in the background, if any.
        credentials: Option<Arc<Renewing>>,
        /// The URL and certificates, for Pub/Sub clients with the newest credentials.
        url: String,
        certs: Option<TlsCertificates>,
    },
    Cluster {
        conn: Arc<Watched>,
        client: Box<ClusterClient>,
        /// The first seed node, for Pub/Sub subscriptions.
        first: redis::Client,
        credentials: Option<Arc<Renewing>>,
        url: String,
        certs: Option<TlsCertificates>,
    },
    /// No server (`fabric_worker::testing`): every command fails with [`NOT_CONNECTED`].
    Offline,
}

/// A primary node's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Timeouts shared by every connection of a bus.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) response: Duration,
    pub(crate) connect: Duration,
}

/// A connection for one or more commands.
pub(crate) enum Conn {
    Shared(ConnectionManager),
    Dedicated(MultiplexedConnection),
    Cluster(ClusterConn),
    Offline,
}

fn offline_error() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, NOT_CONNECTED))
}

impl Conn {
    /// Runs `cmd` where `route` says on a cluster; on one server, there.
    pub(crate) async fn route(
        &mut self,
        cmd: Cmd,
        route: RoutingInfo,
    ) -> redis::RedisResult<Value> {
        match self {
            Conn::Cluster(c) => c.route_command(cmd, route).await,
            other => cmd.query_async(other).await,
        }
    }
}

/// The cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of the key, mod 16,384).
pub(crate) fn slot(key: &str) -> u16 {
    let tagged = key
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged.as_bytes()) % 16_384
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Shared(c) => c.req_packed_command(cmd),
            Conn::Dedicated(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Offline => Box::pin(async { Err(offline_error()) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Shared(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Offline => Box::pin(async { Err(offline_error()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Shared(c) => c.get_db(),
            Conn::Dedicated(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Offline => 0,
        }
    }
}

/// The URLs of a `REDIS_URL`-style setting: one URL, or comma-separated cluster seed nodes.
pub(crate) fn split_urls(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks that every URL of a setting parses (no connection is made).
pub(crate) fn check_urls(url: &str) -> Result<()> {
    let urls = split_urls(url);
    if urls.is_empty() {
        return Err(Error::invalid(
            "Redis URL",
            url,
            "is empty; expected e.g. redis://127.0.0.1:6379",
        ));
    }
    for u in &urls {
        if let Err(e) = redis::Client::open(u.as_str()) {
            return Err(Error::invalid(
                "Redis URL",
                &mask_url(u),
                format!(
                    "{e}; expected e.g. redis://127.0.0.1:6379 (several comma-separated URLs for a cluster)"
                ),
            ));
        }
        tls::is_tls_url(u)?;
    }
    Ok(())
}

/// The error for a connection that could not be made (or answer): [`Error::Tls`] with what
/// to do when TLS failed, [`Error::Connect`] otherwise.
pub(crate) fn connect_error(url: &str, source: redis::RedisError) -> Error {
    match tls::failure_hint(&source) {
        Some(hint) => Error::Tls {
            url: url.to_owned(),
            hint: hint.to_owned(),
            source,
        },
        None => Error::Connect {
            url: url.to_owned(),
            source,
        },
    }
}

/// `url` logging in as `user` with `password` (whatever credentials it had replaced).
fn with_login(url: &str, user: &str, password: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let host = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    format!("{}://{user}:{password}@{host}", &url[..scheme_end])
}

/// The URL to connect with: logging in with the newest short-lived credentials, if any.
fn current_url(url: &str, credentials: Option<&Arc<Renewing>>) -> String {
    match credentials {
        Some(c) => {
            let now = c.current();
            with_login(url, now.username(), now.password())
        }
        None => url.to_owned(),
    }
}

/// A client for one URL, with the TLS certificates when there are any.
fn new_client(url: &str, certs: Option<&TlsCertificates>) -> redis::RedisResult<redis::Client> {
    match certs {
        Some(c) => redis::Client::build_with_tls(url, c.clone()),
        None => redis::Client::open(url),
    }
}

/// The URLs for messages and logs, passwords masked, comma-separated.
pub(crate) fn mask_urls(urls: &[String]) -> String {
    urls.iter()
        .map(|u| mask_url(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// Masks the password of a redis URL for messages and logs: in the user part
/// (`redis://user:pw@host`) and in the query (`?password=pw`, `?pass=pw`).
pub(crate) fn mask_url(url: &str) -> String {
    let url = mask_userinfo(url);
    let Some(q) = url.find('?') else {
        return url;
    };
    let (base, query) = url.split_at(q + 1);
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
            {
                format!("{k}=***")
            }
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}{}", query.join("&"))
}

fn mask_userinfo(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = rest.rfind('@') {
            let creds = &rest[..at];
            let user = creds.split(':').next().unwrap_or("");
            let masked = if creds.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_string()
            };
            return format!("{}://{}@{}", &url[..scheme_end], masked, &rest[at + 1..]);
        }
    }
    url.to_string()
}

impl Backend {
    /// Connects to one server (one URL) or a cluster (several seed URLs, or `cluster` set),
    /// over TLS with `certs` when given (`rediss://` URLs without certificates use TLS too,
    /// checking the server against the built-in roots).
    pub(crate) async fn open(
        urls: &[String],
        cluster: bool,
        t: Timeouts,
        certs: Option<&TlsCertificates>,
        credentials: Option<Arc<Renewing>>,
    ) -> Result<Backend> {
        let shown = mask_urls(urls);
        // With short-lived credentials every connection logs in with the newest, and logs in
        // again (AUTH) when they are renewed.
        let urls: Vec<String> = urls
            .iter()
            .map(|u| current_url(u, credentials.as_ref()))
            .collect();
        let urls = urls.as_slice();
        let connect_err = |source| connect_error(&shown, source);
        if urls.is_empty() {
            return Err(Error::Config(
                "no Redis URL given; set REDIS_URL (e.g. redis://127.0.0.1:6379)".into(),
            ));
        }
        if cluster || urls.len() > 1 {
            let mut builder = ClusterClient::builder(urls.to_vec())
                .connection_timeout(t.connect)
                .response_timeout(t.response);
            if let Some(c) = certs {
                // Every node, seeds and those found through CLUSTER SLOTS alike.
                builder = builder.certs(c.clone());
            }
            if let Some(c) = &credentials {
                builder = builder.set_credentials_provider(Provider(c.clone()));
            }
            let client = builder.build().map_err(connect_err)?;
            let conn = client.get_async_connection().await.map_err(connect_err)?;
            let first = new_client(&urls[0], certs).map_err(connect_err)?;
            return Ok(Backend::Cluster {
                conn: Watched::new(conn, client.clone(), None),
                client: Box::new(client),
                first,
                credentials,
                url: urls[0].clone(),
                certs: certs.cloned(),
            });
        }
        let client = new_client(&urls[0], certs).map_err(connect_err)?;
        let mut cfg = ConnectionManagerConfig::new()
            .set_response_timeout(Some(t.response))
            .set_connection_timeout(Some(t.connect))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        if let Some(c) = &credentials {
            cfg = cfg.set_credentials_provider(Provider(c.clone()));
        }
        let shared = ConnectionManager::new_with_config(client.clone(), cfg)
            .await
            .map_err(connect_err)?;
        Ok(Backend::Single {
            shared,
            client,
            credentials,
            url: urls[0].clone(),
            certs: certs.cloned(),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster { .. })
    }

    /// The shared connection for ordinary (non-blocking) commands (a cheap clone).
    pub(crate) fn conn(&self) -> Conn {
        match self {
            Backend::Single { shared, .. } => Conn::Shared(shared.clone()),
            Backend::Cluster { conn, .. } => Conn::Cluster(conn.conn()),
            Backend::Offline => Conn::Offline,
        }
    }

    /// The client Pub/Sub subscriptions connect with.
    /// (With short-lived credentials: a client logging in with the newest ones.)
    pub(crate) fn pubsub_client(&self) -> Option<redis::Client> {
        match self {
            Backend::Single {
                credentials: Some(c),
                url,
                certs,
                ..
            }
            | Backend::Cluster {
                credentials: Some(c),
                url,
                certs,
                ..
            } => new_client(&current_url(url, Some(c)), certs.as_ref()).ok(),
            Backend::Single { client, .. } => Some(client.clone()),
            Backend::Cluster { first, .. } => Some(first.clone()),
            Backend::Offline => None,
        }
    }

    /// Every primary's address: `CLUSTER SLOTS` on a cluster; the one server otherwise.
    pub(crate) async fn primaries(&self) -> Result<Vec<NodeAddr>> {
        let Backend::Cluster { conn, .. } = self else {
            return Ok(Vec::new());
        };
        let mut conn = conn.conn();
        let v: Value = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(|e| Error::redis("CLUSTER SLOTS", "", e))?;
        let mut out: Vec<NodeAddr> = Vec::new();
        for range in wire::as_array(&v).unwrap_or(&[]) {
            let node = wire::as_array(range)
                .and_then(|r| r.get(2))
                .and_then(wire::as_array);
            let Some(node) = node else { continue };
            let host = node.first().and_then(wire::as_string).unwrap_or_default();
            let port = node
                .get(1)
                .and_then(wire::as_i64)
                .and_then(|p| u16::try_from(p).ok());
            if let Some(port) = port {
                let addr = NodeAddr { host, port };
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
        }
        Ok(out)
    }

    /// Runs `cmd` on the primary at `node` (cluster only; elsewhere on the shared connection).
    pub(crate) async fn query_node(
        &self,
        cmd: &redis::Cmd,
        node: Option<&NodeAddr>,
    ) -> redis::RedisResult<Value> {
        match (self, node) {
            (Backend::Cluster { conn, .. }, Some(n)) => {
                conn.conn()
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: n.host.clone(),
                            port: n.port,
                        }),
                    )
                    .await
            }
            _ => cmd.query_async(&mut self.conn()).await,
        }
    }

    /// A new connection of its own, for a blocking command that must not hold up others:
    /// its response timeout exceeds `block`.
    pub(crate) async fn dedicated(
        &self,
        block: Duration,
        t: Timeouts,
        shown_url: &str,
    ) -> Result<Conn> {
        let connect_err = |source| connect_error(shown_url, source);
        match self {
            Backend::Single {
                client,
                credentials,
                ..
            } => {
                let mut cfg = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(block + t.response))
                    .set_connection_timeout(Some(t.connect));
                if let Some(c) = credentials {
                    cfg = cfg.set_credentials_provider(Provider(c.clone()));
                }
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map(Conn::Dedicated)
                    .map_err(connect_err)
            }
            Backend::Offline => Ok(Conn::Offline),
            Backend::Cluster { client, .. } => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_response_timeout(block + t.response)
                    .set_connection_timeout(t.connect);
                client
                    .get_async_connection_with_config(cfg.clone())
                    .await
                    .map(|c| Conn::Cluster(Watched::new(c, (**client).clone(), Some(cfg)).conn()))
                    .map_err(connect_err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        // What CLUSTER KEYSLOT answers.
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("agent:percy:inbox"), slot("{agent:percy:inbox}"));
        assert_eq!(slot("x{agent:percy:inbox}y"), slot("agent:percy:inbox"));
        // An empty tag is no tag: the whole key.
        assert_eq!(slot("a{}b"), 13_694);
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url("redis://percy:secret@127.0.0.1:6379/0"),
            "redis://percy:***@127.0.0.1:6379/0"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(mask_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(
            mask_url("redis://h:1/0?password=secret&protocol=resp3"),
            "redis://h:1/0?password=***&protocol=resp3"
        );
        assert_eq!(
            mask_url("redis://u:p@h:1?pass=secret"),
            "redis://u:***@h:1?pass=***"
        );
        assert_eq!(
            mask_urls(&["redis://a:1".into(), "redis://u:p@b:2".into()]),
            "redis://a:1,redis://u:***@b:2"
        );
        assert_eq!(
            split_urls(" redis://a:1 , ,redis://b:2"),
            ["redis://a:1", "redis://b:2"]
        );
    }
}
