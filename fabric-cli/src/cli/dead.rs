//! `fabric dead-letters list|requeue|purge AGENT`.

use fabric_worker::bus::DeadLetter;
use serde_json::json;

use super::{DeadLetterCommand, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output::{self, Table};

pub(crate) fn render(letters: &[DeadLetter]) -> String {
    let mut t = Table::new(
        &[
            "DEAD ID", "REASON", "ATTEMPTS", "DEAD AT", "TYPE", "FROM", "ERROR",
        ],
        &["ATTEMPTS"],
    );
    for d in letters {
        let (ty, from) = match &d.message {
            Some(m) => (m.message_type.clone(), m.from_agent.clone()),
            None => ("-".into(), "-".into()),
        };
        t.row(vec![
            d.dead_id.clone(),
            d.reason.to_string(),
            d.attempts.to_string(),
            d.dead_at.clone(),
            ty,
            from,
            output::preview(&d.error, 80),
        ]);
    }
    t.render()
}

pub(crate) async fn run(at: &Target, json: bool, cmd: DeadLetterCommand) -> Result<()> {
    match cmd {
        DeadLetterCommand::List {
            agent,
            count,
            outbox,
        } => {
            validate_agent(&agent)?;
            if count == 0 || count > 10_000 {
                return Err(Error::Usage("--count must be from 1 to 10000".into()));
            }
            let bus = at.connect().await?;
            let letters = if outbox {
                bus.rejected(&agent, count).await?
            } else {
                bus.dead_letters(&agent, count).await?
            };
            if letters.is_empty() && !outbox {
                // A mistyped id says so (exit 4), as status, pending and tail do.
                super::status::require_inbox(&bus, &agent).await?;
            }
            if json {
                return output::print_json(&letters);
            }
            if letters.is_empty() {
                let place = if outbox { "'s outbox" } else { "" };
                return output::println(&format!("no dead letters for {agent}{place}"));
            }
            output::print(&render(&letters))
        }
        DeadLetterCommand::Requeue { agent, ids, all } => {
            validate_agent(&agent)?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let wanted = (!all).then_some(ids);
            let n = bus.requeue_dead_letters(&agent, wanted.as_deref()).await?;
            let inbox = fabric_worker::keys::inbox(&agent);
            if json {
                output::print_json(&json!({"agent_id": agent, "requeued": n, "stream": inbox}))?;
            } else {
                output::println(&format!(
                    "requeued {n} dead letter{} to {inbox}",
                    if n == 1 { "" } else { "s" }
                ))?;
            }
            match wanted {
                Some(ids) if n < ids.len() => Err(Error::NotFound(format!(
                    "{} of the {} dead-letter ids given were not found (see `fabric dead-letters list {agent}`)",
                    ids.len() - n,
                    ids.len()
                ))),
                _ => Ok(()),
            }
        }
        DeadLetterCommand::Purge { agent, yes } => {
            validate_agent(&agent)?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            if !yes {
                let n = bus.queue_status(&agent, None).await?.dead_letters;
                return Err(Error::Usage(format!(
                    "purge deletes {agent}'s {n} dead letter{} for good; run again with --yes to confirm",
                    if n == 1 { "" } else { "s" }
                )));
            }
            let n = bus.purge_dead_letters(&agent).await?;
            if json {
                output::print_json(&json!({"agent_id": agent, "purged": n}))
            } else {
                output::println(&format!(
                    "purged {n} dead letter{} of {agent}",
                    if n == 1 { "" } else { "s" }
                ))
            }
        }
    }
}
