//! Connections: a single Redis server (pooled with deadpool-redis) or a Redis Cluster
//! (one multiplexed cluster connection, which routes each command to its slot's node).

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::{Error, Result};
use crate::wire::mask_url;

/// Where the bus connects.
#[derive(Clone)]
pub(crate) enum Backend {
    Single {
        pool: Pool,
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
    Pooled(deadpool_redis::Connection),
    Dedicated(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(c) => c.req_packed_command(cmd),
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
            Conn::Pooled(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c) => c.get_db(),
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
    pub(crate) async fn open(
        urls: &[String],
        cluster: bool,
        pool_size: usize,
        t: Timeouts,
    ) -> Result<Backend> {
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
        let url = urls[0].as_str();
        let client = redis::Client::open(url).map_err(connect_err)?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(t.response))
            .set_connection_timeout(Some(t.connect));
        let mgr = deadpool_redis::Manager::new_with_config(url, cfg).map_err(connect_err)?;
        let pool = Pool::builder(mgr)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(t.connect + t.response))
            .create_timeout(Some(t.connect))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the connection pool: {e}")))?;
        Ok(Backend::Single { pool, client })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster { .. })
    }

    /// A connection for ordinary (non-blocking) commands.
    pub(crate) async fn conn(&self, shown_url: &str) -> Result<Conn> {
        match self {
            Backend::Single { pool, .. } => {
                pool.get().await.map(Conn::Pooled).map_err(|e| match e {
                    deadpool_redis::PoolError::Backend(source) => Error::Connect {
                        url: shown_url.to_owned(),
                        source,
                    },
                    other => Error::Pool(format!(
                        "{other} (server {shown_url}); check that Redis is running"
                    )),
                })
            }
            Backend::Cluster { conn, .. } => Ok(Conn::Cluster(conn.clone())),
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
