//! What the benchmark reads about Redis and the consumers it starts: Redis' CPU and command
//! counts (`INFO`), readers blocked in `XREADGROUP`, and when a consumer is ready.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use fabric_worker::keys;
use redis::aio::MultiplexedConnection;

use crate::harness::Env;
use crate::procs::{Consumer, Kind};

/// Commands the benchmark itself runs while watching (not the consumer's).
pub(crate) const HARNESS_COMMANDS: [&str; 4] =
    ["xinfo|groups", "xinfo|stream", "info", "client|list"];

/// Redis' CPU time so far and its command counts.
#[derive(Debug, Default)]
pub(crate) struct RedisUsage {
    pub cpu_s: f64,
    pub calls: BTreeMap<String, u64>,
}

/// `INFO cpu` + `INFO commandstats`.
pub(crate) async fn redis_usage(conn: &mut MultiplexedConnection) -> anyhow::Result<RedisUsage> {
    let (cpu, cmds): (String, String) = redis::pipe()
        .cmd("INFO")
        .arg("cpu")
        .cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let mut u = RedisUsage::default();
    for l in cpu.lines() {
        if let Some((k, v)) = l.split_once(':')
            && (k == "used_cpu_sys" || k == "used_cpu_user")
        {
            u.cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    for l in cmds.lines() {
        if let Some((name, rest)) = l.strip_prefix("cmdstat_").and_then(|l| l.split_once(':'))
            && let Some(calls) = rest
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|c| c.parse().ok())
        {
            u.calls.insert(name.to_owned(), calls);
        }
    }
    Ok(u)
}

/// Clients blocked in `XREADGROUP` right now (from `CLIENT LIST`). Redis 7.0 creates a
/// consumer only once a read returns something, so a consumer waiting on an empty stream
/// is seen this way.
pub(crate) async fn blocked_readers(conn: &mut MultiplexedConnection) -> anyhow::Result<usize> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await?;
    Ok(list
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|f| f.starts_with("flags=") && f.contains('b'))
                && l.split_whitespace().any(|f| f == "cmd=xreadgroup")
        })
        .count())
}

/// Waits until `expected` more clients than `before` are blocked in `XREADGROUP`: the
/// consumers have started and are waiting for messages.
pub(crate) async fn wait_readers_blocked(
    env: &Env,
    before: usize,
    expected: usize,
    consumers: &mut [&mut Consumer],
) -> anyhow::Result<()> {
    let mut conn = env.new_conn().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if blocked_readers(&mut conn).await? >= before + expected {
            return Ok(());
        }
        for c in consumers.iter_mut() {
            c.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("consumers not waiting for messages within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl RedisUsage {
    /// Commands run since `before`, the benchmark's own (`HARNESS_COMMANDS`) left out.
    pub(crate) fn consumer_calls_since(&self, before: &RedisUsage) -> BTreeMap<String, u64> {
        self.calls
            .iter()
            .filter(|(k, _)| !HARNESS_COMMANDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v - before.calls.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

/// How many of `agents` have a worker presence record (`agent:<id>:workers`): the worker
/// writes it for each agent it serves before that agent's first read. One pipelined
/// `EXISTS` per 500 agents.
pub(crate) async fn presence_count(env: &Env, agents: &[String]) -> anyhow::Result<usize> {
    let mut conn = env.conn.clone();
    let mut n = 0;
    for chunk in agents.chunks(500) {
        let mut pipe = redis::pipe();
        for a in chunk {
            pipe.cmd("EXISTS").arg(keys::workers(a));
        }
        let found: Vec<bool> = pipe.query_async(&mut conn).await?;
        n += found.into_iter().filter(|f| *f).count();
    }
    Ok(n)
}

/// Waits until a consumer of `kind` just spawned serves `agents`: our worker has written its
/// presence for every agent (true whether it reads with one blocked `XREADGROUP` per stream
/// or with non-blocking reads woken by notifications; the caller then lets it settle), the
/// raw consumer is blocked in its one `XREADGROUP` (`before`: blocked readers counted before
/// the spawn). Fails if a consumer exits or 60 s pass.
pub(crate) async fn wait_ready(
    env: &Env,
    kind: Kind,
    agents: &[String],
    before: usize,
    consumers: &mut [&mut Consumer],
) -> anyhow::Result<()> {
    match kind {
        Kind::Raw => wait_readers_blocked(env, before, consumers.len(), consumers).await,
        Kind::Ours => {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let n = presence_count(env, agents).await?;
                if n >= agents.len() {
                    return Ok(());
                }
                for c in consumers.iter_mut() {
                    c.check_alive()?;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the worker registered {n} of {} agents within 60 s",
                        agents.len()
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
