//! The message envelope, exactly as it travels in a stream entry's `data` field, its
//! [`Priority`], and the names of the stream-entry [`fields`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::keys;
pub use crate::priority::{ParsePriorityError, Priority};

/// Default `ttl_seconds` (one day), as the Python bus uses.
pub const DEFAULT_TTL_SECONDS: u64 = 86_400;

/// A message: the JSON envelope stored in a stream entry's `data` field, plus the
/// headers that travel beside it in the entry's `headers` field.
///
/// Decoding is lenient: entries written by older or foreign producers that lack optional
/// keys are accepted (missing keys take their defaults) and unknown keys are ignored.
/// Encoding always writes every key, because the Python bus rebuilds a dataclass from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// `msg:<uuid>`.
    pub id: String,
    /// Sending agent.
    pub from_agent: String,
    /// Receiving agent.
    pub to_agent: String,
    /// Dispatch key: `task`, `response`, `event`, …
    pub message_type: String,
    /// A JSON object.
    pub payload: Value,
    /// Naive UTC ISO-8601, e.g. `2026-11-25T20:15:56.123456`.
    pub timestamp: String,
    /// 1–4.
    pub priority: Priority,
    /// Seconds after `timestamp` the message may still be handled (0: no limit); past that,
    /// a worker moves it to dead letters as `expired` (see [`Message::is_expired_at`]).
    pub ttl_seconds: u64,
    /// A stream key to send the handler's reply to.
    pub reply_to: Option<String>,
    /// Carried into replies.
    pub correlation_id: Option<String>,
    /// String headers (trace context, tenant, …); stored in the entry's `headers` field,
    /// never inside `data`.
    #[serde(skip)]
    pub headers: BTreeMap<String, String>,
    /// Secure mode: the sender the router authenticated (the entry's `sender` field), set
    /// when a message is read; never written into `data`. `None` in direct mode.
    #[serde(skip)]
    pub sender: Option<String>,
    /// When to deliver it, ms since the epoch (see [`Message::deliver_at`]): until then it
    /// waits in the recipient's schedule, not its inbox. A sending option, never written
    /// into `data`; `None` (the default) delivers at once.
    #[serde(skip)]
    pub deliver_at_ms: Option<u64>,
}

/// How an envelope is read: every key of [`Message`]'s `data`, leniently, with the payload
/// as `P` — a [`Value`] for a [`Message`], or the raw JSON text when a worker reads an
/// entry (`RawEntry::decode_head`): a handler that takes a typed argument decodes it from
/// the text, without building a JSON tree first.
#[derive(Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub(crate) struct Envelope<P> {
    #[serde(default, deserialize_with = "null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    from_agent: String,
    #[serde(default, deserialize_with = "null_as_default")]
    to_agent: String,
    message_type: String,
    /// `None` when absent or `null` (an empty object, as the Python bus writes `{}`).
    #[serde(default)]
    payload: Option<P>,
    #[serde(default, deserialize_with = "null_as_default")]
    timestamp: String,
    #[serde(default)]
    priority: Priority,
    #[serde(default = "default_ttl", deserialize_with = "lenient_ttl")]
    ttl_seconds: u64,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
}

impl<P> Envelope<P> {
    /// The message, its payload `null` for the caller to set; and the payload as read
    /// (`None`: absent or `null`).
    pub(crate) fn split(self) -> (Message, Option<P>) {
        let message = Message {
            id: self.id,
            from_agent: self.from_agent,
            to_agent: self.to_agent,
            message_type: self.message_type,
            payload: Value::Null,
            timestamp: self.timestamp,
            priority: self.priority,
            ttl_seconds: self.ttl_seconds,
            reply_to: self.reply_to,
            correlation_id: self.correlation_id,
            headers: BTreeMap::new(),
            sender: None,
            deliver_at_ms: None,
        };
        (message, self.payload)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (mut message, payload) = Envelope::<Value>::deserialize(d)?.split();
        message.payload = payload.unwrap_or_else(empty_object);
        Ok(message)
    }
}

pub(crate) fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_SECONDS
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn lenient_ttl<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                // A float TTL (Python may write 3600.0): its whole part, without a cast.
                n.as_f64()
                    .filter(|f| *f >= 0.0)
                    .and_then(|f| format!("{:.0}", f.trunc()).parse().ok())
            })
            .unwrap_or(DEFAULT_TTL_SECONDS),
        Value::String(s) => s.parse().unwrap_or(DEFAULT_TTL_SECONDS),
        _ => DEFAULT_TTL_SECONDS,
    })
}

pub(crate) use crate::time::now_timestamp;

/// A fresh message id: `msg:<uuid4>`.
pub(crate) fn new_message_id() -> String {
    format!("msg:{}", uuid::Uuid::new_v4())
}

