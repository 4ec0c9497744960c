//! One process serving many agents (issue 13): a bounded number of Redis connections
//! whatever the agent count, a wake-up within milliseconds for a message to any of them
//! (their `agent.<id>.new_message` notifications, one Pub/Sub connection), the read poll as
//! the safety net for messages sent without a notification, few Redis commands while idle,
//! and a process-wide handler limit under which one agent's deep backlog does not starve
//! the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use fabric_tests::{
    RedisServer, RunningWorker, command_calls, init_tracing, unique_agent, wait_until_async,
};
use fabric_worker::prelude::*;
use serde_json::{Value, json};

/// When each message (by id) started its handler.
static STARTED: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);
/// Handlers of `many_slow` running now, and the most ever at once.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST: AtomicUsize = AtomicUsize::new(0);

/// Records when it started.
#[handler(message_type = "many_ping")]
async fn many_ping(ctx: Context) -> Result<(), HandlerError> {
    let id = ctx.message().id.clone();
    STARTED.lock().unwrap().insert(id, Instant::now());
    Ok(())
}

/// Records when it started, counts how many run at once, takes `ms` milliseconds.
#[handler(message_type = "many_slow")]
async fn many_slow(ctx: Context, p: Value) -> Result<(), HandlerError> {
    let id = ctx.message().id.clone();
    STARTED.lock().unwrap().insert(id, Instant::now());
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST.fetch_max(now, Ordering::SeqCst);
    let ms = p.get("ms").and_then(Value::as_u64).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

fn started(id: &str) -> Option<Instant> {
    STARTED.lock().unwrap().get(id).copied()
}

/// The clients connected to `server` now.
async fn clients(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    list.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Waits until the worker registered its presence for every agent (it does so before its
/// first read; consumers appear only when an entry is delivered), then a little longer.
async fn all_served(conn: &redis::aio::MultiplexedConnection, agents: &[String]) -> bool {
    let ok = wait_until_async(Duration::from_secs(60), || {
        let mut c = conn.clone();
        let agents = agents.to_vec();
        async move {
            let mut pipe = redis::pipe();
            for a in &agents {
                pipe.cmd("EXISTS").arg(fabric_worker::keys::workers(a));
            }
            let r: Vec<i64> = pipe.query_async(&mut c).await.unwrap();
            r.iter().all(|n| *n == 1)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok
}

/// This process's user + system CPU time so far.
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which may hold spaces) end with ") ".
    let rest = &stat[stat.rfind(") ").unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    sorted[(sorted.len() - 1) * pct / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_agents_share_a_few_connections_and_wake_within_milliseconds() {
    init_tracing();
    let server = RedisServer::start_own(false); // its own: the connections are counted
    let url = server.url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let sender = unique_agent("many-sender");
    let agents: Vec<String> = (0..1000)
        .map(|i| format!("{}-{i}", unique_agent("many")))
        .collect();
    let before = clients(&mut conn).await;

    let poll = Duration::from_millis(1500);
    let mut builder = Worker::builder(&agents[0])
        .url(&url)
        .read_poll_interval(poll);
    for a in &agents[1..] {
        builder = builder.agent(a);
    }
    let started_at = Instant::now();
    let worker = RunningWorker::start(builder).await;
    assert!(
        all_served(&conn, &agents).await,
        "the worker never served every inbox"
    );
    eprintln!("1,000 agents served after {:?}", started_at.elapsed());

    // Bounded connections: the shared one, the notification subscriber, and what the Bus
    // opens besides (none per agent).
    let held = clients(&mut conn).await - before;
    eprintln!("connections held by a worker serving 1,000 agents: {held}");
    assert!(
        held <= 4,
        "a worker serving 1,000 agents holds {held} connections: they must not grow with the agents"
    );

    // Idle: few commands a second (the safety-net polls, spread out), not thousands.
    let c0 = command_calls(&mut conn).await;
    let cpu0 = own_cpu();
    let idle_for = Duration::from_secs(10); // the reclaim and trim period
    tokio::time::sleep(idle_for).await;
    let c1 = command_calls(&mut conn).await;
    let cpu = (own_cpu() - cpu0).as_secs_f64() / idle_for.as_secs_f64() * 100.0;
    eprintln!("CPU of this process (the worker; debug build) while 1,000 agents idle: {cpu:.1} %");
    let mut by_command: Vec<(String, f64)> = c1
        .iter()
        .filter(|(k, _)| !k.starts_with("info"))
        .map(|(k, v)| {
            let d = v - c0.get(k).copied().unwrap_or(0);
            (k.clone(), d as f64 / idle_for.as_secs_f64())
        })
        .filter(|(_, r)| *r > 0.0)
        .collect();
    by_command.sort_by(|a, b| b.1.total_cmp(&a.1));
    let per_s: f64 = by_command.iter().map(|(_, r)| r).sum();
    eprintln!(
        "Redis commands per second while 1,000 agents idle: {per_s:.0} ({})",
        by_command
            .iter()
            .map(|(k, r)| format!("{k} {r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Commands run inside functions count too: per agent and 10 s, about 7 reads (the
    // 1.5 s poll), 4 XAUTOCLAIMs, 2 FCALLs with the 5 commands of a promotion check, 1 HSET:
    // about 1,900/s (a worker polling every inbox with its own command was above 10,000).
    assert!(
        per_s < 2500.0,
        "{per_s:.0} commands/s while idle: the idle polls of 1,000 agents must stay bounded"
    );
    // Per agent and reclaim period (10 s, this window): one reclaim call for the inbox and
    // its three lanes together, and one promotion check — 200/s for 1,000 agents (a reclaim
    // call per stream made it 500/s).
    let rate = |name: &str| {
        by_command
            .iter()
            .find(|(k, _)| k == name)
            .map_or(0.0, |(_, r)| *r)
    };
    let fcall = rate("fcall");
    assert!(
        fcall < 300.0,
        "{fcall:.0} FCALLs/s while 1,000 agents idle: an agent's inbox and lanes are reclaimed in one call per period"
    );
    // A presence refresh (every 10 s) is one HSET; the record list is read to drop
    // hour-old records every 30th refresh only (it was read at every refresh: 100/s).
    let hgetall = rate("hgetall");
    assert!(
        hgetall < 30.0,
        "{hgetall:.0} HGETALLs/s while 1,000 agents idle: presence refreshes read the worker list at each refresh"
    );

    // Wake-up: a message to any agent starts its handler within milliseconds (the poll is
    // 1.5 s: only the notification can be this quick).
    let bus = Bus::connect(&url).await.unwrap();
    let mut lat = Vec::new();
    for i in 0..300usize {
        let to = &agents[(i * 7919) % agents.len()];
        let m = Message::new(&sender, to, "many_ping", json!({"i": i}));
        let id = m.id.clone();
        let t0 = Instant::now();
        bus.send(m).await.unwrap();
        let deadline = t0 + Duration::from_secs(10);
        let at = loop {
            if let Some(at) = started(&id) {
                break at;
            }
            assert!(
                Instant::now() < deadline,
                "message {i} to {to} never handled"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        lat.push(at.saturating_duration_since(t0));
    }
    lat.sort();
    let (p50, p99) = (percentile(&lat, 50), percentile(&lat, 99));
    eprintln!("wake-up across 1,000 agents (debug build): p50 {p50:?}, p99 {p99:?}");
    assert!(
        p99 < Duration::from_millis(200),
        "wake-up p99 {p99:?}: notifications did not wake the readers (the poll is {poll:?})"
    );

    // The safety net: messages sent without a notification are read at the poll.
    let quiet = Bus::builder(&url).notify(false).connect().await.unwrap();
    let mut ids = Vec::new();
    for to in agents.iter().step_by(97) {
        let m = Message::new(&sender, to, "many_ping", json!({}));
        ids.push(m.id.clone());
        quiet.send(m).await.unwrap();
    }
    let t0 = Instant::now();
    let all = wait_until_async(poll * 3, || {
        let ids = ids.clone();
        async move { ids.iter().all(|id| started(id).is_some()) }
    })
    .await;
    assert!(
        all,
        "messages sent without a notification were not read at the poll"
    );
    eprintln!(
        "{} messages sent without notification handled within {:?}",
        ids.len(),
        t0.elapsed()
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agents_deep_backlog_does_not_starve_the_others_under_the_process_limit() {
    init_tracing();
    let server = RedisServer::start();
    let url = server.url();
    let sender = unique_agent("fair-sender");
    let hot = unique_agent("fair-hot");
    let others: Vec<String> = (0..40)
        .map(|i| format!("{}-{i}", unique_agent("fair")))
        .collect();
    let bus = Bus::connect(&url).await.unwrap();

    // The hot agent's backlog: 20,000 × 2 ms with 8 slots takes about 5 s.
    let backlog = 20_000usize;
    for chunk in (0..backlog).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|i| Message::new(&sender, &hot, "many_slow", json!({"ms": 2, "i": i})))
            .collect();
        bus.send_batch(batch).await.unwrap();
    }
    let limit = 8;
    let mut builder = Worker::builder(&hot)
        .url(&url)
        .max_in_flight(limit)
        .block(Duration::from_millis(500));
    for a in &others {
        builder = builder.agent(a);
    }
    let worker = RunningWorker::start(builder).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut all: Vec<String> = others.clone();
    all.push(hot.clone());
    assert!(all_served(&conn, &all).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // While the backlog drains, one message to each other agent, 20 ms apart.
    let mut sent = Vec::new();
    for a in &others {
        let m = Message::new(&sender, a, "many_slow", json!({"ms": 2}));
        sent.push((m.id.clone(), Instant::now()));
        bus.send(m).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = wait_until_async(Duration::from_secs(10), || {
        let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
        async move { ids.iter().all(|id| started(id).is_some()) }
    })
    .await;
    assert!(
        ok,
        "the other agents' messages waited for the hot agent's backlog"
    );
    let waits: Vec<Duration> = sent
        .iter()
        .map(|(id, t)| started(id).unwrap().saturating_duration_since(*t))
        .collect();
    let worst = waits.iter().max().copied().unwrap();
    let left = bus.queue_status(&hot, None).await.unwrap().queue_depth;
    eprintln!(
        "others' worst wait {worst:?} (of {}), hot backlog left {left} of {backlog}; most handlers at once {}",
        waits.len(),
        MOST.load(Ordering::SeqCst)
    );
    assert!(
        left > backlog as u64 / 4,
        "the backlog drained before the others were served: the test proves nothing (left {left})"
    );
    assert!(
        worst < Duration::from_millis(1000),
        "another agent's message waited {worst:?} behind the hot agent's backlog"
    );
    assert!(
        MOST.load(Ordering::SeqCst) <= limit,
        "{} handlers ran at once over the process limit {limit}",
        MOST.load(Ordering::SeqCst)
    );
    assert!(
        MOST.load(Ordering::SeqCst) >= limit / 2,
        "the limit was never approached: the test proves nothing"
    );
    worker.stop().await;
}

/// 40 agents named `<prefix>-<i>`, the `MONITOR` stream of the server at `url` (started
/// first), and a worker serving them (`blocking_readers` when given).
async fn monitored_agents(
    url: &str,
    label: &str,
    blocking_readers: Option<usize>,
) -> (
    String,
    Vec<String>,
    impl futures::Stream<Item = String> + Unpin + use<>,
    RunningWorker,
) {
    let (prefix, agents) = named_agents(label, 40);
    let client = redis::Client::open(url).unwrap();
    let monitor = client.get_async_monitor().await.unwrap();
    let lines = monitor.into_on_message::<String>();
    let mut builder = serving(url, &agents);
    if let Some(n) = blocking_readers {
        builder = builder.blocking_readers(n);
    }
    let worker = RunningWorker::start(builder).await;
    (prefix, agents, lines, worker)
}

/// `n` agents named `<prefix>-<i>`, and the prefix.
fn named_agents(label: &str, n: usize) -> (String, Vec<String>) {
    let prefix = unique_agent(label);
    let agents = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    (prefix, agents)
}

/// A worker builder serving `agents` at `url`.
fn serving(url: &str, agents: &[String]) -> fabric_worker::runtime::WorkerBuilder {
    let mut builder = Worker::builder(&agents[0]).url(url);
    for a in &agents[1..] {
        builder = builder.agent(a);
    }
    builder
}

/// A worker serving many agents listens to their notifications before it reads any inbox,
/// so a message sent once reading has begun is always announced. Before, the subscription
/// was made after every inbox's reader had started, and a message sent in between waited
/// for it (60–80 ms at the start of `fabric-bench --only agents`). Seen in the server's
/// `MONITOR` stream: the `SUBSCRIBE` to the agents' channels comes before the first
/// `XREADGROUP` of an inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_listened_to_before_any_inbox_is_read() {
    use futures::StreamExt;
    init_tracing();
    let server = RedisServer::start_own(false); // its own: MONITOR sees every client
    let (prefix, _, mut lines, worker) = monitored_agents(&server.url(), "early", Some(0)).await;
    let (mut subscribe, mut first_read, mut n) = (None, None, 0usize);
    while subscribe.is_none() || first_read.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .expect("MONITOR went quiet before both commands were seen")
            .expect("the MONITOR connection closed");
        n += 1;
        if subscribe.is_none() && line.contains("\"SUBSCRIBE\"") && line.contains(&prefix) {
            subscribe = Some(n);
        }
        if first_read.is_none() && line.contains("\"XREADGROUP\"") && line.contains(&prefix) {
            first_read = Some(n);
        }
    }
    assert!(
        subscribe < first_read,
        "the first inbox read (MONITOR line {first_read:?}) came before the notifications were subscribed to (line {subscribe:?})"
    );
    worker.stop().await;
}

/// A worker serving many agents sets them all up (groups, lanes, presence, pause state)
/// before it reads any inbox, concurrently. Before, it set them up one after another and
/// started each agent's reader as soon as that agent was ready: with 100 agents the first
/// read 20–30 ms before the last had its lanes, and `fabric-bench`'s drain over 100 agents
/// ended with the late agents working alone (0.80× the raw consumer; 0.92–1.05× now). Seen
/// in `MONITOR`: every agent's presence is written before the first `XREADGROUP`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_is_set_up_before_any_inbox_is_read() {
    use futures::StreamExt;
    init_tracing();
    let server = RedisServer::start_own(false); // its own: MONITOR sees every client
    let (prefix, agents, mut lines, worker) = monitored_agents(&server.url(), "setup", None).await;
    let presence: Vec<String> = agents
        .iter()
        .map(|a| format!("\"{}\"", fabric_worker::keys::workers(a)))
        .collect();
    let mut registered = vec![None; agents.len()];
    let (mut first_read, mut n) = (None, 0usize);
    while first_read.is_none() || registered.iter().any(Option::is_none) {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .expect("MONITOR went quiet before every presence write and a read were seen")
            .expect("the MONITOR connection closed");
        n += 1;
        if line.contains("\"HSET\"") {
            for (at, key) in registered.iter_mut().zip(&presence) {
                if at.is_none() && line.contains(key.as_str()) {
                    *at = Some(n);
                }
            }
        }
        if first_read.is_none() && line.contains("\"XREADGROUP\"") && line.contains(&prefix) {
            first_read = Some(n);
        }
    }
    let last_set_up = registered.iter().flatten().max().copied();
    assert!(
        last_set_up < first_read,
        "an inbox was read (MONITOR line {first_read:?}) before the last agent's presence was written (line {last_set_up:?})"
    );
    worker.stop().await;
}

/// A worker whose start fails for one of its agents (here a lane key holding a string) fails
/// as a whole, names the problem, and leaves no presence record of its other agents saying
/// it serves them: each is marked stopped (discovery and the agents' MCP sessions go by them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_for_one_agent_leaves_no_live_presence() {
    init_tracing();
    let server = RedisServer::start();
    let (_, agents) = named_agents("half-start", 8);
    let poisoned = fabric_worker::keys::lane(&fabric_worker::keys::inbox(&agents[5]), "urgent");
    let _: () = redis::cmd("SET")
        .arg(&poisoned)
        .arg("not a stream")
        .query(&mut server.client())
        .unwrap();
    let worker = serving(&server.url(), &agents).build().await.unwrap();
    let ran = tokio::time::timeout(
        Duration::from_secs(20),
        worker.run_until(std::future::pending()),
    )
    .await
    .expect("the worker started despite the broken lane");
    let e = ran.expect_err("the worker started despite the broken lane");
    assert!(
        e.to_string().contains(&poisoned) || e.to_string().contains("WRONGTYPE"),
        "the error does not name the problem: {e}"
    );
    let bus = Bus::connect(server.url()).await.unwrap();
    let mut registered = 0;
    for a in &agents {
        for w in bus.workers(a).await.unwrap() {
            registered += 1;
            assert!(
                w.stopped_ms.is_some(),
                "{a} lists a live worker that never read its inbox: {w:?}"
            );
        }
    }
    assert!(
        registered > 0,
        "no agent was registered: the test proves nothing"
    );
}
