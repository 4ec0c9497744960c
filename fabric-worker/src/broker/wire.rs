//! Parsing Redis replies and stream entries. Nothing here panics on an unexpected reply.

use std::collections::HashMap;

use redis::Value;

use crate::error::{Error, Result};
use serde_json::value::RawValue;

use crate::message::{Envelope, Message, fields};

/// Runs `cmd` and returns its reply as Redis sent it, an error reply as `Err`.
///
/// Unlike `Cmd::query_async`, it leaves out redis-rs' `extract_error`, which takes the whole
/// reply apart and builds it again to look for errors nested in it: for a read, every entry
/// and every field, about 3,000 instructions per message read (10 % of a worker's) — for
/// errors no read reply holds (Redis answers a failed command with one error, at the top).
pub(crate) async fn query_value(
    c: &mut impl redis::aio::ConnectionLike,
    cmd: &redis::Cmd,
) -> redis::RedisResult<Value> {
    match c.req_packed_command(cmd).await? {
        Value::ServerError(e) => Err(e.into()),
        v => Ok(v),
    }
}

/// [`query_value`] for a pipeline (not a transaction): each command's reply; the first
/// error reply as `Err`.
pub(crate) async fn query_values(
    c: &mut impl redis::aio::ConnectionLike,
    pipe: &redis::Pipeline,
) -> redis::RedisResult<Vec<Value>> {
    let replies = c.req_packed_commands(pipe, 0, pipe.len()).await?;
    match replies.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(e.clone()),
        _ => None,
    }) {
        Some(e) => Err(e.into()),
        None => Ok(replies),
    }
}

/// Most fields an entry may have (the function library's limit too: `MAX_FIELDS`).
pub(crate) const MAX_FIELDS: usize = 64;

/// The default limit of an entry's size: 1 MiB.
pub(crate) const DEFAULT_MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// One stream entry as read from Redis: its id and its field/value pairs.
/// `fields` is empty when the entry was deleted but is still referenced (pending).
#[derive(Clone, Debug, Default)]
pub(crate) struct RawEntry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(String, Vec<u8>)>,
}

impl RawEntry {
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    pub(crate) fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The size of the entry: its field names and values, in bytes.
    pub(crate) fn size(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Why this entry is too big to decode, if it is: more than `max_bytes` bytes, or more
    /// than [`MAX_FIELDS`] fields.
    pub(crate) fn too_large(&self, max_bytes: usize) -> Option<String> {
        let size = self.size();
        if size > max_bytes {
            return Some(format!(
                "the entry is {size} bytes, more than the limit of {max_bytes}; it was not decoded"
            ));
        }
        if self.fields.len() > MAX_FIELDS {
            return Some(format!(
                "the entry has {} fields, more than the limit of {MAX_FIELDS}; it was not decoded",
                self.fields.len()
            ));
        }
        None
    }

    /// The 1-based attempt number this entry is delivered for (absent or bad means 1).
    /// The `priority` of its envelope (normal when absent or unreadable), read without
    /// decoding the rest.
    pub(crate) fn envelope_priority(&self) -> crate::message::Priority {
        #[derive(serde::Deserialize)]
        struct Only {
            #[serde(default)]
            priority: crate::message::Priority,
        }
        let Some(data) = self.get(crate::message::fields::DATA) else {
            return crate::message::Priority::Normal;
        };
        if plainly_normal(data) {
            return crate::message::Priority::Normal;
        }
        serde_json::from_slice::<Only>(data)
            .map(|o| o.priority)
            .unwrap_or_default()
    }

    pub(crate) fn attempt(&self) -> u32 {
        self.get_str(fields::ATTEMPT)
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|a| *a >= 1)
            .unwrap_or(1)
    }

    /// Decodes the envelope and headers, and with `stamped` (secure mode, where only the
    /// router writes into inboxes and reply streams) the authenticated `sender` too.
    pub(crate) fn decode_as(&self, stamped: bool) -> std::result::Result<Message, String> {
        let (mut m, payload) = self.decode_with::<serde_json::Value>(stamped)?;
        m.payload = payload.unwrap_or_else(crate::message::empty_object);
        Ok(m)
    }

