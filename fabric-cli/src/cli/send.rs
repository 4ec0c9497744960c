//! `fabric send TO [PAYLOAD]`.

use std::io::Read;
use std::time::Duration;

use fabric_worker::{Message, Priority};
use serde_json::{Map, Value, json};

use super::{SendArgs, Target, validate_agent};
use crate::error::{Error, Result};
use crate::output;

/// Largest payload `fabric send` accepts (the MCP server's cap too).
use crate::mcp::params::MAX_PAYLOAD_BYTES;

/// `--priority`: the library's one rule and error text.
pub(crate) fn parse_priority(s: &str) -> Result<Priority> {
    s.parse::<Priority>()
        .map_err(|e| Error::Usage(e.to_string()))
}

fn read_payload(arg: Option<&str>) -> Result<Map<String, Value>> {
    let text = match arg {
        None => return Ok(Map::new()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .take(MAX_PAYLOAD_BYTES as u64 + 1)
                .read_to_string(&mut s)
                .map_err(|e| Error::io("cannot read the payload from stdin", e))?;
            s
        }
        Some(a) if a.starts_with('@') => {
            let path = &a[1..];
            std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("cannot read the payload file {path}"), e))?
        }
        Some(a) => a.to_owned(),
    };
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::Usage(format!(
            "the payload is larger than {MAX_PAYLOAD_BYTES} bytes (1 MiB); store big data elsewhere and send a reference"
        )));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Error::Usage(format!(
            "the payload must be a JSON object like '{{\"task_type\": \"code_review\"}}', not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
        Err(e) => Err(Error::Usage(format!(
            "the payload is not valid JSON ({e}); quote it for the shell, e.g. '{{\"task_type\": \"code_review\"}}'"
        ))),
    }
}

pub(crate) fn build(args: &SendArgs) -> Result<Message> {
    validate_agent(&args.to)?;
    validate_agent(&args.from).map_err(|e| Error::Usage(format!("--from: {e}")))?;
    let payload = read_payload(args.payload.as_deref())?;
    let priority = parse_priority(&args.priority)?;
    let mut m = match &args.task_type {
        Some(t) => Message::task(&args.from, &args.to, t, Value::Object(payload)),
        None => Message::new(
            &args.from,
            &args.to,
            &args.message_type,
            Value::Object(payload),
        ),
    }
    .with_priority(priority);
    if args.task_type.is_some() && args.message_type != "task" {
        return Err(Error::Usage(
            "--task-type sends a message of type task; drop --type or --task-type".into(),
        ));
    }
    if let Some(r) = &args.reply_to {
        m = m.with_reply_to(r);
    }
    if let Some(c) = &args.correlation_id {
        m = m.with_correlation_id(c);
    }
    for h in &args.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--header {h:?}: expected NAME=VALUE")))?;
        if k.trim().is_empty() {
            return Err(Error::Usage(format!("--header {h:?}: the name is empty")));
        }
        m = m.with_header(k.trim(), v);
    }
    if let Some(secs) = args.delay {
        if !(secs.is_finite() && (0.0..=365.0 * 86_400.0).contains(&secs)) {
            return Err(Error::Usage(format!(
                "--in {secs}: give a number of seconds between 0 and 31536000 (a year)"
            )));
        }
        m = m.with_delay(Duration::from_secs_f64(secs));
    }
    if let Some(at) = &args.at {
        m = m.deliver_at(parse_at(at)?);
    }
    m.validate().map_err(|e| Error::Usage(e.to_string()))?;
    Ok(m)
}

/// `--at`: RFC 3339, or a UTC time without an offset.
fn parse_at(s: &str) -> Result<std::time::SystemTime> {
    let t = s.trim();
    let utc = chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.to_utc())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc())
        })
        .map_err(|_| {
            Error::Usage(format!(
                "--at {s:?}: give a time like 2026-11-28T15:00:00Z (RFC 3339), or 2026-11-28T15:00:00 for UTC"
            ))
        })?;
    Ok(std::time::SystemTime::from(utc))
}

