//! The page: HTML, CSS and JavaScript compiled into the binary (`include_str!`), vanilla and
//! self-contained — nothing is loaded from anywhere else.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("static/index.html");
const CORE_JS: &str = include_str!("static/core.js");
const DETAIL_JS: &str = include_str!("static/detail.js");
const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary: revalidate rather than keep a stale page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`.
pub(super) async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /core.js`: state, DOM helpers, formatting, the API client, sparklines.
pub(super) async fn core_script() -> Response {
    asset(CORE_JS, "text/javascript; charset=utf-8")
}

/// `GET /detail.js`: an agent's details and the actions on them.
pub(super) async fn detail_script() -> Response {
    asset(DETAIL_JS, "text/javascript; charset=utf-8")
}

/// `GET /app.js`: the overview and polling.
pub(super) async fn app_script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /app.css`.
pub(super) async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}
