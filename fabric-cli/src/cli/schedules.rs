//! `fabric schedules [AGENT…]`: the periodic tasks the workers of each agent registered
//! (`agent:<id>:schedules`), with when they fire next and when they last fired
//! (`agent:<id>:schedule_runs`).

use fabric_worker::schedule::ScheduleInfo;
use serde::Serialize;

use super::{SchedulesArgs, Target};
use crate::error::{Error, Result};
use crate::output::{self, Table, duration_ms, now_ms};

/// One schedule of one agent, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    #[serde(flatten)]
    info: ScheduleInfo,
}

/// `2026-11-28 16:00:00Z` for ms since the epoch.
pub(crate) fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |d| d.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        )
}

/// The table `fabric schedules` prints.
pub(crate) fn render(rows: &[Row], now_ms: u64) -> String {
    let mut t = Table::new(
        &[
            "AGENT", "NAME", "TYPE", "SPEC", "MISSED", "NEXT RUN", "LAST RUN",
        ],
        &[],
    );
    for r in rows {
        let (s, run) = (&r.info.spec, &r.info.run);
        let next = r.info.next_run_ms.map_or_else(
            || "none".to_owned(),
            |n| format!("{} (in {})", utc(n), duration_ms(n.saturating_sub(now_ms))),
        );
        let last = match (run.last_ms, run.last_fired_ms) {
            (Some(b), Some(f)) => {
                format!("{} ({} ago)", utc(b), duration_ms(now_ms.saturating_sub(f)))
            }
            (Some(b), None) => utc(b),
            _ => "never".to_owned(),
        };
        t.row(vec![
            s.agent.clone(),
            s.name.clone(),
            s.message_type.clone(),
            s.spec.clone(),
            s.missed.to_string(),
            next,
            last,
        ]);
    }
    t.render()
}

pub(crate) async fn run(at: &Target, json: bool, args: SchedulesArgs) -> Result<()> {
    let (bus, agents) = at.agents(&args.agents).await?;
    let mut no_inbox = Vec::new();
    if !args.agents.is_empty() {
        for a in &agents {
            if super::status::require_inbox(&bus, a).await.is_err() {
                no_inbox.push(a.as_str());
            }
        }
    }
    let mut rows = Vec::new();
    for a in &agents {
        rows.extend(bus.schedules(a).await?.into_iter().map(|info| Row { info }));
    }
    let now = now_ms();
    if json {
        output::print_json(&rows)?;
    } else if !rows.is_empty() {
        output::print(&render(&rows, now))?;
    }
    if !no_inbox.is_empty() {
        return Err(Error::NotFound(format!(
            "no inbox for {}: nothing has been sent to it yet and no worker has run for it (check the id with `fabric status`)",
            no_inbox.join(", ")
        )));
    }
    if rows.is_empty() {
        return Err(Error::NotFound(if agents.is_empty() {
            format!(
                "no agents found (no stream keys matching agent:*:inbox) on {}",
                bus.url()
            )
        } else {
            format!(
                "no schedules registered for {} (workers record #[handler(every = …)] / cron = … schedules in agent:<id>:schedules when they start)",
                agents.join(", ")
            )
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        let info: ScheduleInfo = serde_json::from_value(serde_json::json!({
            "name": "digest", "agent": "memory", "message_type": "digest",
            "spec": "cron 0 0 3 * * * Europe/Paris", "cron": "0 0 3 * * *", "tz": "Europe/Paris",
            "missed": "skip", "payload": {}, "seen_ms": 1,
            "since_ms": 1, "last_ms": 1_764_295_200_000u64, "last_fired_ms": 1_764_295_200_040u64,
            "next_run_ms": 1_764_381_600_000u64
        }))
        .unwrap();
        let now = 1_764_295_260_000;
        let text = render(&[Row { info }], now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("AGENT   NAME    TYPE"), "{text}");
        assert!(lines[1].contains("cron 0 0 3 * * * Europe/Paris"), "{text}");
        assert!(lines[1].contains("skip"), "{text}");
        assert!(lines[1].contains("2025-11-29 02:00:00Z (in 23h"), "{text}");
        assert!(
            lines[1].ends_with("2025-11-28 02:00:00Z (60.0s ago)"),
            "{text}"
        );
    }
}
