//! Consuming by hand: [`Bus::receive`] and [`Bus::acknowledge`].

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::delivery::Reader;
use super::{Bus, agent_group};
use crate::broker::wire;
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
    /// Which of the agent's streams (default its inbox).
    pub source: Source,
    /// Deliver again, before new entries, what this group handed out this long ago and
    /// nobody acknowledged (a visibility timeout; default: never, workers reclaim instead).
    pub redeliver_after: Option<Duration>,
    /// With `redeliver_after`: a message delivered more often than this goes to dead
    /// letters (reason `delivery_limit`) instead of out again (default: no limit).
    pub max_deliveries: Option<u64>,
    /// Leave the message types the agent's registered workers handle to them: such entries
    /// are acknowledged in this group and not returned (for the agent's MCP sessions, which
    /// read through their own group; see [`crate::keys::workers`]).
    pub leave_worker_types: bool,
}

/// Which of an agent's streams [`Bus::receive`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// `agent:<id>:inbox`: messages sent to the agent.
    #[default]
    Inbox,
    /// `agent:<id>:results`: replies to the tasks it sent (their default `reply_to`).
    Results,
}

impl Source {
    /// The stream of `agent` this source is.
    pub fn stream(self, agent: &str) -> String {
        match self {
            Source::Inbox => keys::inbox(agent),
            Source::Results => keys::results(agent),
        }
    }
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

    /// Read `source` instead of the inbox.
    pub fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Deliver again what was handed out `after` ago and not acknowledged.
    pub fn redeliver_after(mut self, after: Duration) -> Self {
        self.redeliver_after = Some(after);
        self
    }

    /// Dead-letter, instead of delivering again, what was delivered more than `n` times.
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.max_deliveries = Some(n);
        self
    }

    /// Leave the message types the agent's workers handle to them.
    pub fn leave_worker_types(mut self, on: bool) -> Self {
        self.leave_worker_types = on;
        self
    }
}

