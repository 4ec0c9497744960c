//! The benchmark's own `redis-server`: a free loopback port, no persistence, killed by pid.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running `redis-server` child; killed (by its pid) and its directory removed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    dir: PathBuf,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl RedisServer {
    /// Starts `bin` on a free 127.0.0.1 port (never 6379) and waits until it answers PING.
    pub(crate) async fn start(bin: &str) -> anyhow::Result<RedisServer> {
        Self::start_with(bin, &[], false).await
    }

    /// The same with extra arguments; with `cluster_bus`, a port whose cluster bus port
    /// (port + 10,000) is free too.
    pub(crate) async fn start_with(
        bin: &str,
        extra: &[&str],
        cluster_bus: bool,
    ) -> anyhow::Result<RedisServer> {
        let port = free_port(cluster_bus)?;
        let dir = std::env::temp_dir().join(format!("fabric-bench-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!("cannot start {bin:?} (install redis-server or pass --redis-url)")
            })?;
        let mut server = RedisServer {
            child,
            dir,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let client = redis::Client::open(server.url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("redis-server exited at start: {status}");
            }
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> anyhow::Result<u16> {
        port_of(&self.url)
    }
}

/// A free 127.0.0.1 port (never 6379); with `cluster_bus`, one below 55,000 whose port +
/// 10,000 is free too.
fn free_port(cluster_bus: bool) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let p = l.local_addr()?.port();
        if p == 6379 {
            continue;
        }
        if cluster_bus && (p > 55_000 || TcpListener::bind(("127.0.0.1", p + 10_000)).is_err()) {
            continue;
        }
        return Ok(p);
    }
    bail!("no free loopback port found")
}

/// The TCP port of a `redis://host:port` URL.
pub(crate) fn port_of(url: &str) -> anyhow::Result<u16> {
    match redis::Client::open(url)?.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(_, port) | redis::ConnectionAddr::TcpTls { port, .. } => {
            Ok(*port)
        }
        other => bail!("{url}: not a TCP address ({other:?})"),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `n` primaries (no replicas), each a [`RedisServer`] with
/// `--cluster-enabled yes` on free loopback ports; formed by hand (`CLUSTER MEET`,
/// `CLUSTER ADDSLOTSRANGE`: `redis-cli --cluster create` wants 3 primaries at least). Every
/// node is killed by its pid when dropped, also when forming the cluster fails.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) async fn start(bin: &str, n: usize) -> anyhow::Result<RedisCluster> {
        let mut cluster = RedisCluster { nodes: Vec::new() };
        for _ in 0..n.max(1) {
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ];
            cluster
                .nodes
                .push(RedisServer::start_with(bin, &args, true).await?);
        }
        let mut conns = Vec::new();
        for node in &cluster.nodes {
            conns.push(crate::harness::connect(&node.url).await?);
        }
        for node in &cluster.nodes[1..] {
            let _: String = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port()?)
                .query_async(&mut conns[0])
                .await?;
        }
        // Even slot ranges, one per node.
        let per = 16_384 / cluster.nodes.len();
        for (i, c) in conns.iter_mut().enumerate() {
            let lo = i * per;
            let hi = if i + 1 == cluster.nodes.len() {
                16_383
            } else {
                lo + per - 1
            };
            let _: String = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(lo)
                .arg(hi)
                .query_async(c)
                .await?;
        }
        let want = format!("cluster_known_nodes:{}", cluster.nodes.len());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ok = true;
            for c in &mut conns {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(c).await?;
                ok &= info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && info.lines().any(|l| l.trim() == want);
            }
            if ok {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!("the cluster of {n} node(s) did not reach cluster_state:ok within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The nodes' URLs (the seeds).
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }
}
