//! Request/reply: [`Bus::request`] and the reply listener that matches replies to requests.
//!
//! Each requesting agent of a process gets one private reply stream,
//! `agent:<agent>:replies:<instance>`, read by one listener task with `XREAD BLOCK` on a
//! connection of its own. Replies are matched to their request by `in_reply_to` (else by
//! `correlation_id`), deleted once read, and the stream expires an hour after its last
//! reply if the process goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Bus, Mode};
use crate::broker::{Broker, Conn, RawEntry, lock, reconnect_backoff, wire};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields};

/// How long one listener read blocks.
const LISTEN_BLOCK: Duration = Duration::from_secs(5);

impl Bus {
    /// Sends `message` with a private `reply_to` stream of this process and waits up to
    /// `timeout` for the handler's reply. Many requests may run concurrently; each gets its own reply.
    ///
    /// Returns the reply message (type `response`). A handler that failed for good answers
    /// with an `error` message, returned as [`Error::RequestFailed`]. On timeout the request
    /// stays queued; its eventual reply is discarded.
    pub async fn request(&self, mut message: Message, timeout: Duration) -> Result<Message> {
        keys::validate_agent(&message.from_agent).map_err(|e| e.renamed("from_agent"))?;
        let listener = self.reply_listener(&message.from_agent).await?;
        message.reply_to = Some(listener.stream.clone());
        if message.correlation_id.is_none() {
            message.correlation_id = Some(uuid::Uuid::new_v4().to_string());
        }
        let id = message.id.clone();
        let to_agent = message.to_agent.clone();
        let rx = listener.register(&id, message.correlation_id.clone(), &to_agent);
        let _unregister = Unregister {
            listener: listener.clone(),
            id: id.clone(),
        };
        self.send(message).await?;
        wait_for_reply(rx, id, to_agent, timeout).await
    }

    async fn reply_listener(&self, agent: &str) -> Result<Arc<ReplyListener>> {
        if let Some(l) = lock(&self.inner.replies).get(agent).cloned() {
            return Ok(l);
        }
        let conn = self.broker().dedicated(LISTEN_BLOCK).await?;
        let listener = Arc::new(ReplyListener {
            stream: keys::reply_stream(agent, &self.inner.instance),
            waiters: Mutex::new(Some(HashMap::new())),
        });
        let winner = lock(&self.inner.replies)
            .entry(agent.to_owned())
            .or_insert_with(|| listener.clone())
            .clone();
        if Arc::ptr_eq(&winner, &listener) {
            tokio::spawn(run_reply_listener(
                listener.clone(),
                conn,
                self.broker().clone(),
                self.inner.mode == Mode::Secure,
                self.inner.cancel.clone(),
            ));
        }
        Ok(winner)
    }
}

/// Waits for the reply delivered to `rx`; maps an `error` reply, a closed listener and the
/// timeout to their errors.
async fn wait_for_reply(
    rx: oneshot::Receiver<Message>,
    message_id: String,
    to_agent: String,
    timeout: Duration,
) -> Result<Message> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(reply)) if reply.message_type == "error" => Err(Error::RequestFailed {
            error: reply
                .payload
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
            message_id,
            to_agent,
        }),
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(Error::ReplyListenerStopped { message_id }),
        Err(_) => Err(Error::RequestTimeout {
            message_id,
            to_agent,
            timeout,
        }),
    }
}

/// A request waiting for its reply.
struct Waiter {
    /// Its correlation id (replies of producers that lose `in_reply_to` match on it).
    correlation: Option<String>,
    /// The agent it was sent to: the only one whose reply is accepted.
    to_agent: String,
    /// Where the reply goes.
    tx: oneshot::Sender<Message>,
}

pub(super) struct ReplyListener {
    stream: String,
    /// Keyed by request message id; `None` once the listener has stopped.
    waiters: Mutex<Option<HashMap<String, Waiter>>>,
}

impl ReplyListener {
    /// Registers a request; a listener that has stopped drops the sender at once, so the
    /// request ends with [`Error::ReplyListenerStopped`] instead of waiting out its timeout.
    fn register(
        &self,
        id: &str,
        correlation: Option<String>,
        to_agent: &str,
    ) -> oneshot::Receiver<Message> {
        let (tx, rx) = oneshot::channel();
        if let Some(w) = lock(&self.waiters).as_mut() {
            w.insert(
                id.to_owned(),
                Waiter {
                    correlation,
                    to_agent: to_agent.to_owned(),
                    tx,
                },
            );
        }
        rx
    }

    /// Hands a reply to the request it answers, if it comes from the agent that request was
    /// sent to: the router's stamp in secure mode (`stamped`), the envelope's `from_agent` in
    /// direct mode. Any other reply is refused and logged; the request keeps waiting.
    fn deliver(&self, in_reply_to: Option<&str>, msg: Message, stamped: bool) {
        let mut guard = lock(&self.waiters);
        let Some(w) = guard.as_mut() else { return };
        let key = in_reply_to
            .filter(|id| w.contains_key(*id))
            .map(str::to_owned)
            .or_else(|| {
                let c = msg.correlation_id.as_deref()?;
                w.iter()
                    .find(|(_, waiter)| waiter.correlation.as_deref() == Some(c))
                    .map(|(k, _)| k.clone())
            });
        let Some(key) = key else {
            tracing::debug!(stream = %self.stream, message_id = %msg.id, "reply for no waiting request (timed out?) discarded");
            return;
        };
        let from = if stamped {
            msg.sender.as_deref()
        } else {
            Some(msg.from_agent.as_str())
        };
        let expected = w.get(&key).map(|waiter| waiter.to_agent.as_str());
        if from != expected {
            tracing::warn!(
                stream = %self.stream,
                request = %key,
                reply_id = %msg.id,
                reply_from = ?from,
                expected = ?expected,
                claimed_from = %msg.from_agent,
                "refused a reply that does not come from the agent the request was sent to (forged?); still waiting for the real one"
            );
            return;
        }
        if let Some(waiter) = w.remove(&key) {
            let _ = waiter.tx.send(msg);
        }
    }

