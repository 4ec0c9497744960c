//! Consuming by hand: [`Bus::receive`] and [`Bus::acknowledge`].

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Bus, Mode, agent_group};
use crate::broker::{DeadLetterNote, DeadReason, RawEntry, dead_letter, wire};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::Message;

/// Largest `block` accepted by [`Bus::receive`] and [`Bus::peek`].
pub const MAX_BLOCK: Duration = Duration::from_secs(300);

/// Largest `count` accepted by [`Bus::receive`].
pub const MAX_RECEIVE_COUNT: usize = 1000;

/// Options of [`Bus::receive`].
#[derive(Clone, Debug, Default)]
#[must_use]
#[non_exhaustive]
pub struct ReceiveOptions {
    /// At most this many messages (default 10, at most 1000).
    pub count: Option<usize>,
    /// Wait up to this long for a first message (default: don't wait; at most 300 s).
    pub block: Option<Duration>,
    /// Consumer group (default `<agent>_workers`).
    pub group: Option<String>,
    /// Consumer name (default: one per `Bus` instance).
    pub consumer: Option<String>,
}

impl ReceiveOptions {
    /// At most `n` messages.
    pub fn count(mut self, n: usize) -> Self {
        self.count = Some(n);
        self
    }

    /// Wait up to `d` for a first message.
    pub fn block(mut self, d: Duration) -> Self {
        self.block = Some(d);
        self
    }

    /// Read through consumer group `group`.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Read as consumer `name`.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }
}

/// A message handed out by [`Bus::receive`]: acknowledge its `stream_id` when done.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The envelope (and headers).
    pub message: Message,
    /// The entry id: pass it to [`Bus::acknowledge`].
    pub stream_id: String,
    /// The consumer group it was read through.
    pub group: String,
    /// 1-based handler attempt this delivery is for.
    pub attempt: u32,
}

impl Received {
    /// The message as the Python bus returns it: the envelope plus `_stream_id` and
    /// `_consumer_group` (and `_attempt`, `_headers`).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.message).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("_stream_id".into(), Value::String(self.stream_id.clone()));
            m.insert("_consumer_group".into(), Value::String(self.group.clone()));
            if !self.message.headers.is_empty() {
                m.insert("_headers".into(), json!(self.message.headers));
            }
            m.insert("_attempt".into(), json!(self.attempt));
        }
        v
    }
}

/// One line of [`Bus::acknowledge`]'s result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AckResult {
    /// The stream id.
    pub id: String,
    /// Whether it was pending and is now acknowledged.
    pub acked: bool,
}

/// Checks a `block` argument: `None` or zero means don't wait.
pub(super) fn check_block(block: Option<Duration>) -> Result<Option<Duration>> {
    let block = block.filter(|b| !b.is_zero());
    match block {
        Some(b) if b > MAX_BLOCK => Err(Error::invalid(
            "block",
            &format!("{}ms", b.as_millis()),
            format!("must be at most {} ms", MAX_BLOCK.as_millis()),
        )),
        other => Ok(other),
    }
}

impl Bus {
    /// Reads up to `count` new messages of `agent` through a consumer group, waiting up to
    /// `block` for the first. The messages stay pending until [`Bus::acknowledge`]d; a
    /// message never acknowledged is redelivered to a worker after its reclaim idle time.
    ///
    /// Entries that are not valid messages are moved to the agent's dead letters
    /// (reason `invalid_envelope`) instead of being returned.
    pub async fn receive(&self, agent: &str, opts: ReceiveOptions) -> Result<Vec<Received>> {
        let group = agent_group(agent, opts.group.as_deref())?;
        let consumer = opts
            .consumer
            .clone()
            .unwrap_or_else(|| format!("{agent}-bus-{}", self.inner.instance));
        keys::validate_consumer(&consumer)?;
        let count = opts.count.unwrap_or(10);
        if count == 0 || count > MAX_RECEIVE_COUNT {
            return Err(Error::invalid(
                "count",
                &count.to_string(),
                format!("must be between 1 and {MAX_RECEIVE_COUNT}"),
            ));
        }
        let block = check_block(opts.block)?;
        let stream = keys::inbox(agent);
        let broker = self.broker();
        broker.ensure_group(&stream, &group).await?;
        let entries = match self
            .read_group(&stream, &group, &consumer, count, block)
            .await
        {
            Err(Error::Redis { source, .. }) if wire::is_nogroup(&source) => {
                // The stream or group was deleted meanwhile: recreate and read once more.
                broker.forget_group(&stream, &group);
                broker.ensure_group(&stream, &group).await?;
                self.read_group(&stream, &group, &consumer, count, block)
                    .await?
            }
            other => other?,
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match e.decode_as(self.inner.mode == Mode::Secure) {
                Ok(message) => out.push(Received {
                    attempt: e.attempt(),
                    message,
                    stream_id: e.id,
                    group: group.clone(),
                }),
                Err(reason) => {
                    tracing::warn!(agent, stream_id = %e.id, %reason, "invalid entry moved to dead letters");
                    let note = DeadLetterNote {
                        reason: &DeadReason::InvalidEnvelope,
                        error: &reason,
                        attempts: e.attempt(),
                        deliveries: 1,
                    };
                    dead_letter(broker, &stream, &group, &e, &note).await?;
                }
            }
        }
        Ok(out)
    }

    /// Runs a read: a blocking one on a connection of its own (dropped afterwards, so it
    /// never holds up other commands), a non-blocking one on the shared connection.
    pub(super) async fn query_read(
        &self,
        cmd: &redis::Cmd,
        block: Option<Duration>,
        command: &'static str,
        stream: &str,
    ) -> Result<redis::Value> {
        match block {
            Some(b) => {
                let mut conn = self.broker().dedicated(b).await?;
                cmd.query_async(&mut conn).await
            }
            None => cmd.query_async(&mut self.conn()).await,
        }
        .map_err(|e| Error::redis(command, stream, e))
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<RawEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(crate::time::millis(b));
        }
        cmd.arg("STREAMS").arg(stream).arg(">");
        let reply = self.query_read(&cmd, block, "XREADGROUP", stream).await?;
        Ok(wire::parse_read_reply(&reply)?
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect())
    }

    /// Acknowledges entries of `agent`'s inbox (by stream id) for a consumer group
    /// (default `<agent>_workers`). Reports, for each id, whether it was pending.
    pub async fn acknowledge(
        &self,
        agent: &str,
        stream_ids: &[String],
        group: Option<&str>,
    ) -> Result<Vec<AckResult>> {
        let group = agent_group(agent, group)?;
        if let Some(bad) = stream_ids.iter().find(|id| !wire::is_stream_id(id)) {
            return Err(Error::invalid(
                "stream id",
                bad,
                "expected an entry id like 1700000000000-0 (the `_stream_id` of a received message)",
            ));
        }
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let stream = keys::inbox(agent);
        let mut pipe = redis::pipe();
        for id in stream_ids {
            pipe.cmd("XACK").arg(&stream).arg(&group).arg(id);
        }
        let counts: Vec<i64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("XACK", &stream, e))?;
        Ok(stream_ids
            .iter()
            .zip(counts)
            .map(|(id, n)| AckResult {
                id: id.clone(),
                acked: n > 0,
            })
            .collect())
    }
}
