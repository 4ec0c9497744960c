//! The cost of `wait_for_replicas`: `send` from many tasks to a primary with one replica,
//! without and with `WAIT 1` (the option that closes the loss window of a primary's failure,
//! `tests/tests/cluster_failover.rs`). The benchmark starts its own primary and replica for
//! this (on loopback: the replication round trip is the least it can be here).

use std::time::{Duration, Instant};

use fabric_worker::{Bus, keys};

use super::Sizes;
use crate::harness::{self, Env, MsgKind, median, messages};
use crate::report::{Report, Row, Unit};
use crate::server::RedisServer;

/// `send` of `n` messages from `tasks` tasks on `url`, with the replica wait or not.
async fn send_rate(
    env: &Env,
    url: &str,
    wait: bool,
    n: usize,
    tasks: usize,
) -> anyhow::Result<f64> {
    let mut b = Bus::builder(url);
    if wait {
        b = b.wait_for_replicas(1, Duration::from_secs(1));
    }
    let bus = b.connect().await?;
    let agent = env.agent("rep");
    let rate =
        super::enqueue::send_from_tasks(&bus, messages(env, &agent, n, MsgKind::Bench), tasks)
            .await?;
    let mut conn = harness::connect(url).await?;
    let _: i64 = redis::cmd("DEL")
        .arg(keys::inbox(&agent))
        .query_async(&mut conn)
        .await?;
    Ok(rate)
}

/// Starts a primary and a replica of it, and waits until the replica is in sync.
async fn pair(bin: &str) -> anyhow::Result<(RedisServer, RedisServer)> {
    let primary = RedisServer::start(bin).await?;
    let replica = RedisServer::start(bin).await?;
    let port = primary
        .url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut r = harness::connect(&replica.url).await?;
    let _: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(&port)
        .query_async(&mut r)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut r)
            .await?;
        if info.contains("master_link_status:up") {
            return Ok((primary, replica));
        }
        if Instant::now() > deadline {
            anyhow::bail!("the benchmark's replica did not sync with its primary in 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `send` from many tasks with `wait_for_replicas(1, 1 s)` against the same without.
pub(crate) async fn replicas(
    env: &Env,
    sz: &Sizes,
    bin: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (primary, _replica) = pair(bin).await?;
    let (n, c) = (sz.enqueue_concurrent, sz.concurrency);
    let repeat = if env.quick { 1 } else { env.repeat + 2 };
    let (mut plain, mut waited) = (Vec::new(), Vec::new());
    for run in 0..repeat {
        eprintln!("  replicas run {}/{repeat}", run + 1);
        plain.push(send_rate(env, &primary.url, false, n, c).await?);
        waited.push(send_rate(env, &primary.url, true, n, c).await?);
    }
    report.push(
        Row::new(
            "replicas",
            format!("`send`, {c} tasks, `wait_for_replicas(1)` (WAIT 1 per send)"),
            Unit::MsgPerSec,
            Some(median(waited.clone())),
            Some(median(plain.clone())),
            format!("`send`, {c} tasks, to the same primary with one replica, without the wait"),
        )
        .paired_ratio(harness::paired_ratio(&waited, &plain)),
    );
    Ok(())
}
