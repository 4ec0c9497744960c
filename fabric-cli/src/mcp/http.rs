//! The Streamable HTTP transport: `/mcp` behind bearer-token authentication, `Host` and
//! `Origin` validation, and the OAuth Protected Resource Metadata document (RFC 9728).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::auth::Authenticator;
use super::guard::{Guard, check_exposure};
use super::{FabricMcp, McpConfig};
use crate::error::{Error, Result};

/// Where the MCP endpoint is served.
pub const MCP_PATH: &str = "/mcp";
/// Where the Protected Resource Metadata document is served (also under `…/mcp`).
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// Default address of `fabric mcp --http`.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8765";
/// Largest request body accepted (the 1 MiB payload cap plus JSON-RPC framing and escaping).
pub const MAX_REQUEST_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Configuration of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Redis.
    pub mcp: McpConfig,
    /// Who may call (at least one static token or a JWT key).
    pub auth: Authenticator,
    /// Browser origins allowed besides loopback ones (e.g. `https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// `Host` values allowed besides loopback ones (needed with `allow_remote`).
    pub allowed_hosts: Vec<String>,
    /// The externally visible base URL (default `http://<bound address>`).
    pub public_url: Option<String>,
    /// Authorization servers advertised in the resource metadata (the JWT issuer is added).
    pub authorization_servers: Vec<String>,
    /// Allow binding to a non-loopback address.
    pub allow_remote: bool,
    /// Allow a non-loopback address without TLS in front (no https `public_url`).
    pub insecure_http: bool,
    /// Issue short-lived Redis credentials at `POST /credentials` (see `credentials.rs`).
    pub credentials: Option<super::credentials::CredentialsConfig>,
}

