//! What the router does with one outbox entry: deliver it (where, with which fields) or
//! reject it (why). Pure: no Redis.

use std::collections::HashSet;

use crate::broker::{DeadReason, RawEntry};
use crate::keys;
use crate::message::{Message, fields};

/// Who may send to whom. Empty: everyone to everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    pairs: HashSet<(String, String)>,
}

impl AllowList {
    /// Everyone may send to everyone.
    pub fn everyone() -> Self {
        AllowList::default()
    }

    /// Lets `from` send to `to` (once any pair is given, only the pairs given may talk).
    #[must_use]
    pub fn allow(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.pairs.insert((from.into(), to.into()));
        self
    }

    /// Parses `FROM:TO` (e.g. `coder:percy`).
    pub fn parse_pair(pair: &str) -> crate::Result<(String, String)> {
        let (from, to) = pair.split_once(':').ok_or_else(|| {
            crate::Error::invalid("allowed pair", pair, "expected FROM:TO, e.g. coder:percy")
        })?;
        keys::validate_agent(from)?;
        keys::validate_agent(to)?;
        Ok((from.to_owned(), to.to_owned()))
    }

    /// Whether `from` may send to `to`.
    pub fn allows(&self, from: &str, to: &str) -> bool {
        self.pairs.is_empty() || self.pairs.contains(&(from.to_owned(), to.to_owned()))
    }
}

/// Where and what to deliver.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Delivery {
    /// The stream: the recipient's inbox, or (a reply) the requester's reply stream.
    pub(crate) target: String,
    /// Whether the target must already exist (an inbox of a known agent).
    pub(crate) must_exist: bool,
    /// `<sender>/<message id>`: what the router remembers it delivered.
    pub(crate) member: String,
    /// The entry's fields in the target, but the sender's stamp (`fabric_forward` writes
    /// `sender` itself, from the outbox's owner).
    pub(crate) fields: Vec<(String, Vec<u8>)>,
    /// The message (to announce it, for an inbox).
    pub(crate) message: Message,
    /// A durable topic event: copied to each subscriber's `agent:<id>:topic:<topic>` (the
    /// router fills `target` per subscriber).
    pub(crate) topic: Option<String>,
}

/// A durable topic event from `owner`'s outbox: checked as a topic event (no recipient),
/// delivered with its `data`, `headers` and `topic`.
fn topic_event(
    owner: &str,
    entry: &RawEntry,
    message: Message,
    topic: &str,
) -> Result<Delivery, Rejection> {
    let invalid = |e: crate::Error| (DeadReason::InvalidEnvelope, e.to_string());
    keys::validate_durable_topic(topic).map_err(invalid)?;
    keys::validate_message_type(&message.message_type).map_err(invalid)?;
    if !message.payload.is_object() || message.reply_to.is_some() {
        return Err((
            DeadReason::InvalidEnvelope,
            "a topic event's payload must be a JSON object, and it has no reply_to".into(),
        ));
    }
    let data = message
        .to_data()
        .map_err(|e| (DeadReason::InvalidEnvelope, e.to_string()))?;
    let mut fields: Vec<(String, Vec<u8>)> = vec![(fields::DATA.into(), data.into_bytes())];
    if let Some(h) = entry.get(fields::HEADERS) {
        fields.push((fields::HEADERS.into(), h.to_vec()));
    }
    fields.push((crate::bus::TOPIC_FIELD.into(), topic.as_bytes().to_vec()));
    Ok(Delivery {
        target: String::new(),
        must_exist: false,
        member: format!("{owner}/{}", message.id),
        fields,
        message,
        topic: Some(topic.to_owned()),
    })
}

/// A rejection: why, and the error text.
pub(crate) type Rejection = (DeadReason, String);

