//! Priorities are honoured: the agent's workers read its inbox's lanes (urgent, high, the
//! inbox, low) sharing each read's slots by weight, so an urgent message jumps a backlog of
//! 10,000 and a busy low lane still moves under a steady urgent stream.

use std::time::{Duration, Instant};

use fabric_tests::{RedisServer, WorkerProcess, init_tracing, records, unique_agent, wait_until};
use fabric_worker::keys;
use fabric_worker::message::Priority;
use fabric_worker::prelude::*;
use redis::Commands;
use serde_json::json;

fn work(to: &str, n: u64, sleep_ms: u64, p: Priority) -> Message {
    Message::new(
        "prio-test",
        to,
        "work",
        json!({ "n": n, "sleep_ms": sleep_ms }),
    )
    .with_priority(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_message_jumps_a_backlog_of_ten_thousand_across_three_processes() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let agent = unique_agent("urgent");
    let bus = Bus::connect(server.url()).await.unwrap();
    let env = [
        ("FABRIC_CONCURRENCY", "5".to_string()),
        ("FABRIC_BLOCK_MS", "200".to_string()),
    ];
    let procs: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start(&server.url(), &agent, &env))
        .collect();
    let mut conn = server.client();
    assert!(fabric_tests::lanes_created(&mut conn, &agent));
    // 10,000 normal messages, each taking 2 ms: about 1.4 s of work for the 15 slots.
    for chunk in 0..10u64 {
        let batch = (0..1000)
            .map(|i| work(&agent, chunk * 1000 + i, 2, Priority::Normal))
            .collect();
        bus.send_batch(batch).await.unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || records(
        &mut conn,
        "test:started",
        &agent
    )
    .len()
        >= 300));
    let sent = Instant::now();
    let sent_ms = fabric_tests::now_ms();
    let urgent = bus
        .send(work(&agent, 1_000_000, 0, Priority::Urgent))
        .await
        .unwrap();
    assert!(urgent.stream_id.len() > 2);
    assert!(wait_until(Duration::from_secs(10), || records(
        &mut conn,
        "test:done",
        &agent
    )
    .iter()
    .any(|r| r["n"] == json!(1_000_000))));
    let took = sent.elapsed();
    let started = records(&mut conn, "test:started", &agent);
    let t = |r: &serde_json::Value| r["t_ms"].as_u64().unwrap();
    let urgent_t = t(started.iter().find(|r| r["n"] == json!(1_000_000)).unwrap());
    // Bound: the urgent message is taken by the next read of any process once it is
    // written. Until then each of the 3 processes starts what it already read (at most its
    // 5 slots) and reads again as slots free up: at most 3 reads × 5 slots × 3 processes.
    let jumped_by = started
        .iter()
        .filter(|r| r["n"] != json!(1_000_000) && t(r) >= sent_ms && t(r) < urgent_t)
        .count();
    assert!(
        jumped_by <= 45,
        "{jumped_by} normal messages started between the urgent send and its start"
    );
    assert!(
        started.len() < 9000,
        "the backlog was still there: {} of 10,000 started",
        started.len()
    );
    eprintln!("urgent handled {took:?} after its send, {jumped_by} normal starts in between");
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_work_still_moves_under_a_steady_urgent_stream() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("starve");
    let bus = Bus::connect(server.url()).await.unwrap();
    let _w = WorkerProcess::start(
        &server.url(),
        &agent,
        &[
            ("FABRIC_CONCURRENCY", "4".to_string()),
            ("FABRIC_BLOCK_MS", "200".to_string()),
        ],
    );
    let mut conn = server.client();
    assert!(fabric_tests::lanes_created(&mut conn, &agent));
    let low: Vec<Message> = (0..200)
        .map(|i| work(&agent, i, 5, Priority::Low))
        .collect();
    bus.send_batch(low).await.unwrap();
    // More urgent work than the worker can do (4 slots × 5 ms = 800/s; we send ~2,000/s
    // for 3 s), so urgent alone would fill every read.
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 10_000;
    while Instant::now() < until {
        let batch = (0..20)
            .map(|_| {
                n += 1;
                work(&agent, n, 5, Priority::Urgent)
            })
            .collect();
        bus.send_batch(batch).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = records(&mut conn, "test:started", &agent);
    let lows = started
        .iter()
        .filter(|r| r["n"].as_u64().unwrap() < 10_000)
        .count();
    let urgents = started.len() - lows;
    eprintln!("under the urgent stream: {urgents} urgent, {lows} low started");
    // Weighted reads: low gets at least one entry per read — far from starving.
    assert!(
        lows >= 30,
        "only {lows} low-priority messages started in 3 s"
    );
    assert!(
        urgents > lows,
        "urgent work goes first: {urgents} vs {lows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_go_to_the_inbox_when_the_recipient_reads_no_lanes() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("nolanes");
    let bus = Bus::connect(server.url()).await.unwrap();
    // No worker ever ran for this agent (a Python consumer reads only the inbox): an urgent
    // message goes to the inbox, where such a consumer finds it.
    let r = bus
        .send(work(&agent, 1, 0, Priority::Urgent))
        .await
        .unwrap();
    let mut conn = server.client();
    let len: usize = conn.xlen(keys::inbox(&agent)).unwrap();
    assert_eq!(len, 1, "{r:?}");
    assert!(
        !conn
            .exists::<_, bool>(keys::lane(&keys::inbox(&agent), "urgent"))
            .unwrap()
    );
    // A worker with lanes off creates none and still handles it.
    let _w = WorkerProcess::start(
        &server.url(),
        &agent,
        &[
            ("FABRIC_PRIORITY_LANES", "false".to_string()),
            ("FABRIC_BLOCK_MS", "200".to_string()),
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || records(
        &mut conn,
        "test:done",
        &agent
    )
    .len()
        == 1));
    assert!(
        !conn
            .exists::<_, bool>(keys::lane(&keys::inbox(&agent), "urgent"))
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shared_by_workers_and_mcp_gets_urgent_messages_on_both_sides() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("shared");
    let bus = Bus::connect(server.url()).await.unwrap();
    let mcp = fabric_worker::bus::ReceiveOptions::default()
        .group(keys::mcp_group(&agent))
        .consumer(keys::mcp_consumer(&agent))
        .leave_worker_types(true)
        .count(10);
    // An MCP session was there first (its group exists), then the worker starts.
    assert!(bus.receive(&agent, mcp.clone()).await.unwrap().is_empty());
    let _w = WorkerProcess::start(
        &server.url(),
        &agent,
        &[("FABRIC_BLOCK_MS", "200".to_string())],
    );
    let mut conn = server.client();
    assert!(fabric_tests::lanes_created(&mut conn, &agent));
    // Give the worker's presence (its message types) time to be seen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let question = Message::new("prio-test", &agent, "llm_question", json!({"q": "?"}))
        .with_priority(Priority::Urgent);
    let question_id = question.id.clone();
    bus.send(question).await.unwrap();
    bus.send(work(&agent, 7, 0, Priority::Urgent))
        .await
        .unwrap();
    // The worker handles its type; the MCP side gets the other, from the urgent lane.
    assert!(wait_until(Duration::from_secs(10), || records(
        &mut conn,
        "test:done",
        &agent
    )
    .iter()
    .any(|r| r["n"] == json!(7))));
    let got = bus
        .receive(&agent, mcp.block(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].message.id, question_id);
    assert!(
        got[0].stream_id.starts_with("urgent/"),
        "{}",
        got[0].stream_id
    );
    let dead: usize = conn.xlen(keys::dead_letters(&keys::inbox(&agent))).unwrap();
    assert_eq!(dead, 0, "nothing was dead-lettered as no_handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_from_a_lane_is_requeued_into_its_lane() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("requeue");
    let bus = Bus::connect(server.url()).await.unwrap();
    let _w = WorkerProcess::start(
        &server.url(),
        &agent,
        &[
            ("FABRIC_BLOCK_MS", "200".to_string()),
            ("FABRIC_TRIM_INTERVAL_MS", "600000".to_string()),
        ],
    );
    let mut conn = server.client();
    assert!(fabric_tests::lanes_created(&mut conn, &agent));
    let m = Message::new(
        "prio-test",
        &agent,
        "work",
        json!({ "n": 1, "mode": "permanent" }),
    )
    .with_priority(Priority::High);
    bus.send(m).await.unwrap();
    let dead = keys::dead_letters(&keys::inbox(&agent));
    let dead_len = |conn: &mut redis::Connection| conn.xlen::<_, usize>(&dead).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(10), || dead_len(&mut conn) == 1));
    let high = keys::lane(&keys::inbox(&agent), "high");
    let added = |conn: &mut redis::Connection| -> u64 {
        let info: std::collections::HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&high)
            .query(conn)
            .unwrap();
        redis::from_redis_value_ref(&info["entries-added"]).unwrap()
    };
    assert_eq!(added(&mut conn), 1);
    assert_eq!(bus.requeue_dead_letters(&agent, None).await.unwrap(), 1);
    // Back into the high lane (and, failing for good again, back in the dead letters).
    assert_eq!(added(&mut conn), 2);
    let inbox_len: usize = conn.xlen(keys::inbox(&agent)).unwrap_or(0);
    assert_eq!(inbox_len, 0);
    assert!(wait_until(Duration::from_secs(10), || dead_len(&mut conn) == 1));
}

