//! Error types.

use std::time::Duration;

use crate::receipt::{FailedSend, SendReceipt};

/// The text of the error a [`Bus`](crate::Bus) with no Redis behind it (one made by
/// `fabric_worker::testing`) fails every command with.
pub(crate) const NOT_CONNECTED: &str = "no Redis behind this Bus";

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to the bus or running a worker.
///
/// Every variant says what failed, with the offending value, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis server could not be reached (or refused the credentials).
    #[error(
        "cannot connect to Redis at {url}: {source}; {}",
        connect_hint(url, source)
    )]
    Connect {
        /// The URL with any password masked.
        url: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// A TLS connection to Redis (`rediss://`) failed: the server's certificate was not
    /// accepted, or the server refused this client (e.g. no client certificate where one is
    /// required).
    #[error("TLS connection to Redis at {url} failed: {source}; {hint}")]
    Tls {
        /// The URL with any password masked.
        url: String,
        /// What the failure means and what to do about it.
        hint: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// A Redis command failed.
    #[error("redis {command} on {key} failed: {source}")]
    Redis {
        /// The command (e.g. `XADD`).
        command: &'static str,
        /// The key (or channel) it was sent for.
        key: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis user may not run this command on this key (ACL `NOPERM`).
    #[error(
        "redis {command} on {key} refused by the server's ACL: this Redis user has no permission for it (per-agent users may read and consume only their own agent:<id>:* keys; see fabric_worker::acl)"
    )]
    PermissionDenied {
        /// The command.
        command: &'static str,
        /// The key (or channel).
        key: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// A value supplied by the caller is not acceptable (an agent id, a group, a message type…).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of value (e.g. `agent id`).
        what: &'static str,
        /// The rejected value (truncated to 200 characters).
        value: String,
        /// The rule it broke.
        reason: String,
    },
    /// A message could not be encoded as JSON.
    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A reply from Redis, or an entry in a stream, did not have the expected shape.
    #[error("unexpected data from Redis ({context}): {detail}")]
    Protocol {
        /// Where it happened.
        context: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// `Bus::request` got no reply in time.
    #[error(
        "no reply to request {message_id} (sent to {to_agent}) within {timeout:?}; is a worker for {to_agent} running? the request stays in its inbox"
    )]
    RequestTimeout {
        /// The request message id.
        message_id: String,
        /// Where the request went.
        to_agent: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The reply listener stopped before the reply came (the bus is being dropped).
    #[error(
        "the reply listener of this Bus stopped before the reply to request {message_id} arrived (the Bus is shutting down); the request stays queued: send it again from a live Bus if the answer is still needed"
    )]
    ReplyListenerStopped {
        /// The request message id.
        message_id: String,
    },
    /// Some messages of a batch were queued and Redis refused the others.
    #[error(
        "{} of {} messages were queued, and Redis refused {}: {}; send only the refused ones again (the others are queued, resending them would duplicate them)",
        queued.len(),
        queued.len() + failed.len(),
        failed.len(),
        failed.iter().take(3).map(|f| format!("{} to {}: {}", f.message_id, f.to, f.error)).collect::<Vec<_>>().join("; ")
    )]
    PartlySent {
        /// The messages that are in their inbox.
        queued: Vec<SendReceipt>,
        /// The messages that are not.
        failed: Vec<FailedSend>,
    },
    /// The messages are queued on the primary, but fewer replicas than
    /// [`BusBuilder::wait_for_replicas`](crate::bus::BusBuilder::wait_for_replicas) asked for
    /// confirmed them in time: they are delivered unless that primary fails before its
    /// replication catches up. Sending again with [`Bus::send_once`](crate::Bus::send_once)
    /// is safe; a plain send again would deliver them twice.
    #[error(
        "{} message(s) queued, but only {acked} of the {wanted} replica(s) asked for confirmed them in time (WAIT): they are lost if the primary fails now; check the replicas (INFO replication), or resend with send_once",
        queued.len()
    )]
    Unreplicated {
        /// The messages, queued on the primary.
        queued: Vec<SendReceipt>,
        /// Replicas that confirmed (the least over the primaries written to).
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// The fabric function library is not loaded (or is older than this code needs), and
    /// this Redis user may not load it.
    #[error(
        "the fabric function library {} is not loaded on this Redis (this version of fabric-worker needs version {needed}), and this Redis user may not load it; run `fabric setup` as an admin (or connect once as a user allowed FUNCTION LOAD)",
        found.map(|v| format!("is at version {v}; it")).unwrap_or_default()
    )]
    LibraryMissing {
        /// The version loaded, if any.
        found: Option<i64>,
        /// The version needed.
        needed: i64,
    },
    /// The bus has no Redis behind it: it is the stand-in `fabric_worker::testing` gives
    /// handlers.
    #[error(
        "{operation} cannot run: this Bus has no Redis behind it (it is the one fabric_worker::testing gives handlers); pass a connected Bus to TestWorker::bus to let handlers under test use Redis"
    )]
    NotConnected {
        /// The command or operation that was attempted.
        operation: &'static str,
    },
    /// The handler of a request failed for good (its message was dead-lettered).
    #[error("request {message_id} failed in {to_agent}'s handler: {error}")]
    RequestFailed {
        /// The request message id.
        message_id: String,
        /// Where the request went.
        to_agent: String,
        /// The error text the handler side reported.
        error: String,
    },
    /// No `#[handler]` functions are linked into this binary for the agents served.
    #[error(
        "no handlers registered for agent {agent:?}; annotate async fns with #[handler(message_type = \"...\")] (handlers living in another crate must be named by the binary, e.g. `use my_handlers as _;`)"
    )]
    NoHandlers {
        /// The agent with no handlers.
        agent: String,
    },
    /// Two handlers claim the same agent and message type.
    #[error(
        "two handlers for message_type {message_type:?}{}: {first} and {second}; remove one or restrict it with `agent = \"...\"`",
        agent.as_deref().map(|a| format!(" of agent {a:?}")).unwrap_or_default()
    )]
    DuplicateHandler {
        /// The message type.
        message_type: String,
        /// The agent restriction, if any.
        agent: Option<String>,
        /// Location of the first handler.
        first: String,
        /// Location of the second handler.
        second: String,
    },
    /// The configuration is inconsistent (the message says which setting).
    #[error("configuration error: {0}")]
    Config(String),
    /// Short-lived credentials could not be obtained.
    #[error("cannot get Redis credentials from {url}: {why}; check the URL and the agent's token")]
    Credentials {
        /// Where they were asked for.
        url: String,
        /// What went wrong.
        why: String,
    },
    /// An I/O error while installing signal handlers or similar.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics address (`metrics_addr`, `FABRIC_METRICS_ADDR`) cannot be listened on.
    #[error("cannot serve metrics on {addr}: {source}; {}", listen_hint(source))]
    MetricsListen {
        /// The address asked for.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A workflow failed, did not finish in time, is unknown, or cannot run here.
    #[error(transparent)]
    Workflow(Box<crate::workflow_error::WorkflowError>),
}

