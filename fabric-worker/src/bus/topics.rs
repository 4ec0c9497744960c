//! Topics: [`Bus::publish`] and [`Bus::subscribe`], over Redis Pub/Sub, in the Python bus's
//! format (`{"data", "from", "timestamp", "topic"}`).

use serde::Serialize;
use serde_json::{Value, json};

use super::Bus;
use crate::error::{Error, Result};
use crate::keys;
use crate::message::now_timestamp;

/// A Pub/Sub subscription (see [`Bus::subscribe`]).
pub struct Subscription {
    stream: redis::aio::PubSubStream,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event; `None` when the connection is gone.
    pub async fn next(&mut self) -> Option<TopicEvent> {
        use futures::StreamExt;
        let msg = self.stream.next().await?;
        let raw: String = msg.get_payload().unwrap_or_default();
        let pattern = if msg.from_pattern() {
            msg.get_pattern::<String>().ok()
        } else {
            None
        };
        let parsed: Option<Value> = serde_json::from_str(&raw).ok();
        let python_shaped = parsed
            .as_ref()
            .and_then(Value::as_object)
            .filter(|o| o.contains_key("data") && o.contains_key("topic"));
        let (data, from, timestamp) = match python_shaped {
            Some(o) => (
                o.get("data").cloned().unwrap_or(Value::Null),
                o.get("from").and_then(Value::as_str).map(str::to_owned),
                o.get("timestamp")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            ),
            None => (
                parsed.unwrap_or_else(|| Value::String(raw.clone())),
                None,
                None,
            ),
        };
        Some(TopicEvent {
            topic: msg.get_channel_name().to_owned(),
            pattern,
            data,
            from,
            timestamp,
            raw,
        })
    }
}

/// One event received on a topic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopicEvent {
    /// The channel it was published on.
    pub topic: String,
    /// The pattern that matched, for pattern subscriptions.
    pub pattern: Option<String>,
    /// The published message (`data` of the Python bus's format; else the whole payload).
    pub data: Value,
    /// The publishing agent, if it said.
    pub from: Option<String>,
    /// When it was published, if it said.
    pub timestamp: Option<String>,
    /// The payload as received.
    pub raw: String,
}

impl Bus {
    /// Publishes `message` on a Pub/Sub topic in the Python bus's format
    /// (`{"data", "from", "timestamp", "topic"}`). Returns how many subscribers received it.
    /// Pub/Sub is fire-and-forget: subscribers that are not connected miss it.
    pub async fn publish(
        &self,
        topic: &str,
        message: Value,
        from_agent: Option<&str>,
    ) -> Result<u64> {
        keys::validate_topic(topic)?;
        if let Some(f) = from_agent {
            keys::validate_agent(f).map_err(|e| e.renamed("from_agent"))?;
        }
        let body = json!({
            "data": message,
            "from": from_agent,
            "timestamp": now_timestamp(),
            "topic": topic,
        });
        let n: u64 = redis::cmd("PUBLISH")
            .arg(topic)
            .arg(body.to_string())
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("PUBLISH", topic, e))?;
        Ok(n)
    }

    /// Subscribes to Pub/Sub topics: exact names, or patterns with `*`, `?` or `[…]`
    /// (e.g. `analytics.*`, `agent.*.new_message`). Each event is decoded from the Python
    /// bus's format (`{"data", "from", "timestamp", "topic"}`); other payloads come back as
    /// they are in `data`. Pub/Sub is at most once: events published while the subscription is
    /// not connected are missed, and [`Subscription::next`] returns `None` once the connection
    /// is gone (subscribe again).
    pub async fn subscribe(&self, topics: &[&str]) -> Result<Subscription> {
        if topics.is_empty() {
            return Err(Error::invalid(
                "topics",
                "",
                "give at least one topic or pattern",
            ));
        }
        for t in topics {
            keys::validate_topic(t)?;
        }
        let client = self
            .broker()
            .pubsub_client()
            .ok_or_else(|| Error::NotConnected {
                operation: "SUBSCRIBE",
            })?;
        let mut ps = client
            .get_async_pubsub()
            .await
            .map_err(|source| crate::broker::conn::connect_error(self.url(), source))?;
        for t in topics {
            let r = if t.contains(['*', '?', '[']) {
                ps.psubscribe(*t).await
            } else {
                ps.subscribe(*t).await
            };
            r.map_err(|e| Error::redis("SUBSCRIBE", t, e))?;
        }
        Ok(Subscription {
            stream: ps.into_on_message(),
        })
    }
}
