//! Which periodic schedules a worker process runs: those declared on the handlers of the
//! agents whose inbox it serves, and those given to
//! [`WorkerBuilder::schedule`](super::WorkerBuilder::schedule).

use std::collections::{HashMap, HashSet};

use super::registry::HandlerTable;
use crate::__private::HandlerSchedule;
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// The schedule a `#[handler]` declares (checked by the macro already): named after its
/// message type. (Here rather than in `schedule`, which must not depend on `__private`:
/// `__private` → `context` → `bus` → `schedule` would be a cycle.)
fn from_handler(message_type: &str, h: &HandlerSchedule) -> Result<Schedule> {
    let s = if h.every_ms > 0 {
        Schedule::every(
            message_type,
            message_type,
            std::time::Duration::from_millis(h.every_ms),
        )?
    } else {
        Schedule::cron(message_type, message_type, h.cron)?
    };
    let s = if h.tz.is_empty() {
        s
    } else {
        s.time_zone(h.tz)?
    };
    Ok(if h.missed.is_empty() {
        s
    } else {
        s.missed(h.missed.parse()?)
    })
}

/// (agent, schedule) pairs, names unique per agent.
pub(super) fn plan(
    agents: &[String],
    inbox_agents: &[String],
    tables: &HashMap<String, HandlerTable>,
    code: Vec<Schedule>,
) -> Result<Vec<(String, Schedule)>> {
    let mut out: Vec<(String, Schedule)> = Vec::new();
    for agent in inbox_agents {
        let Some(table) = tables.get(agent) else {
            continue;
        };
        for spec in table.values() {
            if let Some(hs) = &spec.reg.schedule {
                let s = from_handler(spec.reg.message_type, hs).map_err(|e| {
                    Error::Config(format!("the schedule of {}: {e}", spec.location()))
                })?;
                out.push((agent.clone(), s));
            }
        }
    }
    for s in code {
        s.check()?;
        let targets: Vec<String> = match s.agent_name() {
            Some(a) => {
                if !agents.iter().any(|x| x == a) {
                    return Err(Error::Config(format!(
                        "schedule {:?} is for agent {a:?}, which this worker does not serve (it serves {}): add the agent to the worker, or run the schedule in that agent's worker",
                        s.name(),
                        agents.join(", ")
                    )));
                }
                if !inbox_agents.iter().any(|x| x == a) {
                    return Err(Error::Config(format!(
                        "schedule {:?} is for agent {a:?}, whose inbox this worker does not serve (consume_inbox(false), or no message handler): schedules run in the workers serving the agent's inbox",
                        s.name()
                    )));
                }
                vec![a.to_owned()]
            }
            None => {
                let t: Vec<String> = inbox_agents
                    .iter()
                    .filter(|a| {
                        tables
                            .get(*a)
                            .is_some_and(|t| t.contains_key(s.message_type()))
                    })
                    .cloned()
                    .collect();
                if t.is_empty() {
                    return Err(Error::Config(format!(
                        "schedule {:?} sends message_type {:?}, which no handler of the agents this worker serves ({}) takes: add a #[handler(message_type = {:?})], or name the agent with Schedule::agent",
                        s.name(),
                        s.message_type(),
                        inbox_agents.join(", "),
                        s.message_type()
                    )));
                }
                t
            }
        };
        for a in targets {
            out.push((a, s.clone()));
        }
    }
    let mut seen = HashSet::new();
    for (agent, s) in &out {
        if !seen.insert((agent.as_str(), s.name())) {
            return Err(Error::Config(format!(
                "two schedules named {:?} for agent {agent:?}: names must be unique per agent (a #[handler] schedule is named after its message type)",
                s.name()
            )));
        }
    }
    Ok(out)
}