    /// Stops accepting requests and fails the waiting ones.
    fn close(&self) {
        lock(&self.waiters).take();
    }
}

struct Unregister {
    listener: Arc<ReplyListener>,
    id: String,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if let Some(w) = lock(&self.listener.waiters).as_mut() {
            w.remove(&self.id);
        }
    }
}

async fn run_reply_listener(
    listener: Arc<ReplyListener>,
    mut conn: Conn,
    broker: Broker,
    stamped: bool,
    cancel: CancellationToken,
) {
    let stream = listener.stream.clone();
    let mut last = "0-0".to_string();
    let mut backoff = reconnect_backoff();
    loop {
        let read = async {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(crate::time::millis(LISTEN_BLOCK))
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last)
                .query_async::<redis::Value>(&mut conn)
                .await
        };
        let v = tokio::select! {
            _ = cancel.cancelled() => break,
            v = read => v,
        };
        match v
            .map_err(|e| Error::redis("XREAD", &stream, e))
            .and_then(|v| wire::parse_read_reply(&v))
        {
            Ok(streams) => {
                backoff = reconnect_backoff();
                let entries: Vec<RawEntry> = streams.into_iter().flat_map(|(_, e)| e).collect();
                if let Some(l) = entries.last() {
                    last = l.id.clone();
                } else {
                    continue;
                }
                let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
                for e in entries {
                    match e.decode_as(stamped) {
                        Ok(m) => listener.deliver(e.get_str(fields::IN_REPLY_TO), m, stamped),
                        Err(reason) => {
                            tracing::warn!(stream = %stream, stream_id = %e.id, %reason, "undecodable reply ignored");
                        }
                    }
                }
                // Replies are consumed: delete them, and let the stream expire if this process goes away.
                let _: redis::RedisResult<()> = redis::pipe()
                    .cmd("XDEL")
                    .arg(&stream)
                    .arg(&ids)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&stream)
                    .arg(3600)
                    .ignore()
                    .query_async(&mut broker.conn())
                    .await;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(stream = %stream, error = %e, retry_in_ms = crate::time::millis(delay), "reply listener read failed; reconnecting");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                match broker.dedicated(LISTEN_BLOCK).await {
                    Ok(c) => conn = c,
                    Err(e) => {
                        tracing::debug!(stream = %stream, error = %e, "reply listener reconnect failed");
                    }
                }
            }
        }
    }
    listener.close();
    let _: redis::RedisResult<()> = broker.conn().del(&stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listener() -> Arc<ReplyListener> {
        Arc::new(ReplyListener {
            stream: "agent:coder:replies:x".into(),
            waiters: Mutex::new(Some(HashMap::new())),
        })
    }

    #[tokio::test]
    async fn a_stopped_listener_ends_waiting_requests_with_their_own_error() {
        let l = listener();
        let rx = l.register("msg:1", None, "percy");
        l.close();
        let e = wait_for_reply(rx, "msg:1".into(), "percy".into(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ReplyListenerStopped { .. }), "{e:?}");
        assert!(e.to_string().contains("msg:1"), "{e}");
        // A request registered after the stop does not wait for its timeout either.
        let rx = l.register("msg:2", None, "percy");
        let started = std::time::Instant::now();
        let e = wait_for_reply(rx, "msg:2".into(), "percy".into(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ReplyListenerStopped { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn replies_are_matched_by_in_reply_to_then_by_correlation_id() {
        let l = listener();
        let a = l.register("msg:a", Some("corr-a".into()), "percy");
        let b = l.register("msg:b", Some("corr-b".into()), "percy");
        let mut reply = Message::new("percy", "coder", "response", json!({"n": 2}));
        reply.correlation_id = Some("corr-b".into());
        l.deliver(None, reply, false);
        l.deliver(
            Some("msg:a"),
            Message::new("percy", "coder", "response", json!({"n": 1})),
            false,
        );
        assert_eq!(a.await.unwrap().payload["n"], 1);
        assert_eq!(b.await.unwrap().payload["n"], 2);
    }

    #[tokio::test]
    async fn a_reply_from_another_agent_is_refused() {
        let l = listener();
        let mut rx = l.register("msg:a", None, "memory");
        // Direct mode: the envelope's from_agent must be the agent asked.
        l.deliver(
            Some("msg:a"),
            Message::new("percy", "coder", "response", json!({"forged": true})),
            false,
        );
        // Secure mode: the router's stamp decides, whatever the envelope claims.
        let mut claims = Message::new("memory", "coder", "response", json!({"forged": true}));
        claims.sender = Some("percy".into());
        l.deliver(Some("msg:a"), claims, true);
        assert!(rx.try_recv().is_err(), "a forged reply was accepted");
        let mut real = Message::new("memory", "coder", "response", json!({"ok": true}));
        real.sender = Some("memory".into());
        l.deliver(Some("msg:a"), real, true);
        assert_eq!(rx.await.unwrap().payload["ok"], true);
    }
}
