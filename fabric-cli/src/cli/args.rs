//! The arguments of the `fabric` subcommands (everything but the top-level [`Cli`](super::Cli)
//! and its [`Command`](super::Command) list).

use std::path::PathBuf;

use clap::{Args, Subcommand};
/// `fabric setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Register this agent: its inbox (with its group) and its outbox (with the routers' group); repeatable
    #[arg(long = "agent", value_name = "ID")]
    pub agents: Vec<String>,
}

/// `fabric router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// Only let FROM send to TO (e.g. coder:percy); repeatable. Without any, everyone may send to everyone
    #[arg(long = "allow", value_name = "FROM:TO")]
    pub allow: Vec<String>,

    /// Reject larger outbox entries (reason too_large)
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_entry_bytes: usize,

    /// How long a delivered message id is remembered against double delivery
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub dedup_window_secs: u64,

    /// Take over entries another router left unacknowledged this long
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub reclaim_idle_ms: u64,
}

pub(super) const MCP_LONG_ABOUT: &str = "\
Run the MCP server that exposes the bus to AI agents.

Tools: fabric_message_send, fabric_message_receive, fabric_message_acknowledge, \
fabric_message_publish, fabric_message_queue_status, fabric_message_request, \
fabric_message_peek and fabric_agents. (Calls using the dotted names, e.g. \
fabric.message.send, work too.) Every session of an agent receives through the group \
<agent>_mcp as the consumer <agent>-mcp: what one received and did not acknowledge \
within --visibility-timeout is received again, by it or a later session.

Over stdio (the default) the caller's identity comes from --agent / FABRIC_AGENT, or \
--admin. Over HTTP (--http) every request needs a bearer token: static per-agent tokens \
(--tokens-file) and/or JWTs whose `sub` is the agent id (--jwt-hs256-secret-file or \
--jwt-rs256-public-key-file). An agent may read, acknowledge and inspect its own inbox \
only and always sends as itself; an admin may act for any agent.

Redis is connected at the first tool call: the server starts even while Redis is down \
and each call then reports that Redis is unreachable.";

pub(super) const MCP_EXAMPLES: &str = "\
Examples:
  fabric mcp --agent coder                               # stdio, for Claude Code / Desktop
  claude mcp add --transport stdio fabric --env REDIS_URL=redis://127.0.0.1:6379 -- fabric mcp --agent coder
  fabric mcp --http 127.0.0.1:8765 --tokens-file tokens.json
  fabric mcp --http --jwt-hs256-secret-file secret.key --jwt-issuer https://auth.example

tokens.json maps each token to an agent id or \"admin\":
  {\"3f1c…(32+ random chars)\": \"coder\", \"9a7d…\": \"admin\"}";

pub(super) const DASHBOARD_EXAMPLES: &str = "\
Open the printed address in a browser. On loopback (the default) no token is needed; beyond \
it, pass --allow-remote with --allow-host, TLS in front (--public-url https://…) and \
--tokens-file: the page then asks for a token (an \"admin\" token sees every agent, an \
agent's token its own inbox).

Examples:
  fabric dashboard                                   # http://127.0.0.1:8787/
  fabric dashboard --listen 127.0.0.1:9000 --sample-interval-ms 1000
  fabric dashboard --listen 0.0.0.0:8787 --allow-remote --allow-host ops.example.com \\
      --public-url https://ops.example.com --tokens-file tokens.json";

/// `fabric mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// Serve Streamable HTTP on this address instead of stdio (loopback only unless --allow-remote)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::mcp::http::DEFAULT_HTTP_ADDR)]
    pub http: Option<String>,

    /// stdio: the agent id every call acts as
    #[arg(long, env = "FABRIC_AGENT", value_name = "ID")]
    pub agent: Option<String>,

    /// stdio: act as an admin (may act for any agent; --agent then only sets the default sender)
    #[arg(long, env = "FABRIC_ADMIN", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    pub admin: Option<bool>,

    /// Seconds a received message may stay unacknowledged before fabric_message_receive gives it out again
    #[arg(long, env = "FABRIC_VISIBILITY_TIMEOUT_SECS", default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub visibility_timeout: u64,

    /// Topic pattern agents may publish on (admins: any channel); repeatable (default analytics.*, system.*, shared:*)
    #[arg(long = "topic", value_name = "PATTERN")]
    pub topics: Vec<String>,

    /// Blocking receives one identity may have waiting at once (each holds a Redis connection)
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_blocking_receives_per_identity: u32,

    /// Blocking receives waiting at once, all identities together
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_blocking_receives: u32,

    /// Tool calls per second one identity may make (bursts of twice as many)
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub calls_per_second: u32,

    /// Who may call, and from where
    #[command(flatten)]
    pub protection: HttpProtectionArgs,

    /// HTTP: serve POST /credentials, issuing short-lived Redis users to agents, as this admin (its Redis URL)
    #[arg(
        long,
        env = "FABRIC_CREDENTIALS_ADMIN_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub issue_credentials_as: Option<String>,

    /// HTTP: how long issued credentials work, in seconds
    #[arg(long, default_value_t = 900, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub credentials_lifetime: u64,

    /// HTTP: authorization server to advertise in the resource metadata; repeatable
    #[arg(long = "authorization-server", value_name = "URL")]
    pub authorization_servers: Vec<String>,
}

