//! `fabric show AGENT ID`: one message, wherever it is.

use fabric_worker::bus::{MessageDetails, MessageLocation};

use super::{ShowArgs, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output::{self, duration_ms};

/// Where the message is, in words.
fn location(d: &MessageDetails) -> String {
    let lane = |l: &Option<String>| {
        l.as_ref()
            .map(|l| format!(" ({l} lane)"))
            .unwrap_or_default()
    };
    match &d.location {
        MessageLocation::Queued { lane: l } => {
            format!(
                "queued in {}{}, not yet delivered to its workers",
                d.key,
                lane(l)
            )
        }
        MessageLocation::Pending {
            lane: l,
            consumer,
            idle_ms,
            deliveries,
        } => format!(
            "pending in {}{}: held by {consumer}, idle {}, delivered {deliveries} time{}",
            d.key,
            lane(l),
            duration_ms(*idle_ms),
            if *deliveries == 1 { "" } else { "s" }
        ),
        MessageLocation::Acknowledged { lane: l } => format!(
            "acknowledged by its workers (handled); still in {}{} until trimmed",
            d.key,
            lane(l)
        ),
        MessageLocation::Retry {
            due_at_ms,
            due_in_ms,
            lane: l,
        } => format!(
            "waiting in {} for its next attempt, due {} ({}){}",
            d.key,
            if *due_in_ms == 0 {
                "now".to_owned()
            } else {
                format!("in {}", duration_ms(*due_in_ms))
            },
            when(*due_at_ms),
            lane(l)
        ),
        MessageLocation::Scheduled {
            due_at_ms,
            due_in_ms,
            lane: l,
        } => format!(
            "scheduled in {}, to be delivered in {} ({}){}",
            d.key,
            duration_ms(*due_in_ms),
            when(*due_at_ms),
            lane(l)
        ),
        MessageLocation::DeadLetter {
            reason,
            dead_at,
            from_stream,
            from_stream_id,
            ..
        } => format!(
            "dead letter in {} ({reason}, at {dead_at}), from {from_stream} entry {from_stream_id}",
            d.key
        ),
    }
}

fn when(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        )
}

/// The text `fabric show` prints.
pub(crate) fn render(d: &MessageDetails) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("agent", d.agent.clone()),
        ("where", location(d)),
        ("id", d.id.clone().unwrap_or_else(|| "-".into())),
        ("attempt", d.attempt.to_string()),
    ];
    if let MessageLocation::DeadLetter { error, .. } = &d.location {
        rows.push(("dead error", error.clone()));
    }
    if let Some(e) = &d.last_error {
        rows.push(("last error", e.clone()));
    }
    match &d.message {
        Some(m) => {
            rows.push(("message id", m.id.clone()));
            rows.push(("type", m.message_type.clone()));
            rows.push(("from", m.from_agent.clone()));
            rows.push(("to", m.to_agent.clone()));
            rows.push(("sent", m.timestamp.clone()));
            rows.push(("priority", format!("{:?}", m.priority).to_lowercase()));
            rows.push(("ttl", format!("{} s", m.ttl_seconds)));
            if let Some(r) = &m.reply_to {
                rows.push(("reply to", r.clone()));
            }
            if let Some(c) = &m.correlation_id {
                rows.push(("correlation", c.clone()));
            }
            if let Some(s) = &m.sender {
                rows.push(("sender", format!("{s} (authenticated)")));
            }
            for (k, v) in &m.headers {
                rows.push(("header", format!("{k}={v}")));
            }
        }
        None => {
            rows.push((
                "invalid",
                d.decode_error.clone().unwrap_or_else(|| "-".into()),
            ));
        }
    }
    for (k, v) in &d.fields {
        if k.starts_with("dead_") || k == "attempt" || k == "last_error" || k == "sender" {
            continue;
        }
        rows.push(("field", format!("{k}={v}")));
    }
    for g in &d.groups {
        let detail = match (&g.consumer, g.idle_ms, g.deliveries) {
            (Some(c), Some(i), Some(n)) => {
                format!(" ({c}, idle {}, {n} deliveries)", duration_ms(i))
            }
            _ => String::new(),
        };
        rows.push(("group", format!("{}: {}{detail}", g.group, g.state)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out.push_str("payload:\n");
    let payload = match &d.message {
        Some(m) => serde_json::to_string_pretty(&m.payload).unwrap_or_default(),
        None => d.raw_data.clone().unwrap_or_default(),
    };
    for line in payload.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub(crate) async fn run(at: &Target, json: bool, args: ShowArgs) -> Result<()> {
    validate_agent(&args.agent)?;
    let bus = at.connect().await?;
    super::status::require_inbox(&bus, &args.agent).await?;
    let Some(d) = bus.message(&args.agent, &args.id).await? else {
        return Err(Error::NotFound(format!(
            "no such entry: no message {} for {} in its inbox, lanes, retries, schedule or dead letters (handled entries are gone once trimmed)",
            args.id, args.agent
        )));
    };
    if json {
        return output::print_json(&d);
    }
    output::print(&render(&d))
}
