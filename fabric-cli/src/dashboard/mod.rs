//! `fabric dashboard`: a web page that shows every agent's inbox live — depth, pending, lag,
//! consumers and their idle times, paused state, throughput and failures over the last
//! minutes — with the dead letters of each agent (requeue, purge) and the details of any
//! message.
//!
//! One process serves the page (HTML, CSS and JavaScript compiled into the binary: nothing is
//! fetched from anywhere else) and a small JSON API under `/api/`. A background task samples
//! the counters Redis keeps for each inbox (`XINFO STREAM` entries-added, the workers group's
//! entries-read and pending, the dead-letter count) every few seconds and keeps a short
//! history, which the page polls and draws as sparklines.
//!
//! Protection is the one of `fabric mcp --http` (`mcp::guard`): only loopback `Host`s
//! and `Origin`s unless allowed; beyond loopback, bearer tokens or JWTs are required (and TLS
//! in front, or `--insecure-http`). Actions are `POST`s whose `Origin` must be the dashboard's
//! own; nothing changes on a `GET`.

mod api;
mod assets;
mod guard;
mod sampler;
#[cfg(test)]
mod tests;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use fabric_worker::bus::Mode;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::mcp::auth::Authenticator;
use crate::mcp::guard::{Guard, check_exposure};
use crate::mcp::tools::BusCell;

/// Default address of `fabric dashboard`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";

/// Largest request body the API accepts (a list of dead-letter ids).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// What `fabric dashboard` serves, and how it is protected.
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// Redis.
    pub redis_url: String,
    /// Direct or secure (how a requeued message travels does not depend on it; shown only).
    pub mode: Mode,
    /// Who may look and act. Required beyond loopback; on loopback, when it holds tokens or
    /// a JWT key, they are required too.
    pub auth: Authenticator,
    /// Browser origins allowed besides the dashboard's own and loopback ones.
    pub allowed_origins: Vec<String>,
    /// `Host` values allowed besides loopback ones (needed with `allow_remote`).
    pub allowed_hosts: Vec<String>,
    /// The externally visible base URL (default `http://<bound address>`).
    pub public_url: Option<String>,
    /// Allow binding to a non-loopback address.
    pub allow_remote: bool,
    /// Allow a non-loopback address without TLS in front.
    pub insecure_http: bool,
    /// How often the counters are sampled.
    pub sample_interval: Duration,
    /// How much history the charts keep.
    pub history: Duration,
}

impl DashboardConfig {
    /// A loopback-only configuration without tokens, sampling every 2 s, 10 minutes kept.
    pub fn new(redis_url: impl Into<String>, mode: Mode) -> Self {
        DashboardConfig {
            redis_url: redis_url.into(),
            mode,
            auth: Authenticator::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            public_url: None,
            allow_remote: false,
            insecure_http: false,
            sample_interval: Duration::from_secs(2),
            history: Duration::from_secs(600),
        }
    }
}

/// Whether requests must carry a bearer token: always beyond loopback, and on loopback when
/// tokens or a JWT key were given.
pub(crate) fn requires_auth(addr: SocketAddr, auth: &Authenticator) -> bool {
    !addr.ip().is_loopback() || !auth.is_empty()
}

/// What the request handlers share.
pub(crate) struct AppState {
    pub(crate) bus: BusCell,
    pub(crate) guard: Guard,
    pub(crate) require_auth: bool,
    pub(crate) public_origin: Option<String>,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) history: sampler::History,
    pub(crate) redis_url: String,
    pub(crate) mode: Mode,
}

/// A running dashboard.
#[derive(Debug)]
pub struct DashboardServer {
    addr: SocketAddr,
    base_url: String,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl DashboardServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL, e.g. `http://127.0.0.1:8787/`.
    pub fn url(&self) -> String {
        format!("{}/", self.base_url)
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> Result<()> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::io("dashboard server failed", e)),
            Err(e) => Err(Error::Server(format!("dashboard server task failed: {e}"))),
        }
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

fn routes(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/overview", get(api::overview))
        .route("/api/agents/{agent}", get(api::agent))
        .route("/api/agents/{agent}/dead-letters", get(api::dead_letters))
        .route(
            "/api/agents/{agent}/dead-letters/requeue",
            post(api::requeue),
        )
        .route("/api/agents/{agent}/dead-letters/purge", post(api::purge))
        .route("/api/agents/{agent}/pause", post(api::pause))
        .route("/api/agents/{agent}/resume", post(api::resume))
        .route("/api/agents/{agent}/message", get(api::message))
        .fallback(api::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::api_guard,
        ))
        .with_state(state.clone());
    Router::new()
        .route("/", get(assets::index))
        .route("/core.js", get(assets::core_script))
        .route("/detail.js", get(assets::detail_script))
        .route("/app.js", get(assets::app_script))
        .route("/app.css", get(assets::style))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            state,
            guard::page_guard,
        ))
}

/// Binds `addr` and serves the dashboard in a background task (with its sampler).
///
/// Refuses a non-loopback address unless `config.allow_remote` (and TLS in front or
/// `insecure_http`), and beyond loopback a configuration without tokens or a JWT key.
pub async fn bind(config: DashboardConfig, addr: SocketAddr) -> Result<DashboardServer> {
    check_exposure(
        addr,
        config.allow_remote,
        config.public_url.as_deref(),
        config.insecure_http,
    )?;
    if !addr.ip().is_loopback() && config.auth.is_empty() {
        return Err(Error::Usage(format!(
            "the dashboard on {addr} (beyond loopback) needs authentication: pass --tokens-file FILE and/or --jwt-hs256-secret-file FILE / --jwt-rs256-public-key-file FILE (an \"admin\" token sees every agent, an agent's token its own)"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
    serve(config, listener, None).await
}

/// Serves on `listener`; `exposed` overrides whether the address counts as beyond loopback
/// (tests of the protection bind loopback and say `Some(true)`).
pub(crate) async fn serve(
    config: DashboardConfig,
    listener: tokio::net::TcpListener,
    exposed: Option<bool>,
) -> Result<DashboardServer> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;
    let require_auth = match exposed {
        Some(true) => true,
        _ => requires_auth(local, &config.auth),
    };
    let bus = BusCell::new(config.redis_url.clone(), config.mode)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let base_url = config
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{local}"));
    let public_origin = config.public_url.as_deref().map(views::origin_of);
    let shutdown = CancellationToken::new();
    let state = Arc::new(AppState {
        bus,
        guard: Guard::new(
            config.auth.clone(),
            config.allowed_origins.clone(),
            config.allowed_hosts.clone(),
        ),
        require_auth,
        public_origin,
        allowed_origins: config.allowed_origins.clone(),
        history: sampler::History::new(config.sample_interval, config.history),
        redis_url: views::without_credentials(&config.redis_url),
        mode: config.mode,
    });
    tokio::spawn(sampler::run(state.clone(), shutdown.child_token()));
    let app = routes(state);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    tracing::info!(url = %base_url, require_auth, "dashboard listening");
    Ok(DashboardServer {
        addr: local,
        base_url,
        shutdown,
        task,
    })
}
