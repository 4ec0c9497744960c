//! Redis ACL users for each role, in each [`Mode`].
//!
//! | role | direct mode | secure mode |
//! | --- | --- | --- |
//! | agent `X` | its own keys `agent:X:*`; `XADD` only on other agents' inboxes, results and reply streams; `PUBLISH` on every new-message channel; shared rate limits `fabric:ratelimit:{*}` | its own keys `agent:X:*`, and shared rate limits `fabric:ratelimit:{*}`: it sends through its outbox, the router delivers |
//! | router | — | reads and acknowledges outboxes, dead-letters what it rejects, and appends to inboxes, results and reply streams only through `FCALL fabric_forward`; publishes new-message notifications |
//! | MCP server | — | appends to outboxes (it sends as the agent it authenticated), consumes inboxes, reads its own reply streams |
//! | monitor | read-only on every agent key (queue status, dashboards) | the same |
//! | admin | everything (`fabric setup`: loading the function library) | the same |
//!
//! No role but admin may `EVAL`, `EVALSHA`, `SCRIPT`, `FUNCTION`, or run an administrative
//! or dangerous command (`CONFIG`, `DEBUG`, `SHUTDOWN`, `FLUSHALL`, `CLIENT KILL`, `KEYS`, …):
//! the runtime's scripts are Redis Functions, called with `FCALL`. Every rule list starts
//! with `reset`, so it is complete by itself. See `docs/security.md`.
//!
//! ```
//! use fabric_worker::acl::{self, Role};
//! use fabric_worker::bus::Mode;
//!
//! let rules = acl::rules(&Role::Agent("percy".into()), Mode::Secure, "s3cret", &[]).unwrap();
//! assert!(rules.contains(&"~agent:percy:*".to_string()));
//! assert!(!rules.iter().any(|r| r.starts_with("(~agent:")), "no rights on other agents' keys");
//! let file = acl::file(&[("percy".into(), rules)]);
//! assert!(file.starts_with("user percy reset on >s3cret"));
//! ```

use crate::error::{Error, Result};
use crate::keys;
use crate::mode::Mode;

/// Topic patterns agents may publish and subscribe to by default.
pub const DEFAULT_TOPIC_PATTERNS: &[&str] = &["analytics.*", "system.*", "shared:*"];

/// The Redis user name of the router.
pub const ROUTER_USER: &str = "fabric-router";
/// The Redis user name of the MCP server.
pub const MCP_USER: &str = "fabric-mcp";
/// The Redis user name of the read-only monitor.
pub const MONITOR_USER: &str = "fabric-monitor";
/// The Redis user name of the administrator.
pub const ADMIN_USER: &str = "fabric-admin";

/// Who a Redis user is for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// One agent (its worker processes and its `Bus`).
    Agent(String),
    /// The router of secure mode (`fabric router`).
    Router,
    /// The MCP server (`fabric mcp`), which sends for the agents it authenticates.
    McpServer,
    /// Read-only: queue status, dashboards, exporters.
    Monitor,
    /// Everything: `fabric setup`, operations.
    Admin,
}

/// Commands every client needs to connect and stay connected; and `MULTI`/`EXEC`, which
/// grant nothing by themselves (each queued command is checked) — refusing `MULTI` makes
/// redis-rs 1.8 miscount the replies of an atomic pipeline and panic (seen with the monitor
/// user), so every role gets them.
const CONNECTION: &[&str] = &[
    "+ping",
    "+hello",
    "+auth",
    "+client|setname",
    "+client|id",
    "+select",
    "+multi",
    "+exec",
    "+discard",
    // `BusBuilder::wait_for_replicas`: blocks only the caller until replicas have its writes.
    "+wait",
];

/// Commands an agent runs on its own keys (worker, `Bus`): streams, consumer groups,
/// retries (sorted sets, read by status), transactions, and the runtime's functions.
const AGENT_OWN: &[&str] = &[
    "+xadd",
    "+xread",
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xclaim",
    "+xpending",
    "+xinfo",
    "+xgroup",
    "+xdel",
    "+xrange",
    "+xrevrange",
    "+xlen",
    "+xtrim",
    "+zcard",
    "+zrange",
    "+zadd",
    "+zrem",
    "+zrangebyscore",
    "+time",
    "+exists",
    "+del",
    "+expire",
    "+hset",
    "+hsetnx",
    "+hget",
    "+hgetall",
    "+hdel",
    "+smembers",
    "+set",
    "+get",
    "+incr",
    "+fcall",
    "+fcall_ro",
];

/// Every inbox's priority lanes ([`keys::lane`]), as key patterns, in [`keys::LANES`] order.
const LANE_PATTERNS: [&str; 3] = [
    "agent:*:inbox:urgent{*}",
    "agent:*:inbox:high{*}",
    "agent:*:inbox:low{*}",
];