/// How an HTTP server of `fabric` (`mcp --http`, `dashboard`) is protected: bearer tokens
/// or JWTs, allowed `Host`s and `Origin`s, and what it takes to listen beyond loopback.
#[derive(Debug, Args)]
pub struct HttpProtectionArgs {
    /// HTTP: JSON file mapping bearer tokens to agent ids or "admin"
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,

    /// HTTP: accept HS256 JWTs signed with the secret in this file (sub = agent id)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "jwt_rs256_public_key_file"
    )]
    pub jwt_hs256_secret_file: Option<PathBuf>,

    /// HTTP: accept RS256 JWTs verified with this PEM public key (sub = agent id)
    #[arg(long, value_name = "FILE")]
    pub jwt_rs256_public_key_file: Option<PathBuf>,

    /// HTTP: require this JWT issuer (iss); also advertised as the authorization server
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// HTTP: require this JWT audience (aud); required with JWTs unless --jwt-any-audience
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// HTTP: accept JWTs minted for any audience (a token for another service then works here too)
    #[arg(long, conflicts_with = "jwt_audience")]
    pub jwt_any_audience: bool,

    /// HTTP: agent ids (token values or JWT subjects) that are admins; repeatable
    #[arg(long = "admin-agent", value_name = "ID")]
    pub admin_agents: Vec<String>,

    /// HTTP: allow this browser Origin besides loopback ones (e.g. https://app.example.com); repeatable
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,

    /// HTTP: allow this Host header value besides loopback ones; repeatable
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,

    /// HTTP: allow listening on a non-loopback address (with TLS in front: an https --public-url, or --insecure-http)
    #[arg(long)]
    pub allow_remote: bool,

    /// HTTP: allow a non-loopback address without TLS in front (bearer tokens then cross the network in clear)
    #[arg(long)]
    pub insecure_http: bool,

    /// HTTP: externally visible base URL, e.g. https://fabric.example.com behind a TLS proxy (default http://ADDR)
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

/// `fabric dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to serve the page on (loopback only unless --allow-remote)
    #[arg(long, default_value = crate::dashboard::DEFAULT_ADDR, value_name = "ADDR")]
    pub listen: String,

    /// How often the inboxes are sampled for the live figures and charts, in milliseconds
    #[arg(long, default_value_t = 2000, value_name = "MS", value_parser = clap::value_parser!(u64).range(200..=60_000))]
    pub sample_interval_ms: u64,

    /// Minutes of history the charts keep
    #[arg(long, default_value_t = 10, value_name = "MINUTES", value_parser = clap::value_parser!(u64).range(1..=240))]
    pub history_minutes: u64,

    /// Who may look and act, and from where (needed beyond loopback)
    #[command(flatten)]
    pub protection: HttpProtectionArgs,
}

