//! Credentials from identity: an agent presenting its JWT to `POST /credentials` of
//! `fabric mcp --http` gets a short-lived Redis user with its own rights only, deleted (and
//! its connections closed) when its time is up.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use fabric_cli::mcp::credentials::{CREDENTIALS_PATH, CredentialsConfig};
use fabric_cli::mcp::http::{self, HttpConfig, HttpServer};
use fabric_cli::mcp::{Authenticator, JwtConfig, McpConfig};
use fabric_tests::{SecureRedis, init_tracing, unique_agent};
use fabric_worker::bus::Mode;
use fabric_worker::keys;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &[u8] = b"credentials-test-secret-0123456789abcdef";
const AUDIENCE: &str = "fabric-credentials";

fn jwt(sub: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "aud": AUDIENCE, "exp": chrono::Utc::now().timestamp() + 600}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// The HTTP server issuing credentials that live `lifetime`, as the admin of `redis`.
async fn issuer(redis: &SecureRedis, lifetime: Duration) -> HttpServer {
    let mut auth = Authenticator::new();
    auth.set_jwt(JwtConfig::hs256(SECRET).unwrap().audience(AUDIENCE));
    auth.add_token("admin-token-0123456789abcdefghijklmn", "admin")
        .unwrap();
    let mut cfg = HttpConfig::new(
        McpConfig::new(redis.url_of(fabric_worker::acl::MCP_USER), Mode::Secure),
        auth,
    );
    cfg.credentials = Some(CredentialsConfig {
        admin_url: redis.server.url(),
        lifetime,
        mode: Mode::Secure,
        topics: Vec::new(),
    });
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    http::bind(cfg, addr).await.unwrap()
}

fn endpoint(server: &HttpServer) -> String {
    format!("http://{}{CREDENTIALS_PATH}", server.local_addr())
}

async fn ask(server: &HttpServer, bearer: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(endpoint(server));
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn login(
    port: u16,
    user: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://{user}:{password}@127.0.0.1:{port}"))?
        .get_multiplexed_async_connection()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_jwt_buys_short_lived_credentials_for_itself_only() {
    init_tracing();
    let (percy, coder) = (unique_agent("percy"), unique_agent("coder"));
    let redis = SecureRedis::start(&[percy.clone(), coder.clone()], false);
    redis.prepare().await;
    let server = issuer(&redis, Duration::from_secs(2)).await;
    let port = redis.server.port();

    // No token, an admin's token: refused.
    assert_eq!(ask(&server, None).await.0, 401);
    let (status, body) = ask(&server, Some("admin-token-0123456789abcdefghijklmn")).await;
    assert_eq!(status, 403, "{body}");

    let (status, cred) = ask(&server, Some(&jwt(&percy))).await;
    assert_eq!(status, 200, "{cred}");
    assert_eq!(cred["agent"], percy.as_str());
    let user = cred["user"].as_str().unwrap().to_owned();
    let password = cred["password"].as_str().unwrap().to_owned();
    assert!(user.starts_with(&format!("cred.{percy}.")), "{user}");
    assert_eq!(cred["lifetime_secs"], 2.0);
    // The user has percy's rights: its own keys, not coder's.
    let mut conn = login(port, &user, &password).await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(keys::outbox(&percy))
        .arg("*")
        .arg("data")
        .arg("{}")
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused = redis::cmd("XRANGE")
        .arg(keys::inbox(&coder))
        .arg("-")
        .arg("+")
        .query_async::<redis::Value>(&mut conn)
        .await
        .expect_err("percy's credentials read coder's inbox");
    assert_eq!(
        refused.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
        "{refused}"
    );
    // coder's credentials, revoked at once (every user issued to coder), before their time:
    // refused, while percy's keep working.
    let (status, other) = ask(&server, Some(&jwt(&coder))).await;
    assert_eq!(status, 200, "{other}");
    let coder_user = other["user"].as_str().unwrap().to_owned();
    let coder_pw = other["password"].as_str().unwrap().to_owned();
    assert!(login(port, &coder_user, &coder_pw).await.is_ok());
    let admin = fabric_worker::Bus::connect(redis.server.url())
        .await
        .unwrap();
    let revoked = admin.sweep_credentials(Some(&coder)).await.unwrap();
    assert_eq!(revoked, std::slice::from_ref(&coder_user));
    assert!(
        login(port, &coder_user, &coder_pw).await.is_err(),
        "a revoked credential still logs in"
    );
    assert!(
        login(port, &user, &password).await.is_ok(),
        "revoking coder's credentials touched percy's"
    );
    // After its lifetime the user is gone: no new login, and the open connection is closed.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        login(port, &user, &password).await.is_err(),
        "expired credentials still log in"
    );
    let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
    assert!(
        r.is_err(),
        "a connection of expired credentials is still open"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_on_renewed_credentials_without_losing_a_message() {
    use fabric_worker::credentials::HttpCredentialSource;
    use fabric_worker::prelude::*;
    init_tracing();
    let (percy, coder) = (unique_agent("percy"), unique_agent("coder"));
    let redis = SecureRedis::start(&[percy.clone(), coder.clone()], false);
    redis.prepare().await;
    let lifetime = Duration::from_millis(1500);
    let server = issuer(&redis, lifetime).await;
    let router = fabric_tests::RunningRouter::serve(&redis.router_url()).await;
    // percy's worker starts from its JWT alone: no password anywhere in its configuration.
    let worker = fabric_tests::RunningWorker::start(
        Worker::builder(&percy)
            .url(format!("redis://127.0.0.1:{}", redis.server.port()))
            .credentials(HttpCredentialSource::new(endpoint(&server), jwt(&percy)))
            .block(Duration::from_millis(200)),
    )
    .await;
    // coder sends for longer than three credential lifetimes.
    let coder_bus = redis.agent_bus(&coder).await;
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < lifetime * 3 + Duration::from_millis(500) {
        coder_bus
            .send(Message::new(&coder, &percy, "echo", json!({"n": sent})))
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let admin = fabric_worker::Bus::connect(redis.server.url())
        .await
        .unwrap();
    let all = fabric_tests::wait_until_async(Duration::from_secs(15), || async {
        admin.groups(&percy).await.unwrap().iter().any(|g| {
            g.name == keys::default_group(&percy)
                && g.acknowledged() == Some(sent)
                && g.pending == 0
        })
    })
    .await;
    assert!(
        all,
        "{sent} sent; {:?}; dead letters {:?}",
        admin.groups(&percy).await.unwrap(),
        admin.dead_letters(&percy, 10).await.unwrap()
    );
    assert!(admin.dead_letters(&percy, 10).await.unwrap().is_empty());
    // Several credentials were issued, and the expired ones are gone.
    let mut conn = redis.server.async_conn().await;
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut conn)
        .await
        .unwrap();
    let live: Vec<&String> = users
        .iter()
        .filter(|u| u.starts_with(&format!("cred.{percy}.")))
        .collect();
    assert!(
        live.len() <= 2,
        "expired credentials were not deleted: {live:?}"
    );
    worker.stop().await;
    router.stop().await;
    server.shutdown().await.unwrap();
}