/// What an agent does on durable topic streams and their companions (`topic:*`) in direct
/// mode: append, consume through its group (with retries, dead letters, leases, reclaim and
/// trim, and the functions that run them). No `DEL`, `XDEL` or `XGROUP DESTROY`.
const TOPIC_STREAMS: &[&str] = &[
    "+xadd",
    "+xreadgroup",
    "+xack",
    "+xautoclaim",
    "+xclaim",
    "+xpending",
    "+xinfo",
    "+xgroup|create",
    "+xgroup|createconsumer",
    "+xgroup|delconsumer",
    "+xrange",
    "+xlen",
    "+xtrim",
    "+zadd",
    "+zrem",
    "+zrange",
    "+zrangebyscore",
    "+zcard",
    "+exists",
    "+incr",
    "+get",
    "+fcall",
];

/// The keys of rate limits shared by name ([`keys::rate_limit_shared`]).
const RATE_LIMIT_PATTERN: &str = "fabric:ratelimit:{*}";
/// Every workflow's hash ([`keys::workflow`]).
const WORKFLOW_PATTERN: &str = "fabric:workflow:*";

/// What an agent does on workflow hashes in direct mode: start one (`HSET`, `PEXPIRE`), run
/// a step (`FCALL fabric_workflow_step` and what it runs), read one, clear the reply mark.
const WORKFLOW_COMMANDS: &[&str] = &[
    "+fcall", "+exists", "+hset", "+hsetnx", "+hget", "+hgetall", "+hincrby", "+hdel", "+pexpire",
];

/// Pub/Sub commands.
const PUBSUB: &[&str] = &[
    "+publish",
    "+subscribe",
    "+psubscribe",
    "+unsubscribe",
    "+punsubscribe",
];

fn check_password(password: &str) -> Result<()> {
    if password.is_empty()
        || password
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            "password",
            "(hidden)",
            "must be non-empty, without spaces or control characters",
        ));
    }
    Ok(())
}

fn topic_channels(topics: &[&str]) -> Result<Vec<String>> {
    let topics: Vec<&str> = if topics.is_empty() {
        DEFAULT_TOPIC_PATTERNS.to_vec()
    } else {
        topics.to_vec()
    };
    topics
        .iter()
        .map(|t| keys::validate_topic(t).map(|()| format!("&{t}")))
        .collect()
}

fn strings(list: &[&str]) -> impl Iterator<Item = String> {
    list.iter().map(|s| (*s).to_owned())
}

/// Direct mode: `XADD` into any inbox, and `FCALL fabric_send_once` with the commands it
/// runs on the inbox's idempotency keys.
fn send_once_selector() -> String {
    selector(
        &[
            &[
                "agent:*:inbox",
                "agent:*:inbox:once{*}",
                "agent:*:inbox:onceids{*}",
            ][..],
            &LANE_PATTERNS,
        ]
        .concat(),
        &[
            "+xadd",
            "+fcall",
            "+exists",
            "+zrangebyscore",
            "+zrem",
            "+zscore",
            "+zadd",
            "+hget",
            "+hset",
            "+hdel",
        ],
    )
}

/// A selector: `(<patterns> <commands>)`.
fn selector(patterns: &[&str], commands: &[&str]) -> String {
    let mut parts: Vec<String> = patterns.iter().map(|p| format!("~{p}")).collect();
    parts.extend(strings(commands));
    format!("({})", parts.join(" "))
}

