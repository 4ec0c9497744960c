//! Metrics and health of a worker process (`FABRIC_METRICS_ADDR`): exact counter values
//! after known traffic, scraped over HTTP; `/healthz` and `/readyz` following Redis going
//! away and coming back; clear errors for a bad or taken address.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use fabric_tests::scrape::{free_loopback_addr, get, sample};
use fabric_tests::{
    RedisServer, WorkerProcess, records, runtime, test_worker_bin, unique_agent, wait_until,
};
use fabric_worker::{Bus, Message};
use serde_json::{Value, json};

fn send(url: &str, msgs: Vec<Message>) {
    runtime().block_on(async {
        let bus = Bus::builder(url).notify(false).connect().await.unwrap();
        bus.send_batch(msgs).await.unwrap();
    });
}

fn dead_letters(url: &str, agent: &str) -> u64 {
    runtime().block_on(async {
        let bus = Bus::connect(url).await.unwrap();
        bus.queue_status(agent, None).await.unwrap().dead_letters
    })
}

fn start_worker(
    server: &RedisServer,
    agent: &str,
    addr: SocketAddr,
    extra: &[(&str, String)],
) -> WorkerProcess {
    let mut env = vec![
        ("FABRIC_METRICS_ADDR", addr.to_string()),
        ("FABRIC_BACKOFF_BASE_MS", "50".to_owned()),
        ("FABRIC_BACKOFF_MAX_MS", "100".to_owned()),
        ("FABRIC_RETRY_POLL_INTERVAL_MS", "50".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let w = WorkerProcess::start(&server.url(), agent, &env);
    assert!(
        wait_until(Duration::from_secs(20), || get(addr, "/healthz")
            .is_some_and(|(s, _)| s == 200)),
        "the worker did not serve /healthz at {addr}"
    );
    w
}

/// A metric, the labels its sample must have, its value.
type Expected<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

#[test]
fn counters_histograms_and_gauges_have_exact_values_after_known_traffic() {
    let server = RedisServer::start();
    let url = server.url();
    let agent = unique_agent("metrics");
    let addr = free_loopback_addr();
    let _w = start_worker(&server, &agent, addr, &[]);
    let work = |p: Value| Message::new("tester", &agent, "work", p);
    let mut msgs: Vec<Message> = (0..5).map(|i| work(json!({"n": i}))).collect();
    msgs.extend((0..3).map(|i| work(json!({"n": 100 + i, "mode": "permanent"}))));
    msgs.push(work(
        json!({"n": 200, "mode": "fail_times", "fail_times": 1}),
    ));
    msgs.push(Message::new(
        "tester",
        &agent,
        "nobody_handles_this",
        json!({}),
    ));
    send(&url, msgs);
    let mut conn = server.client();
    assert!(
        wait_until(Duration::from_secs(30), || {
            records(&mut conn, "test:done", &agent).len() >= 6 && dead_letters(&url, &agent) >= 4
        }),
        "traffic not handled: {} done, {} dead letters",
        records(&mut conn, "test:done", &agent).len(),
        dead_letters(&url, &agent)
    );
    let a = agent.as_str();
    let work = [("agent", a), ("message_type", "work")];
    let expected: Vec<Expected<'_>> = vec![
        ("fabric_messages_handled_total", work.to_vec(), 6.0),
        ("fabric_messages_failed_total", work.to_vec(), 4.0),
        ("fabric_messages_retried_total", work.to_vec(), 1.0),
        (
            "fabric_messages_dead_lettered_total",
            vec![
                ("agent", a),
                ("message_type", "work"),
                ("reason", "permanent_error"),
            ],
            3.0,
        ),
        (
            "fabric_messages_dead_lettered_total",
            vec![
                ("agent", a),
                ("message_type", "other"),
                ("reason", "no_handler"),
            ],
            1.0,
        ),
        ("fabric_handler_duration_seconds_count", work.to_vec(), 10.0),
        ("fabric_send_to_start_seconds_count", work.to_vec(), 10.0),
        ("fabric_message_payload_bytes_count", work.to_vec(), 10.0),
        ("fabric_messages_in_flight", vec![("agent", a)], 0.0),
        ("fabric_queue_depth", vec![("agent", a)], 0.0),
        ("fabric_queue_pending", vec![("agent", a)], 0.0),
        ("fabric_queue_lag", vec![("agent", a)], 0.0),
        (
            "fabric_queue_oldest_pending_age_seconds",
            vec![("agent", a)],
            0.0,
        ),
    ];
    let mut text = String::new();
    let all_match = |text: &str| {
        expected
            .iter()
            .all(|(name, labels, v)| sample(text, name, labels) == Some(*v))
    };
    // Counters are final once the traffic is handled; the queue gauges are sampled every 5 s.
    let ok = wait_until(Duration::from_secs(15), || {
        let Some((200, body)) = get(addr, "/metrics") else {
            return false;
        };
        text = body;
        all_match(&text)
    });
    for (name, labels, v) in &expected {
        assert_eq!(
            sample(&text, name, labels),
            Some(*v),
            "{name}{labels:?} (ok = {ok}); scraped:\n{text}"
        );
    }
    // Histogram buckets are cumulative and end with +Inf = count; sizes are real.
    let inf = [("agent", a), ("message_type", "work"), ("le", "+Inf")];
    assert_eq!(
        sample(&text, "fabric_handler_duration_seconds_bucket", &inf),
        Some(10.0)
    );
    let bytes = sample(&text, "fabric_message_payload_bytes_sum", &work).unwrap();
    assert!(
        bytes > 10.0 * 100.0,
        "10 envelopes of more than 100 bytes each: {bytes}"
    );
    assert!(
        text.contains("# TYPE fabric_messages_handled_total counter"),
        "{text}"
    );
    assert!(
        sample(&text, "fabric_redis_errors_total", &[("agent", a)]).is_none(),
        "{text}"
    );
}

#[test]
fn health_goes_unhealthy_without_redis_and_healthy_again_after_it_returns() {
    let mut server = RedisServer::start();
    let agent = unique_agent("health");
    let addr = free_loopback_addr();
    // Reads block 500 ms: a read loop is stalled after 2 x 0.5 + 5 = 6 s without a read.
    let _w = start_worker(
        &server,
        &agent,
        addr,
        &[("FABRIC_BLOCK_MS", "500".to_owned())],
    );
    let status = |path: &str| get(addr, path).map(|(s, _)| s);
    assert!(
        wait_until(Duration::from_secs(10), || status("/readyz") == Some(200)),
        "{:?}",
        get(addr, "/readyz")
    );
    let (_, body) = get(addr, "/healthz").unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["read_loops"], 1, "{body}");

    server.stop();
    assert!(
        wait_until(Duration::from_secs(10), || status("/readyz") == Some(503)),
        "/readyz still {:?} with Redis stopped",
        get(addr, "/readyz")
    );
    let (_, body) = get(addr, "/readyz").unwrap();
    assert!(body.contains("unready") && body.contains("Redis"), "{body}");
    // Not at once: a read loop gets its bound (6 s here) before it counts as stalled.
    assert_eq!(status("/healthz"), Some(200), "unhealthy before the bound");
    assert!(
        wait_until(Duration::from_secs(20), || status("/healthz") == Some(503)),
        "/healthz still {:?} with Redis stopped",
        get(addr, "/healthz")
    );
    let (_, body) = get(addr, "/healthz").unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["stalled"][0]["agent"], agent.as_str(), "{body}");

    server.start_again();
    assert!(
        wait_until(Duration::from_secs(30), || status("/readyz") == Some(200)
            && status("/healthz") == Some(200)),
        "not healthy again after Redis returned: {:?} {:?}",
        get(addr, "/readyz"),
        get(addr, "/healthz")
    );
    let (_, text) = get(addr, "/metrics").unwrap();
    let a = agent.as_str();
    assert!(
        sample(
            &text,
            "fabric_redis_errors_total",
            &[("agent", a), ("operation", "read")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "fabric_redis_reconnects_total", &[("agent", a)]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

/// Runs `test_worker` with `FABRIC_METRICS_ADDR=addr` and returns its exit code and stderr.
fn run_with_addr(url: &str, addr: &str) -> (Option<i32>, String) {
    let child = Command::new(test_worker_bin())
        .env("REDIS_URL", url)
        .env("FABRIC_AGENTS", unique_agent("addr"))
        .env("FABRIC_METRICS_ADDR", addr)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = WorkerProcess { child };
    // A worker that accepted the address would run until stopped: give up after 20 s.
    let code = w.wait_timeout(Duration::from_secs(20));
    w.kill();
    let mut err = String::new();
    if let Some(mut e) = w.child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (code, err)
}

#[test]
fn a_bad_or_taken_metrics_address_is_a_clear_error() {
    let server = RedisServer::start();
    let (code, err) = run_with_addr(&server.url(), "9464");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("FABRIC_METRICS_ADDR")
            && err.contains("\"9464\"")
            && err.contains("127.0.0.1:9464"),
        "{err}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run_with_addr(&server.url(), &addr);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")) && err.contains("already in use"),
        "{err}"
    );
}