    /// Decodes the envelope and headers. The error text explains what is wrong.
    pub(crate) fn decode(&self) -> std::result::Result<Message, String> {
        self.decode_as(false)
    }

    /// What a worker decodes before it runs a handler: everything but the payload, which
    /// stays JSON text (checked to be valid JSON) until the handler asks for it.
    /// `None` for an absent or `null` payload: the message's payload is then an empty
    /// object already.
    pub(crate) fn decode_head(&self, stamped: bool) -> std::result::Result<Head, String> {
        let (mut message, raw) = self.decode_with::<Box<RawValue>>(stamped)?;
        if raw.is_none() {
            message.payload = crate::message::empty_object();
        }
        Ok(Head { message, raw })
    }

    fn decode_with<P: serde::de::DeserializeOwned>(
        &self,
        stamped: bool,
    ) -> std::result::Result<(Message, Option<P>), String> {
        if self.fields.is_empty() {
            return Err("entry was deleted from the stream (no fields)".into());
        }
        let data = self
            .get(fields::DATA)
            .ok_or_else(|| "entry has no `data` field".to_string())?;
        let envelope: Envelope<P> = serde_json::from_slice(data)
            .map_err(|e| format!("`data` is not a valid message envelope: {e}"))?;
        let (mut msg, payload) = envelope.split();
        if msg.id.is_empty() {
            // Foreign producers may omit the id; give the message a stable one.
            msg.id = format!("msg:stream:{}", self.id);
        }
        if let Some(h) = self.get(fields::HEADERS) {
            msg.headers = serde_json::from_slice(h)
                .map_err(|e| format!("`headers` is not a JSON object of strings: {e}"))?;
        }
        if stamped {
            msg.sender = self.get_str(fields::SENDER).map(str::to_owned);
        }
        Ok((msg, payload))
    }
}

/// A message as a worker reads it ([`RawEntry::decode_head`]): every field but a payload
/// still in `raw`.
#[derive(Debug)]
pub(crate) struct Head {
    /// The message; its payload is `null` while `raw` holds it.
    pub(crate) message: Message,
    /// The payload's JSON text, when it is neither absent nor `null`.
    pub(crate) raw: Option<Box<RawValue>>,
}

/// Whether an envelope's priority is plainly normal without parsing it: the key `"priority"`
/// appears once, as `"priority": 2` (a number starting with 2) or `"priority": "normal"`, and nothing is written with `\u` escapes (a key
/// spelled with escapes could be another `priority`). Most envelopes are so (ours always
/// write the key); a full parse of every entry only to sort a read by priority cost 6 % of
/// the worker's time per message. Anything else is parsed.
fn plainly_normal(data: &[u8]) -> bool {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    const KEY: &[u8] = b"\"priority\"";
    // Built once: building a finder per call was most of this function's cost.
    static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));
    static PRIORITY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(KEY));
    if ESCAPE.find(data).is_some() {
        return false;
    }
    let mut at = PRIORITY.find_iter(data);
    let (Some(i), None) = (at.next(), at.next()) else {
        return false;
    };
    let rest = &data[i + KEY.len()..];
    let rest = rest.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    // Ours write 2; a number starting with 2 is never 1, 3 or 4, so it is normal.
    let value = rest.trim_ascii_start();
    value.starts_with(b"2") || value.starts_with(b"\"normal\"")
}

pub(crate) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A count or duration in a reply: negative values (which Redis never sends) count as 0.
pub(crate) fn as_u64(v: &Value) -> Option<u64> {
    as_i64(v).map(|n| u64::try_from(n).unwrap_or(0))
}