/// The rules (the arguments after the user name) of `ACL SETUSER` for `role` in `mode`, with
/// password `password`; `topics` are the Pub/Sub topic patterns agents and the MCP server may
/// use (the defaults when empty).
pub fn rules(role: &Role, mode: Mode, password: &str, topics: &[&str]) -> Result<Vec<String>> {
    check_password(password)?;
    let mut r: Vec<String> = ["reset", "on"].iter().map(|s| (*s).to_owned()).collect();
    r.push(format!(">{password}"));
    r.extend(strings(CONNECTION));
    match role {
        Role::Agent(agent) => {
            keys::validate_agent(agent)?;
            r.push(format!("~agent:{agent}:*"));
            match mode {
                // Direct mode: notifications of every agent (senders publish them).
                Mode::Direct => r.push("&agent.*.new_message".into()),
                // Secure mode: its own notifications only (the router publishes them).
                Mode::Secure => r.push(format!("&{}", keys::new_message_channel(agent))),
            }
            r.extend(topic_channels(topics)?);
            r.extend(strings(AGENT_OWN));
            r.extend(strings(PUBSUB));
            // Rate limits shared by name (`rate_limit = "openai:60/m"`), in both modes: taken
            // through `FCALL fabric_rate_limit`, which reads and writes the key (GET, SET).
            // The agent could also SET such a key directly: see docs/security.md.
            r.push(selector(&[RATE_LIMIT_PATTERN], &["+fcall", "+get", "+set"]));
            if mode == Mode::Direct {
                // Write-only access to other agents' streams: XADD and nothing else, and
                // idempotent sends (fabric_send_once and what it runs).
                r.push(send_once_selector());
                r.push(selector(
                    &["agent:*:results", "agent:*:replies:*"],
                    &["+xadd"],
                ));
                // Messages sent for later: into the recipient's schedule, add only.
                r.push(selector(&["agent:*:inbox:delayed{*}"], &["+zadd"]));
                // Durable topics (direct mode only, docs/protocol.md §11): publish, consume
                // through its group with every worker loop, and the registries.
                r.push(selector(&["topic:*"], TOPIC_STREAMS));
                r.push(selector(&["fabric:topics"], &["+sadd", "+smembers"]));
                // HGETALL: before trimming a topic stream, the other subscribers' groups are
                // created where their subscriptions start (runtime/topics.rs).
                r.push(selector(
                    &["fabric:topic_subscriptions"],
                    &["+hsetnx", "+hget", "+hgetall"],
                ));
                // Workflows (direct mode only, docs/protocol.md §13): start one, run its
                // steps (fabric_workflow_step and what it runs), read its state.
                r.push(selector(&[WORKFLOW_PATTERN], WORKFLOW_COMMANDS));
            }
        }
        Role::Router => {
            r.push("&agent.*.new_message".into());
            r.extend(strings(&["+publish", "+scan", "+time", "+fcall_ro"]));
            // Outboxes: consume, acknowledge, delete what was delivered, dead-letter what
            // breaks policy.
            r.push(selector(
                &["agent:*:outbox", "agent:*:outbox:dead{*}"],
                &[
                    "+xreadgroup",
                    "+xack",
                    "+xdel",
                    "+xtrim",
                    "+exists",
                    "+fcall",
                    "+xautoclaim",
                    "+xclaim",
                    "+xpending",
                    "+xinfo",
                    "+xgroup|create",
                    "+xadd",
                ],
            ));
            // Delivery: only through fabric_forward (and the commands it runs).
            r.push(selector(
                &[
                    &["agent:*:inbox", "agent:*:inbox:fwd{*}"][..],
                    &LANE_PATTERNS,
                    &[
                        "agent:*:inbox:delayed{*}",
                        "agent:*:results",
                        "agent:*:results:fwd{*}",
                        "agent:*:replies:*",
                    ],
                ]
                .concat(),
                &[
                    "+fcall",
                    "+xadd",
                    "+exists",
                    "+zscore",
                    "+zadd",
                    "+zrangebyscore",
                    "+zrem",
                ],
            ));
            // Durable topics (§11.5): copies into each subscriber's own stream, through
            // fabric_forward; the subscriber's registry of topics; subscriptions, read.
            r.push(selector(
                &["agent:*:topic:*"],
                &[
                    "+fcall",
                    "+xadd",
                    "+exists",
                    "+zadd",
                    "+zrangebyscore",
                    "+zrem",
                    "+xtrim",
                ],
            ));
            r.push(selector(&["agent:*:topics"], &["+sadd"]));
            r.push(selector(&["agent:*:topic_subscriptions"], &["+hkeys"]));
        }
        Role::McpServer => {
            r.push("&agent.*.new_message".into());
            r.extend(topic_channels(topics)?);
            r.extend(strings(PUBSUB));
            // SCAN: discovery (fabric_agents) lists the agents' inboxes.
            r.extend(strings(&["+fcall_ro", "+scan"]));
            match mode {
                // Sends as the agent it authenticated: into that agent's outbox.
                Mode::Secure => r.push(selector(&["agent:*:outbox"], &["+xadd"])),
                // Direct mode: into the recipient's inbox (and replies into results and
                // reply streams), as agents do, idempotent sends included.
                Mode::Direct => {
                    r.push(send_once_selector());
                    r.push(selector(
                        &["agent:*:results", "agent:*:replies:*"],
                        &["+xadd"],
                    ));
                    r.push(selector(&["agent:*:inbox:delayed{*}"], &["+zadd"]));
                    // Starts workflows and reads their state for its agents.
                    r.push(selector(&[WORKFLOW_PATTERN], WORKFLOW_COMMANDS));
                }
            }
            // Moves an agent's due delayed messages and retries into its inbox or lanes
            // before a receive (`fabric_promote`, and what it runs; TIME for its clock).
            r.push("+time".into());
            r.push(selector(
                &[
                    &[
                        "agent:*:inbox",
                        "agent:*:inbox:retry{*}",
                        "agent:*:inbox:dead{*}",
                        "agent:*:inbox:delayed{*}",
                    ][..],
                    &LANE_PATTERNS,
                ]
                .concat(),
                &[
                    "+fcall",
                    "+zrangebyscore",
                    "+zrange",
                    "+zrem",
                    "+xadd",
                    "+exists",
                ],
            ));
            // Receives (redelivering what was not acknowledged in time), acknowledges and
            // inspects for that agent: its inbox and its results.
            r.push(selector(
                &[&["agent:*:inbox"][..], &LANE_PATTERNS, &["agent:*:results"]].concat(),
                &[
                    "+xreadgroup",
                    "+xack",
                    "+xautoclaim",
                    "+xclaim",
                    "+xpending",
                    "+xinfo",
                    "+xgroup|create",
                    "+xgroup|delconsumer",
                    "+xlen",
                    "+xrange",
                    "+xrevrange",
                    "+exists",
                ],
            ));
            // Who serves each agent (discovery, and which messages are its workers').
            r.push(selector(&["agent:*:workers"], &["+hgetall"]));
            // That an MCP session reads an agent's messages (discovery's "live").
            r.push(selector(&["agent:*:mcp_seen"], &["+set", "+get"]));
            // Whether an operator paused the agent (queue_status shows it).
            r.push(selector(&["agent:*:inbox:paused{*}"], &["+exists"]));
            r.push(selector(
                &[
                    "agent:*:inbox:dead{*}",
                    "agent:*:inbox:retry{*}",
                    "agent:*:results:dead{*}",
                ],
                &["+xadd", "+xlen", "+xrange", "+zcard"],
            ));
            // Expired messages it received, counted.
            r.push(selector(
                &["agent:*:inbox:expired{*}", "agent:*:results:expired{*}"],
                &["+incr", "+get"],
            ));
            // Its own request/reply streams.
            r.push(selector(
                &["agent:*:replies:*"],
                &["+xread", "+xdel", "+expire", "+del"],
            ));
        }
        Role::Monitor => {
            r.push("%R~agent:*".into());
            r.extend(strings(&[
                "+xinfo",
                "+xlen",
                "+xpending",
                "+xrange",
                "+xrevrange",
                "+zcard",
                // Retries and schedules: `fabric retries list`, `fabric show`.
                "+zrange",
                "+zscan",
                "+hgetall",
                "+get",
                "+exists",
                "+scan",
                "+fcall_ro",
                // Server statistics for exporters (redis_exporter): read-only.
                "+info",
                "+dbsize",
                "+slowlog|get",
                "+latency|latest",
            ]));
        }
        Role::Admin => {
            r.extend(strings(&["~*", "&*", "+@all"]));
        }
    }
    Ok(r)
}