/// A message handed out by [`Bus::receive`]: acknowledge its `stream_id` when done.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The envelope (and headers).
    pub message: Message,
    /// The entry id — `<lane>/<entry id>` for one of a priority lane of the inbox
    /// (`urgent/1700000000000-0`): pass it to [`Bus::acknowledge`].
    pub stream_id: String,
    /// The consumer group it was read through.
    pub group: String,
    /// 1-based handler attempt this delivery is for.
    pub attempt: u32,
    /// How many times this entry has been delivered through this group (1 the first time;
    /// more when it was not acknowledged in time and is delivered again).
    pub deliveries: u64,
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
            m.insert("_deliveries".into(), json!(self.deliveries));
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
    /// message never acknowledged is redelivered to a worker after its reclaim idle time,
    /// or, with [`ReceiveOptions::redeliver_after`], by `receive` itself.
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
        let stream = opts.source.stream(agent);
        // The inbox is read with its priority lanes (urgent, high, the inbox, low), after
        // moving due delayed messages in.
        let lanes = if opts.source == Source::Inbox {
            self.promote_due(agent).await;
            self.existing_lanes(agent).await?
        } else {
            Vec::new()
        };
        let order =
            keys::in_read_order(stream.as_str(), lanes.iter().map(|(l, k)| (*l, k.as_str())));
        let readers: Vec<Reader<'_>> = order
            .into_iter()
            .map(|(lane, stream)| Reader {
                bus: self,
                agent,
                stream,
                group: &group,
                consumer: &consumer,
                opts: &opts,
                lane,
            })
            .collect();
        for r in &readers {
            r.ensure_group().await?;
        }
        let deadline = block.map(|b| std::time::Instant::now() + b);
        self.read_readers(&readers, count, deadline).await
    }

    /// The receive loop over `readers` (an inbox and its lanes, in priority order).
    async fn read_readers(
        &self,
        readers: &[Reader<'_>],
        count: usize,
        deadline: Option<std::time::Instant>,
    ) -> Result<Vec<Received>> {
        let Some(opts) = readers.first().map(|r| r.opts) else {
            return Ok(Vec::new());
        };
        loop {
            // Per reader (in priority order), what it got.
            let mut got: Vec<Vec<(crate::broker::RawEntry, u64)>> =
                readers.iter().map(|_| Vec::new()).collect();
            let mut left = count;
            if let Some(after) = opts.redeliver_after {
                for (i, r) in readers.iter().enumerate() {
                    if left == 0 {
                        break;
                    }
                    got[i] = r.redeliver(after, left).await?;
                    left -= got[i].len().min(left);
                }
            }
            let fresh = left == count;
            // What is left of the time to wait, now.
            let wait = || {
                deadline
                    .map(|d| d.saturating_duration_since(std::time::Instant::now()))
                    .filter(|w| !w.is_zero())
            };
            if fresh && readers.len() == 1 {
                // No lanes: one read, blocking if asked to.
                got[0] = readers[0]
                    .read_new(count, wait())
                    .await?
                    .into_iter()
                    .map(|e| (e, 1))
                    .collect();
            } else if fresh {
                for (i, r) in readers.iter().enumerate() {
                    if left == 0 {
                        break;
                    }
                    let new = r.read_new(left, None).await?;
                    left -= new.len().min(left);
                    got[i] = new.into_iter().map(|e| (e, 1)).collect();
                }
                // Nothing in any lane: one blocking read over all of them.
                if let Some(wait) = wait()
                    && left == count
                {
                    for (i, new) in super::lanes::read_blocking(readers, count, wait).await? {
                        got[i] = new.into_iter().map(|e| (e, 1)).collect();
                    }
                }
            }
            let got_any = got.iter().any(|g| !g.is_empty());
            let mut out = Vec::new();
            for (r, entries) in readers.iter().zip(got) {
                out.extend(r.sort_out(entries).await?);
            }
            if !out.is_empty() || !got_any {
                return Ok(out);
            }
            // Everything read was someone else's or dead: read on while the time lasts.
            if !fresh {
                continue;
            }
            if deadline.is_none_or(|d| std::time::Instant::now() >= d) {
                return Ok(out);
            }
        }
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
                wire::query_value(&mut conn, cmd).await
            }
            None => wire::query_value(&mut self.conn(), cmd).await,
        }
        .map_err(|e| Error::redis(command, stream, e))
    }

    /// Acknowledges entries of `agent`'s inbox (by stream id) for a consumer group
    /// (default `<agent>_workers`). Reports, for each id, whether it was pending.
    pub async fn acknowledge(
        &self,
        agent: &str,
        stream_ids: &[String],
        group: Option<&str>,
    ) -> Result<Vec<AckResult>> {
        self.acknowledge_in(agent, Source::Inbox, stream_ids, group)
            .await
    }

    /// Acknowledges entries of one of `agent`'s streams (`source`), as
    /// [`Bus::acknowledge`] does for the inbox.
    pub async fn acknowledge_in(
        &self,
        agent: &str,
        source: Source,
        stream_ids: &[String],
        group: Option<&str>,
    ) -> Result<Vec<AckResult>> {
        let group = agent_group(agent, group)?;
        let mut split = Vec::with_capacity(stream_ids.len());
        for id in stream_ids {
            let (lane, entry) = keys::split_received_id(id).map_err(|_| {
                Error::invalid(
                    "stream id",
                    id,
                    "expected an entry id like 1700000000000-0 (the `_stream_id` of a received message, urgent/1700000000000-0 for one of a priority lane)",
                )
            })?;
            if lane.is_some() && source != Source::Inbox {
                return Err(Error::invalid(
                    "stream id",
                    id,
                    "only inbox messages come from priority lanes",
                ));
            }
            split.push((lane, entry));
        }
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let stream = source.stream(agent);
        let mut pipe = redis::pipe();
        for (lane, entry) in &split {
            let key = match lane {
                Some(l) => keys::lane(&stream, l),
                None => stream.clone(),
            };
            pipe.cmd("XACK").arg(key).arg(&group).arg(*entry);
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
