//! The error type of the `fabric` command and the exit codes it maps to.

/// Exit codes of the `fabric` command (documented in `--help` and `docs/mcp-and-cli.md`).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A runtime failure: a Redis command failed, the MCP server stopped on an error, …
    pub const RUNTIME: u8 = 1;
    /// A usage error: bad arguments, an invalid agent id, an unreadable or invalid config file
    /// (TLS certificate files included).
    pub const USAGE: u8 = 2;
    /// Redis could not be reached.
    pub const REDIS_UNREACHABLE: u8 = 3;
    /// Nothing found: no inbox for a named agent, no agents at all, dead letters that don't exist.
    pub const NOT_FOUND: u8 = 4;
    /// `fabric send --wait`: no reply arrived in time.
    pub const TIMEOUT: u8 = 5;
    /// Redis refused the credentials (a wrong password or user name in the URL).
    pub const REDIS_AUTH: u8 = 6;
}

/// Everything the `fabric` command can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line makes no sense (the message says why and what to do instead).
    #[error("{0}")]
    Usage(String),
    /// A configuration file (tokens, keys) is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An error from the bus library (Redis unreachable, a command failed, invalid input…).
    #[error(transparent)]
    Bus(#[from] fabric_worker::Error),
    /// An I/O error (reading a file, binding a socket, writing output).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The MCP server failed.
    #[error("MCP server error: {0}")]
    Server(String),
}

impl Error {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => exit::USAGE,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Bus(e) if e.is_auth_failure() => exit::REDIS_AUTH,
            Error::Bus(e) if e.is_connection_error() => exit::REDIS_UNREACHABLE,
            Error::Bus(fabric_worker::Error::Invalid { .. } | fabric_worker::Error::Config(_)) => {
                exit::USAGE
            }
            Error::Bus(fabric_worker::Error::RequestTimeout { .. }) => exit::TIMEOUT,
            _ => exit::RUNTIME,
        }
    }

    /// True when the error means Redis could not be reached.
    pub fn is_connection_error(&self) -> bool {
        self.exit_code() == exit::REDIS_UNREACHABLE
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
