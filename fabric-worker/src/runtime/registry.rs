//! The handler registry: the `#[handler]` registrations linked into the binary, turned into
//! one message-type → handler table per served agent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::config::WorkerConfig;

use crate::__private::Registration;
use crate::error::{Error, Result};

/// One registered handler.
#[derive(Clone, Debug)]
pub(crate) struct HandlerSpec {
    pub(crate) reg: &'static Registration,
}

impl HandlerSpec {
    /// The attempts and the timeout in force for this handler: its own (`max_attempts`,
    /// `timeout` on `#[handler]`), else the worker's.
    pub(crate) fn limits(&self, config: &WorkerConfig) -> (u32, Option<Duration>) {
        let max_attempts = self.reg.max_attempts.unwrap_or(config.max_attempts).max(1);
        let timeout = self
            .reg
            .timeout_ms
            .map(Duration::from_millis)
            .or(config.handler_timeout);
        (max_attempts, timeout)
    }

    /// `path::to::fn (file:line)`, for messages.
    pub(crate) fn location(&self) -> String {
        format!("{} ({}:{})", self.reg.name, self.reg.file, self.reg.line)
    }
}

/// Message type → handler, for one agent.
pub(crate) type HandlerTable = Arc<BTreeMap<String, HandlerSpec>>;

/// Builds, per agent, the message type → handler table; rejects duplicates and empty tables.
/// A handler restricted to an agent (`agent = "..."`) wins over an unrestricted one for the
/// same message type.
pub(crate) fn handler_tables(
    agents: &[String],
    regs: impl Iterator<Item = &'static Registration>,
) -> Result<HashMap<String, HandlerTable>> {
    let mut regs: Vec<&'static Registration> = regs.collect();
    regs.sort_by_key(|r| (r.message_type, r.agent, r.name, r.line));
    // Topic handlers are served from topic streams (`topics.rs`), not the inbox.
    let topic_agents: Vec<Option<&str>> = regs
        .iter()
        .filter(|r| r.topic.is_some())
        .map(|r| r.agent)
        .collect();
    regs.retain(|r| r.topic.is_none());
    let mut out = HashMap::new();
    for agent in agents {
        let mut table: BTreeMap<String, HandlerSpec> = BTreeMap::new();
        // Agent-specific handlers first, so that they win over general ones.
        for specific in [true, false] {
            for r in regs
                .iter()
                .copied()
                .filter(|r| r.agent.is_some() == specific)
            {
                if r.agent.is_some_and(|a| a != agent) {
                    continue;
                }
                let spec = HandlerSpec { reg: r };
                match table.get(r.message_type) {
                    Some(existing) if existing.reg.agent.is_some() == specific => {
                        return Err(Error::DuplicateHandler {
                            message_type: r.message_type.to_owned(),
                            agent: r.agent.map(str::to_owned),
                            first: existing.location(),
                            second: spec.location(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        table.insert(r.message_type.to_owned(), spec);
                    }
                }
            }
        }
        let has_topics = topic_agents.iter().any(|a| a.is_none_or(|a| a == agent));
        if table.is_empty() && !has_topics {
            return Err(Error::NoHandlers {
                agent: agent.clone(),
            });
        }
        out.insert(agent.clone(), Arc::new(table));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::__private::{HandlerFuture, Value};
    use crate::Context;

    fn shim(_ctx: Context) -> HandlerFuture {
        Box::pin(async { crate::handler::Outcome::Reply(Value::Null) })
    }

    fn reg(
        message_type: &'static str,
        agent: Option<&'static str>,
        name: &'static str,
    ) -> &'static Registration {
        Box::leak(Box::new(Registration {
            message_type,
            topic: None,
            agent,
            name,
            file: "src/handlers.rs",
            line: 7,
            max_attempts: None,
            timeout_ms: None,
            handler: shim,
            schedule: None,
            rate_limit: None,
        }))
    }

    fn agents(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_agent_specific_handler_wins_over_a_general_one() {
        let regs = [
            reg("task", None, "general"),
            reg("task", Some("percy"), "percy_only"),
            reg("event", None, "events"),
        ];
        let t = handler_tables(&agents(&["percy", "coder"]), regs.into_iter()).unwrap();
        assert_eq!(t["percy"]["task"].reg.name, "percy_only");
        assert_eq!(t["coder"]["task"].reg.name, "general");
        assert_eq!(t["percy"]["event"].reg.name, "events");
        assert!(!t["coder"].values().any(|h| h.reg.name == "percy_only"));
    }

    #[test]
    fn two_handlers_for_one_type_are_refused_naming_both() {
        let regs = [reg("task", None, "a"), reg("task", None, "b")];
        let e = handler_tables(&agents(&["percy"]), regs.into_iter())
            .unwrap_err()
            .to_string();
        assert!(e.contains("two handlers for message_type \"task\""), "{e}");
        assert!(
            e.contains("a (src/handlers.rs:7)") && e.contains("b (src/handlers.rs:7)"),
            "{e}"
        );
        let regs = [
            reg("task", Some("percy"), "a"),
            reg("task", Some("percy"), "b"),
        ];
        let e = handler_tables(&agents(&["percy"]), regs.into_iter())
            .unwrap_err()
            .to_string();
        assert!(e.contains("of agent \"percy\""), "{e}");
        // Restricted to different agents: no conflict.
        let regs = [
            reg("task", Some("percy"), "a"),
            reg("task", Some("coder"), "b"),
        ];
        handler_tables(&agents(&["percy", "coder"]), regs.into_iter()).unwrap();
    }

    #[test]
    fn an_agent_without_handlers_is_refused() {
        let regs = [reg("task", Some("coder"), "coder_only")];
        let e = handler_tables(&agents(&["percy"]), regs.into_iter()).unwrap_err();
        assert!(
            matches!(e, Error::NoHandlers { ref agent } if agent == "percy"),
            "{e:?}"
        );
        assert!(e.to_string().contains("use my_handlers as _"), "{e}");
        let e = handler_tables(&agents(&["percy"]), std::iter::empty()).unwrap_err();
        assert!(matches!(e, Error::NoHandlers { .. }), "{e:?}");
    }
}
