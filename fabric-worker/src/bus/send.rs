//! Sending: [`Bus::send`] and [`Bus::send_batch`].

use serde_json::json;

use super::{Bus, Mode};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields};
pub use crate::receipt::{FailedSend, SendReceipt};

/// A validated message with its encoded `data` and `headers` fields, and the stream it is
/// appended to: the recipient's inbox (direct mode) or the sender's outbox (secure mode).
struct Prepared {
    message: Message,
    data: String,
    headers: Option<String>,
    stream: String,
    how: How,
}

/// How a prepared message is written (direct mode; secure mode always appends to the outbox).
enum How {
    /// `XADD` to the stream.
    Append,
    /// `FCALL fabric_send_lane`: to this priority lane of the inbox if it exists, else the inbox.
    Lane(String),
    /// `ZADD` to the inbox's schedule (`keys::delayed`) with this due time and member.
    Schedule { due_ms: u64, member: String },
}

/// The outcome of one `XADD`: the entry id, or the error it failed with.
type Written = std::result::Result<String, redis::RedisError>;

/// The writes of a batch, and for each the replicas that confirmed it when a `WAIT` was
/// asked for ([`BusBuilder::wait_for_replicas`](super::BusBuilder::wait_for_replicas)).
struct Writes {
    written: Vec<Written>,
    acked: Vec<Option<u32>>,
}

impl Bus {
    /// Sends a message to `message.to_agent`'s inbox — in [`Mode::Secure`], through the
    /// sender's outbox: the router delivers it, and a bus whose Redis user is an agent's can
    /// only send as that agent.
    ///
    /// A `task` without `reply_to` gets `agent:<from_agent>:results`, as the Python bus does.
    /// Unless turned off with [`BusBuilder::notify`](super::BusBuilder::notify),
    /// `agent.<to>.new_message` is published after the entry is written; concurrent sends to
    /// one agent share it (while one is in flight the others publish nothing of their own,
    /// and one more, with `"count"`, covers them once it is answered).
    ///
    /// `Ok` means the message is in the inbox; an error means it is not. A notification that
    /// cannot be published (e.g. a Redis user without that channel) is logged, never an error:
    /// the message was queued, and retrying the send would duplicate it.
    pub async fn send(&self, message: Message) -> Result<SendReceipt> {
        let mut receipts = self.send_batch(vec![message]).await?;
        receipts
            .pop()
            .ok_or_else(|| Error::protocol("XADD", "no reply for the message"))
    }

