//! The JSON API against a real Redis and a real worker, and the protection: tokens beyond
//! loopback (401), foreign `Host`s and `Origin`s (403), actions only as same-origin JSON
//! `POST`s.

use std::time::Duration;

use fabric_tests::{RedisServer, RunningWorker, wait_until_async};
use fabric_worker::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdefghijk";
const PERCY_TOKEN: &str = "percy-token-0123456789abcdefghijk";

#[handler(message_type = "dash_api_fail")]
async fn dash_api_fail() -> std::result::Result<(), HandlerError> {
    Err(HandlerError::permanent(
        "the dashboard test handler refuses this task",
    ))
}

async fn start(config: DashboardConfig, exposed: Option<bool>) -> (DashboardServer, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve(config, listener, exposed).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

fn config(url: &str) -> DashboardConfig {
    let mut c = DashboardConfig::new(url, Mode::Direct);
    c.sample_interval = Duration::from_millis(200);
    c
}

fn tokens() -> Authenticator {
    let mut a = Authenticator::new();
    a.add_token(ADMIN_TOKEN, ADMIN).unwrap();
    a.add_token(PERCY_TOKEN, "percy").unwrap();
    a
}

use crate::mcp::auth::ADMIN;

async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    origin: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = http.post(url).json(body);
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_dashboard_needs_a_token_and_same_origin_actions() {
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let bus = Bus::connect(&url).await.unwrap();
    for to in ["percy", "coder"] {
        bus.send(Message::new("ops", to, "task", json!({})))
            .await
            .unwrap();
    }
    let mut c = config(&url);
    c.auth = tokens();
    let (server, base) = start(c, Some(true)).await;
    let http = reqwest::Client::new();
    let overview = format!("{base}/api/overview");

    // The page itself holds no data: it loads, then asks for a token.
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    // No token, a wrong one: 401 with a bearer challenge.
    let resp = http.get(&overview).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=\"fabric\"")
    );
    let (s, _) = get(&http, &overview, Some("wrong-token-0123456789abcdefghijkl")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // An admin sees every agent; an agent's token its own inbox only.
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            get(&http, &overview, Some(ADMIN_TOKEN)).await.1["agents"]
                .as_array()
                .is_some_and(|a| a.len() == 2)
        })
        .await
    );
    let (s, v) = get(&http, &overview, Some(PERCY_TOKEN)).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["percy"]);
    let (s, v) = get(
        &http,
        &format!("{base}/api/agents/coder/dead-letters"),
        Some(PERCY_TOKEN),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // A foreign Host (DNS rebinding) is refused before anything else.
    let resp = http
        .get(&overview)
        .header("Host", "evil.example.com")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Actions: a POST needs the dashboard's own Origin and a JSON body.
    let requeue = format!("{base}/api/agents/percy/dead-letters/requeue");
    let send = |origin: Option<&'static str>, content_type: &'static str| {
        let mut req = http
            .post(&requeue)
            .bearer_auth(ADMIN_TOKEN)
            .header("Content-Type", content_type)
            .body(r#"{"all": true}"#);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send()
    };
    let own = Box::leak(base.clone().into_boxed_str());
    assert_eq!(
        send(None, "application/json").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(Some("https://evil.example.com"), "application/json")
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    // Another page on this machine (loopback, but not the dashboard) is refused too.
    assert_eq!(
        send(Some("http://localhost:1"), "application/json")
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(Some(own), "text/plain").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let resp = send(Some(own), "application/json").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["requeued"], 0);
    // Without a token, even with the right Origin: 401.
    let (s, _) = post(&http, &requeue, Some(own), &json!({"all": true})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Nothing changes on a GET.
    let (s, _) = get(&http, &requeue, Some(ADMIN_TOKEN)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_needs_no_token_and_beyond_loopback_needs_one() {
    let redis = RedisServer::start_own(false);
    let (server, base) = start(config(&redis.url()), None).await;
    let http = reqwest::Client::new();
    let (s, v) = get(&http, &format!("{base}/api/overview"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["identity"]["admin"], true);
    let (s, v) = post(
        &http,
        &format!("{base}/api/agents/percy/dead-letters/purge"),
        Some("http://attacker.example"),
        &json!({"confirm": "percy"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    server.shutdown().await.unwrap();

    let any: SocketAddr = "0.0.0.0:8787".parse().unwrap();
    let lo: SocketAddr = "127.0.0.1:8787".parse().unwrap();
    assert!(requires_auth(any, &Authenticator::new()));
    assert!(!requires_auth(lo, &Authenticator::new()));
    assert!(requires_auth(lo, &tokens()));
    let mut c = config(&redis.url());
    c.allow_remote = true;
    c.insecure_http = true;
    c.public_url = Some("http://10.0.0.1:8787".into());
    let e = bind(c, "0.0.0.0:0".parse().unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("needs authentication"), "{e}");
    let e = bind(config(&redis.url()), "10.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("--allow-remote"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_redis_figures_and_acts_on_dead_letters() {
    let mut redis = RedisServer::start_own(false);
    let url = redis.url();
    let bus = Bus::connect(&url).await.unwrap();
    let mut conn = redis.async_conn().await;
    let worker = RunningWorker::fast(&url, "percy", |b| b).await;
    let failed = bus
        .send(
            Message::new("coder", "percy", "dash_api_fail", json!({"pr": 7}))
                .with_header("tenant", "acme"),
        )
        .await
        .unwrap();
    for i in 0..4 {
        bus.send(Message::new("ops", "backlog", "task", json!({ "n": i })))
            .await
            .unwrap();
    }
    let dead_key = fabric_worker::keys::dead_letters(&fabric_worker::keys::inbox("percy"));
    let dead_key = dead_key.as_str();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            redis::cmd("XLEN")
                .arg(dead_key)
                .query_async::<u64>(&mut conn.clone())
                .await
                .unwrap_or(0)
                == 1
        })
        .await,
        "the failing message was not dead-lettered"
    );

    let (_server, base) = start(config(&url), None).await;
    let http = reqwest::Client::new();
    let agent = |v: &Value, name: &str| {
        v["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["agent"] == name).cloned())
    };
    let xlen: u64 = redis::cmd("XLEN")
        .arg("agent:backlog:inbox")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(xlen, 4);
    let overview = format!("{base}/api/overview");
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            let v = get(&http, &overview, None).await.1;
            agent(&v, "backlog").is_some_and(|b| b["depth"] == xlen)
                && agent(&v, "percy").is_some_and(|p| {
                    p["dead_letters"] == 1
                        && p["live_workers"] == 1
                        && p["consumers"][0]["state"] == "live"
                        && p["series"]["t_ms"].as_array().is_some_and(|t| t.len() >= 2)
                })
        })
        .await
    );
    let v = get(&http, &overview, None).await.1;
    assert_eq!(v["redis"]["ok"], true);
    let percy = agent(&v, "percy").unwrap();
    assert_eq!(percy["paused"], false);

    let (s, d) = get(
        &http,
        &format!("{base}/api/agents/percy/dead-letters"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["total"], 1);
    let item = &d["items"][0];
    assert_eq!(item["message"]["id"], failed.message_id.as_str());
    assert_eq!(item["message"]["headers"]["tenant"], "acme");
    assert!(
        item["error"]
            .as_str()
            .unwrap()
            .contains("refuses this task"),
        "{item}"
    );
    let dead_id = item["dead_id"].as_str().unwrap().to_owned();
    let (s, m) = get(
        &http,
        &format!("{base}/api/agents/percy/message?id={dead_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["location"]["state"], "dead_letter");
    assert_eq!(m["message"]["payload"]["pr"], 7);
    assert_eq!(m["message"]["headers"]["tenant"], "acme");
    let (s, _) = get(
        &http,
        &format!("{base}/api/agents/percy/message?id=1-1"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, w) = get(&http, &format!("{base}/api/agents/backlog"), None).await;
    assert_eq!(s, StatusCode::OK, "{w}");
    assert_eq!(w["waiting"].as_array().unwrap().len(), 4);
    assert_eq!(w["waiting"][3]["message"]["payload"]["n"], 3);

    // Pause, then requeue: the message waits in the inbox again.
    let own = base.as_str();
    let (s, _) = post(
        &http,
        &format!("{base}/api/agents/percy/pause"),
        Some(own),
        &json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(bus.is_paused("percy").await.unwrap());
    // Workers honour a pause within a second: its consumer stops reading (idle grows past
    // its 500 ms read block).
    assert!(
        wait_until_async(Duration::from_secs(15), || async {
            bus.queue_status("percy", None)
                .await
                .is_ok_and(|st| st.consumers.iter().all(|c| c.idle_ms >= 1500))
        })
        .await,
        "percy's worker kept reading while paused"
    );
    let (s, r) = post(
        &http,
        &format!("{base}/api/agents/percy/dead-letters/requeue"),
        Some(own),
        &json!({"ids": [dead_id]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["requeued"], 1);
    let dead: u64 = redis::cmd("XLEN")
        .arg(dead_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    let inbox = fabric_tests::stream_entries(&mut conn, "agent:percy:inbox").await;
    let last = inbox.last().unwrap();
    let data = fabric_tests::entry_field(&last.1, "data").unwrap();
    assert!(data.contains(&failed.message_id), "{data}");

    // Resume: it fails again; a purge needs the agent's name as confirmation.
    let (s, _) = post(
        &http,
        &format!("{base}/api/agents/percy/resume"),
        Some(own),
        &json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            redis::cmd("XLEN")
                .arg(dead_key)
                .query_async::<u64>(&mut conn.clone())
                .await
                .unwrap_or(0)
                == 1
        })
        .await
    );
    let purge = format!("{base}/api/agents/percy/dead-letters/purge");
    let (s, e) = post(&http, &purge, Some(own), &json!({"confirm": "coder"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = post(&http, &purge, Some(own), &json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, r) = post(&http, &purge, Some(own), &json!({"confirm": "percy"})).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["purged"], 1);
    let (s, e) = get(
        &http,
        &format!("{base}/api/agents/no%20such/dead-letters"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    worker.stop().await;

    // Redis gone: the overview says so (the page shows a banner), actions answer 503.
    redis.stop();
    assert!(
        wait_until_async(Duration::from_secs(15), || async {
            let v = get(&http, &overview, None).await.1;
            v["redis"]["ok"] == false && v["redis"]["error"].as_str().is_some_and(|e| !e.is_empty())
        })
        .await
    );
    let (s, e) = get(
        &http,
        &format!("{base}/api/agents/percy/dead-letters"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["redis_unreachable"], true);
}