/// The inbox of `agent` and its lanes.
fn inbox_and_lanes(agent: &str) -> Vec<String> {
    let inbox = keys::inbox(agent);
    let mut streams = vec![inbox.clone()];
    streams.extend(keys::lanes(&inbox));
    streams
}

/// Sends one message of each priority to `agent`.
async fn one_of_each_priority(bus: &Bus, agent: &str) {
    let all = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];
    for (i, p) in all.into_iter().enumerate() {
        bus.send(work(agent, i as u64, 0, p)).await.unwrap();
    }
}

/// Every command the server at `url` runs from now on, as `MONITOR` prints it, until the
/// returned task is aborted.
async fn monitor(
    url: &str,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    let client = redis::Client::open(url).unwrap();
    let monitor = client.get_async_monitor().await.unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let watch = tokio::spawn(async move {
        let mut stream = monitor.into_on_message::<String>();
        while let Some(line) = stream.next().await {
            seen.lock().unwrap().push(line);
        }
    });
    (lines, watch)
}

/// Whether a `MONITOR` line names `key` (as it quotes keys: a lane's name contains the
/// inbox's).
fn names(line: &str, key: &str) -> bool {
    line.contains(&format!("\"{key}\""))
}

/// A worker that died holding entries of every lane: the next worker takes them all over,
/// its reclaimer stepping through the inbox and its three lanes in one `FCALL
/// fabric_reclaim_many` per tick (an idle agent costs one reclaim call per period, not four).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_entries_in_every_lane_are_reclaimed_in_one_call_per_tick() {
    init_tracing();
    let server = RedisServer::start_own(false); // its own: MONITOR sees every client
    let agent = unique_agent("reclaim-lanes");
    let inbox = keys::inbox(&agent);
    let group = keys::default_group(&agent);
    let streams = inbox_and_lanes(&agent);
    let mut conn = server.client();
    for s in &streams {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(s)
            .arg(&group)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut conn)
            .unwrap();
    }
    let bus = Bus::connect(server.url()).await.unwrap();
    one_of_each_priority(&bus, &agent).await;
    for s in &streams {
        assert_eq!(
            conn.xlen::<_, usize>(s).unwrap(),
            1,
            "{s} holds one message"
        );
    }
    // A consumer reads all four and dies.
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg(&group)
        .arg("dead-worker")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&streams);
    for _ in &streams {
        read.arg(">");
    }
    let _: redis::Value = read.query(&mut conn).unwrap();
    let pending = |conn: &mut redis::Connection| -> usize {
        streams
            .iter()
            .map(|s| {
                let summary: (usize, redis::Value, redis::Value, redis::Value) =
                    redis::cmd("XPENDING")
                        .arg(s)
                        .arg(&group)
                        .query(conn)
                        .unwrap();
                summary.0
            })
            .sum()
    };
    assert_eq!(pending(&mut conn), 4);

    let (lines, watch) = monitor(&server.url()).await;
    let _w = WorkerProcess::start(
        &server.url(),
        &agent,
        &[
            ("FABRIC_RECLAIM_IDLE_MS", "300".to_string()),
            ("FABRIC_RECLAIM_INTERVAL_MS", "200".to_string()),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(15), || pending(&mut conn) == 0),
        "the dead worker's entries were not all reclaimed and handled: {} pending",
        pending(&mut conn)
    );
    // A few more ticks with nothing to reclaim.
    tokio::time::sleep(Duration::from_millis(600)).await;
    watch.abort();
    let lines = lines.lock().unwrap().clone();
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&inbox)).collect();
    let many: Vec<&&String> = ours
        .iter()
        .filter(|l| l.contains("\"fabric_reclaim_many\""))
        .collect();
    let single = ours
        .iter()
        .filter(|l| l.contains("\"fabric_reclaim\""))
        .count();
    assert!(
        many.len() >= 3,
        "expected a reclaim call per tick for the inbox and its lanes, saw {}",
        many.len()
    );
    for l in &many {
        assert!(
            streams.iter().all(|s| names(l, s)),
            "a reclaim call that does not name the inbox and every lane: {l}"
        );
    }
    assert_eq!(
        single, 0,
        "streams reclaimed one call each besides the combined call"
    );
}

