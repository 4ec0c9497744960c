//! `fabric mcp --http`: the Streamable HTTP server started in-process on 127.0.0.1:0,
//! driven by rmcp's streamable HTTP client (with bearer tokens) and plain reqwest.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{Client, call, ok, start_worker, tool_error};
use fabric_cli::mcp::http::{self, HttpConfig, HttpServer};
use fabric_cli::mcp::limits::LimitsConfig;
use fabric_cli::mcp::{Authenticator, JwtConfig, McpConfig};
use fabric_tests::{RedisServer, init_tracing, unique_agent};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const HS_SECRET: &[u8] = b"test-secret-for-hs256-0123456789abcdef";
const ISSUER: &str = "https://auth.fabric.test";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hs256(sub: &str, exp: i64) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp, "iss": ISSUER}),
        &EncodingKey::from_secret(HS_SECRET),
    )
    .unwrap()
}

fn rs256(sub: &str, exp: i64) -> String {
    let pem = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

struct Setup {
    _redis: RedisServer,
    url: String,
    server: HttpServer,
    coder: String,
    percy: String,
    coder_token: String,
    admin_token: String,
}

/// A server with static tokens (coder, admin) and HS256 JWTs (or RS256 with `rsa`).
async fn setup(rsa: bool) -> Setup {
    setup_with(rsa, LimitsConfig::default()).await
}

/// The same, with these per-identity limits.
async fn setup_with(rsa: bool, limits: LimitsConfig) -> Setup {
    init_tracing();
    // A server of our own: the cancel test counts blocked clients on it.
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let coder = unique_agent("coder");
    let percy = unique_agent("percy");
    let coder_token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let admin_token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(format!("fabric-cli-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        json!({ &coder_token: coder, &admin_token: "admin" }).to_string(),
    )
    .unwrap();
    let mut auth = Authenticator::new();
    auth.load_tokens_file(&tokens).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    if rsa {
        let pem = std::fs::read(fixture("rs256-test-public.pem")).unwrap();
        auth.set_jwt(JwtConfig::rs256_pem(&pem).unwrap());
    } else {
        auth.set_jwt(JwtConfig::hs256(HS_SECRET).unwrap().issuer(ISSUER));
    }
    let mut mcp = McpConfig::new(url.clone(), fabric_worker::bus::Mode::Direct);
    mcp.limits = limits;
    let cfg = HttpConfig::new(mcp, auth);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = http::bind(cfg, addr).await.expect("bind the HTTP server");
    Setup {
        _redis: redis,
        url,
        server,
        coder,
        percy,
        coder_token,
        admin_token,
    }
}

async fn connect(s: &Setup, token: &str) -> Result<Client, String> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(s.server.mcp_url()).auth_header(token),
    );
    ().serve(transport).await.map_err(|e| e.to_string())
}

fn initialize_body() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}
    })
}

