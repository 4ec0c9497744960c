//! The benchmark's environment: the Redis it measures against (one server, or a cluster's
//! nodes), its connections and bus, fresh agent names, clean-up, and filling streams.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use fabric_worker::{Bus, keys};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;

use crate::watch::{RedisUsage, redis_usage};

/// The benchmark's environment: where Redis is and how big the run is.
#[derive(Debug)]
pub(crate) struct Env {
    /// The URL consumers get (`REDIS_URL`): one server, or a cluster's comma-separated seeds.
    pub url: String,
    /// A connection to the server (to a cluster's first node: unkeyed commands only).
    pub conn: MultiplexedConnection,
    /// The library's bus, for what it offers (creating groups).
    pub bus: Bus,
    pub quick: bool,
    pub repeat: usize,
    pub tmp: PathBuf,
    /// One connection per server (a cluster's every node), for `INFO`.
    nodes: Vec<MultiplexedConnection>,
    /// A cluster connection, for keyed commands, when `url` is a cluster.
    cluster: Option<ClusterConn>,
    run_id: String,
    seq: AtomicU32,
}

impl Env {
    pub(crate) async fn new(url: String, quick: bool, repeat: usize) -> anyhow::Result<Env> {
        let conn = connect(&url).await?;
        let bus = Bus::connect(&url).await?;
        Env::with(url, conn, bus, quick, repeat)
    }

    /// The environment of a Redis Cluster whose nodes are `seeds` (every node's URL).
    pub(crate) async fn cluster(
        seeds: &[String],
        quick: bool,
        repeat: usize,
    ) -> anyhow::Result<Env> {
        let first = seeds.first().context("a cluster without nodes")?;
        let url = seeds.join(",");
        let conn = connect(first).await?;
        let bus = Bus::builder(url.as_str()).cluster(true).connect().await?;
        let mut env = Env::with(url, conn, bus, quick, repeat)?;
        env.nodes.clear();
        for s in seeds {
            env.nodes.push(connect(s).await?);
        }
        let client = redis::cluster::ClusterClient::builder(seeds.to_vec())
            .response_timeout(Duration::from_secs(120))
            .build()?;
        env.cluster = Some(ClusterConn(client.get_async_connection().await?));
        Ok(env)
    }

    fn with(
        url: String,
        conn: MultiplexedConnection,
        bus: Bus,
        quick: bool,
        repeat: usize,
    ) -> anyhow::Result<Env> {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        let tmp = std::env::temp_dir().join(format!("fabric-bench-{run_id}"));
        std::fs::create_dir_all(&tmp)?;
        Ok(Env {
            url,
            nodes: vec![conn.clone()],
            conn,
            bus,
            quick,
            repeat,
            tmp,
            cluster: None,
            run_id,
            seq: AtomicU32::new(0),
        })
    }

    /// Whether `url` is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A new bus of its own (cluster or not, as `url` is), for watching.
    pub(crate) async fn new_bus(&self) -> anyhow::Result<Bus> {
        Ok(Bus::builder(self.url.as_str())
            .cluster(self.is_cluster())
            .connect()
            .await?)
    }

    /// Redis' CPU time and command counts so far, summed over every node of a cluster.
    pub(crate) async fn redis_usage(&self) -> anyhow::Result<RedisUsage> {
        let mut total = RedisUsage::default();
        for c in &self.nodes {
            let u = redis_usage(&mut c.clone()).await?;
            total.cpu_s += u.cpu_s;
            for (k, v) in u.calls {
                *total.calls.entry(k).or_default() += v;
            }
        }
        Ok(total)
    }

    /// A fresh agent id for one measurement: `fb<run>-<label>-<n>`.
    pub(crate) fn agent(&self, label: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("fb{}-{label}-{n}", self.run_id)
    }

    /// The agent every benchmark message comes from.
    pub(crate) fn producer(&self) -> String {
        format!("fb{}-producer", self.run_id)
    }

    /// A new connection of its own (for concurrent helpers).
    pub(crate) async fn new_conn(&self) -> anyhow::Result<MultiplexedConnection> {
        connect(&self.url).await
    }

    /// Removes every key of `agent` the benchmark or the worker may have written.
    pub(crate) async fn cleanup(&self, agents: &[String]) -> anyhow::Result<()> {
        let keys_of = |a: &String| {
            let inbox = keys::inbox(a);
            let mut all = vec![
                keys::dead_letters(&inbox),
                keys::retries(&inbox),
                keys::delayed(&inbox),
                keys::results(a),
                keys::workers(a),
            ];
            all.extend(keys::lanes(&inbox).iter().cloned());
            all.push(inbox);
            all
        };
        if let Some(c) = &self.cluster {
            // Not every key of an agent shares its slot, and a cluster pipeline stays in
            // one slot: one UNLINK per key, 64 at a time.
            let all: Vec<String> = agents.iter().flat_map(keys_of).collect();
            let results: Vec<anyhow::Result<()>> = futures::stream::iter(all)
                .map(|k| {
                    let mut conn = c.0.clone();
                    async move {
                        redis::cmd("UNLINK")
                            .arg(k)
                            .query_async::<()>(&mut conn)
                            .await?;
                        Ok(())
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            return results.into_iter().collect();
        }
        let mut conn = self.conn.clone();
        for chunk in agents.chunks(100) {
            let mut pipe = redis::pipe();
            for a in chunk {
                pipe.cmd("UNLINK").arg(keys_of(a)).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }
}

/// A cluster connection (redis-rs' has no `Debug`).
#[derive(Clone)]
struct ClusterConn(ClusterConnection);

impl std::fmt::Debug for ClusterConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterConnection")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// A multiplexed connection with generous timeouts (big pipelines).
pub(crate) async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(120)))
        .set_connection_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Appends `total` entries `data=<datas[i % len]>` to `stream`: pipelined XADD, batches
/// of 1000, four batches in flight (through the cluster connection on a cluster).
pub(crate) async fn fill(
    env: &Env,
    stream: &str,
    datas: &[String],
    total: usize,
) -> anyhow::Result<()> {
    match &env.cluster {
        Some(c) => fill_on(&c.0, stream, datas, total).await,
        None => fill_on(&env.conn, stream, datas, total).await,
    }
}

async fn fill_on<C>(conn: &C, stream: &str, datas: &[String], total: usize) -> anyhow::Result<()>
where
    C: redis::aio::ConnectionLike + Clone + Send,
{
    if datas.is_empty() || total == 0 {
        return Ok(());
    }
    let batches: Vec<(usize, usize)> = (0..total)
        .step_by(1000)
        .map(|s| (s, (s + 1000).min(total)))
        .collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(batches)
        .map(|(s, e)| {
            let mut conn = conn.clone();
            async move {
                let mut pipe = redis::pipe();
                for i in s..e {
                    pipe.cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg("data")
                        .arg(&datas[i % datas.len()])
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    results.into_iter().collect()
}