/// Handled entries are trimmed from every lane, an inbox and its lanes in one `FCALL
/// fabric_trim` naming them all (a call per stream before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_entries_of_every_lane_are_trimmed_in_one_call() {
    init_tracing();
    let server = RedisServer::start_own(false); // its own: MONITOR sees every client
    let agent = unique_agent("trim-lanes");
    let inbox = keys::inbox(&agent);
    let streams = inbox_and_lanes(&agent);
    let _w = WorkerProcess::start(
        &server.url(),
        &agent,
        &[("FABRIC_TRIM_INTERVAL_MS", "1000".to_string())],
    );
    let mut conn = server.client();
    assert!(fabric_tests::lanes_created(&mut conn, &agent));
    let (lines, watch) = monitor(&server.url()).await;
    let bus = Bus::connect(server.url()).await.unwrap();
    one_of_each_priority(&bus, &agent).await;
    let lens = |conn: &mut redis::Connection| -> Vec<usize> {
        streams
            .iter()
            .map(|s| conn.xlen::<_, usize>(s).unwrap_or(0))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || lens(&mut conn)
            .iter()
            .all(|n| *n == 0)),
        "handled entries left in the inbox and its lanes: {:?}",
        lens(&mut conn)
    );
    watch.abort();
    let lines = lines.lock().unwrap().clone();
    let trims: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"fabric_trim\"") && l.contains(&inbox))
        .collect();
    let named = |l: &str| streams.iter().filter(|s| names(l, s)).count();
    assert!(
        trims.iter().any(|l| named(l) > 1),
        "no trim call named more than one of the inbox's streams: {trims:?}"
    );
}

