//! The command line: `fabric mcp`, `fabric status`, `fabric send`, `fabric tail`,
//! `fabric pending`, `fabric dead-letters list|requeue|purge`.

// The argument structs' doc comments are clap's help texts, printed in a terminal as
// written: `<agent>` and bare URLs are meant literally there.
#![allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]

mod acl;
mod dead;
mod mcp;
mod pause;
mod pending;
mod router;
mod schedules;
mod send;
mod setup;
mod status;
mod tail;
mod workers;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fabric_worker::Bus;
use fabric_worker::bus::{DEFAULT_REDIS_URL, Mode};

pub use acl::{AclCommand, AclGenerateArgs, AclRotateArgs};

use crate::error::{Error, Result};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime error (a Redis command failed, the server stopped on an error)
  2  usage error (bad arguments, invalid agent id, unreadable config file)
  3  Redis unreachable
  4  not found (no inbox for the agent, no agents at all, unknown dead-letter ids)
  5  no reply in time (send --wait)
  6  Redis refused the credentials (wrong user name or password in the URL)

With --json, an error is printed as JSON on stdout too:
  {\"error\": {\"message\": \"...\", \"exit_code\": 4}}

Environment:
  REDIS_URL             Redis to use (default redis://127.0.0.1:6379; rediss://host:port for TLS)
  FABRIC_MODE           direct (default) or secure: how messages travel (see docs/security.md)
  FABRIC_AGENT          your agent id (mcp --agent, send --from)
  FABRIC_TLS_CA_FILE    CA certificate(s) (PEM) the server's TLS certificate must chain to
                        (default: the public root certificates built in)
  FABRIC_TLS_CERT_FILE  client certificate (PEM), for servers that require one (mutual TLS)
  FABRIC_TLS_KEY_FILE   its private key (PEM)
  FABRIC_CLUSTER, FABRIC_RESPONSE_TIMEOUT_MS
                        as for the library (README, Configuration)
  RUST_LOG              log filter for messages on stderr (default warn)";

/// The `fabric` command: an MCP server that exposes the agent message bus to AI agents,
/// and operator commands to see and steer agent inboxes.
#[derive(Debug, Parser)]
#[command(
    name = "fabric",
    version,
    about = "MCP server and operator CLI for the Fabric agent message bus (Redis Streams)",
    long_about = "MCP server and operator CLI for the Fabric agent message bus.\n\n\
Every agent has a durable inbox, the Redis stream agent:<id>:inbox, read by its workers \
through a consumer group (<id>_workers). `fabric mcp` lets AI agents (Claude, Codex, local LLM \
agents) send, receive and acknowledge messages through MCP tools; the other commands let an \
operator watch and steer the inboxes from a terminal.",
    after_help = EXIT_CODES,
    after_long_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Redis server URL (a password in it is masked in all output)
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = DEFAULT_REDIS_URL,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis_url: String,

    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,

    /// How messages travel: direct (into inboxes) or secure (through outboxes and the router)
    #[arg(long, global = true, env = "FABRIC_MODE", default_value = "direct", value_parser = parse_mode, value_name = "MODE")]
    pub mode: Mode,

    /// The command to run
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the MCP server (stdio by default, or Streamable HTTP with --http)
    #[command(long_about = MCP_LONG_ABOUT, after_help = MCP_EXAMPLES)]
    Mcp(McpArgs),
    /// Show inboxes: queue depth, pending, consumers and their idle time, oldest pending age, dead letters
    #[command(
        after_help = "Examples:\n  fabric status                 # every agent with an inbox (found with SCAN)\n  fabric status percy coder     # just these\n  fabric status --json | jq '.[].queue_depth'"
    )]
    Status(StatusArgs),
    /// Show the worker processes serving each agent: host, pid, uptime, last seen, what they handle, live or gone
    #[command(
        after_help = "Examples:\n  fabric workers                # every agent with an inbox\n  fabric workers percy          # just percy's\n  fabric workers --json | jq '.[] | select(.state == \"gone\")'"
    )]
    Workers(WorkersArgs),
    /// Pause an agent: its workers start no new messages (within a second) until resumed
    #[command(
        after_help = "Messages keep arriving and wait; handlers already running finish. Lasts across worker restarts.\n\nExample:\n  fabric pause percy && fabric status percy   # shows percy (paused)"
    )]
    Pause(AgentArgs),
    /// Resume a paused agent: its workers read again within a second
    Resume(AgentArgs),
    /// Send a message to an agent's inbox (optionally wait for the reply)
    #[command(
        after_help = "Examples:\n  fabric send percy '{\"task_type\":\"code_review\",\"pr_id\":\"123\"}' --from coder\n  fabric send percy @task.json --type task --priority high\n  echo '{\"q\":\"ping\"}' | fabric send percy - --wait 30"
    )]
    Send(SendArgs),
    /// Watch an inbox live without consuming anything (Ctrl-C to stop)
    #[command(
        after_help = "Examples:\n  fabric tail percy                  # new messages as they arrive\n  fabric tail percy --from-start     # everything still in the stream, then new ones\n  fabric tail percy --json --limit 5 # five messages as JSON lines, then exit"
    )]
    Tail(TailArgs),
    /// List messages delivered to a consumer and not yet acknowledged
    #[command(after_help = "Example:\n  fabric pending percy --group percy_workers")]
    Pending(PendingArgs),
    /// Inspect, requeue or purge dead letters (messages that failed for good)
    #[command(subcommand, name = "dead-letters", visible_alias = "dlq")]
    DeadLetters(DeadLetterCommand),
    /// Load the function library and register agents (an admin step; safe to run again)
    #[command(
        after_help = "Examples:\n  fabric setup                          # load (or upgrade) the function library\n  fabric setup --agent percy --agent coder   # and create their inboxes and outboxes"
    )]
    Setup(SetupArgs),
    /// Write Redis ACL files for the agents and roles, and rotate passwords on a live server
    #[command(subcommand)]
    Acl(AclCommand),
    /// Run the secure-mode router: deliver outbox entries, stamping the authenticated sender
    #[command(
        after_help = "Examples:\n  fabric router                                      # everyone may send to everyone\n  fabric router --allow coder:percy --allow percy:coder   # only these pairs"
    )]
    Router(RouterArgs),
    /// Show the periodic tasks of each agent: name, message type, spec, next run, last run
    #[command(
        after_help = "Examples:\n  fabric schedules              # every agent with an inbox\n  fabric schedules memory       # just memory's\n  fabric schedules --json | jq '.[] | {name, next_run_ms, last_ms}'"
    )]
    Schedules(SchedulesArgs),
}

