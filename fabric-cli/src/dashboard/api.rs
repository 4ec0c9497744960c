//! The JSON API the page uses (every answer is JSON; errors are `{"error": "…"}` with a status
//! that says what kind: 400 bad input, 401/403 not allowed, 404 not found, 503 Redis
//! unreachable).
//!
//! | route | answers |
//! | --- | --- |
//! | `GET /api/overview[?points=N]` | every agent (depth, pending, lag, consumers, workers, paused, dead letters) with its counters per interval (at most N points, default 90), the totals, and whether Redis answers |
//! | `GET /api/agents/{agent}` | the next messages waiting and those pending (delivered, not acknowledged) |
//! | `GET /api/agents/{agent}/dead-letters` | its dead letters, oldest first, with reason, error, attempts and envelope |
//! | `GET /api/agents/{agent}/message?id=ID` | one message wherever it is (`Bus::message`) |
//! | `POST /api/agents/{agent}/dead-letters/requeue` | `{"ids": [...]}` or `{"all": true}`: back into the inbox |
//! | `POST /api/agents/{agent}/dead-letters/purge` | `{"confirm": "<agent>"}`: deleted for good |
//! | `POST /api/agents/{agent}/pause`, `…/resume` | its workers stop / start reading |

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fabric_worker::Bus;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::guard::may_access;
use super::sampler::Series;
use super::views;
use crate::mcp::auth::Identity;
use crate::output::now_ms;

/// Most dead letters or messages one list returns.
const MAX_LIST: usize = 500;

/// An error answer: a status and a sentence saying what to do.
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unreachable = self.status == StatusCode::SERVICE_UNAVAILABLE;
        (
            self.status,
            Json(json!({"error": self.message, "redis_unreachable": unreachable})),
        )
            .into_response()
    }
}

impl From<fabric_worker::Error> for ApiError {
    fn from(e: fabric_worker::Error) -> Self {
        let status = if e.is_connection_error() || e.is_auth_failure() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if matches!(e, fabric_worker::Error::Invalid { .. }) {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, e.to_string())
    }
}

type ApiResult = std::result::Result<Json<Value>, ApiError>;

/// The bus, for a request about `agent` that `identity` must be allowed to see.
async fn bus_for(state: &AppState, identity: &Identity, agent: &str) -> Result<Bus, ApiError> {
    fabric_worker::keys::validate_agent(agent)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !may_access(identity, agent) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{identity} may see its own inbox only, not {agent}'s (an admin token sees every agent)"
            ),
        ));
    }
    Ok(state.bus.bus().await?)
}

fn counts(s: &Series, window_ms: u64) -> Value {
    let (arrived, processed, failed, covered_ms) = s.recent(window_ms);
    json!({"arrived": arrived, "processed": processed, "failed": failed, "covered_ms": covered_ms})
}

/// `?points=N`: at most this many points per chart (default 90).
#[derive(Debug, Deserialize)]
pub(super) struct PointsQuery {
    points: Option<usize>,
}

/// `GET /api/overview`.
pub(super) async fn overview(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Query(q): Query<PointsQuery>,
) -> Json<Value> {
    let points = q.points.unwrap_or(90).clamp(2, 10_000);
    let snap = state.history.snapshot(|a| may_access(&identity, a));
    let agents: Vec<Value> = snap
        .rows
        .iter()
        .map(|(row, series)| {
            let mut v = serde_json::to_value(row).unwrap_or_else(|_| json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("series".into(), json!(series.downsample(points)));
                o.insert("last_minute".into(), counts(series, 60_000));
            }
            v
        })
        .collect();
    let interval_ms = u64::try_from(state.history.interval.as_millis()).unwrap_or(u64::MAX);
    Json(json!({
        "now_ms": now_ms(),
        "redis": {
            "url": snap.url.clone().unwrap_or_else(|| state.redis_url.clone()),
            "ok": snap.error.is_none() && snap.last_ok_ms.is_some(),
            "error": snap.error,
            "error_since_ms": snap.error_since_ms,
            "last_sample_ms": snap.last_ok_ms,
        },
        "mode": state.mode.to_string(),
        "identity": {"name": identity.name(), "admin": identity.is_admin()},
        "sample_interval_ms": interval_ms,
        "agents": agents,
        "total": {
            "series": snap.total.downsample(points),
            "last_minute": counts(&snap.total, 60_000),
        },
    }))
}