/// `fabric status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Agents to show (default: every agent with an inbox)
    #[arg(value_name = "AGENT")]
    pub agents: Vec<String>,

    /// Consumer group the figures are for (default <agent>_workers)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Refresh the table until Ctrl-C (on a terminal the screen is redrawn; on a pipe each snapshot follows the last, with --json one JSON line each)
    #[arg(long, short = 'w')]
    pub watch: bool,

    /// With --watch: time between snapshots (e.g. 2s, 500ms, 1m; a bare number is seconds)
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_interval, requires = "watch")]
    pub interval: std::time::Duration,
}

/// A `--interval`: `500ms`, `2s`, `1.5s`, `1m`, or a bare number of seconds; 100 ms to 1 h.
pub(crate) fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (num, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (t, 1000.0)
    };
    let ms = num
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * unit_ms)
        .ok_or_else(|| format!("{s:?} is not a duration; expected e.g. 2s, 500ms or 1m"))?;
    if !(100.0..=3_600_000.0).contains(&ms) {
        return Err(format!("{s:?} is out of range: from 100ms to 60m"));
    }
    Ok(std::time::Duration::from_secs_f64(ms / 1000.0))
}

/// `fabric show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The agent
    #[arg(value_name = "AGENT")]
    pub agent: String,

    /// A stream id (from tail or pending; urgent/ID for a lane), a dead-letter id, a retry's id, or a message id (msg:…)
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `fabric retries …`.
#[derive(Debug, Subcommand)]
pub enum RetriesCommand {
    /// List an agent's failed messages waiting for their next attempt, soonest first
    #[command(
        after_help = "Examples:\n  fabric retries list percy\n  fabric retries list percy --json | jq '.[] | {id, due_in_ms, last_error}'"
    )]
    List {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// At most this many
        #[arg(long, default_value_t = 100, value_name = "N")]
        count: usize,
    },
    /// Run one retry now instead of at its due time (it keeps its attempt number)
    #[command(visible_alias = "now")]
    Run {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// The retry's id (the ID column of `retries list`)
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Delete one retry for good: the message is not attempted again
    Delete {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// The retry's id (the ID column of `retries list`)
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `fabric workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Agents to show (default: every agent with an inbox)
    #[arg(value_name = "AGENT")]
    pub agents: Vec<String>,
}

/// `fabric pause` and `fabric resume`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent
    #[arg(value_name = "AGENT")]
    pub agent: String,
}

/// `fabric schedules`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    /// Agents to show (default: every agent with an inbox)
    #[arg(value_name = "AGENT")]
    pub agents: Vec<String>,
}

/// `fabric send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipient agent id
    #[arg(value_name = "TO")]
    pub to: String,

    /// Payload: a JSON object, `@FILE` to read it from a file, or `-` for stdin (default {})
    #[arg(value_name = "PAYLOAD")]
    pub payload: Option<String>,

    /// Sender agent id
    #[arg(
        long,
        env = "FABRIC_AGENT",
        default_value = "operator",
        value_name = "ID"
    )]
    pub from: String,

    /// Message type (what the recipient's handler dispatches on)
    #[arg(long = "type", default_value = "task", value_name = "TYPE")]
    pub message_type: String,

    /// Task type: sends a task whose payload is {"task_type": TASK_TYPE, …PAYLOAD}
    #[arg(long, value_name = "TASK_TYPE")]
    pub task_type: Option<String>,

    /// Priority: low, normal, high, urgent, or 1-4
    #[arg(long, default_value = "normal", value_name = "PRIORITY")]
    pub priority: String,

    /// Stream key for the reply (a task defaults to agent:<from>:results)
    #[arg(long, value_name = "STREAM")]
    pub reply_to: Option<String>,

    /// Correlation id (default: a fresh uuid)
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,

    /// A header to carry beside the envelope, NAME=VALUE; repeatable
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,

    /// Send once per KEY: a second send with the same key within a day queues nothing (status duplicate)
    #[arg(long, value_name = "KEY", conflicts_with = "wait")]
    pub idempotency_key: Option<String>,
    /// Deliver in this many seconds instead of now (e.g. 90, 2.5): the message waits in the
    /// recipient's schedule, in Redis, until then.
    #[arg(long = "in", value_name = "SECONDS", conflicts_with_all = ["at", "wait", "idempotency_key"])]
    pub delay: Option<f64>,
    /// Deliver at this time instead of now: RFC 3339 (2026-11-28T15:00:00Z, or with an
    /// offset), or UTC without one (2026-11-28T15:00:00).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["wait", "idempotency_key"])]
    pub at: Option<String>,

    /// Wait up to SECONDS for the reply and print it (exit code 5 if none comes)
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "30")]
    pub wait: Option<f64>,
}

