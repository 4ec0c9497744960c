//! Durable topics: [`Bus::publish_durable`] appends an event to the stream `topic:<T>`,
//! which every subscribing agent reads through its own consumer group (`docs/protocol.md`
//! §11). Unlike Pub/Sub ([`Bus::publish`]), an agent that was down gets what was published
//! meanwhile, within the topic's retention.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Bus, Mode};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, Priority, fields, new_message_id, now_timestamp};

/// How many entries a durable topic keeps by default (`XADD … MAXLEN ~`); see
/// [`BusBuilder::topic_retention`](super::BusBuilder::topic_retention).
pub const DEFAULT_TOPIC_RETENTION: u64 = 100_000;

/// The entry field naming the topic an event was published on.
pub const TOPIC_FIELD: &str = "topic";

/// An event for a durable topic (see [`Bus::publish_durable`]).
///
/// ```
/// use fabric_worker::bus::TopicMessage;
/// use serde_json::json;
///
/// let event = TopicMessage::new("analytics.insights", "percy", json!({"users": 42}))
///     .with_message_type("insight")
///     .with_header("tenant", "acme");
/// assert_eq!(event.message_type(), "insight");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct TopicMessage {
    topic: String,
    from_agent: String,
    message_type: Option<String>,
    payload: Value,
    ttl_seconds: u64,
    priority: Priority,
    headers: BTreeMap<String, String>,
}

impl TopicMessage {
    /// An event of `topic` from `from_agent`; `payload` must be a JSON object.
    pub fn new(topic: impl Into<String>, from_agent: impl Into<String>, payload: Value) -> Self {
        TopicMessage {
            topic: topic.into(),
            from_agent: from_agent.into(),
            message_type: None,
            payload,
            ttl_seconds: 0,
            priority: Priority::Normal,
            headers: BTreeMap::new(),
        }
    }

    /// The envelope's `message_type` (default: the topic name when it is a valid message
    /// type, i.e. at most 64 characters; else `event`). Topic handlers get every event of
    /// their topics whatever its type; the type tells them apart.
    pub fn with_message_type(mut self, message_type: impl Into<String>) -> Self {
        self.message_type = Some(message_type.into());
        self
    }

    /// Seconds the event may still be handled after it was published (default 0: no
    /// limit, so an agent that was down long gets it all the same, within the retention).
    pub fn with_ttl_seconds(mut self, ttl: u64) -> Self {
        self.ttl_seconds = ttl;
        self
    }

    /// The envelope's priority (carried; topic streams stay in publish order).
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a header (the entry's `headers` field).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The `message_type` the envelope will carry.
    pub fn message_type(&self) -> &str {
        match &self.message_type {
            Some(t) => t,
            None if self.topic.len() <= keys::MAX_MESSAGE_TYPE_LEN => &self.topic,
            None => "event",
        }
    }

    /// The envelope (§3.1): `to_agent` is `""`, no `reply_to`.
    fn envelope(&self) -> Result<Message> {
        keys::validate_durable_topic(&self.topic)?;
        keys::validate_agent(&self.from_agent).map_err(|e| e.renamed("from_agent"))?;
        keys::validate_message_type(self.message_type())?;
        if !self.payload.is_object() {
            return Err(Error::invalid(
                "payload",
                &self.payload.to_string(),
                "must be a JSON object, e.g. {\"users\": 42}",
            ));
        }
        Ok(Message {
            id: new_message_id(),
            from_agent: self.from_agent.clone(),
            to_agent: String::new(),
            message_type: self.message_type().to_owned(),
            payload: self.payload.clone(),
            timestamp: now_timestamp(),
            priority: self.priority,
            ttl_seconds: self.ttl_seconds,
            reply_to: None,
            correlation_id: Some(uuid::Uuid::new_v4().to_string()),
            headers: self.headers.clone(),
            sender: None,
            deliver_at_ms: None,
        })
    }
}

/// What [`Bus::publish_durable`] reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicReceipt {
    /// The event's message id (`msg:<uuid>`).
    pub message_id: String,
    /// The topic.
    pub topic: String,
    /// Its stream, `topic:<topic>`.
    pub stream: String,
    /// The entry id in that stream.
    pub stream_id: String,
    /// The envelope's timestamp.
    pub timestamp: String,
}