/// `GET /api/agents/{agent}`: the next messages waiting for its workers, and those pending.
pub(super) async fn agent(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Path(agent): Path<String>,
) -> ApiResult {
    let bus = bus_for(&state, &identity, &agent).await?;
    let group = fabric_worker::keys::default_group(&agent);
    let after = bus
        .groups(&agent)
        .await?
        .into_iter()
        .find(|g| g.name == group)
        .map_or_else(|| "0".to_owned(), |g| g.last_delivered_id);
    let (waiting, _) = bus.peek(&agent, &after, 20, None).await?;
    let waiting: Vec<Value> = waiting
        .iter()
        .map(|e| {
            json!({
                "stream_id": e.stream_id,
                "attempt": e.attempt,
                "message": e.message.as_ref().map(views::envelope),
                "raw_data": e.raw_data,
            })
        })
        .collect();
    let pending = bus.pending(&agent, None, 50).await?;
    Ok(Json(json!({
        "agent": agent,
        "group": group,
        "waiting": waiting,
        "pending": pending,
    })))
}

/// `?count=N`.
#[derive(Debug, Deserialize)]
pub(super) struct CountQuery {
    count: Option<usize>,
}

/// `GET /api/agents/{agent}/dead-letters`.
pub(super) async fn dead_letters(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Path(agent): Path<String>,
    Query(q): Query<CountQuery>,
) -> ApiResult {
    let bus = bus_for(&state, &identity, &agent).await?;
    let count = q.count.unwrap_or(100).clamp(1, MAX_LIST);
    let letters = bus.dead_letters(&agent, count).await?;
    let total = bus.queue_status(&agent, None).await?.dead_letters;
    Ok(Json(json!({
        "agent": agent,
        "total": total,
        "items": letters.iter().map(views::dead_letter).collect::<Vec<_>>(),
    })))
}

/// `?id=ID`.
#[derive(Debug, Deserialize)]
pub(super) struct IdQuery {
    id: String,
}

/// `GET /api/agents/{agent}/message?id=ID`.
pub(super) async fn message(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Path(agent): Path<String>,
    Query(q): Query<IdQuery>,
) -> ApiResult {
    let bus = bus_for(&state, &identity, &agent).await?;
    match bus.message(&agent, &q.id).await? {
        Some(d) => Ok(Json(views::details(&d))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no message {} for {agent}: it was handled and trimmed, purged, or the id is wrong",
                q.id
            ),
        )),
    }
}

/// The body of a requeue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequeueBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

/// `POST /api/agents/{agent}/dead-letters/requeue`.
pub(super) async fn requeue(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Path(agent): Path<String>,
    body: Result<Json<RequeueBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|e| bad_body(&e))?;
    let ids = match (body.ids, body.all) {
        (Some(ids), false) if !ids.is_empty() && ids.len() <= 10_000 => Some(ids),
        (None, true) => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "send {\"ids\": [\"<dead id>\", …]} (1 to 10000 ids) or {\"all\": true}",
            ));
        }
    };
    let bus = bus_for(&state, &identity, &agent).await?;
    let n = bus.requeue_dead_letters(&agent, ids.as_deref()).await?;
    let missing = ids.as_ref().map_or(0, |ids| ids.len().saturating_sub(n));
    tracing::info!(
        agent,
        requeued = n,
        missing,
        "dashboard: dead letters requeued"
    );
    Ok(Json(json!({
        "agent": agent,
        "requeued": n,
        "not_found": missing,
        "stream": fabric_worker::keys::inbox(&agent),
    })))
}

/// The body of a purge: the agent's id again, as confirmation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurgeBody {
    confirm: String,
}

/// `POST /api/agents/{agent}/dead-letters/purge`.
pub(super) async fn purge(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Path(agent): Path<String>,
    body: Result<Json<PurgeBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|e| bad_body(&e))?;
    let bus = bus_for(&state, &identity, &agent).await?;
    if body.confirm != agent {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("purging deletes for good: confirm with {{\"confirm\": \"{agent}\"}}"),
        ));
    }
    let n = bus.purge_dead_letters(&agent).await?;
    tracing::info!(agent, purged = n, "dashboard: dead letters purged");
    Ok(Json(json!({"agent": agent, "purged": n})))
}

/// `POST /api/agents/{agent}/pause`.
pub(super) async fn pause(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Path(agent): Path<String>,
) -> ApiResult {
    let bus = bus_for(&state, &identity, &agent).await?;
    bus.pause(&agent).await?;
    tracing::info!(agent, "dashboard: agent paused");
    Ok(Json(json!({"agent": agent, "paused": true})))
}

/// `POST /api/agents/{agent}/resume`.
pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    Extension(identity): Extension<Identity>,
    Path(agent): Path<String>,
) -> ApiResult {
    let bus = bus_for(&state, &identity, &agent).await?;
    bus.resume(&agent).await?;
    tracing::info!(agent, "dashboard: agent resumed");
    Ok(Json(json!({"agent": agent, "paused": false})))
}

fn bad_body(e: &axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
}

/// Any other `/api/…` path.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}
