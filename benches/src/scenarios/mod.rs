//! The measurements, one file each: drain, enqueue, latency, scale, growth, memory, delayed,
//! agents (with `agents_send.rs`), cluster, …; and what they share (sizes, results handed on,
//! the drain step).

mod agents;
mod agents_send;
mod cluster;
mod delayed;
mod drain;
mod enqueue;
mod growth;
mod latency;
mod memory;
mod metrics;
mod replicas;
mod scale;
mod secure;

pub(crate) use agents::agents;
pub(crate) use cluster::cluster;
pub(crate) use delayed::delayed;
pub(crate) use drain::drain;
pub(crate) use enqueue::enqueue;
pub(crate) use growth::growth;
pub(crate) use latency::latency;
pub(crate) use memory::memory;
pub(crate) use metrics::metrics;
pub(crate) use replicas::replicas;
pub(crate) use scale::scale;
pub(crate) use secure::secure;

use std::time::Duration;

use fabric_worker::keys;
use serde_json::{Value, json};

use crate::harness::{Env, MsgKind, Timed, Until, create_groups, datas, fill, time_consumers};
use crate::procs::{self, Kind};
use crate::report::{Report, thousands};

/// How big each measurement is.
#[derive(Clone, Debug)]
pub(crate) struct Sizes {
    pub drain: usize,
    pub enqueue_seq: usize,
    pub enqueue_concurrent: usize,
    pub enqueue_batch: usize,
    pub batch_size: usize,
    pub concurrency: usize,
    pub latency_rates: Vec<u64>,
    pub latency_secs: f64,
    pub scale: usize,
    pub agents: usize,
    pub growth_small: usize,
    pub growth_large: usize,
    pub growth_slice: usize,
    pub growth_enqueue: usize,
    pub idle_wait: Duration,
    pub timeout: Duration,
    /// The agents scenario: agents in one process, the idle window, the wake-up rate and
    /// duration, the hot agent's backlog and the others' send rate meanwhile.
    pub many_agents: usize,
    pub idle_window: Duration,
    pub wake_rate: u64,
    pub wake_secs: f64,
    pub hot_backlog: usize,
    pub others_rate: u64,
    /// The cluster scenario: messages and agents.
    pub cluster_messages: usize,
    pub cluster_agents: usize,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                drain: 2_000,
                enqueue_seq: 300,
                enqueue_concurrent: 1_280,
                enqueue_batch: 2_000,
                batch_size: 100,
                concurrency: 64,
                latency_rates: vec![1_000, 10_000],
                latency_secs: 0.3,
                scale: 2_000,
                agents: 100,
                growth_small: 1_000,
                growth_large: 20_000,
                growth_slice: 500,
                growth_enqueue: 1_000,
                idle_wait: Duration::from_millis(300),
                timeout: Duration::from_secs(60),
                many_agents: 50,
                idle_window: Duration::from_secs(1),
                wake_rate: 200,
                wake_secs: 0.5,
                hot_backlog: 5_000,
                others_rate: 500,
                cluster_messages: 2_000,
                cluster_agents: 10,
            }
        } else {
            Sizes {
                drain: 100_000,
                enqueue_seq: 10_000,
                enqueue_concurrent: 64_000,
                enqueue_batch: 100_000,
                batch_size: 100,
                concurrency: 64,
                latency_rates: vec![1_000, 10_000],
                latency_secs: 5.0,
                scale: 100_000,
                agents: 100,
                growth_small: 1_000,
                growth_large: 1_000_000,
                growth_slice: 50_000,
                growth_enqueue: 20_000,
                idle_wait: Duration::from_secs(2),
                timeout: Duration::from_secs(600),
                many_agents: 1_000,
                idle_window: Duration::from_secs(10),
                wake_rate: 200,
                wake_secs: 5.0,
                hot_backlog: 100_000,
                others_rate: 500,
                cluster_messages: 100_000,
                cluster_agents: 100,
            }
        }
    }
}

/// Results one scenario hands to another.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub drain_ours: Option<f64>,
    pub drain_raw: Option<f64>,
    pub peak_rss_ours_kib: Option<u64>,
    pub peak_rss_raw_kib: Option<u64>,
}

