//! Cluster: the drain of the same messages over the same number of agents by 1 and 2 worker
//! processes against the benchmark's plain Redis, a 1-node Redis Cluster and a 3-node one
//! (no replicas), all on this machine. The raw consumer's one `XREADGROUP` over every
//! stream cannot run on a cluster (its streams sit in different slots: `CROSSSLOT`), so its
//! baseline is the same drain on the plain Redis.

use serde_json::{Value, json};

use super::{Sizes, drain_once, n_fmt, timed_json};
use crate::harness::{Env, MsgKind, median};
use crate::procs::{self, Kind};
use crate::report::{Report, Row, Unit};
use crate::server::RedisCluster;

/// Median rate of `env.repeat` drains of `sz.cluster_messages` over `sz.cluster_agents` by
/// `procs_n` consumers of `kind` against `env`; the runs' details go to `runs`.
async fn drains(
    env: &Env,
    sz: &Sizes,
    report: &mut Report,
    kind: Kind,
    procs_n: usize,
    label: &str,
    runs: &mut Vec<Value>,
) -> anyhow::Result<f64> {
    let (n, agents) = (sz.cluster_messages, sz.cluster_agents);
    let mut rates = Vec::new();
    for r in 0..env.repeat {
        eprintln!(
            "  cluster: drain {} over {agents} agents, {label}, {procs_n} {} process(es) (run {}/{})",
            n_fmt(n),
            kind.name(),
            r + 1,
            env.repeat
        );
        let t = drain_once(env, sz, report, kind, procs_n, agents, n, MsgKind::Bench).await?;
        let rate = t.rate(n as u64);
        eprintln!(
            "    {rate:.0} msg/s, Redis CPU {:.1} µs per message",
            t.redis_cpu_ms * 1e3 / n as f64
        );
        rates.push(rate);
        runs.push(json!({"where": label, "kind": kind.name(), "processes": procs_n, "run": r + 1, "result": timed_json(&t, n)}));
    }
    Ok(median(rates))
}

/// Cluster: throughput per cluster node.
pub(crate) async fn cluster(
    env: &Env,
    sz: &Sizes,
    redis_server: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (n, agents) = (sz.cluster_messages, sz.cluster_agents);
    let mut runs = Vec::new();
    // [processes - 1] → rate.
    let mut plain_ours = [0.0; 2];
    let mut plain_raw = [0.0; 2];
    for p in 1..=2 {
        plain_ours[p - 1] =
            drains(env, sz, report, Kind::Ours, p, "plain Redis", &mut runs).await?;
        plain_raw[p - 1] = drains(env, sz, report, Kind::Raw, p, "plain Redis", &mut runs).await?;
    }
    // [nodes index][processes - 1] → rate; nodes 1 and 3.
    let nodes = [1usize, 3];
    let mut on_cluster = [[0.0; 2]; 2];
    for (ni, &k) in nodes.iter().enumerate() {
        eprintln!("  cluster: starting a Redis Cluster of {k} node(s)");
        let cl = RedisCluster::start(redis_server, k).await?;
        let cenv = Env::cluster(&cl.urls(), env.quick, env.repeat).await?;
        let label = format!("cluster of {k}");
        for p in 1..=2 {
            // One seed URL means one server unless FABRIC_CLUSTER says otherwise.
            on_cluster[ni][p - 1] = procs::with_ours_env(
                vec![("FABRIC_CLUSTER", "true".to_owned())],
                drains(&cenv, sz, report, Kind::Ours, p, &label, &mut runs),
            )
            .await?;
        }
        drop(cenv);
        drop(cl);
    }
    let base = "the raw consumer (same number of processes) on the plain Redis: its one XREADGROUP over every stream cannot run on a cluster (CROSSSLOT)";
    for p in 1..=2 {
        let what = format!("drain {} over {agents} agents, {p} process(es)", n_fmt(n));
        report.push(Row::new(
            "cluster",
            format!("Cluster: {what}, plain Redis (not a cluster)"),
            Unit::MsgPerSec,
            Some(plain_ours[p - 1]),
            Some(plain_raw[p - 1]),
            base,
        ));
        for (ni, &k) in nodes.iter().enumerate() {
            let rate = on_cluster[ni][p - 1];
            report.push(Row::new(
                "cluster",
                format!("Cluster: {what}, Redis Cluster of {k} node(s)"),
                Unit::MsgPerSec,
                Some(rate),
                Some(plain_raw[p - 1]),
                base,
            ));
            if k > 1 {
                report.push(Row::new(
                    "cluster",
                    format!("Cluster: per node, {k} nodes, {p} process(es)"),
                    Unit::MsgPerSec,
                    Some(rate / k as f64),
                    Some(plain_raw[p - 1]),
                    base,
                ));
                report.push(Row::new(
                    "cluster",
                    format!("Cluster: {k} nodes vs 1 node, {p} process(es)"),
                    Unit::Factor,
                    Some(rate / on_cluster[0][p - 1]),
                    None,
                    "",
                ));
            }
        }
    }
    report.detail(
        "cluster",
        json!({
            "messages": n,
            "agents": agents,
            "nodes": nodes,
            "measured": "as the drain: every agent's messages queued before the consumers start, from the first handler start to the XINFO GROUPS poll that sees every group drained; Redis CPU and commands summed over the cluster's nodes (JSON runs); every node a redis-server on this machine's loopback, no replicas, slots split evenly",
            "runs": runs,
        }),
    );
    Ok(())
}