async fn post(s: &Setup, auth: Option<&str>, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(s.server.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(initialize_body().to_string());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .expect("a WWW-Authenticate header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn refuses_missing_wrong_and_expired_tokens() {
    let s = setup(false).await;
    let base = format!("http://{}", s.server.local_addr());
    let metadata_url = format!("{base}/.well-known/oauth-protected-resource");

    // No token: 401, a challenge pointing at the resource metadata, and no error code.
    let r = post(&s, None, &[]).await;
    assert_eq!(r.status(), 401);
    let c = challenge(&r);
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(
        c.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{c}"
    );
    assert!(!c.contains("error="), "{c}");

    // The metadata document (RFC 9728) is public.
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let doc: Value = reqwest::get(format!("{base}{path}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["resource"], format!("{base}/mcp"));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["authorization_servers"], json!([ISSUER]));
    }

    // Wrong static token, expired JWT, JWT signed with another key, not a bearer token.
    let other_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": s.coder, "exp": now() + 600, "iss": ISSUER}),
        &EncodingKey::from_secret(b"some-other-secret-some-other-secret!!"),
    )
    .unwrap();
    let wrong_iss = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": s.coder, "exp": now() + 600, "iss": "https://evil"}),
        &EncodingKey::from_secret(HS_SECRET),
    )
    .unwrap();
    for (auth, expected) in [
        (
            "Bearer not-a-known-token-123456".to_owned(),
            "unknown token",
        ),
        (
            format!("Bearer {}", hs256(&s.coder, now() - 3600)),
            "expired",
        ),
        (format!("Bearer {other_key}"), "signature"),
        (format!("Bearer {wrong_iss}"), "issuer"),
        (format!("Basic {}", s.coder_token), "Bearer"),
    ] {
        let r = post(&s, Some(&auth), &[]).await;
        assert_eq!(r.status(), 401, "{auth}");
        let c = challenge(&r);
        assert!(c.contains("resource_metadata="), "{c}");
        assert!(c.contains("error=\""), "{c}");
        assert!(c.contains(expected), "{auth}: {c}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(expected)
        );
    }

    // rmcp's own client with a wrong token cannot connect.
    assert!(connect(&s, "not-a-known-token-123456").await.is_err());
    let expired = hs256(&s.coder, now() - 3600);
    assert!(connect(&s, &expired).await.is_err());

    // A foreign Origin or Host is refused even with a good token.
    let good = format!("Bearer {}", s.coder_token);
    let r = post(&s, Some(&good), &[("origin", "https://evil.example.com")]).await;
    assert_eq!(r.status(), 403);
    let r = post(&s, Some(&good), &[("host", "evil.example.com")]).await;
    assert_eq!(r.status(), 403);
    let r = post(&s, Some(&good), &[("origin", "http://localhost:3000")]).await;
    assert_eq!(r.status(), 200);
    s.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn good_tokens_work_and_agents_are_confined_to_their_inbox() {
    let s = setup(false).await;
    let stop_worker = start_worker(&s.url, &s.percy).await;

    // coder, with a static token.
    let coder = connect(&s, &s.coder_token).await.unwrap();
    assert_eq!(coder.list_all_tools().await.unwrap().len(), 10);
    // The instructions tell the model who it is: the identity of its token.
    let instructions = coder
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    assert!(
        instructions.starts_with(&format!("You are agent \"{}\"", s.coder)),
        "{instructions}"
    );
    let sent = ok(&call(
        &coder,
        "fabric_message_send",
        json!({"to_agent": s.percy, "message_type": "note", "payload": {"hello": "percy"}}),
    )
    .await);
    assert_eq!(sent["status"], "queued");
    // Reading, acknowledging or inspecting percy's inbox is refused.
    for (tool, args) in [
        (
            "fabric_message_receive",
            json!({"agent_id": s.percy, "block_ms": 0}),
        ),
        (
            "fabric_message_acknowledge",
            json!({"agent_id": s.percy, "message_ids": [sent["stream_id"]]}),
        ),
        ("fabric_message_queue_status", json!({"agent_id": s.percy})),
    ] {
        let e = tool_error(&call(&coder, tool, args).await);
        assert!(e.contains("access denied"), "{tool}: {e}");
    }
    // Sending as someone else is refused, never rewritten.
    let e = tool_error(
        &call(
            &coder,
            "fabric_message_send",
            json!({"to_agent": s.percy, "from_agent": s.percy, "message_type": "note", "payload": {}}),
        )
        .await,
    );
    assert!(e.contains("refused: from_agent"), "{e}");
    // Its own inbox is fine, also with the dotted name.
    let st = ok(&call(&coder, "fabric.message.queue_status", json!({})).await);
    assert_eq!(st["agent_id"], s.coder.as_str());

    // request/reply through the worker.
    let reply = ok(&call(
        &coder,
        "fabric_message_request",
        json!({"to_agent": s.percy, "message_type": "mcp_echo", "payload": {"n": 7}, "timeout_ms": 10000}),
    )
    .await);
    assert_eq!(reply["payload"]["echo"], json!({"n": 7}));
    assert_eq!(reply["to_agent"], s.coder.as_str());

    // An admin token may act for any agent: it sees percy's inbox (the note is dead-lettered
    // by percy's worker, which has no handler for "note").
    let admin = connect(&s, &s.admin_token).await.unwrap();
    let st = ok(&call(
        &admin,
        "fabric_message_queue_status",
        json!({"agent_id": s.percy}),
    )
    .await);
    assert_eq!(st["agent_id"], s.percy.as_str());

    // percy, with an HS256 JWT whose sub is percy, reads its own inbox (a message the admin
    // sends as coder, asking for the reply in coder's results stream).
    ok(&call(
        &admin,
        "fabric_message_send",
        json!({"to_agent": s.percy, "from_agent": s.coder, "message_type": "mcp_echo", "payload": {"for": "jwt"}, "reply_to": format!("agent:{}:results", s.coder)}),
    )
    .await);
    // A reply may only go to a stream of the sender: anywhere else is refused at once.
    let e = tool_error(
        &call(
            &admin,
            "fabric_message_send",
            json!({"to_agent": s.percy, "from_agent": "admin", "message_type": "mcp_echo", "payload": {}, "reply_to": format!("agent:{}:inbox", s.coder)}),
        )
        .await,
    );
    assert!(
        e.contains("replies may only go to a stream of the sender"),
        "{e}"
    );
    let percy = connect(&s, &hs256(&s.percy, now() + 600)).await.unwrap();
    let st = ok(&call(&percy, "fabric_message_queue_status", json!({})).await);
    assert_eq!(st["agent_id"], s.percy.as_str());
    let e = tool_error(
        &call(
            &percy,
            "fabric_message_receive",
            json!({"agent_id": s.coder, "block_ms": 0}),
        )
        .await,
    );
    assert!(e.contains("access denied"), "{e}");
    // The worker's reply landed in coder's results stream.
    let mut conn = s._redis.async_conn().await;
    let results = format!("agent:{}:results", s.coder);
    assert!(
        fabric_tests::wait_until_async(Duration::from_secs(10), || {
            let mut c = conn.clone();
            let key = results.clone();
            async move {
                redis::cmd("XLEN")
                    .arg(key)
                    .query_async::<u64>(&mut c)
                    .await
                    .unwrap_or(0)
                    == 1
            }
        })
        .await,
        "the reply did not reach {results}"
    );
    let replies = fabric_tests::stream_entries(&mut conn, &results).await;
    let data: serde_json::Value =
        serde_json::from_str(fabric_tests::entry_field(&replies[0].1, "data").unwrap()).unwrap();
    assert_eq!(data["payload"]["echo"], json!({"for": "jwt"}));

    stop_worker.stop().await;
    for c in [coder, admin, percy] {
        c.cancel().await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), s.server.shutdown())
        .await
        .expect("server shuts down")
        .unwrap();
}

#[tokio::test]
async fn rs256_jwts_work_and_expired_ones_are_refused() {
    let s = setup(true).await;
    let token = rs256(&s.coder, now() + 600);
    let client = connect(&s, &token).await.unwrap();
    let st = ok(&call(&client, "fabric_message_queue_status", json!({})).await);
    assert_eq!(st["agent_id"], s.coder.as_str());
    let r = post(
        &s,
        Some(&format!("Bearer {}", rs256(&s.coder, now() - 600))),
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("expired"));
    // An HS256 token is not accepted by an RS256 server.
    let r = post(
        &s,
        Some(&format!("Bearer {}", hs256(&s.coder, now() + 600))),
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    client.cancel().await.unwrap();
    s.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refuses_unsafe_configurations() {
    let mut auth = Authenticator::new();
    auth.add_token("a-long-enough-token-0123456789abcdef", "coder")
        .unwrap();
    let cfg = HttpConfig::new(
        McpConfig::new("redis://127.0.0.1:1", fabric_worker::bus::Mode::Direct),
        auth,
    );
    let e = http::bind(cfg.clone(), "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    // A non-loopback address: plain HTTP needs --insecure-http (or an https public URL), and
    // an unspecified address needs the public URL clients use (never advertise 0.0.0.0).
    let mut remote = cfg.clone();
    remote.allow_remote = true;
    let e = http::bind(remote.clone(), "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("refusing to serve plain HTTP"),
        "{e}"
    );
    remote.insecure_http = true;
    let e = http::bind(remote.clone(), "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs --public-url"), "{e}");
    let mut no_auth = cfg;
    no_auth.auth = Authenticator::new();
    let e = http::bind(no_auth, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs authentication"), "{e}");
}

#[tokio::test]
async fn a_cancelled_blocking_receive_stops_reading_over_http() {
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, JsonObject};
    use rmcp::service::PeerRequestOptions;

    let s = setup(false).await;
    let client = connect(&s, &s.coder_token).await.unwrap();
    let mut args = JsonObject::new();
    args.insert("block_ms".into(), json!(60000));
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new("fabric_message_receive").with_arguments(args),
            )),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let url = s.url.clone();
    let blocked = |n: usize| {
        let url = url.clone();
        move || {
            let url = url.clone();
            async move { common::blocked_readers(&url) == n }
        }
    };
    assert!(fabric_tests::wait_until_async(Duration::from_secs(5), blocked(1)).await);
    handle.cancel(Some("test".into())).await.unwrap();
    assert!(
        fabric_tests::wait_until_async(Duration::from_secs(3), blocked(0)).await,
        "the blocking read was still running in Redis after the cancel"
    );
    // The session still works.
    ok(&call(&client, "fabric_message_queue_status", json!({})).await);
    client.cancel().await.unwrap();
    s.server.shutdown().await.unwrap();
}

/// The session id the server gave an `initialize` with `token`.
async fn open_session(s: &Setup, token: &str) -> String {
    let r = post(s, Some(&format!("Bearer {token}")), &[]).await;
    assert_eq!(r.status(), 200);
    r.headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn on_session(
    s: &Setup,
    method: reqwest::Method,
    token: &str,
    session: &str,
) -> reqwest::StatusCode {
    reqwest::Client::new()
        .request(method, s.server.mcp_url())
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(reqwest::StatusCode::REQUEST_TIMEOUT)
}

#[tokio::test]
async fn a_session_belongs_to_the_identity_that_opened_it() {
    let s = setup(false).await;
    let coder_session = open_session(&s, &s.coder_token).await;
    let percy = hs256(&s.percy, now() + 300);
    // percy, knowing coder's session id, can neither open its event stream nor close it.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let status = on_session(&s, method.clone(), &percy, &coder_session).await;
        assert_eq!(status, 404, "{method} on another identity's session");
    }
    // coder can.
    let status = on_session(&s, reqwest::Method::DELETE, &s.coder_token, &coder_session).await;
    assert_eq!(status, 204);
    let status = on_session(&s, reqwest::Method::DELETE, &s.coder_token, &coder_session).await;
    assert_eq!(status, 404, "a closed session");
    s.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_identity_cannot_take_every_connection_or_call() {
    let s = setup_with(
        false,
        LimitsConfig {
            blocking_per_identity: 2,
            blocking_total: 3,
            calls_per_second: 50.0,
            burst: 50.0,
        },
    )
    .await;
    let coder = connect(&s, &s.coder_token).await.unwrap();
    let coder = std::sync::Arc::new(coder);
    // Two blocking receives wait; the third of the same identity is refused at once.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let c = coder.clone();
            tokio::spawn(async move {
                call(&c, "fabric_message_receive", json!({"block_ms": 1500})).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = tool_error(&call(&coder, "fabric_message_receive", json!({"block_ms": 1500})).await);
    assert!(
        e.contains("too many blocking receives at once for you"),
        "{e}"
    );
    // A non-blocking receive still works, and so does another identity (within the total).
    ok(&call(&coder, "fabric_message_receive", json!({"block_ms": 0})).await);
    let admin = connect(&s, &s.admin_token).await.unwrap();
    let other = tokio::spawn({
        let percy = s.percy.clone();
        async move {
            call(
                &admin,
                "fabric_message_receive",
                json!({"agent_id": percy, "block_ms": 1500}),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let percy = hs256(&s.percy, now() + 300);
    let percy_client = connect(&s, &percy).await.unwrap();
    let e = tool_error(
        &call(
            &percy_client,
            "fabric_message_receive",
            json!({"block_ms": 1000}),
        )
        .await,
    );
    assert!(e.contains("the server is at its limit of 3"), "{e}");
    for w in waiting {
        ok(&w.await.unwrap());
    }
    ok(&other.await.unwrap());
    s.server.shutdown().await.unwrap();

    // Calls per second, per identity.
    let s = setup_with(
        false,
        LimitsConfig {
            calls_per_second: 1.0,
            burst: 3.0,
            ..LimitsConfig::default()
        },
    )
    .await;
    let coder = connect(&s, &s.coder_token).await.unwrap();
    for _ in 0..3 {
        ok(&call(&coder, "fabric_message_queue_status", json!({})).await);
    }
    let e = tool_error(&call(&coder, "fabric_message_queue_status", json!({})).await);
    assert!(e.starts_with("rate limit"), "{e}");
    let admin = connect(&s, &s.admin_token).await.unwrap();
    ok(&call(
        &admin,
        "fabric_message_queue_status",
        json!({"agent_id": s.coder}),
    )
    .await);
    s.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn agents_publish_on_topics_only() {
    let s = setup(false).await;
    let coder = connect(&s, &s.coder_token).await.unwrap();
    for channel in [
        format!("agent.{}.new_message", s.percy),
        "__keyspace@0__:agent:percy:inbox".to_owned(),
        "private-channel".to_owned(),
    ] {
        let e = tool_error(
            &call(
                &coder,
                "fabric_message_publish",
                json!({"topic": channel, "message": {}}),
            )
            .await,
        );
        assert!(
            e.starts_with("refused: agents may publish only on topics matching"),
            "{e}"
        );
    }
    ok(&call(
        &coder,
        "fabric_message_publish",
        json!({"topic": "analytics.insights", "message": {}}),
    )
    .await);
    let admin = connect(&s, &s.admin_token).await.unwrap();
    ok(&call(
        &admin,
        "fabric_message_publish",
        json!({"topic": "private-channel", "message": {}, "from_agent": s.coder}),
    )
    .await);
    s.server.shutdown().await.unwrap();
}
