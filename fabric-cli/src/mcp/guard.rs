//! The protection of `fabric`'s HTTP servers (`mcp --http` and `dashboard`): which `Host`s
//! and `Origin`s are let in (loopback ones, and those allowed), bearer authentication with its
//! `401` challenge, and what it takes to listen beyond loopback.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{AuthError, Authenticator};
use crate::error::{Error, Result};

/// The protection of an HTTP server of `fabric` (`mcp --http`, `dashboard`): `Host` and
/// `Origin` validation against DNS rebinding and foreign pages, and bearer authentication.
pub(crate) struct Guard {
    pub(super) auth: Authenticator,
    pub(super) allowed_origins: Vec<String>,
    pub(super) allowed_hosts: Vec<String>,
    /// Where the Protected Resource Metadata is, named in `WWW-Authenticate` (if served).
    pub(super) metadata_url: Option<String>,
    /// The Protected Resource Metadata document (`mcp --http`).
    pub(super) metadata: serde_json::Value,
    /// `/metrics`, `/healthz`, `/readyz` without a token (`mcp --http` on a loopback address).
    pub(super) observe_open: bool,
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host part of a `Host` header value (`127.0.0.1:8765` → `127.0.0.1`, `[::1]:80` → `[::1]`).
fn host_only(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

impl Guard {
    /// A guard accepting `auth`'s identities, loopback hosts and origins, and these.
    pub(crate) fn new(
        auth: Authenticator,
        allowed_origins: Vec<String>,
        allowed_hosts: Vec<String>,
    ) -> Guard {
        Guard {
            auth,
            allowed_origins,
            allowed_hosts,
            metadata_url: None,
            metadata: json!({}),
            observe_open: false,
        }
    }

    /// `403` for a request whose `Host` is not allowed (DNS rebinding) or that carries an
    /// `Origin` that is not allowed (a foreign web page); `None` when it may go on.
    pub(crate) fn check_host_and_origin(&self, req: &Request) -> Option<Response> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(std::string::ToString::to_string));
        match host {
            Some(h) if self.host_allowed(&h) => {}
            Some(h) => {
                tracing::warn!(host = %h, "request with a Host that is not allowed refused");
                return Some(forbidden(
                    "Host header is not allowed (only loopback hosts unless --allow-host is given)",
                ));
            }
            None => return Some(forbidden("missing Host header")),
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin.to_str().is_ok_and(|o| self.origin_allowed(o));
            if !ok {
                tracing::warn!(origin = ?origin, "request with an Origin that is not allowed refused");
                return Some(forbidden(
                    "Origin is not allowed (only loopback origins unless --allow-origin is given)",
                ));
            }
        }
        None
    }

    /// The identity of the request's bearer token; on an error, answer
    /// [`Guard::unauthorized`].
    pub(crate) fn authenticate(
        &self,
        req: &Request,
    ) -> std::result::Result<super::Identity, AuthError> {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|h| h.to_str().unwrap_or("\u{0}invalid"));
        match self.auth.authenticate_header(header) {
            Ok(identity) => {
                tracing::debug!(%identity, path = req.uri().path(), "authenticated");
                Ok(identity)
            }
            Err(e) => {
                tracing::info!(error = %e, path = req.uri().path(), "request refused: 401");
                Err(e)
            }
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let h = host_only(host);
        is_loopback_host(h)
            || self
                .allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(h))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/');
        if self
            .allowed_origins
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let Ok(uri) = origin.parse::<axum::http::Uri>() else {
            return false;
        };
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(is_loopback_host)
    }

    /// `401` with a bearer challenge saying why.
    pub(crate) fn unauthorized(&self, err: &AuthError) -> Response {
        let mut challenge = String::from("Bearer realm=\"fabric\"");
        if let Some(url) = &self.metadata_url {
            challenge.push_str(&format!(", resource_metadata=\"{url}\""));
        }
        let code = match err {
            AuthError::Missing => None,
            AuthError::Malformed => Some("invalid_request"),
            AuthError::Invalid(_) | AuthError::Expired => Some("invalid_token"),
        };
        let description = err.to_string().replace(['"', '\\'], "'");
        if let Some(code) = code {
            challenge.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
        }
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "error": code.unwrap_or("unauthorized"),
                "error_description": description,
            })),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// `403` with a JSON body saying why.
pub(crate) fn forbidden(text: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": "forbidden", "error_description": text})),
    )
        .into_response()
}

/// Refuses a non-loopback `addr` unless `allow_remote`; there, plain HTTP unless TLS is in
/// front (an https `public_url`) or `insecure_http`; and the unspecified address without a
/// `public_url`.
pub(crate) fn check_exposure(
    addr: SocketAddr,
    allow_remote: bool,
    public_url: Option<&str>,
    insecure_http: bool,
) -> Result<()> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(Error::Usage(format!(
            "refusing to listen on {addr}: not a loopback address; use 127.0.0.1:PORT, or pass --allow-remote (with --allow-host) if you really mean it"
        )));
    }
    if !addr.ip().is_loopback() {
        let behind_tls = public_url.is_some_and(|u| u.starts_with("https://"));
        if !behind_tls && !insecure_http {
            return Err(Error::Usage(format!(
                "refusing to serve plain HTTP on {addr}: bearer tokens would cross the network in clear. Put TLS in front (a reverse proxy) and pass its address as --public-url https://…, or pass --insecure-http if you really mean it"
            )));
        }
        if addr.ip().is_unspecified() && public_url.is_none() {
            return Err(Error::Usage(format!(
                "listening on {addr} needs --public-url: the address clients use (it is advertised in the resource metadata, and {} is not one)",
                addr.ip()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            auth: Authenticator::new(),
            allowed_origins: vec!["https://app.example.com".into()],
            allowed_hosts: vec!["mcp.example.com".into()],
            metadata_url: Some("http://127.0.0.1:1/.well-known/oauth-protected-resource".into()),
            metadata: json!({}),
            observe_open: true,
        }
    }

    #[test]
    fn hosts_and_origins() {
        let g = guard();
        assert!(g.host_allowed("127.0.0.1:8765"));
        assert!(g.host_allowed("localhost"));
        assert!(g.host_allowed("[::1]:8765"));
        assert!(g.host_allowed("mcp.example.com:443"));
        assert!(!g.host_allowed("evil.example.com"));
        assert!(!g.host_allowed("127.0.0.1.evil.com:80"));
        assert!(g.origin_allowed("http://localhost:3000"));
        assert!(g.origin_allowed("http://127.0.0.1"));
        assert!(g.origin_allowed("http://[::1]:5173"));
        assert!(g.origin_allowed("https://app.example.com/"));
        assert!(!g.origin_allowed("https://evil.example.com"));
        assert!(!g.origin_allowed("null"));
        assert!(!g.origin_allowed("file://"));
        assert!(!g.origin_allowed("http://localhost.evil.com"));
    }

    #[test]
    fn challenge_header() {
        let g = guard();
        let r = g.unauthorized(&AuthError::Missing);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let h = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert_eq!(
            h,
            "Bearer realm=\"fabric\", resource_metadata=\"http://127.0.0.1:1/.well-known/oauth-protected-resource\""
        );
        let r = g.unauthorized(&AuthError::Expired);
        let h = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(h.contains("error=\"invalid_token\""), "{h}");
        assert!(h.contains("expired"), "{h}");
    }
}