impl Message {
    /// When it expires, ms since the epoch: `timestamp` + `ttl_seconds`. `None` when
    /// `ttl_seconds` is 0 (no limit) or the timestamp cannot be read (no limit either: a
    /// message is never thrown away on a guess).
    pub fn expires_at_ms(&self) -> Option<u64> {
        if self.ttl_seconds == 0 {
            return None;
        }
        crate::time::timestamp_ms(&self.timestamp)?
            .checked_add(self.ttl_seconds.saturating_mul(1000))
    }

    /// Whether its time was up at `now_ms` (ms since the epoch).
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_some_and(|at| now_ms >= at)
    }

    /// Whether its time is up now; the clock is read only for a message with a TTL (a
    /// worker asks for every message it handles).
    pub(crate) fn is_expired_now(&self) -> bool {
        self.expires_at_ms()
            .is_some_and(|at| crate::time::now_ms() >= at)
    }

    /// A new message with a fresh id, the current time, normal priority, the default TTL
    /// and a fresh correlation id.
    pub fn new(
        from_agent: impl Into<String>,
        to_agent: impl Into<String>,
        message_type: impl Into<String>,
        payload: Value,
    ) -> Self {
        Message {
            id: new_message_id(),
            from_agent: from_agent.into(),
            to_agent: to_agent.into(),
            message_type: message_type.into(),
            payload,
            timestamp: now_timestamp(),
            priority: Priority::Normal,
            ttl_seconds: DEFAULT_TTL_SECONDS,
            reply_to: None,
            correlation_id: Some(uuid::Uuid::new_v4().to_string()),
            headers: BTreeMap::new(),
            sender: None,
            deliver_at_ms: None,
        }
    }

    /// A `task` message as the Python bus's `send_task` builds it: the payload is
    /// `{"task_type": <task_type>, ...payload}` and `reply_to` is `agent:<from>:results`.
    /// A payload that is not an object is put under `"input"`.
    pub fn task(
        from_agent: impl Into<String>,
        to_agent: impl Into<String>,
        task_type: impl Into<String>,
        payload: Value,
    ) -> Self {
        let from_agent = from_agent.into();
        let mut obj = Map::new();
        obj.insert("task_type".into(), Value::String(task_type.into()));
        match payload {
            Value::Object(m) => obj.extend(m),
            Value::Null => {}
            other => {
                obj.insert("input".into(), other);
            }
        }
        let reply_to = keys::results(&from_agent);
        Message::new(from_agent, to_agent, "task", Value::Object(obj)).with_reply_to(reply_to)
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets `reply_to`.
    #[must_use]
    pub fn with_reply_to(mut self, stream: impl Into<String>) -> Self {
        self.reply_to = Some(stream.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the TTL in seconds (0: no limit).
    #[must_use]
    pub fn with_ttl_seconds(mut self, ttl: u64) -> Self {
        self.ttl_seconds = ttl;
        self
    }

    /// Delivers it at `when` instead of now: it waits in the recipient's schedule
    /// (`agent:<to>:inbox:delayed{…}`, in Redis, so it survives every worker restarting) and is
    /// moved into the inbox when its time comes; no handler sees it before. A time in the
    /// past delivers at once. The send is refused if the message would expire first
    /// (`timestamp + ttl_seconds`): raise [`Message::with_ttl_seconds`] (or set 0).
    #[must_use]
    pub fn deliver_at(mut self, when: std::time::SystemTime) -> Self {
        let ms = when
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.deliver_at_ms = Some(ms);
        self
    }

    /// Delivers it `delay` from now (see [`Message::deliver_at`]).
    #[must_use]
    pub fn with_delay(self, delay: std::time::Duration) -> Self {
        self.deliver_at(std::time::SystemTime::now() + delay)
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks everything a sender controls: agents, message type, payload shape, reply_to.
    pub fn validate(&self) -> Result<()> {
        keys::validate_agent(&self.from_agent).map_err(|e| e.renamed("from_agent"))?;
        keys::validate_agent(&self.to_agent).map_err(|e| e.renamed("to_agent"))?;
        keys::validate_message_type(&self.message_type)?;
        if !self.payload.is_object() {
            return Err(Error::invalid(
                "payload",
                &self.payload.to_string(),
                "must be a JSON object, e.g. {\"task_type\": \"code_review\"}",
            ));
        }
        if let Some(r) = &self.reply_to {
            keys::validate_stream_key(r).map_err(|e| e.renamed("reply_to"))?;
            if !keys::is_reply_stream_of(&self.from_agent, r) {
                return Err(Error::invalid(
                    "reply_to",
                    r,
                    format!(
                        "replies may only go to a stream of the sender {:?}: agent:{0}:results, or agent:{0}:replies:<id>",
                        self.from_agent
                    ),
                ));
            }
        }
        if self.id.is_empty() {
            return Err(Error::invalid("message id", "", "must not be empty"));
        }
        // The expiry (a timestamp to parse) only for a message sent for later.
        if let Some(at) = self.deliver_at_ms
            && let Some(expires) = self.expires_at_ms()
            && at >= expires
        {
            return Err(Error::invalid(
                "deliver_at",
                &at.to_string(),
                format!(
                    "is after the message expires (timestamp + ttl_seconds {} = {expires} ms): it would be dead-lettered as expired on arrival; raise ttl_seconds, or set it to 0 for no limit",
                    self.ttl_seconds
                ),
            ));
        }
        Ok(())
    }

    /// The envelope as the JSON written to the `data` field.
    pub fn to_data(&self) -> Result<String> {
        // Sized for the envelope's keys and strings at once (`to_string` starts at 128
        // bytes and grows twice for a typical envelope); a payload may still grow it.
        let strings = [
            &self.id,
            &self.from_agent,
            &self.to_agent,
            &self.message_type,
            &self.timestamp,
        ];
        let optional = [&self.reply_to, &self.correlation_id];
        let size = 192
            + strings.iter().map(|s| s.len()).sum::<usize>()
            + optional
                .iter()
                .flat_map(|s| s.as_ref())
                .map(String::len)
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        serde_json::to_writer(&mut out, self).map_err(|source| Error::Encode {
            what: "message",
            source,
        })?;
        // serde_json writes valid UTF-8.
        String::from_utf8(out).map_err(|e| Error::Encode {
            what: "message",
            source: serde::ser::Error::custom(e),
        })
    }

    /// The headers as the JSON written to the `headers` field (`None` when empty).
    pub(crate) fn headers_json(&self) -> Result<Option<String>> {
        if self.headers.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(&self.headers)
            .map(Some)
            .map_err(|source| Error::Encode {
                what: "headers",
                source,
            })
    }
}

/// Names of the stream-entry fields (see `docs/protocol.md`).
pub mod fields {
    /// The JSON envelope.
    pub const DATA: &str = "data";
    /// JSON object of string headers.
    pub const HEADERS: &str = "headers";
    /// 1-based handler attempt this entry is delivered for (absent means 1).
    pub const ATTEMPT: &str = "attempt";
    /// On a reply: the `id` of the request it answers.
    pub const IN_REPLY_TO: &str = "in_reply_to";
    /// Secure mode: the authenticated sender, stamped by the router (a sender cannot set it:
    /// the router writes it from the outbox's owner).
    pub const SENDER: &str = "sender";
    /// Secure mode, on an outbox entry that is a reply: the stream to deliver it to (the
    /// request's `reply_to`).
    pub const DELIVER_TO: &str = "deliver_to";
    /// In an outbox entry only (secure mode): deliver at this time, ms since the epoch; the
    /// router puts the message in the recipient's schedule instead of its inbox.
    pub const DELIVER_AT_MS: &str = "deliver_at_ms";
    /// On a retry entry: only this consumer group handles it; other groups skip it.
    pub const TARGET_GROUP: &str = "target_group";
    /// On a retry entry: the error of the previous attempt.
    pub const LAST_ERROR: &str = "last_error";
    /// Dead letters: why (see `DeadReason`: `no_handler`, `bad_payload`, `invalid_envelope`,
    /// `max_attempts`, `permanent_error`, `delivery_limit`, `reply_failed`, `too_large`,
    /// `bad_reply_to`, `unknown_recipient`, `not_allowed`, `forged_sender`, `promote_failed`).
    pub const DEAD_REASON: &str = "dead_reason";
    /// Dead letters: the error text.
    pub const DEAD_ERROR: &str = "dead_error";
    /// Dead letters: when (naive UTC ISO-8601).
    pub const DEAD_AT: &str = "dead_at";
    /// Dead letters: handler attempts made.
    pub const DEAD_ATTEMPTS: &str = "dead_attempts";
    /// Dead letters: deliveries of the last entry (crash re-deliveries included).
    pub const DEAD_DELIVERIES: &str = "dead_deliveries";
    /// Dead letters: stream the entry came from.
    pub const DEAD_STREAM: &str = "dead_stream";
    /// Dead letters: its stream id there.
    pub const DEAD_STREAM_ID: &str = "dead_stream_id";
    /// Dead letters: the consumer group that gave up.
    pub const DEAD_GROUP: &str = "dead_group";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_counts_from_the_timestamp() {
        let mut m = Message::new("a", "b", "task", json!({}));
        m.timestamp = "2026-11-25T20:15:56.123456".into();
        m.ttl_seconds = 60;
        let at = m.expires_at_ms().unwrap();
        assert_eq!(at, 1_795_637_756_123 + 60_000);
        assert!(!m.is_expired_at(at - 1));
        assert!(m.is_expired_at(at));
        m.ttl_seconds = 0;
        assert!(!m.is_expired_at(u64::MAX));
        m.ttl_seconds = 60;
        m.timestamp = "2026-11-25T20:15:56Z".into();
        assert_eq!(m.expires_at_ms(), Some(1_795_637_756_000 + 60_000));
        m.timestamp = "yesterday".into();
        assert!(
            !m.is_expired_at(u64::MAX),
            "an unreadable timestamp never expires"
        );
    }

    #[test]
    fn encodes_every_key_the_python_bus_expects() {
        let m = Message::task("coder", "percy", "code_review", json!({"pr_id": "123"}));
        let v: Value = serde_json::from_str(&m.to_data().unwrap()).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "correlation_id",
                "from_agent",
                "id",
                "message_type",
                "payload",
                "priority",
                "reply_to",
                "timestamp",
                "to_agent",
                "ttl_seconds"
            ]
        );
        assert_eq!(
            obj["payload"],
            json!({"task_type": "code_review", "pr_id": "123"})
        );
        assert_eq!(obj["reply_to"], "agent:coder:results");
        assert_eq!(obj["priority"], 2);
        assert!(obj["id"].as_str().unwrap().starts_with("msg:"));
        // naive UTC with microseconds: 2026-11-25T20:15:56.123456
        let ts = obj["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 26, "{ts}");
        assert!(chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.6f").is_ok());
    }

    #[test]
    fn decodes_sparse_and_foreign_envelopes() {
        let m: Message = serde_json::from_str(r#"{"message_type":"event"}"#).unwrap();
        assert_eq!(m.payload, json!({}));
        assert_eq!(m.priority, Priority::Normal);
        assert_eq!(m.ttl_seconds, DEFAULT_TTL_SECONDS);
        assert_eq!(m.reply_to, None);
        let m: Message = serde_json::from_str(
            r#"{"id":"msg:1","from_agent":null,"message_type":"task","payload":null,"priority":"urgent","ttl_seconds":null,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(m.priority, Priority::Urgent);
        assert_eq!(m.from_agent, "");
        assert_eq!(m.payload, json!({}));
        assert!(serde_json::from_str::<Message>(r#"{"id":"x"}"#).is_err());
    }

    #[test]
    fn priority_round_trips_and_is_lenient() {
        for p in [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Urgent,
        ] {
            let s = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Priority>(&s).unwrap(), p);
            assert_eq!(p.name().parse::<Priority>().unwrap(), p);
            assert_eq!(Priority::try_from(p.as_u8()).unwrap(), p);
            assert_eq!(p.as_u8().to_string().parse::<Priority>().unwrap(), p);
        }
        assert_eq!(
            serde_json::from_str::<Priority>("9").unwrap(),
            Priority::Normal
        );
        assert_eq!(
            serde_json::from_str::<Priority>("\"HIGH\"").unwrap(),
            Priority::High
        );
    }

    #[test]
    fn user_input_is_parsed_strictly_with_one_error_text() {
        assert_eq!(" HIGH ".parse::<Priority>().unwrap(), Priority::High);
        assert_eq!("Urgent".parse::<Priority>().unwrap(), Priority::Urgent);
        for bad in ["medium", "", "0", "5", "1.5", "hi gh"] {
            let e = bad.parse::<Priority>().unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "invalid priority {bad:?}: use low, normal, high, urgent, or 1-4 (1 is low, 4 urgent)"
                )
            );
        }
        assert_eq!(
            Priority::try_from(9).unwrap_err().to_string(),
            "invalid priority \"9\": use low, normal, high, urgent, or 1-4 (1 is low, 4 urgent)"
        );
        assert_eq!(Priority::Low.to_string(), "low");
    }

    #[test]
    fn validation_names_the_bad_field() {
        let m = Message::new("coder", "per cy", "task", json!({}));
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .starts_with("invalid to_agent")
        );
        let m = Message::new("coder", "percy", "task", json!([1]));
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .starts_with("invalid payload")
        );
        let m =
            Message::new("coder", "percy", "task", json!({})).with_reply_to("agent:percy:results");
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid reply_to \"agent:percy:results\": replies may only go to a stream of the sender \"coder\""),
            "{e}"
        );
        Message::new("coder", "percy", "task", json!({}))
            .with_reply_to("agent:coder:replies:abc")
            .validate()
            .unwrap();
        let m = Message::new("coder", "percy", "task", json!({})).with_reply_to("a b");
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .starts_with("invalid reply_to")
        );
        Message::new("coder", "percy", "task", json!({}))
            .validate()
            .unwrap();
    }
}