    /// Sends many messages in one round trip (pipelined). All are validated first: one
    /// invalid message means none is sent. Each recipient gets one `new_message`
    /// notification for the batch (naming its last message, with `"count"` when it got
    /// more than one).
    ///
    /// If Redis refuses some of the messages (e.g. an inbox key holding another type), the
    /// others are still queued and the error is [`Error::PartlySent`], listing both; if it
    /// refuses all of them, the error is that of the first.
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>> {
        let mut prepared = Vec::with_capacity(messages.len());
        for mut m in messages {
            if m.message_type == "task" && m.reply_to.is_none() {
                m.reply_to = Some(keys::results(&m.from_agent));
            }
            m.validate()?;
            crate::trace_context::propagate(&mut m.headers);
            let data = m.to_data()?;
            let headers = m.headers_json()?;
            // A delivery time already past delivers at once.
            let now = crate::time::now_ms();
            m.deliver_at_ms = m.deliver_at_ms.filter(|at| *at > now);
            let (stream, how) = match self.inner.mode {
                Mode::Direct => {
                    let inbox = keys::inbox(&m.to_agent);
                    let lane = m.priority.lane();
                    let how = match (m.deliver_at_ms, lane) {
                        (Some(due_ms), _) => How::Schedule {
                            due_ms,
                            member: schedule_member(&m.id, &data, headers.as_deref(), lane),
                        },
                        (None, Some(lane)) => How::Lane(keys::lane(&inbox, lane)),
                        (None, None) => How::Append,
                    };
                    (inbox, how)
                }
                Mode::Secure => (keys::outbox(&m.from_agent), How::Append),
            };
            prepared.push(Prepared {
                message: m,
                data,
                headers,
                stream,
                how,
            });
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        // In secure mode the router announces what it delivers.
        // One notification in flight per recipient (notify.rs): this send publishes for the
        // recipients it claimed; what it owes the others is published when the claim drops,
        // after the writes.
        let claim = (self.inner.notify && self.inner.mode == Mode::Direct)
            .then(|| (self.inner.notifier).claim(self, prepared.iter().map(|p| &p.message)));
        let notes = match &claim {
            Some(c) => notifications(&prepared, &c.publishing),
            None => Vec::new(),
        };
        if prepared.iter().any(|p| matches!(p.how, How::Lane(_))) {
            // `fabric_send_lane` runs in a pipeline: the library must be there first.
            self.broker().ensure_library_once().await?;
        }
        let written = if self.is_cluster() {
            self.write_per_slot(&prepared, &notes).await?
        } else {
            self.write_pipelined(&prepared, &notes).await?
        };
        if written
            .written
            .iter()
            .any(|w| matches!(w, Err(e) if e.to_string().contains("Function not found")))
        {
            self.broker().library_lost();
        }
        if !self.hooks().is_empty() {
            for (p, w) in prepared.iter().zip(&written.written) {
                if let Ok(stream_id) = w {
                    let event = crate::hooks::sent_event(&p.message, stream_id);
                    self.hooks().sent(event);
                }
            }
        }
        drop(claim);
        receipts(prepared, written, self.replica_wait().map(|w| w.replicas))
    }

    /// One server: every `XADD` and `PUBLISH` in one pipeline, each command's outcome its own.
    async fn write_pipelined(
        &self,
        prepared: &[Prepared],
        notes: &[(String, String)],
    ) -> Result<Writes> {
        let wait = self.replica_wait();
        if let ([p], None, []) = (prepared, wait, notes) {
            // One command (most sends, their notification shared): no pipeline around it.
            let written = match write_cmd(p).query_async(&mut self.conn()).await {
                Ok(reply) => entry_id(reply),
                Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => refused(e),
                Err(e) => return Err(Error::redis("XADD", &p.stream, e)),
            };
            return Ok(Writes {
                written: vec![written],
                acked: vec![None],
            });
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if self.inner.mode == Mode::Secure && prepared.len() > 1 {
            // One outbox: the batch lands in it at once, so the router reads it in one go
            // (Redis wakes a blocked reader after the first XADD of a plain pipeline).
            pipe.atomic();
        }
        for p in prepared {
            xadd(&mut pipe, p);
        }
        if let Some(w) = wait {
            add_wait(&mut pipe, w);
        }
        for (channel, note) in notes {
            pipe.cmd("PUBLISH").arg(channel).arg(note);
        }
        let replies: Vec<redis::Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("XADD", &prepared[0].stream, e))?;
        let commands = prepared.len() + usize::from(wait.is_some()) + notes.len();
        if replies.len() != commands {
            return Err(Error::protocol(
                "XADD",
                format!("{} replies for {commands} commands", replies.len()),
            ));
        }
        let mut replies = replies.into_iter();
        let written: Vec<Written> = replies
            .by_ref()
            .take(prepared.len())
            .map(entry_id)
            .collect();
        let acked = wait.map(|_| replicas_acked(replies.next()));
        let acked = vec![acked; written.len()];
        for ((channel, _), reply) in notes.iter().zip(replies) {
            if let redis::Value::ServerError(e) = reply {
                log_unpublished(channel, &redis::RedisError::from(e));
            }
        }
        Ok(Writes { written, acked })
    }

    /// A cluster: a pipeline must stay in one slot, so one pipeline per inbox, concurrently;
    /// then each recipient's notification, concurrently, on the primary that took its inbox's
    /// write (a `PUBLISH` reaches the whole cluster from any node). redis-rs would route it by
    /// the channel's slot, whose primary may be the one that just failed.
    async fn write_per_slot(
        &self,
        prepared: &[Prepared],
        notes: &[(String, String)],
    ) -> Result<Writes> {
        let mut by_inbox: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, p) in prepared.iter().enumerate() {
            match by_inbox.iter_mut().find(|(k, _)| *k == p.stream) {
                Some((_, idx)) => idx.push(i),
                None => by_inbox.push((&p.stream, vec![i])),
            }
        }
        let wait = self.replica_wait();
        // Each recipient's notification, for the pipeline of its inbox.
        let by_channel: std::collections::HashMap<&str, &str> = notes
            .iter()
            .map(|(c, n)| (c.as_str(), n.as_str()))
            .collect();
        let note_of = |idx: &[usize]| {
            let channel = keys::new_message_channel(&prepared[idx[0]].message.to_agent);
            by_channel
                .get_key_value(channel.as_str())
                .map(|(c, n)| (*c, *n))
        };
        let runs = by_inbox.iter().map(|(_, idx)| {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for i in idx {
                xadd(&mut pipe, &prepared[*i]);
            }
            if let Some(w) = wait {
                // Keyless: the pipeline goes to the slot's primary, which waits for the
                // replication of this connection's writes.
                add_wait(&mut pipe, w);
            }
            let mut conn = self.conn(); // a clone of the shared cluster connection
            async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await }
        });
        let results = futures::future::join_all(runs).await;
        let mut written: Vec<Option<Written>> = (0..prepared.len()).map(|_| None).collect();
        let mut acked: Vec<Option<u32>> = vec![None; prepared.len()];
        for ((_, idx), r) in by_inbox.iter().zip(results) {
            let commands = idx.len() + usize::from(wait.is_some());
            match r {
                Ok(replies) if replies.len() == commands => {
                    let mut replies = replies.into_iter();
                    let slot: Vec<Written> =
                        replies.by_ref().take(idx.len()).map(entry_id).collect();
                    let confirmed = wait.map(|_| replicas_acked(replies.next()));
                    for (i, w) in idx.iter().zip(slot) {
                        written[*i] = Some(w);
                        acked[*i] = confirmed;
                    }
                }
                Ok(replies) => {
                    return Err(Error::protocol(
                        "XADD",
                        format!("{} replies for {commands} commands", replies.len()),
                    ));
                }
                Err(e) => {
                    for i in idx {
                        written[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let publishes = by_inbox.iter().filter_map(|(inbox, idx)| {
            let (channel, note) = note_of(idx)?;
            Some(super::notify::publish(self, inbox, channel, note))
        });
        futures::future::join_all(publishes).await;
        let written = written
            .into_iter()
            .map(|w| w.ok_or_else(|| Error::protocol("XADD", "a message got no reply")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Writes { written, acked })
    }
}

/// The member of a message in a schedule (`keys::delayed`): what `fabric_promote` appends
/// when its time comes, and the lane it goes to (`docs/protocol.md` §5.10).
fn schedule_member(id: &str, data: &str, headers: Option<&str>, lane: Option<&str>) -> String {
    let mut flat = vec![fields::DATA, data];
    if let Some(h) = headers {
        flat.extend([fields::HEADERS, h]);
    }
    let mut member = json!({ "fields": flat, "id": id });
    if let Some(lane) = lane {
        member["lane"] = json!(lane);
    }
    member.to_string()
}

fn xadd(pipe: &mut redis::Pipeline, p: &Prepared) {
    pipe.add_command(write_cmd(p));
}

/// The command that writes `p`: its `XADD`, its lane's `FCALL`, or its schedule's `ZADD`.
fn write_cmd(p: &Prepared) -> redis::Cmd {
    let mut cmd;
    match &p.how {
        How::Schedule { due_ms, member } => {
            cmd = redis::cmd("ZADD");
            cmd.arg(keys::delayed(&p.stream)).arg(due_ms).arg(member);
            return cmd;
        }
        How::Lane(lane) => {
            cmd = redis::cmd("FCALL");
            cmd.arg("fabric_send_lane").arg(2).arg(lane).arg(&p.stream);
        }
        How::Append => {
            cmd = redis::cmd("XADD");
            cmd.arg(&p.stream).arg("*");
        }
    }
    cmd.arg(fields::DATA).arg(&p.data);
    if let Some(h) = &p.headers {
        cmd.arg(fields::HEADERS).arg(h);
    }
    if let Some(at) = p.message.deliver_at_ms
        && matches!(p.how, How::Append)
    {
        // Secure mode: the router schedules it (§7.2).
        cmd.arg(fields::DELIVER_AT_MS).arg(at);
    }
    cmd
}

/// A write Redis refused (logged when the function library is gone).
fn refused(e: redis::RedisError) -> Written {
    if e.to_string().contains("Function not found") {
        tracing::warn!(
            "the fabric function library is gone (Redis restarted without it?): this message was not queued; the next send loads it again"
        );
    }
    Err(e)
}

/// The entry id an `XADD` (or `fabric_send_lane`, whose reply is `[key, id]`) returned,
/// `""` for a `ZADD` into a schedule, or the error it failed with.
fn entry_id(reply: redis::Value) -> Written {
    match reply {
        redis::Value::ServerError(e) => refused(redis::RedisError::from(e)),
        redis::Value::Int(_) => Ok(String::new()),
        redis::Value::Array(mut kv) if kv.len() == 2 => entry_id(kv.swap_remove(1)),
        other => crate::broker::wire::as_string(&other).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "XADD did not return an entry id",
                format!("{other:?}"),
            ))
        }),
    }
}

/// `WAIT <replicas> <timeout ms>`.
pub(crate) fn add_wait(pipe: &mut redis::Pipeline, w: super::ReplicaWait) {
    pipe.cmd("WAIT")
        .arg(w.replicas)
        .arg(crate::time::millis(w.timeout));
}

/// The replica count a `WAIT` replied with (0, logged, when it failed).
pub(crate) fn replicas_acked(reply: Option<redis::Value>) -> u32 {
    match reply {
        Some(redis::Value::Int(n)) => u32::try_from(n).unwrap_or(0),
        other => {
            tracing::warn!(reply = ?other, "WAIT failed; counting no replica (is WAIT allowed to this Redis user?)");
            0
        }
    }
}

pub(super) fn log_unpublished(channel: &str, e: &redis::RedisError) {
    tracing::warn!(%channel, error = %e, "message queued, but its new-message notification was not published");
}

/// One notification per recipient of `publishing`: for its last message in the batch, with
/// the number of messages it got (`"count"` only appears when it is more than one).
fn notifications(prepared: &[Prepared], publishing: &[String]) -> Vec<(String, String)> {
    notes_for(
        prepared
            .iter()
            .map(|p| &p.message)
            .filter(|m| publishing.contains(&m.to_agent)),
    )
}

/// The new-message notifications for `messages`: one per recipient, for its last message,
/// with the number of messages it got (`"count"` only when it is more than one). The router
/// announces what it delivers with the same function.
pub(crate) fn notes_for<'a>(messages: impl Iterator<Item = &'a Message>) -> Vec<(String, String)> {
    let mut per_recipient: Vec<(&Message, usize)> = Vec::new();
    for m in messages {
        match per_recipient
            .iter_mut()
            .find(|(n, _)| n.to_agent == m.to_agent)
        {
            Some(entry) => *entry = (m, entry.1 + 1),
            None => per_recipient.push((m, 1)),
        }
    }
    per_recipient
        .into_iter()
        .map(|(m, count)| {
            (
                keys::new_message_channel(&m.to_agent),
                super::notify::note_text(m, count),
            )
        })
        .collect()
}

