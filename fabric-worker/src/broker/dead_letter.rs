//! Dead letters: why a message was given up on, and the atomic move into
//! `<stream>:dead{<stream>}`.

use std::fmt;
use std::str::FromStr;

use crate::broker::{Broker, RawEntry};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{fields, now_timestamp};

/// Why a message was moved to dead letters (the `dead_reason` field on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadReason {
    /// The entry is not a valid message envelope (`invalid_envelope`).
    InvalidEnvelope,
    /// No handler for its message type in this agent (`no_handler`).
    NoHandler,
    /// The payload does not decode into the handler's argument type (`bad_payload`).
    BadPayload,
    /// The handler failed on its last allowed attempt (`max_attempts`).
    MaxAttempts,
    /// The handler returned a permanent error (`permanent_error`).
    PermanentError,
    /// Delivered too many times without being acknowledged: it crashed or stalled its
    /// workers (`delivery_limit`).
    DeliveryLimit,
    /// The handler succeeded but its reply could never be written (`reply_failed`).
    ReplyFailed,
    /// Larger than the entry size limit, or with more fields than allowed; not decoded
    /// (`too_large`).
    TooLarge,
    /// `reply_to` names a stream that is not the sender's own (`bad_reply_to`).
    BadReplyTo,
    /// Router: the recipient has no inbox (`unknown_recipient`).
    UnknownRecipient,
    /// Router: the allow-list does not let these two agents talk (`not_allowed`).
    NotAllowed,
    /// Router: the envelope's `from_agent` is not the outbox's owner (`forged_sender`).
    ForgedSender,
    /// A due retry could not be put back in its stream (`promote_failed`).
    PromoteFailed,
    /// Its `ttl_seconds` had passed when a worker reached it; not handled (`expired`).
    Expired,
    /// A reason this version does not know (written by another producer or a later version).
    Other(String),
}

impl DeadReason {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            DeadReason::InvalidEnvelope => "invalid_envelope",
            DeadReason::NoHandler => "no_handler",
            DeadReason::BadPayload => "bad_payload",
            DeadReason::MaxAttempts => "max_attempts",
            DeadReason::PermanentError => "permanent_error",
            DeadReason::DeliveryLimit => "delivery_limit",
            DeadReason::ReplyFailed => "reply_failed",
            DeadReason::TooLarge => "too_large",
            DeadReason::BadReplyTo => "bad_reply_to",
            DeadReason::UnknownRecipient => "unknown_recipient",
            DeadReason::NotAllowed => "not_allowed",
            DeadReason::ForgedSender => "forged_sender",
            DeadReason::PromoteFailed => "promote_failed",
            DeadReason::Expired => "expired",
            DeadReason::Other(s) => s,
        }
    }

    /// Every reason this version writes.
    pub const KNOWN: [DeadReason; 14] = [
        DeadReason::InvalidEnvelope,
        DeadReason::NoHandler,
        DeadReason::BadPayload,
        DeadReason::MaxAttempts,
        DeadReason::PermanentError,
        DeadReason::DeliveryLimit,
        DeadReason::ReplyFailed,
        DeadReason::TooLarge,
        DeadReason::BadReplyTo,
        DeadReason::UnknownRecipient,
        DeadReason::NotAllowed,
        DeadReason::ForgedSender,
        DeadReason::PromoteFailed,
        DeadReason::Expired,
    ];
}

impl PartialEq<str> for DeadReason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for DeadReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadReason {
    type Err = std::convert::Infallible;

    /// Never fails: an unknown reason is [`DeadReason::Other`].
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(DeadReason::KNOWN
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or_else(|| DeadReason::Other(s.to_owned())))
    }
}

impl serde::Serialize for DeadReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a dead letter records besides the entry's own fields.
pub(crate) struct DeadLetterNote<'a> {
    pub(crate) reason: &'a DeadReason,
    pub(crate) error: &'a str,
    pub(crate) attempts: u32,
    pub(crate) deliveries: u64,
}

/// Moves an entry to the dead letters of `stream` (of its inbox, for a priority lane) and
/// acknowledges it, atomically (`MULTI`: both keys are in the stream's slot).
pub(crate) async fn dead_letter(
    broker: &Broker,
    stream: &str,
    group: &str,
    entry: &RawEntry,
    note: &DeadLetterNote<'_>,
) -> Result<()> {
    let dead = keys::dead_letters(keys::home(stream));
    let mut pipe = redis::pipe();
    pipe.atomic();
    let cmd = pipe.cmd("XADD").arg(&dead).arg("*");
    for (k, v) in &entry.fields {
        if !k.starts_with("dead_") {
            cmd.arg(k).arg(v.as_slice());
        }
    }
    cmd.arg(fields::DEAD_REASON)
        .arg(note.reason.as_str())
        .arg(fields::DEAD_ERROR)
        .arg(note.error)
        .arg(fields::DEAD_AT)
        .arg(now_timestamp())
        .arg(fields::DEAD_ATTEMPTS)
        .arg(note.attempts)
        .arg(fields::DEAD_DELIVERIES)
        .arg(note.deliveries)
        .arg(fields::DEAD_STREAM)
        .arg(stream)
        .arg(fields::DEAD_STREAM_ID)
        .arg(&entry.id)
        .arg(fields::DEAD_GROUP)
        .arg(group)
        .ignore();
    pipe.cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(&entry.id)
        .ignore();
    let _: () = pipe
        .query_async(&mut broker.conn())
        .await
        .map_err(|e| Error::redis("XADD", &dead, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_wire_strings() {
        for r in DeadReason::KNOWN {
            assert_eq!(r.as_str().parse::<DeadReason>().unwrap(), r);
            assert_eq!(serde_json::to_value(&r).unwrap(), r.as_str());
        }
        assert_eq!(
            "gone_fishing".parse::<DeadReason>().unwrap(),
            DeadReason::Other("gone_fishing".into())
        );
        assert_eq!(DeadReason::MaxAttempts.to_string(), "max_attempts");
    }
}