impl Bus {
    /// Publishes an event on a durable topic: `SADD fabric:topics <topic>`, then `XADD
    /// topic:<topic> MAXLEN ~ <retention> * data <envelope> topic <topic> [headers <json>]`.
    ///
    /// Every agent whose workers have a matching `#[handler(topic = "...")]` gets it once,
    /// through its own consumer group, at least once into its handler — also an agent
    /// that is down now, when it starts again — as long as the event is within the topic's
    /// retention (the last [`topic_retention`](super::BusBuilder::topic_retention) entries,
    /// default 100,000). `Ok` means the event is stored.
    ///
    /// In [`Mode::Secure`] the event goes into the sender's own outbox (with the field
    /// `topic`), and the router copies it into each subscribing agent's own stream
    /// `agent:<id>:topic:<topic>` (`docs/protocol.md` §11.5); the receipt's stream and id are
    /// then the outbox's.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(bus: fabric_worker::Bus) -> fabric_worker::Result<()> {
    /// use fabric_worker::bus::TopicMessage;
    /// use serde_json::json;
    ///
    /// let receipt = bus
    ///     .publish_durable(TopicMessage::new("analytics.insights", "percy", json!({"users": 42})))
    ///     .await?;
    /// println!("stored as {} in {}", receipt.stream_id, receipt.stream);
    /// # Ok(()) }
    /// ```
    pub async fn publish_durable(&self, event: TopicMessage) -> Result<TopicReceipt> {
        let mut message = event.envelope()?;
        crate::trace_context::propagate(&mut message.headers);
        let data = message.to_data()?;
        let headers = message.headers_json()?;
        let topic = event.topic;
        let secure = self.mode() == Mode::Secure;
        let stream = if secure {
            keys::outbox(&message.from_agent)
        } else {
            // The registry first: a subscriber that finds the topic reads its stream from
            // before this entry (see §11's start rule), so the entry cannot be missed.
            let _: i64 = redis::cmd("SADD")
                .arg(keys::TOPICS_REGISTRY)
                .arg(&topic)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| Error::redis("SADD", keys::TOPICS_REGISTRY, e))?;
            keys::topic_stream(&topic)
        };
        // Secure mode: into the sender's own outbox, for the router to copy (§11.5).
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream);
        if !secure {
            cmd.arg("MAXLEN").arg("~").arg(self.inner.topic_retention);
        }
        cmd.arg("*")
            .arg(fields::DATA)
            .arg(&data)
            .arg(TOPIC_FIELD)
            .arg(&topic);
        if let Some(h) = &headers {
            cmd.arg(fields::HEADERS).arg(h);
        }
        let stream_id: String = cmd
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("XADD", &stream, e))?;
        tracing::debug!(%topic, %stream, %stream_id, message_id = %message.id, "published durably");
        Ok(TopicReceipt {
            message_id: message.id,
            topic,
            stream,
            stream_id,
            timestamp: message.timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_is_an_inbox_envelope_without_recipient() {
        let m = TopicMessage::new("analytics.insights", "percy", json!({"n": 1}))
            .envelope()
            .unwrap();
        assert_eq!(m.to_agent, "");
        assert_eq!(m.message_type, "analytics.insights");
        assert_eq!(m.ttl_seconds, 0);
        assert!(m.reply_to.is_none());
        let long = "t".repeat(65);
        assert_eq!(
            TopicMessage::new(&long, "percy", json!({})).message_type(),
            "event"
        );
        for bad in [
            TopicMessage::new("a b", "percy", json!({})),
            TopicMessage::new("t", "per cy", json!({})),
            TopicMessage::new("t", "percy", json!([1])),
            TopicMessage::new("t", "percy", json!({})).with_message_type("x y"),
        ] {
            assert!(bad.envelope().is_err(), "{bad:?}");
        }
    }
}
