//! `fabric pending AGENT`, `fabric pending claim|ack AGENT ID`.

use std::io::{BufRead, IsTerminal, Write};

use fabric_worker::bus::PendingEntry;
use serde_json::json;

use super::{PendingArgs, PendingCommand, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output::{self, Table, duration_ms, opt_duration_ms};

pub(crate) fn render(entries: &[PendingEntry]) -> String {
    let mut t = Table::new(
        &["STREAM ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"],
        &["IDLE", "DELIVERIES", "AGE"],
    );
    for e in entries {
        t.row(vec![
            e.stream_id.clone(),
            e.consumer.clone(),
            duration_ms(e.idle_ms),
            e.deliveries.to_string(),
            opt_duration_ms(e.age_ms),
        ]);
    }
    t.render()
}

fn check_group(group: Option<&str>) -> Result<()> {
    match group {
        Some(g) => fabric_worker::keys::validate_group(g).map_err(|e| Error::Usage(e.to_string())),
        None => Ok(()),
    }
}

fn check_id(id: &str) -> Result<()> {
    fabric_worker::keys::split_received_id(id)
        .map(|_| ())
        .map_err(|e| Error::Usage(e.to_string()))
}

fn not_pending(agent: &str, id: &str, group: &str) -> Error {
    Error::NotFound(format!(
        "no such entry: {id} is not pending in {agent}'s group {group} (see `fabric pending {agent}`, or `fabric show {agent} {id}` for where it is)"
    ))
}

/// Asks on the terminal whether to go on; `false` unless the answer is yes.
fn confirm(question: &str) -> Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "{question} [y/N] ")
        .and_then(|()| err.flush())
        .map_err(|e| Error::io("cannot write to stderr", e))?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("cannot read the answer", e))?;
    Ok(matches!(line.trim().to_lowercase().as_str(), "y" | "yes"))
}

async fn act(at: &Target, json: bool, cmd: PendingCommand) -> Result<()> {
    match cmd {
        PendingCommand::Claim {
            agent,
            id,
            to,
            group,
        } => {
            validate_agent(&agent)?;
            check_id(&id)?;
            check_group(group.as_deref())?;
            fabric_worker::keys::validate_consumer(&to).map_err(|e| Error::Usage(e.to_string()))?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let group = group.unwrap_or_else(|| fabric_worker::keys::default_group(&agent));
            let Some(was) = bus.claim_pending(&agent, Some(&group), &id, &to).await? else {
                return Err(not_pending(&agent, &id, &group));
            };
            if json {
                return output::print_json(&json!({
                    "agent_id": agent, "group": group, "stream_id": id,
                    "from_consumer": was.consumer, "to_consumer": to, "deliveries": was.deliveries,
                }));
            }
            output::println(&format!(
                "{id} of {agent} moved from {} to {to} in group {group} (idle {} before, {} deliveries)",
                was.consumer,
                duration_ms(was.idle_ms),
                was.deliveries
            ))
        }
        PendingCommand::Ack {
            agent,
            id,
            group,
            yes,
        } => {
            validate_agent(&agent)?;
            check_id(&id)?;
            check_group(group.as_deref())?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let group = group.unwrap_or_else(|| fabric_worker::keys::default_group(&agent));
            if !yes {
                // Say who holds it before asking (and "no such entry" rather than a question
                // about an entry that is not pending).
                let held = bus
                    .message(&agent, &id)
                    .await?
                    .and_then(|d| d.groups.into_iter().find(|g| g.group == group))
                    .filter(|g| g.state == "pending")
                    .ok_or_else(|| not_pending(&agent, &id, &group))?;
                let warning = format!(
                    "acknowledging {id} (held by {}, delivered {} time{}) marks it done in {agent}'s group {group}: the message will NOT be processed (a handler running it now may still finish)",
                    held.consumer.unwrap_or_default(),
                    held.deliveries.unwrap_or(0),
                    if held.deliveries == Some(1) { "" } else { "s" },
                );
                if !std::io::stdin().is_terminal() || json {
                    return Err(Error::Usage(format!(
                        "{warning}; run again with --yes to confirm"
                    )));
                }
                if !confirm(&format!("{warning}. Acknowledge it?"))? {
                    return Err(Error::Usage("not acknowledged (answer was not yes)".into()));
                }
            }
            let Some(was) = bus.ack_pending(&agent, Some(&group), &id).await? else {
                return Err(not_pending(&agent, &id, &group));
            };
            if json {
                return output::print_json(&json!({
                    "agent_id": agent, "group": group, "stream_id": id, "acknowledged": true,
                    "consumer": was.consumer, "deliveries": was.deliveries, "processed": false,
                }));
            }
            output::println(&format!(
                "acknowledged {id} of {agent} in group {group} (it was held by {}): it will not be processed",
                was.consumer
            ))
        }
    }
}

pub(crate) async fn run(at: &Target, json: bool, args: PendingArgs) -> Result<()> {
    if let Some(cmd) = args.action {
        return act(at, json, cmd).await;
    }
    let Some(agent) = args.agent else {
        return Err(Error::Usage("name the agent: fabric pending AGENT".into()));
    };
    validate_agent(&agent)?;
    if args.count == 0 || args.count > 10_000 {
        return Err(Error::Usage("--count must be from 1 to 10000".into()));
    }
    let bus = at.connect().await?;
    super::status::require_inbox(&bus, &agent).await?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| fabric_worker::keys::default_group(&agent));
    let entries = bus.pending(&agent, Some(&group), args.count).await?;
    if json {
        return output::print_json(&entries);
    }
    if entries.is_empty() {
        return output::println(&format!(
            "nothing pending in {} for group {group}",
            fabric_worker::keys::inbox(&agent)
        ));
    }
    output::print(&render(&entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let text = render(&[PendingEntry {
            stream_id: "1700000000000-0".into(),
            consumer: "percy-w1".into(),
            idle_ms: 4200,
            deliveries: 2,
            age_ms: Some(61_000),
        }]);
        assert_eq!(
            text,
            "STREAM ID        CONSUMER  IDLE  DELIVERIES    AGE\n\
             1700000000000-0  percy-w1  4.2s           2  1m01s\n"
        );
    }
}
