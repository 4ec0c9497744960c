//! Who may see the dashboard and act through it: the `Host`/`Origin` checks and bearer
//! authentication of `fabric mcp --http` (`mcp::guard::Guard`), and for
//! actions (`POST`) an `Origin` that is the dashboard's own with a JSON body, so that no other
//! web page can make a browser act (CSRF).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::mcp::auth::{ADMIN, Identity};
use crate::mcp::guard::forbidden;

/// The security headers of every response: the page loads nothing but its own files, cannot
/// be framed, and leaks no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Every request: `Host` and `Origin` checks; security headers on the answer.
pub(super) async fn page_guard(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = match state.guard.check_host_and_origin(&req) {
        Some(refused) => refused,
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The API: the caller's identity (a bearer token when required; the local operator, an
/// admin, otherwise), and for `POST` the same-origin check.
pub(super) async fn api_guard(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let identity = if state.require_auth {
        match state.guard.authenticate(&req) {
            Ok(identity) => identity,
            Err(e) => return state.guard.unauthorized(&e),
        }
    } else {
        Identity::Admin(ADMIN.to_owned())
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Err(why) = same_origin(&state, &req) {
            tracing::warn!(
                path = req.uri().path(),
                why,
                "dashboard action refused: 403"
            );
            return forbidden(why);
        }
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if !json {
            return forbidden("actions take a JSON body (Content-Type: application/json)");
        }
    }
    let mut resp = {
        req.extensions_mut().insert(identity);
        next.run(req).await
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An action must come from the dashboard's own page: its `Origin` is `http(s)://<Host>`, the
/// public URL's origin, or one allowed with `--allow-origin`. Browsers always send `Origin`
/// on a `POST`; a request without one (not from a browser page) is refused too.
fn same_origin(state: &AppState, req: &Request) -> Result<(), &'static str> {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return Err(
            "actions need an Origin header naming this dashboard (browsers send it; from a script, send Origin: http://<host:port>)",
        );
    };
    let origin = origin.trim().trim_end_matches('/');
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let own = !host.is_empty()
        && (origin.eq_ignore_ascii_case(&format!("http://{host}"))
            || origin.eq_ignore_ascii_case(&format!("https://{host}")));
    let public = state
        .public_origin
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case(origin));
    let allowed = state
        .allowed_origins
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if own || public || allowed {
        Ok(())
    } else {
        Err(
            "this action must come from the dashboard's own page (its Origin is not this dashboard's)",
        )
    }
}

/// Whether `identity` may see and act on `agent`: an admin any, an agent its own.
pub(super) fn may_access(identity: &Identity, agent: &str) -> bool {
    match identity {
        Identity::Admin(_) => true,
        Identity::Agent(a) => a == agent,
    }
}
