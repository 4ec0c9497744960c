//! Per-agent Redis ACL users: each agent reads and consumes only its own keys.
//!
//! [`agent_acl_rules`] gives the rules of `ACL SETUSER <agent> …` for one agent:
//!
//! - every key under `agent:<id>:` (its inbox, results, reply streams, dead letters and
//!   retries — see `docs/protocol.md`), with the stream, sorted-set and script commands a
//!   worker and a `Bus` use;
//! - `XADD` only (through ACL selectors) on other agents' inboxes (to send), results
//!   streams and reply streams (to reply) — never a read or a delete there;
//! - Pub/Sub on `agent.*.new_message` (send notifications), and on the topic patterns
//!   given (default `analytics.*`, `system.*`, `shared:*`).
//!
//! Redis cannot check what an entry says, so an agent that may send can still put any
//! `from_agent` in the envelope; the MCP server enforces the sender's identity for its
//! callers.

use crate::error::{Error, Result};
use crate::keys;

/// Topic patterns agents may publish and subscribe to by default.
pub const DEFAULT_TOPIC_PATTERNS: &[&str] = &["analytics.*", "system.*", "shared:*"];

/// Commands an agent runs on its own keys.
const OWN_COMMANDS: &[&str] = &[
    "+@stream", // XADD XREADGROUP XACK XAUTOCLAIM XCLAIM XPENDING XINFO XGROUP XTRIM XDEL XRANGE XLEN …
    "+zadd",
    "+zrem",
    "+zrange",
    "+zrangebyscore",
    "+zcard",
    "+exists",
    "+del",
    "+expire",
    "+multi",
    "+exec",
    "+discard",
    "+evalsha",
    "+eval",
    "+script|load",
    "+script|exists",
    "+publish",
    "+subscribe",
    "+psubscribe",
    "+unsubscribe",
    "+punsubscribe",
    "+time",
    "+unwatch",
    "+ping",
    "+hello",
    "+auth",
    "+client|setname",
    "+client|id",
    "+select",
];

/// The rules (arguments after the user name) of `ACL SETUSER <agent>` for an agent whose
/// password is `password`; `topics` are extra Pub/Sub channel patterns (defaults when empty).
///
/// ```
/// let rules = fabric_worker::acl::agent_acl_rules("percy", "s3cret", &[]).unwrap();
/// assert!(rules.contains(&"~agent:percy:*".to_string()));
/// assert!(rules.contains(&"(~agent:*:inbox +xadd)".to_string()));
/// ```
pub fn agent_acl_rules(agent: &str, password: &str, topics: &[&str]) -> Result<Vec<String>> {
    keys::validate_agent(agent)?;
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
    let topics: Vec<&str> = if topics.is_empty() {
        DEFAULT_TOPIC_PATTERNS.to_vec()
    } else {
        topics.to_vec()
    };
    for t in &topics {
        keys::validate_topic(t)?;
    }
    let mut rules = vec![
        "reset".to_owned(),
        "on".to_owned(),
        format!(">{password}"),
        "resetchannels".to_owned(),
        format!("~agent:{agent}:*"),
        "&agent.*.new_message".to_owned(),
    ];
    rules.extend(topics.iter().map(|t| format!("&{t}")));
    rules.extend(OWN_COMMANDS.iter().map(|c| (*c).to_owned()));
    // Selectors: write-only access to other agents' streams, XADD and nothing else.
    rules.push("(~agent:*:inbox +xadd)".to_owned());
    rules.push("(~agent:*:results ~agent:*:replies:* +xadd)".to_owned());
    Ok(rules)
}

/// The same rules as one `ACL SETUSER` line (for an ACL file, prefix it with `user`
/// instead; passwords with spaces are refused, so no quoting is needed).
pub fn agent_acl_command(agent: &str, password: &str, topics: &[&str]) -> Result<String> {
    Ok(format!(
        "ACL SETUSER {agent} {}",
        agent_acl_rules(agent, password, topics)?.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_scoped_to_the_agent() {
        let r = agent_acl_rules("coder", "pw", &["custom.*"]).unwrap();
        assert_eq!(
            &r[..5],
            ["reset", "on", ">pw", "resetchannels", "~agent:coder:*"]
        );
        assert!(r.contains(&"&custom.*".to_string()));
        assert!(!r.contains(&"&shared:*".to_string()));
        assert!(
            !r.iter()
                .any(|x| x == "~*" || x == "+@all" || x == "allkeys")
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(agent_acl_rules("a b", "pw", &[]).is_err());
        assert!(agent_acl_rules("coder", "", &[]).is_err());
        assert!(agent_acl_rules("coder", "p w", &[]).is_err());
        let e = agent_acl_rules("coder", "p\nw", &[])
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("p\nw"),
            "the password must not appear in errors: {e}"
        );
    }
}