/// The rules of the `default` user when agents have users of their own: every permission,
/// behind a random password that is shown to no one (no client can log in as it).
///
/// It is not simply `off` because Redis 7.0 replays the `MULTI`/`EXEC` blocks of its
/// append-only file with the default user's permissions: with the default user off or
/// restricted, every transaction in the file — each function call that writes more than
/// once (a delivery, a retry), each dead-lettering — fails to replay after a restart, and
/// what it wrote is lost (seen on 7.0.15; the log says "ACLs rules changed between the
/// moment the transaction was accumulated and the EXEC call").
pub fn default_user_rules() -> Vec<String> {
    let secret = generate_password();
    ["reset", "on", &format!(">{secret}"), "~*", "&*", "+@all"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// An ACL file (`redis-server --aclfile`): one `user <name> <rules…>` line per user, in
/// order. Redis accepts no comment lines in such a file: explanations go beside it.
pub fn file(users: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    for (name, rules) in users {
        out.push_str("user ");
        out.push_str(name);
        for r in rules {
            out.push(' ');
            out.push_str(r);
        }
        out.push('\n');
    }
    out
}

/// `#<sha256 hex>` of `password`: the form an ACL file stores a password in, so that the
/// file holds no secret (Redis compares the hash of what a client sends).
pub fn password_hash_rule(password: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(password.as_bytes());
    let mut out = String::with_capacity(65);
    out.push('#');
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `rules` with every clear password (`>secret`) replaced by its hash (`#<sha256>`).
pub fn hash_passwords(rules: Vec<String>) -> Vec<String> {
    rules
        .into_iter()
        .map(|r| match r.strip_prefix('>') {
            Some(pw) => password_hash_rule(pw),
            None => r,
        })
        .collect()
}

/// A new random password: 64 hex digits (244 random bits).
pub fn generate_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `ACL SETUSER <name> <rules…>` as one line (for `redis-cli`).
pub fn setuser_command(name: &str, rules: &[String]) -> String {
    format!("ACL SETUSER {name} {}", rules.join(" "))
}

#[cfg(test)]
mod tests;
