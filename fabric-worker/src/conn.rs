//! Connections: a single Redis server or a Redis Cluster.
//!
//! Ordinary commands of every task share one multiplexed connection — redis-rs's
//! `ConnectionManager`, which reconnects by itself, or, for a cluster, one cluster
//! connection that routes each command to its slot's node. Concurrent commands are
//! pipelined on the socket, and no command pays an extra round trip for a pool health check.
//! Every blocking read gets a dedicated connection whose response timeout exceeds its `BLOCK`
//! (a blocking command on the shared connection would hold up everything queued behind it).

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::{Error, Result};
use crate::wire::mask_url;

/// Where the bus connects.
#[derive(Clone)]
pub(crate) enum Backend {
    Single {
        shared: ConnectionManager,
        client: redis::Client,
    },
    Cluster {
        conn: ClusterConnection,
        client: Box<ClusterClient>,
    },
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
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Shared(c) => c.req_packed_command(cmd),
            Conn::Dedicated(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Shared(c) => c.get_db(),
            Conn::Dedicated(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
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

impl Backend {
    /// Connects to one server (one URL) or a cluster (several seed URLs, or `cluster` set).
    pub(crate) async fn open(urls: &[String], cluster: bool, t: Timeouts) -> Result<Backend> {
        let shown = urls
            .iter()
            .map(|u| mask_url(u))
            .collect::<Vec<_>>()
            .join(",");
        let connect_err = |source| Error::Connect {
            url: shown.clone(),
            source,
        };
        if urls.is_empty() {
            return Err(Error::Config(
                "no Redis URL given; set REDIS_URL (e.g. redis://127.0.0.1:6379)".into(),
            ));
        }
        if cluster || urls.len() > 1 {
            let client = ClusterClient::builder(urls.to_vec())
                .connection_timeout(t.connect)
                .response_timeout(t.response)
                .build()
                .map_err(connect_err)?;
            let conn = client.get_async_connection().await.map_err(connect_err)?;
            return Ok(Backend::Cluster {
                conn,
                client: Box::new(client),
            });
        }
        let client = redis::Client::open(urls[0].as_str()).map_err(connect_err)?;
        let cfg = ConnectionManagerConfig::new()
            .set_response_timeout(Some(t.response))
            .set_connection_timeout(Some(t.connect))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let shared = ConnectionManager::new_with_config(client.clone(), cfg)
            .await
            .map_err(connect_err)?;
        Ok(Backend::Single { shared, client })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster { .. })
    }

    /// The shared connection for ordinary (non-blocking) commands (a cheap clone).
    pub(crate) fn conn(&self) -> Conn {
        match self {
            Backend::Single { shared, .. } => Conn::Shared(shared.clone()),
            Backend::Cluster { conn, .. } => Conn::Cluster(conn.clone()),
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
        let connect_err = |source| Error::Connect {
            url: shown_url.to_owned(),
            source,
        };
        match self {
            Backend::Single { client, .. } => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(block + t.response))
                    .set_connection_timeout(Some(t.connect));
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map(Conn::Dedicated)
                    .map_err(connect_err)
            }
            Backend::Cluster { client, .. } => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_response_timeout(block + t.response)
                    .set_connection_timeout(t.connect);
                client
                    .get_async_connection_with_config(cfg)
                    .await
                    .map(Conn::Cluster)
                    .map_err(connect_err)
            }
        }
    }
}
