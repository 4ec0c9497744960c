//! `fabric retries list|run|delete AGENT`: failed messages waiting for their next attempt.

use fabric_worker::bus::ScheduledRetry;
use serde_json::json;

use super::{RetriesCommand, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output::{self, Table, duration_ms};

pub(crate) fn render(retries: &[ScheduledRetry]) -> String {
    let mut t = Table::new(
        &["ID", "DUE", "ATTEMPT", "TYPE", "MESSAGE ID", "LAST ERROR"],
        &["ATTEMPT"],
    );
    for r in retries {
        let (ty, mid) = match &r.message {
            Some(m) => (m.message_type.clone(), m.id.clone()),
            None => ("-".into(), "-".into()),
        };
        let id = match (&r.id, &r.lane) {
            (Some(id), Some(lane)) => format!("{id} ({lane})"),
            (Some(id), None) => id.clone(),
            (None, _) => "-".into(),
        };
        let error = match (&r.last_error, r.rate_limited) {
            (Some(e), _) => output::preview(e, 80),
            (None, true) => "(waiting for its rate limit)".into(),
            (None, false) => "-".into(),
        };
        t.row(vec![
            id,
            match (r.due_at_ms, r.due_in_ms) {
                (0, _) => "now".into(),
                (at, 0) => format!("{} (due)", super::schedules::utc(at)),
                (at, d) => format!("{} (in {})", super::schedules::utc(at), duration_ms(d)),
            },
            r.attempt.to_string(),
            ty,
            mid,
            error,
        ]);
    }
    t.render()
}

fn no_such_retry(agent: &str, id: &str) -> Error {
    Error::NotFound(format!(
        "no such entry: {agent} has no retry waiting for entry {id} (it may have run already; see `fabric retries list {agent}` or `fabric show {agent} {id}`)"
    ))
}

fn check_id(id: &str) -> Result<()> {
    fabric_worker::keys::validate_stream_id(id).map_err(|e| Error::Usage(e.to_string()))
}

pub(crate) async fn run(at: &Target, json: bool, cmd: RetriesCommand) -> Result<()> {
    match cmd {
        RetriesCommand::List { agent, count } => {
            validate_agent(&agent)?;
            if count == 0 || count > 100_000 {
                return Err(Error::Usage("--count must be from 1 to 100000".into()));
            }
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let retries = bus.retries(&agent, count).await?;
            if json {
                return output::print_json(&retries);
            }
            if retries.is_empty() {
                return output::println(&format!("no retries waiting for {agent}"));
            }
            output::print(&render(&retries))
        }
        RetriesCommand::Run { agent, id } => {
            validate_agent(&agent)?;
            check_id(&id)?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let Some(r) = bus.retry_now(&agent, &id).await? else {
                return Err(no_such_retry(&agent, &id));
            };
            let inbox = fabric_worker::keys::inbox(&agent);
            if json {
                return output::print_json(&json!({"agent_id": agent, "run": r, "stream": inbox}));
            }
            let into = r
                .lane
                .as_ref()
                .map_or_else(|| inbox.clone(), |l| format!("{inbox} ({l} lane)"));
            output::println(&format!(
                "retry of {id} moved into {into} now, for attempt {}",
                r.attempt
            ))
        }
        RetriesCommand::Delete { agent, id } => {
            validate_agent(&agent)?;
            check_id(&id)?;
            let bus = at.connect().await?;
            super::status::require_inbox(&bus, &agent).await?;
            let Some(r) = bus.delete_retry(&agent, &id).await? else {
                return Err(no_such_retry(&agent, &id));
            };
            if json {
                return output::print_json(&json!({"agent_id": agent, "deleted": r}));
            }
            output::println(&format!(
                "deleted the retry of {id} of {agent}: it will not be attempted again"
            ))
        }
    }
}