pub(crate) fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// A flat key/value array (RESP2) or a map (RESP3) as a map of strings to values.
pub(crate) fn as_map(v: &Value) -> Option<HashMap<String, Value>> {
    match v {
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .filter_map(|(k, v)| Some((as_string(k)?, v.clone())))
                .collect(),
        ),
        Value::Array(items) => Some(
            items
                .chunks(2)
                .filter_map(|c| match c {
                    [k, v] => Some((as_string(k)?, v.clone())),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Parses `[id, [field, value, ...] | nil]`.
pub(crate) fn parse_entry(v: &Value) -> Option<RawEntry> {
    entry_of(v.clone()).ok()
}

/// An entry, taking the reply's strings instead of copying them (a worker reads every
/// message through here).
fn entry_of(v: Value) -> std::result::Result<RawEntry, &'static str> {
    let mut parts = into_array(v)
        .ok_or("not an [id, fields] array")?
        .into_iter();
    let id = parts.next().and_then(into_string).ok_or("no id")?;
    let mut fields = Vec::new();
    let mut push = |k: Value, v: Value| -> std::result::Result<(), &'static str> {
        let name = into_string(k).ok_or("a field name that is not a string")?;
        let value = into_bytes(v).ok_or("a field value that is not a string")?;
        fields.push((name, value));
        Ok(())
    };
    match parts.next() {
        Some(Value::Nil) | None => {}
        Some(Value::Map(pairs)) => {
            for (k, v) in pairs {
                push(k, v)?;
            }
        }
        Some(other) => {
            let mut flat = into_array(other)
                .ok_or("fields that are not an array")?
                .into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                push(k, v)?;
            }
        }
    }
    Ok(RawEntry { id, fields })
}

fn into_string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        other => as_string(&other),
    }
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        other => as_string(&other).map(String::into_bytes),
    }
}

fn into_array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

/// Parses a list of entries (the reply of XRANGE, or the entries of one stream in XREAD).
pub(crate) fn parse_entries(v: &Value) -> Result<Vec<RawEntry>> {
    entries_of(v.clone())
}

fn entries_of(v: Value) -> Result<Vec<RawEntry>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        v => {
            let items = into_array(v).ok_or_else(|| {
                Error::protocol("stream entries", "a reply that is not an array of entries")
            })?;
            items
                .into_iter()
                .map(|e| entry_of(e).map_err(|why| Error::protocol("stream entry", why)))
                .collect()
        }
    }
}

/// Parses an XREAD / XREADGROUP reply into `(stream key, entries)` pairs.
pub(crate) fn parse_read_reply(v: &Value) -> Result<Vec<(String, Vec<RawEntry>)>> {
    read_reply_of(v.clone())
}

/// [`parse_read_reply`], taking the reply's strings instead of copying them.
pub(crate) fn read_reply_of(v: Value) -> Result<Vec<(String, Vec<RawEntry>)>> {
    let bad = |what: &str| Error::protocol("XREADGROUP reply", what.to_owned());
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, e)| {
                let key = into_string(k).ok_or_else(|| bad("a stream key that is not a string"))?;
                Ok((key, entries_of(e)?))
            })
            .collect(),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| {
                let mut parts = into_array(s)
                    .filter(|p| p.len() == 2)
                    .ok_or_else(|| bad("a stream that is not a [key, entries] pair"))?
                    .into_iter();
                let key = parts
                    .next()
                    .and_then(into_string)
                    .ok_or_else(|| bad("a stream key that is not a string"))?;
                Ok((key, entries_of(parts.next().unwrap_or(Value::Nil))?))
            })
            .collect(),
        other => Err(Error::protocol("XREADGROUP reply", format!("{other:?}"))),
    }
}

/// Whether `id` looks like a stream id (`<ms>-<seq>` or `<ms>`).
pub(crate) fn is_stream_id(id: &str) -> bool {
    crate::keys::validate_stream_id(id).is_ok()
}

/// The millisecond part of a stream id.
pub(crate) fn stream_id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

pub(crate) fn is_busygroup(e: &redis::RedisError) -> bool {
    e.code() == Some("BUSYGROUP")
}