/// `fabric tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The agent whose inbox to watch
    #[arg(value_name = "AGENT")]
    pub agent: String,

    /// Start with the entries already in the stream (default: only new ones)
    #[arg(long, conflicts_with = "after")]
    pub from_start: bool,

    /// Start after this stream id
    #[arg(long, value_name = "STREAM_ID")]
    pub after: Option<String>,

    /// Exit after printing this many messages
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,

    /// Print whole payloads (default: one line, cut at 100 characters)
    #[arg(long)]
    pub full: bool,
}

/// `fabric pending`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PendingArgs {
    /// Move or acknowledge one pending entry (without one: list them)
    #[command(subcommand)]
    pub action: Option<PendingCommand>,

    /// The agent whose inbox to inspect
    #[arg(value_name = "AGENT", required = true)]
    pub agent: Option<String>,

    /// Consumer group (default <agent>_workers)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// At most this many entries, oldest first
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub count: usize,
}

/// `fabric pending claim|ack`.
#[derive(Debug, Subcommand)]
pub enum PendingCommand {
    /// Give a stuck pending entry to another consumer (XCLAIM; its delivery count stays)
    #[command(
        after_help = "Example:\n  fabric pending claim percy 1732565756123-0 --to percy-spare"
    )]
    Claim {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// The entry's stream id (the STREAM ID column of `pending`; urgent/ID for a lane)
        #[arg(value_name = "STREAM_ID")]
        id: String,
        /// The consumer to give it to
        #[arg(long, value_name = "CONSUMER")]
        to: String,
        /// Consumer group (default <agent>_workers)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// Acknowledge a stuck pending entry without handling it: the message will NOT be processed
    #[command(
        after_help = "Without --yes, asks for confirmation on a terminal and refuses otherwise.\n\nExample:\n  fabric pending ack percy 1732565756123-0 --yes"
    )]
    Ack {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// The entry's stream id (the STREAM ID column of `pending`; urgent/ID for a lane)
        #[arg(value_name = "STREAM_ID")]
        id: String,
        /// Consumer group (default <agent>_workers)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Confirm that the message will not be processed
        #[arg(long)]
        yes: bool,
    },
}

/// `fabric dead-letters …`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List an agent's dead letters, oldest first
    #[command(
        after_help = "Examples:\n  fabric dead-letters list percy\n  fabric --mode secure dead-letters list percy --outbox   # what the router refused to deliver"
    )]
    List {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// At most this many
        #[arg(long, default_value_t = 100, value_name = "N")]
        count: usize,
        /// The agent's outbox instead: what the secure-mode router rejected, with the reason
        #[arg(long)]
        outbox: bool,
    },
    /// Put dead letters back into the inbox as fresh first attempts
    #[command(
        after_help = "Examples:\n  fabric dead-letters requeue percy 1732565756123-0\n  fabric dead-letters requeue percy --all"
    )]
    Requeue {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// Dead-letter ids (the DEAD ID column of `list`)
        #[arg(
            value_name = "DEAD_ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<String>,
        /// Requeue all of them
        #[arg(long)]
        all: bool,
    },
    /// Put one dead letter back into the inbox as a fresh first attempt
    #[command(after_help = "Example:\n  fabric dead-letters retry percy 1732565756123-0")]
    Retry {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// The dead-letter id (the DEAD ID column of `list`)
        #[arg(value_name = "DEAD_ID")]
        id: String,
    },
    /// Delete one dead letter for good
    #[command(after_help = "Example:\n  fabric dead-letters delete percy 1732565756123-0")]
    Delete {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// The dead-letter id (the DEAD ID column of `list`)
        #[arg(value_name = "DEAD_ID")]
        id: String,
    },
    /// Delete all of an agent's dead letters for good
    Purge {
        /// The agent
        #[arg(value_name = "AGENT")]
        agent: String,
        /// Confirm the deletion (required)
        #[arg(long)]
        yes: bool,
    },
}
