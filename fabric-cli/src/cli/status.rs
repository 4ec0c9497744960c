//! `fabric status [AGENT…] [--watch]`.

use std::io::{IsTerminal, Write};

use fabric_worker::bus::QueueStatus;

use super::{StatusArgs, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output::{self, Table, duration_ms, opt_duration_ms};

/// The table `fabric status` prints.
pub(crate) fn render(statuses: &[QueueStatus]) -> String {
    let mut t = Table::new(
        &[
            "AGENT",
            "GROUP",
            "DEPTH",
            "PENDING",
            "OLDEST PENDING",
            "DEAD",
            "RETRIES",
            "SCHEDULED",
            "CONSUMERS (IDLE, PENDING)",
        ],
        &[
            "DEPTH",
            "PENDING",
            "OLDEST PENDING",
            "DEAD",
            "RETRIES",
            "SCHEDULED",
        ],
    );
    for s in statuses {
        let consumers = if s.consumers.is_empty() {
            if s.stream_length == 0 && s.last_generated_id.is_none() {
                "(no inbox)".to_owned()
            } else if !s.group_exists {
                "(no group yet)".to_owned()
            } else {
                "(none)".to_owned()
            }
        } else {
            s.consumers
                .iter()
                .map(|c| {
                    format!(
                        "{} (idle {}, {} pending)",
                        c.name,
                        duration_ms(c.idle_ms),
                        c.pending
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        t.row(vec![
            if s.paused {
                format!("{} (paused)", s.agent)
            } else {
                s.agent.clone()
            },
            s.group.clone(),
            s.queue_depth.to_string(),
            s.pending.to_string(),
            opt_duration_ms(s.oldest_pending_age_ms),
            s.dead_letters.to_string(),
            s.scheduled_retries.to_string(),
            s.scheduled.to_string(),
            consumers,
        ]);
    }
    t.render()
}

fn exists(s: &QueueStatus) -> bool {
    s.stream_length > 0 || s.last_generated_id.is_some() || s.dead_letters > 0
}

/// "No such agent" for commands about one agent (`pending`, `tail`, `dead-letters`), as
/// `status` says it:
/// exit code 4 when it has no inbox (nothing was ever sent to it, no worker ever ran).
pub(crate) async fn require_inbox(bus: &fabric_worker::Bus, agent: &str) -> Result<()> {
    if exists(&bus.queue_status(agent, None).await?) {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "no inbox for {agent}: nothing has been sent to it yet and no worker has run for it (check the id with `fabric status`)"
    )))
}

pub(crate) async fn run(at: &Target, json: bool, args: StatusArgs) -> Result<()> {
    for a in &args.agents {
        validate_agent(a)?;
    }
    if let Some(g) = &args.group {
        fabric_worker::keys::validate_group(g).map_err(|e| Error::Usage(e.to_string()))?;
    }
    let bus = at.connect().await?;
    let agents = if args.agents.is_empty() {
        let found = bus.agents().await?;
        if found.is_empty() {
            if json {
                output::println("[]")?;
            }
            return Err(Error::NotFound(format!(
                "no agent inboxes found (no stream keys matching agent:*:inbox) on {}",
                bus.url()
            )));
        }
        found
    } else {
        args.agents.clone()
    };
    let mut statuses = Vec::with_capacity(agents.len());
    for a in &agents {
        statuses.push(bus.queue_status(a, args.group.as_deref()).await?);
    }
    if args.watch {
        if let Some(missing) = statuses.iter().find(|s| !exists(s)) {
            return Err(Error::NotFound(format!(
                "no inbox for {}: nothing has been sent to it yet (check the id with `fabric status`)",
                missing.agent
            )));
        }
        return watch(&bus, json, &args, statuses).await;
    }
    if json {
        output::print_json(&statuses)?;
    } else {
        output::print(&render(&statuses))?;
    }
    let missing: Vec<&str> = statuses
        .iter()
        .filter(|s| !exists(s))
        .map(|s| s.agent.as_str())
        .collect();
    if !args.agents.is_empty() && !missing.is_empty() {
        return Err(Error::NotFound(format!(
            "no inbox for {}: nothing has been sent to {} yet",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        )));
    }
    Ok(())
}

/// `status --watch`: a snapshot every `--interval` until Ctrl-C (or the reader of a pipe
/// goes away). On a terminal the screen is cleared and the table redrawn; on a pipe the
/// snapshots follow each other, each after a line with its time (with `--json`, one JSON
/// array per line). A failed refresh is reported on stderr and tried again.
async fn watch(
    bus: &fabric_worker::Bus,
    json: bool,
    args: &StatusArgs,
    first: Vec<QueueStatus>,
) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut statuses = first;
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        let text = if json {
            let line = serde_json::to_string(&statuses)
                .map_err(|e| Error::Server(format!("cannot encode JSON output: {e}")))?;
            format!("{line}\n")
        } else if tty {
            format!(
                "\x1b[H\x1b[2JEvery {:?}: fabric status    {now}    (Ctrl-C to stop)\n\n{}",
                args.interval,
                output::terminal_safe(&render(&statuses))
            )
        } else {
            format!(
                "--- {now} ---\n{}\n",
                output::terminal_safe(&render(&statuses))
            )
        };
        let written = {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Error::io("cannot write to stdout", e)),
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        loop {
            match snapshot(bus, args).await {
                Ok(s) => {
                    statuses = s;
                    break;
                }
                Err(e) => {
                    eprintln!("error: {e} (trying again in {:?})", args.interval);
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    }
                }
            }
        }
    }
}

/// The statuses of the named agents, or of every agent with an inbox.
async fn snapshot(bus: &fabric_worker::Bus, args: &StatusArgs) -> Result<Vec<QueueStatus>> {
    let agents = if args.agents.is_empty() {
        bus.agents().await?
    } else {
        args.agents.clone()
    };
    let mut statuses = Vec::with_capacity(agents.len());
    for a in &agents {
        statuses.push(bus.queue_status(a, args.group.as_deref()).await?);
    }
    Ok(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_worker::bus::ConsumerStatus;

    #[test]
    fn renders_consumers_on_their_own_lines() {
        let s = QueueStatus {
            agent: "percy".into(),
            stream: "agent:percy:inbox".into(),
            group: "percy_workers".into(),
            queue_depth: 3,
            undelivered: Some(2),
            pending: 1,
            consumers: vec![
                ConsumerStatus {
                    name: "w1".into(),
                    pending: 1,
                    idle_ms: 1200,
                    inactive_ms: None,
                },
                ConsumerStatus {
                    name: "w2".into(),
                    pending: 0,
                    idle_ms: 65_000,
                    inactive_ms: None,
                },
            ],
            oldest_pending_age_ms: Some(12_000),
            oldest_pending_idle_ms: Some(1200),
            stream_length: 5,
            last_generated_id: Some("1-0".into()),
            first_entry_id: None,
            last_entry_id: None,
            group_exists: true,
            dead_letters: 2,
            scheduled_retries: 0,
            scheduled: 0,
            paused: false,
            lanes: Vec::new(),
            expired: 0,
            stream_info: None,
        };
        let text = render(&[s]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("AGENT  GROUP"), "{text}");
        assert!(lines[1].starts_with("percy  percy_workers"), "{text}");
        assert!(lines[1].contains("12.0s"), "{text}");
        assert!(lines[1].ends_with("w1 (idle 1.2s, 1 pending)"), "{text}");
        assert!(
            lines[2]
                .trim_start()
                .starts_with("w2 (idle 1m05s, 0 pending)"),
            "{text}"
        );
    }
}