pub(crate) fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// Parses a `SCAN` reply: the next cursor and the keys.
pub(crate) fn parse_scan(v: &Value) -> Result<(String, Vec<String>)> {
    let parts = as_array(v)
        .filter(|p| p.len() == 2)
        .ok_or_else(|| Error::protocol("SCAN reply", format!("{v:?}")))?;
    let next =
        as_string(&parts[0]).ok_or_else(|| Error::protocol("SCAN cursor", format!("{v:?}")))?;
    let keys = as_array(&parts[1])
        .unwrap_or(&[])
        .iter()
        .filter_map(as_string)
        .collect();
    Ok((next, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids() {
        assert!(is_stream_id("1234567890-0"));
        assert!(is_stream_id("1234567890"));
        assert!(!is_stream_id("msg:abc"));
        assert!(!is_stream_id("12-"));
        assert!(!is_stream_id("-1"));
        assert!(!is_stream_id(""));
        assert_eq!(stream_id_ms("1700000000000-3"), Some(1_700_000_000_000));
    }

    #[test]
    fn parses_resp2_read_replies_including_deleted_entries() {
        let v = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"agent:percy:inbox".to_vec()),
            Value::Array(vec![
                Value::Array(vec![
                    Value::BulkString(b"1-0".to_vec()),
                    Value::Array(vec![
                        Value::BulkString(b"data".to_vec()),
                        Value::BulkString(b"{\"message_type\":\"task\"}".to_vec()),
                    ]),
                ]),
                Value::Array(vec![Value::BulkString(b"2-0".to_vec()), Value::Nil]),
            ]),
        ])]);
        let r = parse_read_reply(&v).unwrap();
        assert_eq!(r[0].0, "agent:percy:inbox");
        assert_eq!(r[0].1.len(), 2);
        assert_eq!(r[0].1[0].decode().unwrap().message_type, "task");
        assert_eq!(r[0].1[0].decode().unwrap().id, "msg:stream:1-0");
        assert!(r[0].1[1].decode().unwrap_err().contains("deleted"));
        assert!(parse_read_reply(&Value::Nil).unwrap().is_empty());
        assert!(parse_read_reply(&Value::Int(3)).is_err());

        // RESP3: streams as a map, an entry's fields as a map; taken, not copied, by
        // `read_reply_of`, with the same result.
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"agent:percy:inbox".to_vec()),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"3-0".to_vec()),
                Value::Map(vec![(
                    Value::SimpleString("data".into()),
                    Value::BulkString(b"{\"message_type\":\"event\"}".to_vec()),
                )]),
            ])]),
        )]);
        let r = read_reply_of(resp3).unwrap();
        assert_eq!(r[0].0, "agent:percy:inbox");
        assert_eq!(r[0].1[0].id, "3-0");
        assert_eq!(r[0].1[0].decode().unwrap().message_type, "event");
        // A field name that is not a string is a protocol error naming what is wrong.
        let bad = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"4-0".to_vec()),
                Value::Array(vec![Value::Array(vec![]), Value::Nil]),
            ])]),
        ])]);
        let e = read_reply_of(bad).unwrap_err().to_string();
        assert!(e.contains("field name"), "{e}");
    }

    #[test]
    fn a_workers_decode_keeps_the_payload_as_text_and_agrees_with_the_full_decode() {
        let entry = |data: &str| RawEntry {
            id: "7-0".into(),
            fields: vec![
                ("data".into(), data.as_bytes().to_vec()),
                ("headers".into(), br#"{"tenant":"acme"}"#.to_vec()),
                ("sender".into(), b"percy".to_vec()),
            ],
        };
        let data = r#"{"id":"msg:1","from_agent":"percy","to_agent":"coder","message_type":"task","payload":{"pr_id":"pr-1","files":["a.rs"],"n":1.5},"timestamp":"2026-11-29T01:02:03.000004","priority":3,"ttl_seconds":60,"reply_to":"agent:percy:results","correlation_id":"c-1"}"#;
        let e = entry(data);
        let head = e.decode_head(true).unwrap();
        // The text exactly as written, not a re-encoding.
        assert_eq!(
            head.raw.as_deref().map(RawValue::get),
            Some(r#"{"pr_id":"pr-1","files":["a.rs"],"n":1.5}"#)
        );
        assert_eq!(head.message.payload, serde_json::Value::Null);
        let full = e.decode_as(true).unwrap();
        let mut rest = full.clone();
        rest.payload = serde_json::Value::Null;
        assert_eq!(
            head.message, rest,
            "every other field as the full decode reads it"
        );
        assert_eq!(full.sender.as_deref(), Some("percy"));
        assert_eq!(full.headers.get("tenant").map(String::as_str), Some("acme"));

        // Absent or null: an empty object, nothing left to decode (as the full decode).
        for data in [
            r#"{"message_type":"task"}"#,
            r#"{"message_type":"task","payload":null}"#,
        ] {
            let head = entry(data).decode_head(false).unwrap();
            assert!(head.raw.is_none(), "{data}");
            assert_eq!(head.message.payload, serde_json::json!({}), "{data}");
            assert_eq!(entry(data).decode().unwrap().payload, serde_json::json!({}));
            assert_eq!(head.message.id, "msg:stream:7-0");
        }
        // A payload that is not JSON is refused as the full decode refuses it.
        let bad = entry(r#"{"message_type":"task","payload":{"a":tru}}"#);
        assert!(
            bad.decode_head(false)
                .unwrap_err()
                .contains("not a valid message envelope")
        );
        assert!(bad.decode().is_err());
    }

    #[test]
    fn envelope_priority_shortcut_agrees_with_parsing() {
        use crate::message::Priority;
        let entry = |data: &str| RawEntry {
            id: "1-0".into(),
            fields: vec![("data".into(), data.as_bytes().to_vec())],
        };
        let cases = [
            (
                r#"{"priority":"normal","payload":{}}"#,
                Priority::Normal,
                true,
            ),
            (r#"{"priority" :  "normal"}"#, Priority::Normal, true),
            (r#"{"payload":{}}"#, Priority::Normal, false),
            (r#"{"priority":"high"}"#, Priority::High, false),
            (r#"{"priority":4}"#, Priority::Urgent, false),
            (
                r#"{"priority":"urgent","payload":{"priority":"normal"}}"#,
                Priority::Urgent,
                false,
            ),
            (
                r#"{"payload":{"priority":"normal"},"priority":"low"}"#,
                Priority::Low,
                false,
            ),
            // A key spelled with an escape is still `priority`: never the shortcut.
            (
                r#"{"\u0070riority":"high","payload":{"priority":"normal"}}"#,
                Priority::High,
                false,
            ),
            (
                r#"{"note":"a \"priority\" word","priority":"high"}"#,
                Priority::High,
                false,
            ),
            (r#"{"priority":"normalish"}"#, Priority::Normal, false),
            (r#"{"priority":2,"payload":{}}"#, Priority::Normal, true),
            (r#"{"priority": 2.0}"#, Priority::Normal, true),
            (r#"{"priority":23}"#, Priority::Normal, true),
            (r#"{"priority":3}"#, Priority::High, false),
        ];
        for (data, want, shortcut) in cases {
            assert_eq!(plainly_normal(data.as_bytes()), shortcut, "{data}");
            assert_eq!(entry(data).envelope_priority(), want, "{data}");
        }
        let ours = crate::Message::new("a", "b", "task", serde_json::json!({"priority": 1}));
        let data = ours.to_data().expect("encodes");
        assert!(
            !plainly_normal(data.as_bytes()),
            "two priority keys: parsed"
        );
        assert_eq!(entry(&data).envelope_priority(), Priority::Normal);
        let plain = crate::Message::new("a", "b", "task", serde_json::json!({"x": 1}));
        assert!(plainly_normal(plain.to_data().expect("encodes").as_bytes()));
    }
}
