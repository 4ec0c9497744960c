//! Idempotent sends: [`Bus::send_once`]. A sender that retries (a timeout, a crashed
//! process, an AI agent calling a tool twice) sends a message once per key and window.

use std::time::Duration;

use super::send::notes_for;
use super::{Bus, Mode};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields};
use crate::receipt::SendReceipt;

/// Default window of [`Bus::send_once`]: a day.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(Error::invalid(
            "idempotency key",
            key,
            format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters, without control characters"
            ),
        ));
    }
    Ok(())
}

/// The message id secure mode gives an idempotent send: the same for the same sender,
/// recipient and key (`msg:` and 32 hex digits of their SHA-256), so the router, which
/// delivers a message id once per its window, delivers it once.
fn derived_id(m: &Message, key: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [m.from_agent.as_str(), m.to_agent.as_str(), key] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "msg:{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Bus {
    /// Sends `message` unless one with the same idempotency `key` was sent to the same
    /// recipient within `window` ([`DEFAULT_DEDUP_WINDOW`] is a day): then nothing is
    /// queued and the first send's receipt comes back, with `status` `"duplicate"`. The
    /// check and the append are one atomic step in the inbox's slot (`FCALL
    /// fabric_send_once`), so two processes sending the same key at once queue it once.
    ///
    /// In secure mode the message goes to the sender's outbox with an id derived from the
    /// sender, the recipient and the key, and the router delivers that id once within its
    /// deduplication window (`fabric router --dedup-window-secs`, default 15 min): the
    /// receipt is then always `"queued"` (the outbox's).
    pub async fn send_once(
        &self,
        mut message: Message,
        key: &str,
        window: Duration,
    ) -> Result<SendReceipt> {
        check_key(key)?;
        if message.deliver_at_ms.is_some() {
            return Err(Error::invalid(
                "deliver_at",
                &format!("{:?}", message.deliver_at_ms),
                "cannot be combined with an idempotency key: send_once delivers at once (send the delayed message with send, which returns its receipt once)",
            ));
        }
        if window.is_zero() {
            return Err(Error::invalid("window", "0", "must be positive"));
        }
        if self.inner.mode == Mode::Secure {
            message.id = derived_id(&message, key);
            return self.send(message).await;
        }
        if message.message_type == "task" && message.reply_to.is_none() {
            message.reply_to = Some(keys::results(&message.from_agent));
        }
        self.send_once_as_is(message, key, window).await
    }

    /// [`Bus::send_once`] in direct mode, with the message as it is (a `task` without
    /// `reply_to` gets none: a workflow's steps reply to the workflow).
    pub(crate) async fn send_once_as_is(
        &self,
        mut message: Message,
        key: &str,
        window: Duration,
    ) -> Result<SendReceipt> {
        check_key(key)?;
        message.validate()?;
        crate::trace_context::propagate(&mut message.headers);
        let data = message.to_data()?;
        let headers = message.headers_json()?;
        let stream = keys::inbox(&message.to_agent);
        let once = keys::once(&stream);
        let ids = keys::once_ids(&stream);
        let lane = message.priority.lane().map(|l| keys::lane(&stream, l));
        let mut ks = vec![stream.as_str(), once.as_str(), ids.as_str()];
        ks.extend(lane.as_deref());
        let mut cmd = crate::broker::functions::fcall("fabric_send_once", &ks);
        cmd.arg(key)
            .arg(crate::time::millis(window))
            .arg(&message.id)
            .arg(&message.timestamp)
            .arg(fields::DATA)
            .arg(&data);
        if let Some(h) = &headers {
            cmd.arg(fields::HEADERS).arg(h);
        }
        let (appended, what): (i64, String) = self
            .broker()
            .call(&cmd, "FCALL fabric_send_once", &stream)
            .await?;
        if appended == 1 {
            tracing::debug!(message_id = %message.id, to_agent = %message.to_agent, stream_id = %what, "message queued (idempotent)");
            if self.inner.notify {
                for (channel, note) in notes_for(std::iter::once(&message)) {
                    let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(&note)
                        .query_async(&mut self.conn())
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(%channel, error = %e, "message queued, but its new-message notification was not published");
                    }
                }
            }
            if !self.hooks().is_empty() {
                self.hooks().sent(crate::hooks::sent_event(&message, &what));
            }
            return Ok(SendReceipt {
                message_id: message.id,
                status: "queued",
                stream_id: what,
                timestamp: message.timestamp,
                to: message.to_agent,
                deliver_at_ms: None,
            });
        }
        let mut parts = what.splitn(3, ' ');
        let (Some(stream_id), Some(first_id), Some(timestamp)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::protocol("FCALL fabric_send_once", what));
        };
        tracing::info!(key, first = %first_id, to_agent = %message.to_agent, "duplicate send: nothing queued");
        Ok(SendReceipt {
            message_id: first_id.to_owned(),
            status: "duplicate",
            stream_id: stream_id.to_owned(),
            timestamp: timestamp.to_owned(),
            to: message.to_agent,
            deliver_at_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_and_derived_ids() {
        assert!(check_key("order-123").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(201)).is_err());
        assert!(check_key("a\nb").is_err());
        let m = Message::new("coder", "percy", "task", json!({}));
        let a = derived_id(&m, "k1");
        assert_eq!(
            a,
            derived_id(&Message::new("coder", "percy", "x", json!({})), "k1")
        );
        assert_ne!(a, derived_id(&m, "k2"));
        assert_ne!(
            a,
            derived_id(&Message::new("percy", "percy", "task", json!({})), "k1")
        );
        assert!(a.starts_with("msg:") && a.len() == 40, "{a}");
    }
}
