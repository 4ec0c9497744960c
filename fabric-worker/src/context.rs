//! The [`Context`] a handler receives.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use serde_json::value::RawValue;

use crate::broker::Head;
use crate::bus::Bus;
use crate::message::Message;

/// What a handler knows about the message it is handling, and a bus handle to send more.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

/// What every message of one served stream shares.
#[derive(Debug)]
pub(crate) struct ServedStream {
    pub(crate) agent: String,
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
}

struct ContextInner {
    info: Arc<ServedStream>,
    stream_id: String,
    attempt: u32,
    max_attempts: u32,
    delivery_count: u64,
    /// The message; while `raw` holds its payload, its own payload is `null` (the runtime
    /// reads every other field of it).
    message: Message,
    /// The payload's JSON text, when the message was read from a stream: decoded straight
    /// into a handler's typed argument, or into `full` when someone asks for the JSON.
    raw: Option<Box<RawValue>>,
    /// The payload decoded from `raw`, on first use.
    payload: OnceLock<Value>,
    /// The message with that payload, on first use.
    full: OnceLock<Message>,
    bus: Bus,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("agent", &self.inner.info.agent)
            .field("message_id", &self.inner.message.id)
            .field("message_type", &self.inner.message.message_type)
            .field("stream_id", &self.inner.stream_id)
            .field("attempt", &self.inner.attempt)
            .field("delivery_count", &self.inner.delivery_count)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(
        info: Arc<ServedStream>,
        stream_id: String,
        attempt: u32,
        max_attempts: u32,
        delivery_count: u64,
        head: Head,
        bus: Bus,
    ) -> Self {
        Context {
            inner: Arc::new(ContextInner {
                info,
                stream_id,
                attempt,
                max_attempts,
                delivery_count,
                message: head.message,
                raw: head.raw,
                payload: OnceLock::new(),
                full: OnceLock::new(),
                bus,
            }),
        }
    }

    /// The message without its payload (`null` while not decoded): what the runtime reads.
    pub(crate) fn head(&self) -> &Message {
        &self.inner.message
    }

    /// Whether the payload was decoded into JSON (tests: a typed argument needs no JSON).
    #[cfg(test)]
    pub(crate) fn payload_decoded(&self) -> bool {
        self.inner.payload.get().is_some()
    }

    /// The payload's JSON text, when the message was read from a stream and its payload
    /// was neither absent nor `null`.
    pub(crate) fn raw_payload(&self) -> Option<&str> {
        self.inner.raw.as_deref().map(RawValue::get)
    }

    /// The agent whose inbox this message came from.
    pub fn agent(&self) -> &str {
        &self.inner.info.agent
    }

    /// The message id (`msg:<uuid>`): the same on every attempt and redelivery, so use it
    /// to make handlers idempotent.
    pub fn message_id(&self) -> &str {
        &self.inner.message.id
    }

    /// The sender, as the envelope says. In secure mode the router has checked it against
    /// the outbox it came from (see [`Context::sender`]); in direct mode it is what the sender
    /// wrote.
    pub fn from_agent(&self) -> &str {
        &self.inner.message.from_agent
    }

    /// The authenticated sender, stamped by the router in secure mode (`None` in direct
    /// mode, where no one vouches for the sender).
    pub fn sender(&self) -> Option<&str> {
        self.inner.message.sender.as_deref()
    }

    /// The message type.
    pub fn message_type(&self) -> &str {
        &self.inner.message.message_type
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.inner.message.correlation_id.as_deref()
    }

    /// Where the reply goes, if anywhere.
    pub fn reply_to(&self) -> Option<&str> {
        self.inner.message.reply_to.as_deref()
    }

    /// The payload, as JSON. A handler that takes a typed argument gets it decoded
    /// straight from the entry instead; this decodes the JSON on first use.
    pub fn payload(&self) -> &Value {
        let inner = &*self.inner;
        match &inner.raw {
            None => &inner.message.payload,
            // The text was checked to be JSON when the entry was read.
            Some(raw) => inner
                .payload
                .get_or_init(|| serde_json::from_str(raw.get()).unwrap_or_default()),
        }
    }

    /// The whole envelope (its payload decoded on first use).
    pub fn message(&self) -> &Message {
        let inner = &*self.inner;
        if inner.raw.is_none() {
            return &inner.message;
        }
        inner.full.get_or_init(|| Message {
            payload: self.payload().clone(),
            ..inner.message.clone()
        })
    }

    /// The message's headers.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.inner.message.headers
    }

    /// One header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.message.headers.get(name).map(String::as_str)
    }

    /// The stream the entry was read from.
    pub fn stream(&self) -> &str {
        &self.inner.info.stream
    }

    /// The durable topic the event came from, when it was read from a topic stream
    /// (`topic:<topic>`, by a `#[handler(topic = "...")]` handler); `None` for inbox messages.
    pub fn topic(&self) -> Option<&str> {
        crate::keys::topic_of_stream(&self.inner.info.stream)
    }

    /// The entry id in that stream.
    pub fn stream_id(&self) -> &str {
        &self.inner.stream_id
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.inner.info.group
    }

    /// This process's consumer name.
    pub fn consumer(&self) -> &str {
        &self.inner.info.consumer
    }

    /// 1-based handler attempt (failed attempts before this one + 1).
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// The maximum number of attempts for this handler.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// How many times this entry has been delivered (1 normally; more after a worker
    /// crashed or stalled while handling it). Counted separately from [`Context::attempt`].
    pub fn delivery_count(&self) -> u64 {
        self.inner.delivery_count
    }

    /// A bus handle, to send further messages.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }
}