pub(super) const RAW_DRAIN: &str = "raw consumer process: XREADGROUP COUNT 100 BLOCK loop, parse the envelope JSON, one XACK per batch";

pub(super) fn n_fmt(n: usize) -> String {
    thousands(n as u64)
}

pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(super) fn timed_json(t: &Timed, messages: usize) -> Value {
    let per_msg: serde_json::Map<String, Value> = t
        .redis_calls
        .iter()
        .map(|(k, v)| (k.clone(), json!(*v as f64 / messages as f64)))
        .collect();
    json!({
        "consumer_cpu_us_per_msg": t.consumer_cpu_ms * 1e3 / messages as f64,
        "redis_cpu_us_per_msg": t.redis_cpu_ms * 1e3 / messages as f64,
        "redis_calls_per_msg": per_msg,
        "startup_ms": t.startup.as_secs_f64() * 1e3,
        "elapsed_ms": t.elapsed.as_secs_f64() * 1e3,
        "msg_per_s": t.rate(messages as u64),
        "acked": t.acked,
        "handled": t.handled(),
        "peak_rss_kib": t.peak_rss_kib,
        "handler_span_ms": handler_span_ms(t),
    })
}

/// First to last handler start over the consumer processes, ms.
fn handler_span_ms(t: &Timed) -> f64 {
    let first = t.stats.iter().map(|s| s.first_us).filter(|&f| f > 0).min();
    let last = t.stats.iter().map(|s| s.last_us).max();
    match (first, last) {
        (Some(f), Some(l)) => l.saturating_sub(f) as f64 / 1e3,
        _ => 0.0,
    }
}

/// Queues `per_agent` messages for each of `agents_n` fresh agents, then times `procs_n`
/// consumer processes of `kind` from the first handler start to drained.
#[allow(clippy::too_many_arguments)]
pub(super) async fn drain_once(
    env: &Env,
    sz: &Sizes,
    report: &mut Report,
    kind: Kind,
    procs_n: usize,
    agents_n: usize,
    total: usize,
    msg_kind: MsgKind,
) -> anyhow::Result<Timed> {
    let agents: Vec<String> = (0..agents_n).map(|_| env.agent("drain")).collect();
    create_groups(env, kind, &agents).await?;
    let per_agent = total / agents_n;
    for a in &agents {
        let d = datas(env, a, per_agent, msg_kind)?;
        fill(env, &keys::inbox(a), &d, per_agent).await?;
    }
    let t = time_consumers(env, kind, procs_n, &agents, Until::Drained, sz.timeout).await?;
    if t.handled() != (per_agent * agents_n) as u64 {
        report.note(format!(
            "{} drain ({procs_n} process(es), {agents_n} agent(s)): handled {} of {} messages",
            kind.name(),
            t.handled(),
            per_agent * agents_n
        ));
    }
    let mut cleanup = agents.clone();
    cleanup.push(env.producer());
    env.cleanup(&cleanup).await?;
    Ok(t)
}

/// One consumer process of `kind` serving `agent`, started and waiting for messages, and a
/// sender's bus for `mode` (in secure mode the agent and the producer are registered, so the
/// router delivers between them).
pub(crate) async fn start_one(
    env: &crate::harness::Env,
    kind: Kind,
    agent: &str,
    mode: fabric_worker::bus::Mode,
) -> anyhow::Result<(procs::Consumer, fabric_worker::Bus)> {
    let agents = [agent.to_owned()];
    crate::harness::create_groups(env, kind, &agents).await?;
    let before = crate::harness::blocked_readers(&mut env.conn.clone()).await?;
    let mut consumer = procs::spawn(kind, &env.url, &agents, crate::harness::RAW_GROUP, &env.tmp)?;
    crate::harness::wait_readers_blocked(env, before, 1, &mut [&mut consumer]).await?;
    if mode == fabric_worker::bus::Mode::Secure {
        env.bus.register_agent(agent, None).await?;
        env.bus.register_agent(&env.producer(), None).await?;
    }
    let bus = fabric_worker::Bus::builder(env.url.as_str())
        .mode(mode)
        .connect()
        .await?;
    Ok((consumer, bus))
}