/// Decides what becomes of `entry`, read from `owner`'s outbox.
pub(crate) fn decide(
    owner: &str,
    entry: &RawEntry,
    allow: &AllowList,
    max_entry_bytes: usize,
) -> Result<Delivery, Rejection> {
    if let Some(why) = entry.too_large(max_entry_bytes) {
        return Err((DeadReason::TooLarge, why));
    }
    let mut message = entry
        .decode()
        .map_err(|why| (DeadReason::InvalidEnvelope, why))?;
    if entry.get(fields::DELIVER_TO).is_none()
        && let Some(at) = entry.get_str(fields::DELIVER_AT_MS)
    {
        // Sent for later: the router schedules it (a past time delivers at once).
        let at: u64 = at.parse().map_err(|_| {
            (
                DeadReason::InvalidEnvelope,
                format!("deliver_at_ms {at:?} is not a number of ms since the epoch"),
            )
        })?;
        message.deliver_at_ms = Some(at).filter(|at| *at > crate::time::now_ms());
    }
    if message.from_agent != owner {
        return Err((
            DeadReason::ForgedSender,
            format!(
                "from_agent {:?} in {owner:?}'s outbox: an agent sends as itself only",
                message.from_agent
            ),
        ));
    }
    if let Some(topic) = entry.get_str(crate::bus::TOPIC_FIELD) {
        return topic_event(owner, entry, message, topic);
    }
    message.validate().map_err(|e| match &e {
        crate::Error::Invalid {
            what: "reply_to", ..
        } => (DeadReason::BadReplyTo, e.to_string()),
        _ => (DeadReason::InvalidEnvelope, e.to_string()),
    })?;
    let member = format!("{owner}/{}", message.id);
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(4);
    // Re-encoded, so the envelope delivered is exactly what was checked.
    let data = message
        .to_data()
        .map_err(|e| (DeadReason::InvalidEnvelope, e.to_string()))?;
    out.push((fields::DATA.into(), data.into_bytes()));
    if let Some(h) = entry.get(fields::HEADERS) {
        out.push((fields::HEADERS.into(), h.to_vec()));
    }
    let (target, must_exist) = match entry.get_str(fields::DELIVER_TO) {
        Some(deliver_to) => {
            // A reply: only into a stream of the agent it answers.
            if !keys::is_reply_stream_of(&message.to_agent, deliver_to) {
                return Err((
                    DeadReason::BadReplyTo,
                    format!(
                        "a reply to {:?} may only be delivered to agent:{0}:results or agent:{0}:replies:<id>, not {deliver_to:?}",
                        message.to_agent
                    ),
                ));
            }
            if let Some(r) = entry.get(fields::IN_REPLY_TO) {
                out.push((fields::IN_REPLY_TO.into(), r.to_vec()));
            }
            (deliver_to.to_owned(), false)
        }
        None => {
            if !allow.allows(owner, &message.to_agent) {
                return Err((
                    DeadReason::NotAllowed,
                    format!(
                        "{owner:?} may not send to {:?} (not in the router's allow-list)",
                        message.to_agent
                    ),
                ));
            }
            (keys::inbox(&message.to_agent), true)
        }
    };
    Ok(Delivery {
        target,
        must_exist,
        member,
        fields: out,
        message,
        topic: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(m: &Message, extra: &[(&str, &str)]) -> RawEntry {
        let mut fields = vec![("data".to_owned(), m.to_data().unwrap().into_bytes())];
        for (k, v) in extra {
            fields.push(((*k).to_owned(), v.as_bytes().to_vec()));
        }
        RawEntry {
            id: "1-0".into(),
            fields,
        }
    }

    const MAX: usize = 1024 * 1024;

    #[test]
    fn a_message_goes_to_the_recipients_inbox_without_the_entrys_own_stamp() {
        let m = Message::task("coder", "percy", "review", json!({"pr": 1}));
        let d = decide(
            "coder",
            &entry(&m, &[("sender", "memory")]),
            &AllowList::everyone(),
            MAX,
        )
        .unwrap();
        assert_eq!(d.target, "agent:percy:inbox");
        assert!(d.must_exist);
        assert_eq!(d.member, format!("coder/{}", m.id));
        assert_eq!(
            d.fields.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["data"]
        );
    }

    #[test]
    fn forged_senders_reply_tos_and_sizes_are_rejected() {
        let forged = Message::new("memory", "percy", "task", json!({}));
        let (why, _) =
            decide("coder", &entry(&forged, &[]), &AllowList::everyone(), MAX).unwrap_err();
        assert_eq!(why, DeadReason::ForgedSender);

        let bad_reply =
            Message::new("coder", "percy", "task", json!({})).with_reply_to("agent:memory:results");
        let (why, _) = decide(
            "coder",
            &entry(&bad_reply, &[]),
            &AllowList::everyone(),
            MAX,
        )
        .unwrap_err();
        assert_eq!(why, DeadReason::BadReplyTo);

        let big = Message::new("coder", "percy", "task", json!({"blob": "x".repeat(2000)}));
        let (why, _) =
            decide("coder", &entry(&big, &[]), &AllowList::everyone(), 1000).unwrap_err();
        assert_eq!(why, DeadReason::TooLarge);

        let m = Message::new("coder", "percy", "task", json!({}));
        let allow = AllowList::everyone().allow("coder", "memory");
        let (why, _) = decide("coder", &entry(&m, &[]), &allow, MAX).unwrap_err();
        assert_eq!(why, DeadReason::NotAllowed);
        decide(
            "coder",
            &entry(&m, &[]),
            &allow.allow("coder", "percy"),
            MAX,
        )
        .unwrap();
    }

    #[test]
    fn a_reply_goes_only_to_a_stream_of_the_agent_it_answers() {
        let reply = Message::new("percy", "coder", "response", json!({"ok": true}));
        let e = entry(
            &reply,
            &[
                ("deliver_to", "agent:coder:replies:abc"),
                ("in_reply_to", "msg:1"),
            ],
        );
        let d = decide("percy", &e, &AllowList::everyone(), MAX).unwrap();
        assert_eq!(d.target, "agent:coder:replies:abc");
        assert!(!d.must_exist);
        assert!(
            d.fields
                .contains(&("in_reply_to".into(), b"msg:1".to_vec()))
        );
        let e = entry(&reply, &[("deliver_to", "agent:memory:replies:abc")]);
        let (why, _) = decide("percy", &e, &AllowList::everyone(), MAX).unwrap_err();
        assert_eq!(why, DeadReason::BadReplyTo);
        let e = entry(&reply, &[("deliver_to", "agent:coder:inbox")]);
        let (why, _) = decide("percy", &e, &AllowList::everyone(), MAX).unwrap_err();
        assert_eq!(why, DeadReason::BadReplyTo);
    }

    #[test]
    fn pairs_are_parsed() {
        assert_eq!(
            AllowList::parse_pair("coder:percy").unwrap(),
            ("coder".into(), "percy".into())
        );
        assert!(AllowList::parse_pair("coder").is_err());
        assert!(AllowList::parse_pair("co der:percy").is_err());
    }
}