/// The receipts, or the error: all refused → the first error; some refused → `PartlySent`;
/// all queued but fewer replicas than `wanted` confirmed some → `Unreplicated`.
fn receipts(
    prepared: Vec<Prepared>,
    writes: Writes,
    wanted: Option<u32>,
) -> Result<Vec<SendReceipt>> {
    let mut queued = Vec::with_capacity(prepared.len());
    let mut failed = Vec::new();
    let mut first_error = None;
    let mut least_acked: Option<u32> = None;
    for ((p, w), acked) in prepared.into_iter().zip(writes.written).zip(writes.acked) {
        let m = p.message;
        match w {
            Ok(stream_id) => {
                tracing::debug!(message_id = %m.id, to_agent = %m.to_agent, stream_id = %stream_id, "message queued");
                if let (Some(n), Some(wanted)) = (acked, wanted)
                    && n < wanted
                {
                    tracing::warn!(message_id = %m.id, to_agent = %m.to_agent, replicas = n, wanted, "message queued, but too few replicas confirmed it (WAIT)");
                    least_acked = Some(least_acked.map_or(n, |l| l.min(n)));
                }
                let scheduled = matches!(p.how, How::Schedule { .. });
                queued.push(SendReceipt {
                    message_id: m.id,
                    status: if scheduled { "scheduled" } else { "queued" },
                    stream_id,
                    timestamp: m.timestamp,
                    to: m.to_agent,
                    deliver_at_ms: m.deliver_at_ms,
                });
            }
            Err(e) => {
                failed.push(FailedSend {
                    message_id: m.id,
                    error: e.to_string(),
                    to: m.to_agent.clone(),
                });
                first_error.get_or_insert((p.stream, e));
            }
        }
    }
    match (first_error, least_acked, wanted) {
        (None, Some(acked), Some(wanted)) => Err(Error::Unreplicated {
            queued,
            acked,
            wanted,
        }),
        (None, _, _) => Ok(queued),
        (Some((inbox, e)), _, _) if queued.is_empty() => Err(Error::redis("XADD", &inbox, e)),
        (Some(_), _, _) => Err(Error::PartlySent { queued, failed }),
    }
}
