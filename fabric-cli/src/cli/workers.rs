//! `fabric workers [AGENT…]`: the worker processes serving each agent, from their presence
//! records (`agent:<id>:workers`): where they run, what they handle, and whether they are
//! live, stopped gracefully, or gone (no refresh for too long: killed or cut off).

use fabric_worker::bus::WorkerPresence;
use serde::Serialize;

use super::{Target, WorkersArgs};
use crate::error::{Error, Result};
use crate::output::{self, Table, duration_ms, now_ms};

/// One worker of one agent, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    agent: String,
    state: &'static str,
    #[serde(flatten)]
    worker: WorkerPresence,
}

/// `live`, `stopped` (said goodbye) or `gone` (stopped refreshing its record).
fn state(w: &WorkerPresence, now_ms: u64) -> &'static str {
    if w.stopped_ms.is_some() {
        "stopped"
    } else if w.is_live(now_ms) {
        "live"
    } else {
        "gone"
    }
}

/// The table `fabric workers` prints.
pub(crate) fn render(rows: &[Row], now_ms: u64) -> String {
    let mut t = Table::new(
        &[
            "AGENT",
            "STATE",
            "CONSUMER",
            "HOST",
            "PID",
            "UP",
            "LAST SEEN",
            "IN FLIGHT",
            "HANDLES",
        ],
        &["PID", "UP", "LAST SEEN", "IN FLIGHT"],
    );
    for r in rows {
        let w = &r.worker;
        let until = w.stopped_ms.unwrap_or(now_ms);
        t.row(vec![
            r.agent.clone(),
            r.state.to_owned(),
            w.consumer.clone(),
            w.host.clone(),
            w.pid.to_string(),
            duration_ms(until.saturating_sub(w.started_ms)),
            format!("{} ago", duration_ms(now_ms.saturating_sub(w.seen_ms))),
            w.in_flight.to_string(),
            w.message_types.join(", "),
        ]);
    }
    t.render()
}

pub(crate) async fn run(at: &Target, json: bool, args: WorkersArgs) -> Result<()> {
    let (bus, agents) = at.agents(&args.agents).await?;
    let now = now_ms();
    let mut rows = Vec::new();
    let mut without = Vec::new();
    for a in &agents {
        let mut ws = bus.workers(a).await?;
        if ws.is_empty() {
            without.push(a.as_str());
        }
        ws.sort_by_key(|w| std::cmp::Reverse(w.seen_ms));
        rows.extend(ws.into_iter().map(|w| Row {
            agent: a.clone(),
            state: state(&w, now),
            worker: w,
        }));
    }
    if json {
        output::print_json(&rows)?;
    } else if !rows.is_empty() {
        output::print(&render(&rows, now))?;
    }
    if rows.is_empty() {
        return Err(Error::NotFound(if agents.is_empty() {
            format!(
                "no agents found (no stream keys matching agent:*:inbox) on {}",
                bus.url()
            )
        } else {
            format!(
                "no worker has registered for {} (workers write agent:<id>:workers when they start)",
                without.join(", ")
            )
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(seen_ms: u64, stopped_ms: Option<u64>) -> WorkerPresence {
        serde_json::from_value(serde_json::json!({
            "consumer": "host-1-abcd", "host": "host", "pid": 42, "group": "percy_workers",
            "message_types": ["task", "ping"], "started_ms": 1_000, "seen_ms": seen_ms,
            "stopped_ms": stopped_ms, "version": "0.1.0"
        }))
        .unwrap()
    }

    #[test]
    fn states_and_the_table() {
        let now = 10_000_000;
        assert_eq!(state(&presence(now - 1_000, None), now), "live");
        assert_eq!(state(&presence(now - 3_600_000, None), now), "gone");
        assert_eq!(
            state(&presence(now - 1_000, Some(now - 500)), now),
            "stopped"
        );
        let rows = vec![Row {
            agent: "percy".into(),
            state: "live",
            worker: presence(now - 2_000, None),
        }];
        let text = render(&rows, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("AGENT  STATE"), "{text}");
        assert!(lines[1].starts_with("percy  live"), "{text}");
        assert!(lines[1].ends_with("task, ping"), "{text}");
    }
}