pub(crate) async fn run(at: &Target, json: bool, args: SendArgs) -> Result<()> {
    let message = build(&args)?;
    let wait = match args.wait {
        Some(s) if !(s > 0.0 && s <= 3600.0) => {
            return Err(Error::Usage(format!(
                "--wait {s}: give a number of seconds between 0 and 3600"
            )));
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let bus = at.connect().await?;
    match wait {
        None => {
            let to = message.to_agent.clone();
            let priority = message.priority;
            let receipt = match &args.idempotency_key {
                Some(key) => {
                    bus.send_once(message, key, fabric_worker::bus::DEFAULT_DEDUP_WINDOW)
                        .await?
                }
                None => bus.send(message).await?,
            };
            if json {
                let mut out = json!({
                    "message_id": receipt.message_id,
                    "status": receipt.status,
                    "stream_id": receipt.stream_id,
                    "timestamp": receipt.timestamp,
                    "to_agent": to,
                });
                if let Some(at) = receipt.deliver_at_ms {
                    out["deliver_at_ms"] = json!(at);
                }
                output::print_json(&out)
            } else if let Some(at) = receipt.deliver_at_ms {
                let when =
                    chrono::DateTime::from_timestamp_millis(i64::try_from(at).unwrap_or(i64::MAX))
                        .map_or_else(
                            || at.to_string(),
                            |d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                        );
                output::println(&format!(
                    "scheduled {} for {to} at {when} (in {}; priority {})",
                    receipt.message_id,
                    fabric_worker::keys::delayed(&fabric_worker::keys::inbox(&to)),
                    priority.name()
                ))
            } else {
                let verb = if receipt.status == "duplicate" {
                    "already sent (same idempotency key; nothing queued):"
                } else {
                    "queued"
                };
                output::println(&format!(
                    "{verb} {} for {to} as {} in {} (priority {})",
                    receipt.message_id,
                    receipt.stream_id,
                    fabric_worker::keys::inbox(&to),
                    priority.name()
                ))
            }
        }
        Some(timeout) => {
            let id = message.id.clone();
            let to = message.to_agent.clone();
            let reply = with_progress_line(&to, timeout, bus.request(message, timeout)).await?;
            if json {
                output::print_json(&reply)
            } else {
                let payload =
                    serde_json::to_string_pretty(&reply.payload).unwrap_or_else(|_| "{}".into());
                output::println(&format!(
                    "reply from {} to {id} ({}):\n{payload}",
                    reply.from_agent, reply.message_type
                ))
            }
        }
    }
}

/// Awaits `fut`; on a terminal, a line on stderr says how long it has been waiting for
/// `to` (rewritten every second, erased when done).
async fn with_progress_line<T>(to: &str, timeout: Duration, fut: impl Future<Output = T>) -> T {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        return fut.await;
    }
    tokio::pin!(fut);
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let total = timeout.as_secs_f64();
    let out = loop {
        tokio::select! {
            r = &mut fut => break r,
            _ = tick.tick() => {
                let waited = started.elapsed().as_secs_f64();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\rwaiting for {to}'s reply… {waited:.0} s of {total} s ");
                let _ = err.flush();
            }
        }
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities() {
        assert_eq!(parse_priority("HIGH").unwrap(), Priority::High);
        assert_eq!(parse_priority("1").unwrap(), Priority::Low);
        assert!(parse_priority("9").is_err());
        assert!(parse_priority("meh").is_err());
    }

    #[test]
    fn payloads() {
        assert_eq!(read_payload(None).unwrap(), Map::new());
        assert_eq!(read_payload(Some("{\"a\":1}")).unwrap()["a"], json!(1));
        let e = read_payload(Some("[1]")).unwrap_err().to_string();
        assert!(e.contains("not an array"), "{e}");
        let e = read_payload(Some("{oops")).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
