//! `fabric dead-letters list|requeue|retry|delete|purge AGENT`.

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

/// A dead-letter id on the command line: an entry id.
fn check_id(id: &str) -> Result<()> {
    fabric_worker::keys::validate_stream_id(id).map_err(|e| Error::Usage(e.to_string()))
}

fn no_such_dead_letter(agent: &str, id: &str) -> Error {
    Error::NotFound(format!(
        "no such entry: {agent} has no dead letter {id} (see `fabric dead-letters list {agent}`)"
    ))
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
            let mut progress = super::progress::Progress::new(json);
            let n = bus
                .requeue_dead_letters_with_progress(&agent, wanted.as_deref(), |done, total| {
                    progress.show(
                        &format!("requeued {done} of {total} dead letters of {agent}"),
                        done,
                        total,
                    );
                })
                .await?;
            progress.finish();
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
        DeadLetterCommand::Retry { agent, id } => {
            validate_agent(&agent)?;
            check_id(&id)?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let n = bus
                .requeue_dead_letters(&agent, Some(std::slice::from_ref(&id)))
                .await?;
            if n == 0 {
                return Err(no_such_dead_letter(&agent, &id));
            }
            let inbox = fabric_worker::keys::inbox(&agent);
            if json {
                output::print_json(
                    &json!({"agent_id": agent, "dead_id": id, "requeued": n, "stream": inbox}),
                )
            } else {
                output::println(&format!(
                    "dead letter {id} of {agent} is back in {inbox} as a fresh first attempt"
                ))
            }
        }
        DeadLetterCommand::Delete { agent, id } => {
            validate_agent(&agent)?;
            check_id(&id)?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let Some(d) = bus.delete_dead_letter(&agent, &id).await? else {
                return Err(no_such_dead_letter(&agent, &id));
            };
            if json {
                output::print_json(&json!({"agent_id": agent, "deleted": d}))
            } else {
                let what = d.message.as_ref().map_or_else(
                    || "an undecodable entry".to_owned(),
                    |m| format!("{} {} from {}", m.message_type, m.id, m.from_agent),
                );
                output::println(&format!(
                    "deleted dead letter {id} of {agent} ({what}, {})",
                    d.reason
                ))
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
            let mut progress = super::progress::Progress::new(json);
            let total = bus.queue_status(&agent, None).await?.dead_letters;
            if total >= 1000 {
                // One atomic DEL: the line says what is under way until it returns.
                progress.show(&format!("purging {total} dead letters of {agent}…"), 0, 1);
            }
            let n = bus.purge_dead_letters(&agent).await?;
            progress.finish();
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
