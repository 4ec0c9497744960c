//! `fabric mcp --http` (the real binary) serves `/metrics`, `/healthz` and `/readyz` beside
//! `/mcp`: queue gauges of every agent, Redis readiness, and the same `Host` checks as `/mcp`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::FABRIC;
use fabric_tests::scrape::{free_loopback_addr, get, get_with, sample};
use fabric_tests::{RedisServer, unique_agent, wait_until};
use fabric_worker::{Bus, Message};
use serde_json::json;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mcp_http_serves_metrics_and_health() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let agent = unique_agent("observed");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = Bus::connect(&url).await.unwrap();
        bus.create_group(&agent, None).await.unwrap();
        for i in 0..2 {
            let m = Message::new("tester", &agent, "work", json!({"n": i}));
            bus.send(m).await.unwrap();
        }
    });
    let dir = std::env::temp_dir().join(format!("fabric-metrics-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        json!({ format!("tok-{}", uuid::Uuid::new_v4().simple()): "admin" }).to_string(),
    )
    .unwrap();
    let addr = free_loopback_addr();
    let _mcp = Killed(
        Command::new(FABRIC)
            .args(["mcp", "--http", &addr.to_string(), "--tokens-file"])
            .arg(&tokens)
            .env("REDIS_URL", &url)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut text = String::new();
    let depth = [("agent", agent.as_str())];
    let scraped = wait_until(Duration::from_secs(20), || {
        if let Some((200, body)) = get(addr, "/metrics") {
            text = body;
        }
        sample(&text, "fabric_queue_depth", &depth) == Some(2.0)
    });
    assert!(scraped, "no queue depth of 2 for {agent}:\n{text}");
    assert_eq!(
        sample(&text, "fabric_queue_lag", &depth),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "fabric_queue_pending", &depth),
        Some(0.0),
        "{text}"
    );
    assert!(text.contains("# TYPE fabric_queue_depth gauge"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(get(addr, "/healthz").map(|(s, _)| s), Some(200));
    let (status, body) = get(addr, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\""), "{body}");
    // The endpoint next door still needs a token, and a foreign Host is refused here too
    // (DNS rebinding), as on /mcp.
    assert_eq!(get(addr, "/mcp").map(|(s, _)| s), Some(401));
    let evil = get_with(addr, "/metrics", &[("Host", "evil.example.com")]);
    assert_eq!(evil.map(|(s, _)| s), Some(403));

    redis.stop();
    assert!(
        wait_until(Duration::from_secs(10), || get(addr, "/readyz")
            .is_some_and(|(s, _)| s == 503)),
        "/readyz still {:?} with Redis stopped",
        get(addr, "/readyz")
    );
}
