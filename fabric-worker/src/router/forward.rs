//! Delivering decided entries to their targets, each message at most once within the dedup
//! window: `FCALL fabric_forward` remembers `<sender>/<message id>` in the sorted set
//! [`keys::forwarded`] of the target (same slot) and appends only what it did not
//! remember, atomically. That covers a router that died between delivering and
//! acknowledging (another router takes the entries over) and a sender that wrote the same
//! message twice (it could not confirm its first send).

use std::time::Duration;

use super::policy::Delivery;
use crate::broker::Broker;
use crate::broker::functions::fcall;
use crate::error::{Error, Result};
use crate::keys;

/// At most this many entries per `MULTI` or `FCALL`.
const CHUNK: usize = 100;

/// What became of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Appended, with this stream id.
    Delivered(String),
    /// Put in the recipient's schedule (sent for later).
    Scheduled,
    /// Delivered earlier (by a router that died before acknowledging): not appended again.
    Duplicate,
    /// The target inbox does not exist: an unknown recipient.
    NoTarget,
}

/// Entries bound for one target, in outbox order: (index in the batch, delivery).
pub(crate) struct Chunk<'a> {
    target: &'a str,
    must_exist: bool,
    items: Vec<(usize, &'a Delivery)>,
}

impl Chunk<'_> {
    /// The batch indexes of its entries.
    pub(crate) fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().map(|(i, _)| *i)
    }
}

/// Groups deliveries by target (order kept within each), at most [`CHUNK`] per group.
pub(crate) fn chunks<'a>(
    deliveries: impl Iterator<Item = (usize, &'a Delivery)>,
) -> Vec<Chunk<'a>> {
    let mut out: Vec<Chunk<'a>> = Vec::new();
    for (i, d) in deliveries {
        match out
            .iter_mut()
            .find(|c| c.target == d.target && c.items.len() < CHUNK)
        {
            Some(c) => c.items.push((i, d)),
            None => out.push(Chunk {
                target: &d.target,
                must_exist: d.must_exist,
                items: vec![(i, d)],
            }),
        }
    }
    out
}

/// Delivers one chunk of `sender`'s entries. On an error nothing is known of the chunk:
/// its entries stay pending, to be taken over and tried again.
pub(crate) async fn forward(
    broker: &Broker,
    sender: &str,
    chunk: &Chunk<'_>,
    window: Duration,
) -> Result<Vec<Outcome>> {
    let seen = keys::forwarded(chunk.target);
    // Into an inbox: with its lanes and schedule (`fabric_deliver`); a reply: as it is.
    let inbox_keys: Vec<String> = if chunk.must_exist {
        let mut k = keys::lanes(chunk.target).to_vec();
        k.push(keys::delayed(chunk.target));
        k
    } else {
        Vec::new()
    };
    let (function, what) = if chunk.must_exist {
        ("fabric_deliver", "FCALL fabric_deliver")
    } else {
        ("fabric_forward", "FCALL fabric_forward")
    };
    let mut ks = vec![chunk.target, seen.as_str()];
    ks.extend(inbox_keys.iter().map(String::as_str));
    let mut cmd = fcall(function, &ks);
    cmd.arg(if chunk.must_exist { "1" } else { "0" })
        .arg(crate::time::millis(window))
        .arg(sender)
        .arg(chunk.items.len());
    for (_, d) in &chunk.items {
        cmd.arg(&d.member);
        if chunk.must_exist {
            cmd.arg(d.message.priority.lane().unwrap_or(""))
                .arg(d.message.deliver_at_ms.unwrap_or(0));
        }
        cmd.arg(d.fields.len());
        for (k, v) in &d.fields {
            cmd.arg(k).arg(v.as_slice());
        }
    }
    let r: Vec<(i64, String)> = broker.call(&cmd, what, chunk.target).await?;
    if r.len() != chunk.items.len() {
        return Err(Error::protocol(
            what,
            format!(
                "{} outcomes for {} entries to {}",
                r.len(),
                chunk.items.len(),
                chunk.target
            ),
        ));
    }
    r.into_iter()
        .map(|(code, text)| match code {
            1 => Ok(Outcome::Delivered(text)),
            2 => Ok(Outcome::Scheduled),
            0 => Ok(Outcome::Duplicate),
            -1 => Ok(Outcome::NoTarget),
            _ => Err(Error::protocol(
                what,
                format!(
                    "Redis refused the append to {}: {text}; the entry stays pending and is tried again",
                    chunk.target
                ),
            )),
        })
        .collect()
}
