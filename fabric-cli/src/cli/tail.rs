//! `fabric tail AGENT`: watch an inbox live, reading with `XREAD` (no consumer group),
//! so nothing is consumed, acknowledged or changed.

use std::time::Duration;

use fabric_worker::bus::PeekedEntry;
use fabric_worker::keys;
use serde_json::{Value, json};

use super::{TailArgs, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output;

/// One human line for an entry.
pub(crate) fn line(e: &PeekedEntry, full: bool) -> String {
    match &e.message {
        Some(m) => {
            let payload = m.payload.to_string();
            let payload = if full {
                payload
            } else {
                output::preview(&payload, 100)
            };
            let attempt = if e.attempt > 1 {
                format!("  (attempt {})", e.attempt)
            } else {
                String::new()
            };
            format!(
                "{}  {}  {} -> {}  {}  {}  {}{attempt}",
                e.stream_id,
                m.timestamp,
                m.from_agent,
                m.to_agent,
                m.message_type,
                m.priority.name(),
                payload
            )
        }
        None => format!(
            "{}  (not a valid message)  {}",
            e.stream_id,
            output::preview(e.raw_data.as_deref().unwrap_or(""), 100)
        ),
    }
}

/// One JSON line for an entry: the message plus `_stream_id` (and `_attempt`).
pub(crate) fn json_line(e: &PeekedEntry) -> Value {
    match &e.message {
        Some(m) => {
            let mut v = serde_json::to_value(m).unwrap_or_else(|_| json!({}));
            if let Value::Object(o) = &mut v {
                o.insert("_stream_id".into(), json!(e.stream_id));
                o.insert("_attempt".into(), json!(e.attempt));
                if !m.headers.is_empty() {
                    o.insert("_headers".into(), json!(m.headers));
                }
            }
            v
        }
        None => json!({"_stream_id": e.stream_id, "_invalid": true, "raw_data": e.raw_data}),
    }
}

pub(crate) async fn run(at: &Target, json: bool, args: TailArgs) -> Result<()> {
    validate_agent(&args.agent)?;
    if let Some(a) = &args.after {
        keys::validate_stream_id(a).map_err(|e| Error::Usage(format!("--after: {e}")))?;
    }
    if args.limit == Some(0) {
        return Err(Error::Usage("--limit must be at least 1".into()));
    }
    let bus = at.connect().await?;
    super::status::require_inbox(&bus, &args.agent).await?;
    let mut cursor = match (&args.after, args.from_start) {
        (Some(a), _) => a.clone(),
        (None, true) => "0".into(),
        (None, false) => "$".into(),
    };
    eprintln!(
        "watching {} on {} (nothing is consumed; Ctrl-C to stop)",
        keys::inbox(&args.agent),
        bus.url()
    );
    let mut printed: u64 = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let batch = 100usize.min(
            args.limit
                .map(|l| usize::try_from(l - printed).unwrap_or(usize::MAX))
                .unwrap_or(usize::MAX),
        );
        let read = bus.peek(&args.agent, &cursor, batch, Some(Duration::from_secs(2)));
        let (entries, next) = tokio::select! {
            r = read => r?,
            _ = &mut ctrl_c => return Ok(()),
        };
        cursor = next;
        for e in &entries {
            if json {
                output::println(&json_line(e).to_string())?;
            } else {
                output::println(&line(e, args.full))?;
            }
            printed += 1;
            if args.limit.is_some_and(|l| printed >= l) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_worker::Message;

    #[test]
    fn lines() {
        let m = Message::new("coder", "percy", "task", json!({"x": 1}));
        let e = PeekedEntry {
            stream_id: "1-0".into(),
            attempt: 2,
            message: Some(m),
            raw_data: None,
        };
        let l = line(&e, false);
        assert!(l.starts_with("1-0  "), "{l}");
        assert!(
            l.contains("coder -> percy  task  normal  {\"x\":1}  (attempt 2)"),
            "{l}"
        );
        let j = json_line(&e);
        assert_eq!(j["_stream_id"], "1-0");
        assert_eq!(j["payload"]["x"], 1);
        let bad = PeekedEntry {
            stream_id: "2-0".into(),
            attempt: 1,
            message: None,
            raw_data: Some("garbage".into()),
        };
        assert!(line(&bad, false).contains("not a valid message"));
        assert_eq!(json_line(&bad)["_invalid"], true);
    }
}