/// What to do about a metrics address that cannot be listened on.
fn listen_hint(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the address is already in use (another worker on this port?): choose another FABRIC_METRICS_ADDR port, or port 0 for any free one"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "this machine has no such address: use 127.0.0.1:PORT, or 0.0.0.0:PORT to listen on every interface"
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges): choose a port above 1024"
        }
        _ => "check FABRIC_METRICS_ADDR / metrics_addr",
    }
}

/// What to do about a connection that could not be made.
fn connect_hint(url: &str, source: &redis::RedisError) -> &'static str {
    // A TLS-only port resets a plain connection as soon as it reads its first bytes.
    let reset =
        source.is_connection_dropped() && !source.is_connection_refusal() && !source.is_timeout();
    if is_auth_failure(source) {
        "the server refused the credentials: check the user name and password in the URL (redis://user:password@host:port) or the agent's credentials (FABRIC_PASSWORD, FABRIC_CREDENTIALS_URL); waiting will not help"
    } else if reset && url.starts_with("redis://") {
        "the server closed the connection at once: if this port only accepts TLS, use a rediss:// URL (and FABRIC_TLS_CA_FILE for a private CA)"
    } else {
        "start redis-server or set REDIS_URL to a reachable server (e.g. redis://127.0.0.1:6379)"
    }
}

/// The message of a caught panic (a handler's, a hook's): its `&str` or `String` payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// Whether Redis refused this client's credentials (a wrong password or user, or none
/// given where one is required).
pub(crate) fn is_auth_failure(source: &redis::RedisError) -> bool {
    source.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(source.code(), Some("NOAUTH" | "WRONGPASS"))
}

impl Error {
    pub(crate) fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        let mut value = value.to_owned();
        if value.len() > 200 {
            let mut cut = 200;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push('…');
        }
        Error::Invalid {
            what,
            value,
            reason: reason.into(),
        }
    }

    /// The same error, naming the rejected value `what` (e.g. `from_agent` instead of `agent id`).
    pub(crate) fn renamed(self, what: &'static str) -> Self {
        match self {
            Error::Invalid { value, reason, .. } => Error::Invalid {
                what,
                value,
                reason,
            },
            other => other,
        }
    }

    pub(crate) fn redis(command: &'static str, key: &str, source: redis::RedisError) -> Self {
        if source.kind() == redis::ErrorKind::Client && source.to_string().contains(NOT_CONNECTED) {
            return Error::NotConnected { operation: command };
        }
        // NOPERM, or a transaction Redis aborted because a queued command was NOPERM.
        if source.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
            || source.to_string().contains("error: NoPerm")
        {
            return Error::PermissionDenied {
                command,
                key: key.to_owned(),
                source,
            };
        }
        Error::Redis {
            command,
            key: key.to_owned(),
            source,
        }
    }

    pub(crate) fn protocol(context: &'static str, detail: impl Into<String>) -> Self {
        Error::Protocol {
            context,
            detail: detail.into(),
        }
    }

    /// True when Redis refused this client's credentials (a wrong password or user name):
    /// trying again will not help, the credentials must change.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Redis { source, .. } => is_auth_failure(source),
            _ => false,
        }
    }

    /// True when the error means Redis could not be reached or is not ready yet
    /// (connection refused, reset or timed out; the server still loading its data set;
    /// a cluster failing over): trying again later may work.
    pub fn is_connection_error(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        match self {
            Error::Connect { source, .. } => !is_auth_failure(source),
            Error::Tls { .. } => true,
            Error::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || source.is_timeout()
                    || source.is_unrecoverable_error()
                    || source.is_cluster_error()
                    || matches!(
                        source.kind(),
                        ErrorKind::Server(
                            ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown
                        )
                    )
            }
            _ => false,
        }
    }
}

impl From<crate::workflow_error::WorkflowError> for Error {
    fn from(e: crate::workflow_error::WorkflowError) -> Error {
        Error::Workflow(Box::new(e))
    }
}