fn parse_mode(s: &str) -> std::result::Result<Mode, String> {
    s.parse::<Mode>().map_err(|e| e.to_string())
}

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

const MCP_LONG_ABOUT: &str = "\
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

const MCP_EXAMPLES: &str = "\
Examples:
  fabric mcp --agent coder                               # stdio, for Claude Code / Desktop
  claude mcp add --transport stdio fabric --env REDIS_URL=redis://127.0.0.1:6379 -- fabric mcp --agent coder
  fabric mcp --http 127.0.0.1:8765 --tokens-file tokens.json
  fabric mcp --http --jwt-hs256-secret-file secret.key --jwt-issuer https://auth.example

tokens.json maps each token to an agent id or \"admin\":
  {\"3f1c…(32+ random chars)\": \"coder\", \"9a7d…\": \"admin\"}";

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

    /// HTTP: externally visible base URL, used in the resource metadata (default http://ADDR)
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// HTTP: authorization server to advertise in the resource metadata; repeatable
    #[arg(long = "authorization-server", value_name = "URL")]
    pub authorization_servers: Vec<String>,
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
pub struct PendingArgs {
    /// The agent whose inbox to inspect
    #[arg(value_name = "AGENT")]
    pub agent: String,

    /// Consumer group (default <agent>_workers)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// At most this many entries, oldest first
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub count: usize,
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

impl Cli {
    /// The Redis URL to use (an empty value means the default).
    pub fn redis_url(&self) -> String {
        let u = self.redis_url.trim();
        if u.is_empty() {
            DEFAULT_REDIS_URL.to_owned()
        } else {
            u.to_owned()
        }
    }
}

/// Connects the bus (one `PING`), with short timeouts suited to a terminal. The bus settings
/// of the environment (`FABRIC_TLS_CA_FILE`, `FABRIC_TLS_CERT_FILE`, `FABRIC_TLS_KEY_FILE`,
/// `FABRIC_CLUSTER`, …) are read as `BusBuilder::from_env` does; the command line's win.
pub(crate) async fn connect(url: &str, mode: Mode) -> Result<Bus> {
    Ok(Bus::builder(url)
        .from_env()?
        .notify(true)
        .mode(mode)
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await?)
}

pub(crate) fn validate_agent(agent: &str) -> Result<()> {
    fabric_worker::keys::validate_agent(agent).map_err(|e| Error::Usage(e.to_string()))
}

/// Where a command connects, and how messages travel there.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The Redis URL.
    pub(crate) url: String,
    /// Direct or secure.
    pub(crate) mode: Mode,
}

impl Target {
    /// The bus for this target.
    pub(crate) async fn connect(&self) -> Result<Bus> {
        connect(&self.url, self.mode).await
    }
}

type BoxedRun = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Runs the command line.
pub fn run(cli: Cli) -> BoxedRun {
    // Each command's future is boxed: the MCP server's is deep enough to overflow the
    // compiler's layout recursion limit when nested inline.
    let url = cli.redis_url();
    let json = cli.json;
    let mode = cli.mode;
    let at = Target { url, mode };
    match cli.command {
        Command::Mcp(args) => Box::pin(async move { mcp::run(&at, args).await }),
        Command::Status(args) => Box::pin(async move { status::run(&at, json, args).await }),
        Command::Workers(args) => Box::pin(async move { workers::run(&at, json, args).await }),
        Command::Pause(args) => Box::pin(async move { pause::run(&at, json, args, true).await }),
        Command::Resume(args) => Box::pin(async move { pause::run(&at, json, args, false).await }),
        Command::Send(args) => Box::pin(async move { send::run(&at, json, args).await }),
        Command::Tail(args) => Box::pin(async move { tail::run(&at, json, args).await }),
        Command::Pending(args) => Box::pin(async move { pending::run(&at, json, args).await }),
        Command::DeadLetters(cmd) => Box::pin(async move { dead::run(&at, json, cmd).await }),
        Command::Setup(args) => Box::pin(async move { setup::run(&at, json, args).await }),
        Command::Router(args) => Box::pin(async move { router::run(&at, args).await }),
        Command::Acl(cmd) => Box::pin(async move { acl::run(&at, cmd).await }),
        Command::Schedules(args) => Box::pin(async move { schedules::run(&at, json, args).await }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_common_lines() {
        let c = Cli::try_parse_from(["fabric", "status", "percy", "--json"]).unwrap();
        assert!(c.json);
        let c = Cli::try_parse_from(["fabric", "mcp", "--http"]).unwrap();
        let Command::Mcp(m) = c.command else { panic!() };
        assert_eq!(m.http.as_deref(), Some("127.0.0.1:8765"));
        let c = Cli::try_parse_from(["fabric", "mcp", "--admin"]).unwrap();
        let Command::Mcp(m) = c.command else { panic!() };
        assert_eq!(m.admin, Some(true));
        assert!(Cli::try_parse_from(["fabric", "dead-letters", "requeue", "percy"]).is_err());
        assert!(Cli::try_parse_from(["fabric", "dlq", "requeue", "percy", "--all"]).is_ok());
        let c = Cli::try_parse_from(["fabric", "send", "percy", "{}", "--wait"]).unwrap();
        let Command::Send(s) = c.command else {
            panic!()
        };
        assert_eq!(s.wait, Some(30.0));
    }
}
