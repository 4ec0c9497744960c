//! JSON shapes of messages for the page (an envelope with its headers), and small URL helpers.

use fabric_worker::Message;
use fabric_worker::bus::{DeadLetter, MessageDetails};
use serde_json::{Value, json};

/// An envelope as the page shows it: its fields, payload and headers (which the envelope's
/// own serialization leaves out: they travel beside `data` in the entry).
pub(crate) fn envelope(m: &Message) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or_else(|_| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("headers".into(), json!(m.headers));
        if let Some(s) = &m.sender {
            o.insert("sender".into(), json!(s));
        }
    }
    v
}

/// One message found with `Bus::message`, with its envelope's headers.
pub(crate) fn details(d: &MessageDetails) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or_else(|_| json!({}));
    if let (Some(o), Some(m)) = (v.as_object_mut(), &d.message) {
        o.insert("message".into(), envelope(m));
    }
    v
}

/// A dead letter for the list: why, when, how many attempts, and its envelope.
pub(crate) fn dead_letter(d: &DeadLetter) -> Value {
    json!({
        "dead_id": d.dead_id,
        "reason": d.reason.to_string(),
        "error": d.error,
        "dead_at": d.dead_at,
        "attempts": d.attempts,
        "stream": d.stream,
        "stream_id": d.stream_id,
        "message": d.message.as_ref().map(envelope),
        "raw_data": d.raw_data,
    })
}

/// `scheme://host[:port]` of a URL (the whole text when it has no path).
pub(crate) fn origin_of(url: &str) -> String {
    let url = url.trim();
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    url[..end].to_owned()
}

/// A Redis URL without its user and password (`redis://:pw@host:6379/0` → `redis://host:6379/0`).
pub(crate) fn without_credentials(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..start], &url[start + at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_masking() {
        assert_eq!(
            origin_of("https://fabric.example.com/dash/"),
            "https://fabric.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8787"), "http://127.0.0.1:8787");
        assert_eq!(
            without_credentials("redis://:secret@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            without_credentials("rediss://user:p@ss@host:6380"),
            "rediss://host:6380"
        );
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn envelopes_carry_their_headers() {
        let mut m = Message::new("coder", "percy", "task", json!({"pr": 1}));
        m.headers.insert("tenant".into(), "acme".into());
        let v = envelope(&m);
        assert_eq!(v["headers"]["tenant"], "acme");
        assert_eq!(v["payload"]["pr"], 1);
        assert_eq!(v["from_agent"], "coder");
    }
}