/// A backlog in the inbox alone: a read asks the idle lanes for one entry each in one
/// `XREADGROUP` naming the three (`COUNT` applies to every stream of a read), and the inbox
/// for the rest in another — two commands a read, not one per lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_probes_the_idle_lanes_in_one_command() {
    init_tracing();
    let server = RedisServer::start_own(false); // its own: MONITOR sees every client
    let agent = unique_agent("probe-lanes");
    let streams = inbox_and_lanes(&agent);
    let (inbox, lanes) = (&streams[0], &streams[1..]);
    let _w = WorkerProcess::start(&server.url(), &agent, &[]);
    let mut conn = server.client();
    assert!(fabric_tests::lanes_created(&mut conn, &agent));
    let bus = Bus::connect(server.url()).await.unwrap();
    let (lines, watch) = monitor(&server.url()).await;
    let batch = (0..1000)
        .map(|i| work(&agent, i, 0, Priority::Normal))
        .collect();
    bus.send_batch(batch).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || conn
            .llen::<_, usize>(format!("test:done:{agent}"))
            .unwrap_or(0)
            >= 1000),
        "the backlog was not handled"
    );
    watch.abort();
    let lines = lines.lock().unwrap().clone();
    let reads: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"XREADGROUP\"") && streams.iter().any(|s| names(l, s)))
        .collect();
    let probes = reads
        .iter()
        .filter(|l| lanes.iter().all(|s| names(l, s)) && !names(l, inbox))
        .count();
    let lane_alone = reads
        .iter()
        .filter(|l| streams.iter().filter(|s| names(l, s)).count() == 1 && !names(l, inbox))
        .count();
    assert!(
        probes >= 1,
        "no read asked the three idle lanes in one command ({lane_alone} reads of a lane alone, {} reads in all)",
        reads.len()
    );
    // Reads of a lane alone (fewer free slots than lanes after the reader's short wait for
    // more) are not counted against it: under CPU load a debug build makes many.
    eprintln!("{probes} reads of the three idle lanes together, {lane_alone} of a lane alone");
}

/// With few slots (concurrency 2) and the lanes on, a slow handler does not keep the other
/// slot idle: before a read the reader waits only briefly for a slot per lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_does_not_idle_the_other_slots() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let agent = unique_agent("slow-slot");
    let _w = WorkerProcess::start(
        &server.url(),
        &agent,
        &[("FABRIC_CONCURRENCY", "2".to_string())],
    );
    let mut conn = server.client();
    assert!(fabric_tests::lanes_created(&mut conn, &agent));
    let bus = Bus::connect(server.url()).await.unwrap();
    bus.send(work(&agent, 1, 8_000, Priority::Normal))
        .await
        .unwrap();
    let has = |conn: &mut redis::Connection, list: &str, n: u64| {
        records(conn, list, &agent)
            .iter()
            .any(|r| r["n"] == json!(n))
    };
    assert!(
        wait_until(Duration::from_secs(10), || has(
            &mut conn,
            "test:started",
            1
        )),
        "the slow message did not start"
    );
    let sent = Instant::now();
    bus.send(work(&agent, 2, 0, Priority::Normal))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || has(&mut conn, "test:done", 2)),
        "the second message waited for the slow one (its slot was free)"
    );
    assert!(
        !has(&mut conn, "test:done", 1),
        "the slow message finished first: the test proves nothing"
    );
    assert!(sent.elapsed() < Duration::from_secs(5));
}
