//! The command line: `fabric mcp`, `fabric status`, `fabric send`, `fabric tail`,
//! `fabric pending [claim|ack]`, `fabric show`, `fabric retries list|run|delete`,
//! `fabric dead-letters list|requeue|retry|delete|purge`, …

// The argument structs' doc comments are clap's help texts, printed in a terminal as
// written: `<agent>` and bare URLs are meant literally there.
#![allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]

mod acl;
mod args;
mod dashboard;
mod dead;
mod mcp;
mod pause;
mod pending;
mod progress;
mod retries;
mod router;
mod schedules;
mod send;
mod setup;
mod show;
mod status;
mod tail;
mod url;
mod workers;

use clap::{Parser, Subcommand};
use fabric_worker::Bus;
use fabric_worker::bus::{DEFAULT_REDIS_URL, Mode};

pub use acl::{AclCommand, AclGenerateArgs, AclRotateArgs};
pub use args::*;

use crate::error::{Error, Result};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime error (a Redis command failed, the server stopped on an error)
  2  usage error (bad arguments, invalid agent id, unreadable config file)
  3  Redis unreachable
  4  not found (no inbox for the agent, no agents at all, no such entry: an unknown
     dead-letter, retry, pending or message id)
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
    #[command(long_about = args::MCP_LONG_ABOUT, after_help = args::MCP_EXAMPLES)]
    Mcp(McpArgs),
    /// Show inboxes: queue depth, pending, consumers and their idle time, oldest pending age, dead letters
    #[command(
        after_help = "Examples:\n  fabric status                 # every agent with an inbox (found with SCAN)\n  fabric status percy coder     # just these\n  fabric status --watch --interval 1s   # refresh until Ctrl-C\n  fabric status --json | jq '.[].queue_depth'"
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
    /// List messages delivered to a consumer and not yet acknowledged; move (claim) or acknowledge one
    #[command(
        after_help = "Examples:\n  fabric pending percy --group percy_workers\n  fabric pending claim percy 1732565756123-0 --to percy-spare\n  fabric pending ack percy 1732565756123-0 --yes   # the message will not be processed"
    )]
    Pending(PendingArgs),
    /// Show one message by id: where it is (queued, pending, retry, scheduled, dead letter), its envelope, headers and attempts
    #[command(
        after_help = "Examples:\n  fabric show percy 1732565756123-0      # an inbox entry, dead letter or retry, by stream id\n  fabric show percy urgent/1732565756123-0\n  fabric show percy msg:6b1c…            # by message id (the newest 10000 entries of each place)\n  fabric show percy 1732565756123-0 --json"
    )]
    Show(ShowArgs),
    /// List failed messages waiting for their next attempt; run one now or delete one
    #[command(subcommand)]
    Retries(RetriesCommand),
    /// Inspect dead letters (messages that failed for good); requeue, retry or delete one, or purge them
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
    /// Serve a live web dashboard: every agent's queue, workers, throughput, failures and dead letters
    #[command(after_help = args::DASHBOARD_EXAMPLES)]
    Dashboard(DashboardArgs),
    /// Show the periodic tasks of each agent: name, message type, spec, next run, last run
    #[command(
        after_help = "Examples:\n  fabric schedules              # every agent with an inbox\n  fabric schedules memory       # just memory's\n  fabric schedules --json | jq '.[] | {name, next_run_ms, last_ms}'"
    )]
    Schedules(SchedulesArgs),
}

fn parse_mode(s: &str) -> std::result::Result<Mode, String> {
    s.parse::<Mode>().map_err(|e| e.to_string())
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
    if let Err(e) = fabric_worker::bus::validate_url(url) {
        // Say which mistake it is when it is a usual one (the URL parser only says "did
        // not parse").
        return Err(url
            .split(',')
            .find_map(|u| {
                url::problem(u).map(|why| {
                    Error::Usage(format!(
                        "invalid Redis URL \"{}\": {why}; expected e.g. redis://127.0.0.1:6379 or rediss://host:6380",
                        url::mask(u.trim())
                    ))
                })
            })
            .unwrap_or(Error::Bus(e)));
    }
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

    /// For commands that show agents (`workers`, `schedules`): checks the `named` ids,
    /// connects, and returns the bus with the agents to show — those named, else every
    /// agent with an inbox.
    pub(crate) async fn agents(&self, named: &[String]) -> Result<(Bus, Vec<String>)> {
        for a in named {
            validate_agent(a)?;
        }
        let bus = self.connect().await?;
        let agents = if named.is_empty() {
            bus.agents().await?
        } else {
            named.to_vec()
        };
        Ok((bus, agents))
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
        Command::Show(args) => Box::pin(async move { show::run(&at, json, args).await }),
        Command::Retries(cmd) => Box::pin(async move { retries::run(&at, json, cmd).await }),
        Command::Setup(args) => Box::pin(async move { setup::run(&at, json, args).await }),
        Command::Router(args) => Box::pin(async move { router::run(&at, args).await }),
        Command::Acl(cmd) => Box::pin(async move { acl::run(&at, cmd).await }),
        Command::Schedules(args) => Box::pin(async move { schedules::run(&at, json, args).await }),
        Command::Dashboard(args) => Box::pin(async move { dashboard::run(&at, args).await }),
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
        // `pending AGENT` lists; `pending claim|ack …` act on one entry.
        let c = Cli::try_parse_from(["fabric", "pending", "percy", "--count", "5"]).unwrap();
        let Command::Pending(p) = c.command else {
            panic!()
        };
        assert_eq!(
            (p.agent.as_deref(), p.action.is_none()),
            (Some("percy"), true)
        );
        let c = Cli::try_parse_from(["fabric", "pending", "claim", "percy", "1-1", "--to", "w2"])
            .unwrap();
        let Command::Pending(p) = c.command else {
            panic!()
        };
        assert!(matches!(p.action, Some(PendingCommand::Claim { ref to, .. }) if to == "w2"));
        assert!(Cli::try_parse_from(["fabric", "pending", "claim", "percy", "1-1"]).is_err());
        assert!(Cli::try_parse_from(["fabric", "pending"]).is_err());
        let c = Cli::try_parse_from(["fabric", "status", "-w", "--interval", "500ms"]).unwrap();
        let Command::Status(s) = c.command else {
            panic!()
        };
        assert!(s.watch);
        assert_eq!(s.interval, std::time::Duration::from_millis(500));
        assert!(Cli::try_parse_from(["fabric", "status", "--interval", "5s"]).is_err());
    }

    #[test]
    fn intervals() {
        use std::time::Duration;
        assert_eq!(parse_interval("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_interval(" 250ms ").unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_interval("50ms").unwrap_err().contains("out of range"));
        assert!(parse_interval("2h").unwrap_err().contains("not a duration"));
        assert!(parse_interval("NaN").is_err());
    }
}
