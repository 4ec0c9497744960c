//! `POST /credentials` of `fabric mcp --http --issue-credentials-as URL`: an agent that
//! presents a valid token or JWT gets short-lived Redis credentials for its own user only
//! (`fabric_worker::Bus::issue_credentials`); a sweeper deletes them when they expire.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fabric_worker::bus::Mode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::auth::Identity;
use super::tools::BusCell;

/// Where the credentials endpoint is served.
pub const CREDENTIALS_PATH: &str = "/credentials";

/// What issuing needs.
#[derive(Clone, Debug)]
pub struct CredentialsConfig {
    /// An admin's Redis URL (it runs `ACL SETUSER` / `ACL DELUSER`).
    pub admin_url: String,
    /// How long issued credentials work.
    pub lifetime: Duration,
    /// The mode whose agent rules the credentials get.
    pub mode: Mode,
    /// Topic patterns, as in the ACL file (the defaults when empty).
    pub topics: Vec<String>,
}

/// The issuer: its configuration and the admin's bus (connected at first use, as the tools'
/// bus is).
pub(crate) struct Issuer {
    config: CredentialsConfig,
    bus: BusCell,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// A bad admin URL or TLS setting is refused here, at start.
    pub(crate) fn new(config: CredentialsConfig) -> fabric_worker::Result<Arc<Issuer>> {
        // The admin runs ACL commands only: the mode of its bus does not matter.
        let bus = BusCell::new(config.admin_url.clone(), Mode::Direct)?;
        Ok(Arc::new(Issuer { config, bus }))
    }

    /// Deletes expired credentials now and then, until `stop`.
    pub(crate) fn spawn_sweeper(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        let every =
            (me.config.lifetime / 4).clamp(Duration::from_millis(250), Duration::from_secs(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let swept = match me.bus.get().await {
                    Ok(bus) => bus.sweep_credentials(None).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.0),
                };
                if let Err(e) = swept {
                    tracing::warn!(error = %e, "could not delete expired credentials; retrying");
                }
            }
        });
    }
}

fn refused(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({"error": text}))).into_response()
}

/// `POST /credentials`: credentials for the agent the request authenticated as.
pub(crate) async fn issue(
    State(issuer): State<Arc<Issuer>>,
    identity: Option<Extension<Identity>>,
) -> Response {
    let agent = match identity.map(|Extension(i)| i) {
        Some(Identity::Agent(a)) => a,
        Some(Identity::Admin(_)) => {
            return refused(
                StatusCode::FORBIDDEN,
                "admins get no agent credentials here: present the agent's own token or JWT",
            );
        }
        None => return refused(StatusCode::UNAUTHORIZED, "not authenticated"),
    };
    let c = &issuer.config;
    let topics: Vec<&str> = c.topics.iter().map(String::as_str).collect();
    let issued = match issuer.bus.get().await {
        Ok(bus) => bus
            .issue_credentials(&agent, c.mode, c.lifetime, &topics)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.0),
    };
    match issued {
        Ok(cred) => (
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            axum::Json(json!({
                "agent": cred.agent,
                "user": cred.user,
                "password": cred.password,
                "expires_at_ms": cred.expires_at_ms,
                "lifetime_secs": c.lifetime.as_secs_f64(),
                "mode": c.mode.name(),
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(agent, error = %e, "could not issue credentials");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("could not issue credentials: {e}"),
            )
        }
    }
}