impl HttpConfig {
    /// A loopback-only configuration.
    pub fn new(mcp: McpConfig, auth: Authenticator) -> Self {
        HttpConfig {
            mcp,
            auth,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            public_url: None,
            authorization_servers: Vec::new(),
            allow_remote: false,
            insecure_http: false,
            credentials: None,
        }
    }
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    base_url: String,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint, e.g. `http://127.0.0.1:8765/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("{}{MCP_PATH}", self.base_url)
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> Result<()> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::io("HTTP server failed", e)),
            Err(e) => Err(Error::Server(format!("HTTP server task failed: {e}"))),
        }
    }
}

async fn guard(State(g): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    if let Some(refused) = g.check_host_and_origin(&req) {
        return refused;
    }
    if req.uri().path().starts_with(RESOURCE_METADATA_PATH) {
        return next.run(req).await;
    }
    let path = req.uri().path();
    let observe = super::observe::PATHS.contains(&path);
    if observe && g.observe_open {
        return next.run(req).await;
    }
    if !observe
        && path != MCP_PATH
        && !path.starts_with(&format!("{MCP_PATH}/"))
        && path != super::credentials::CREDENTIALS_PATH
    {
        // Not ours (e.g. an OAuth client probing /register): 404, not a 401 that would
        // read as "your token was refused".
        return (StatusCode::NOT_FOUND, "Not Found: the MCP endpoint is /mcp").into_response();
    }
    match g.authenticate(&req) {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(e) => g.unauthorized(&e),
    }
}

/// A JSON-RPC error answered over HTTP with `status` (no request id could be read).
fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": code, "message": message},
        })),
    )
        .into_response()
}

/// The MCP sessions, and the identity that opened each.
struct Sessions {
    manager: Arc<LocalSessionManager>,
    owners: std::sync::Mutex<std::collections::HashMap<String, super::Identity>>,
}

impl Sessions {
    fn owners(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, super::Identity>> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

const SESSION_HEADER: &str = "mcp-session-id";

fn session_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found: session not found").into_response()
}

/// What the MCP transport leaves to us: a session belongs to the identity that opened it
/// (another identity's request on it is `404`, as for a session that does not exist); a
/// body that is not JSON is `400` with `-32700` (parse error), JSON that is not a JSON-RPC
/// message is `400` with `-32600`; `DELETE` of a session answers `204`, or `404` for a
/// session that does not exist.
async fn framing(State(sessions): State<Arc<Sessions>>, req: Request, next: Next) -> Response {
    use rmcp::transport::streamable_http_server::session::SessionManager;
    let identity = req.extensions().get::<super::Identity>().cloned();
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &session {
        let owner = sessions.owners().get(id).cloned();
        if owner.is_some() && owner != identity {
            tracing::warn!(caller = ?identity, "request on another identity's MCP session refused");
            return session_not_found();
        }
    }
    if req.method() == axum::http::Method::DELETE {
        if let Some(id) = &session
            && !sessions
                .manager
                .has_session(&Arc::<str>::from(id.as_str()))
                .await
                .unwrap_or(true)
        {
            return session_not_found();
        }
        let resp = next.run(req).await;
        if let Some(id) = &session {
            sessions.owners().remove(id);
        }
        if resp.status() == StatusCode::ACCEPTED {
            return StatusCode::NO_CONTENT.into_response();
        }
        return resp;
    }
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES).await else {
        return jsonrpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            &format!("request body larger than {MAX_REQUEST_BODY_BYTES} bytes"),
        );
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(e) => {
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32700,
                &format!("Parse error: the body is not JSON ({e})"),
            );
        }
        Ok(v) => {
            let is_message =
                |m: &serde_json::Value| m.get("jsonrpc").and_then(|j| j.as_str()) == Some("2.0");
            let ok = match &v {
                serde_json::Value::Object(_) => is_message(&v),
                _ => false,
            };
            if !ok {
                return jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    "Invalid Request: expected one JSON-RPC 2.0 message object (batches are not supported)",
                );
            }
        }
    }
    let resp = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    if session.is_none()
        && let Some(id) = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        && let Some(identity) = identity
    {
        let mut owners = sessions.owners();
        if owners.len() > 10_000 {
            // Sessions closed without a DELETE: forget the oldest owners (their sessions
            // are gone or will be refused as unknown anyway).
            let keep: Vec<String> = owners.keys().take(5_000).cloned().collect();
            owners.retain(|k, _| keep.contains(k));
        }
        owners.insert(id.to_owned(), identity);
    }
    resp
}

async fn resource_metadata(State(g): State<Arc<Guard>>) -> Response {
    (
        [(header::CACHE_CONTROL, "max-age=300")],
        axum::Json(g.metadata.clone()),
    )
        .into_response()
}

/// Binds `addr` and serves MCP over Streamable HTTP in a background task.
///
/// Refuses a non-loopback address unless `config.allow_remote`, and a configuration
/// without any way to authenticate.
pub async fn bind(config: HttpConfig, addr: SocketAddr) -> Result<HttpServer> {
    check_exposure(
        addr,
        config.allow_remote,
        config.public_url.as_deref(),
        config.insecure_http,
    )?;
    if config.auth.is_empty() {
        return Err(Error::Usage(
            "the HTTP transport needs authentication: pass --tokens-file FILE and/or --jwt-hs256-secret-file FILE / --jwt-rs256-public-key-file FILE".into(),
        ));
    }
    let server = FabricMcp::new(&config.mcp, None)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;
    let base_url = config
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{local}"));

    let mut authorization_servers = config.authorization_servers.clone();
    if let Some(iss) = config.auth.jwt().and_then(|j| j.issuer.clone())
        && !authorization_servers.contains(&iss)
    {
        authorization_servers.push(iss);
    }
    let mut metadata = json!({
        "resource": format!("{base_url}{MCP_PATH}"),
        "resource_name": "Fabric message bus (MCP)",
        "bearer_methods_supported": ["header"],
    });
    if !authorization_servers.is_empty()
        && let Some(m) = metadata.as_object_mut()
    {
        m.insert("authorization_servers".into(), json!(authorization_servers));
    }
    let guard_state = Arc::new(Guard {
        auth: config.auth.clone(),
        allowed_origins: config.allowed_origins.clone(),
        allowed_hosts: config.allowed_hosts.clone(),
        metadata_url: Some(format!("{base_url}{RESOURCE_METADATA_PATH}")),
        metadata,
        observe_open: local.ip().is_loopback(),
    });

    let shutdown = CancellationToken::new();
    let mut hosts: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        "[::1]".into(),
    ];
    hosts.extend(config.allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = vec![
        "http://localhost:*".into(),
        "http://127.0.0.1:*".into(),
        "http://[::1]:*".into(),
        "https://localhost:*".into(),
        "https://127.0.0.1:*".into(),
        "https://[::1]:*".into(),
    ];
    origins.extend(config.allowed_origins.iter().cloned());
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_REQUEST_BODY_BYTES)
        .with_cancellation_token(shutdown.child_token());
    let sessions = Arc::new(LocalSessionManager::default());
    let service: StreamableHttpService<FabricMcp, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), sessions.clone(), mcp_config);
    let sessions = Arc::new(Sessions {
        manager: sessions,
        owners: std::sync::Mutex::new(std::collections::HashMap::new()),
    });
    let service = Router::new()
        .fallback_service(service)
        .layer(axum::middleware::from_fn_with_state(sessions, framing));

    let mut router = Router::new();
    if let Some(c) = config.credentials.clone() {
        let issuer = super::credentials::Issuer::new(c)
            .map_err(|e| Error::Usage(format!("--issue-credentials-as: {e}")))?;
        issuer.spawn_sweeper(shutdown.child_token());
        router = router.route(
            super::credentials::CREDENTIALS_PATH,
            axum::routing::post(super::credentials::issue).with_state(issuer),
        );
    }
    let observe = super::observe::Observe::new(&config.mcp.redis_url, config.mcp.mode)?;
    observe.spawn_sampler(shutdown.child_token());
    let router = router
        .merge(super::observe::routes(&observe))
        .route(RESOURCE_METADATA_PATH, get(resource_metadata))
        .route(
            &format!("{RESOURCE_METADATA_PATH}{MCP_PATH}"),
            get(resource_metadata),
        )
        .nest_service(MCP_PATH, service)
        .layer(axum::middleware::from_fn_with_state(
            guard_state.clone(),
            guard,
        ))
        .with_state(guard_state);

    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    tracing::info!(url = %format!("{base_url}{MCP_PATH}"), "MCP server listening (Streamable HTTP)");
    Ok(HttpServer {
        addr: local,
        base_url,
        shutdown,
        task,
    })
}
