//! The bus client: send, receive, acknowledge, publish, request, queue status, dead letters.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::conn::{Backend, Conn, Timeouts};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields, now_timestamp};
use crate::wire::{self, RawEntry};

/// Default Redis URL when `REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Largest `block` accepted by [`Bus::receive`].
pub const MAX_BLOCK: Duration = Duration::from_secs(300);

/// Largest `count` accepted by [`Bus::receive`].
pub const MAX_RECEIVE_COUNT: usize = 1000;

/// How a [`Bus`] connects and behaves.
#[derive(Clone, Debug)]
#[must_use]
pub struct BusBuilder {
    url: String,
    cluster: bool,
    notify: bool,
    response_timeout: Duration,
    connect_timeout: Duration,
}

impl BusBuilder {
    /// Publish the `agent.<to>.new_message` notification on every send (default: on, as the Python bus does).
    pub fn notify(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// Treat the URL as a Redis Cluster seed node even when only one is given (several
    /// comma-separated URLs always mean a cluster).
    pub fn cluster(mut self, on: bool) -> Self {
        self.cluster = on;
        self
    }

    /// Time to wait for the reply to a non-blocking command (default 5 s).
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// Time to wait for a TCP connection (default 2 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Connects (one `PING` proves the server answers). A URL listing several
    /// comma-separated nodes (`redis://a:7000,redis://b:7001`) connects to a Redis Cluster.
    pub async fn connect(self) -> Result<Bus> {
        let urls = crate::conn::split_urls(&self.url);
        let masked = urls
            .iter()
            .map(|u| wire::mask_url(u))
            .collect::<Vec<_>>()
            .join(",");
        let timeouts = Timeouts {
            response: self.response_timeout,
            connect: self.connect_timeout,
        };
        let backend = Backend::open(&urls, self.cluster, timeouts).await?;
        // Pub/Sub: PUBLISH reaches every node of a cluster, so the first node serves subscribers.
        let pubsub = redis::Client::open(urls[0].as_str()).map_err(|source| Error::Connect {
            url: masked.clone(),
            source,
        })?;
        let cancel = CancellationToken::new();
        let bus = Bus {
            inner: Arc::new(BusInner {
                backend,
                pubsub,
                url: masked.clone(),
                notify: self.notify,
                timeouts,
                instance: uuid::Uuid::new_v4().simple().to_string(),
                groups: Mutex::new(HashSet::new()),
                replies: Mutex::new(HashMap::new()),
                cancel: cancel.clone(),
                _guard: cancel.drop_guard(),
            }),
        };
        let mut conn = bus.conn();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|source| Error::Connect {
                url: masked,
                source,
            })?;
        Ok(bus)
    }
}

/// A Pub/Sub subscription (see [`Bus::subscribe`]).
pub struct Subscription {
    stream: redis::aio::PubSubStream,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event; `None` when the connection is gone.
    pub async fn next(&mut self) -> Option<TopicEvent> {
        use futures::StreamExt;
        let msg = self.stream.next().await?;
        let raw: String = msg.get_payload().unwrap_or_default();
        let pattern = if msg.from_pattern() {
            msg.get_pattern::<String>().ok()
        } else {
            None
        };
        let parsed: Option<Value> = serde_json::from_str(&raw).ok();
        let python_shaped = parsed
            .as_ref()
            .and_then(Value::as_object)
            .filter(|o| o.contains_key("data") && o.contains_key("topic"));
        let (data, from, timestamp) = match python_shaped {
            Some(o) => (
                o.get("data").cloned().unwrap_or(Value::Null),
                o.get("from").and_then(Value::as_str).map(str::to_owned),
                o.get("timestamp")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            ),
            None => (
                parsed.unwrap_or_else(|| Value::String(raw.clone())),
                None,
                None,
            ),
        };
        Some(TopicEvent {
            topic: msg.get_channel_name().to_owned(),
            pattern,
            data,
            from,
            timestamp,
            raw,
        })
    }
}

/// One event received on a topic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopicEvent {
    /// The channel it was published on.
    pub topic: String,
    /// The pattern that matched, for pattern subscriptions.
    pub pattern: Option<String>,
    /// The published message (`data` of the Python bus's format; else the whole payload).
    pub data: Value,
    /// The publishing agent, if it said.
    pub from: Option<String>,
    /// When it was published, if it said.
    pub timestamp: Option<String>,
    /// The payload as received.
    pub raw: String,
}

/// A validated message with its encoded `data` and `headers` fields.
type Prepared = (Message, String, Option<String>);

/// A handle to the message bus. Cheap to clone; clones share connections.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> fabric_worker::Result<()> {
/// use fabric_worker::{Bus, Message};
/// use serde_json::json;
///
/// let bus = Bus::from_env().await?; // REDIS_URL, default redis://127.0.0.1:6379
/// let receipt = bus
///     .send(Message::task("coder", "percy", "code_review", json!({"pr_id": "123"})))
///     .await?;
/// println!("queued {} as {}", receipt.message_id, receipt.stream_id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

struct BusInner {
    backend: Backend,
    pubsub: redis::Client,
    url: String,
    notify: bool,
    timeouts: Timeouts,
    instance: String,
    groups: Mutex<HashSet<(String, String)>>,
    replies: Mutex<HashMap<String, Arc<ReplyListener>>>,
    cancel: CancellationToken,
    _guard: DropGuard,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.inner.url)
            .field("notify", &self.inner.notify)
            .finish_non_exhaustive()
    }
}

/// The result of [`Bus::send`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SendReceipt {
    /// The message id (`msg:<uuid>`).
    pub message_id: String,
    /// Always `"queued"`.
    pub status: &'static str,
    /// The entry id in the recipient's inbox.
    pub stream_id: String,
    /// The message timestamp.
    pub timestamp: String,
}

/// Options of [`Bus::receive`].
#[derive(Clone, Debug, Default)]
#[must_use]
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

/// A message handed out by [`Bus::receive`]: acknowledge its `stream_id` when done.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The envelope (and headers).
    pub message: Message,
    /// The entry id: pass it to [`Bus::acknowledge`].
    pub stream_id: String,
    /// The consumer group it was read through.
    pub consumer_group: String,
    /// 1-based handler attempt this delivery is for.
    pub attempt: u32,
}

impl Received {
    /// The message as the Python bus returns it: the envelope plus `_stream_id` and `_consumer_group`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.message).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("_stream_id".into(), Value::String(self.stream_id.clone()));
            m.insert(
                "_consumer_group".into(),
                Value::String(self.consumer_group.clone()),
            );
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

/// A consumer as `XINFO CONSUMERS` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsumerStatus {
    /// Consumer name.
    pub name: String,
    /// Entries delivered to it and not yet acknowledged.
    pub pending: u64,
    /// Milliseconds since it last interacted with the group (read or claim).
    pub idle_ms: u64,
    /// Milliseconds since its last successful read (Redis 7.2+ only).
    pub inactive_ms: Option<i64>,
}

/// The state of an agent's inbox, for one consumer group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// The agent.
    pub agent_id: String,
    /// Its inbox stream.
    pub stream: String,
    /// The consumer group the figures are for.
    pub consumer_group: String,
    /// Entries not yet handled: undelivered + pending.
    pub queue_depth: u64,
    /// Entries not yet delivered to the group (`None` when Redis cannot tell).
    pub undelivered: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Consumers of the group.
    pub consumers: Vec<ConsumerStatus>,
    /// Age in ms of the oldest pending entry (since it was added to the stream).
    pub oldest_pending_age_ms: Option<u64>,
    /// Idle time in ms of the oldest pending entry (since it was last delivered).
    pub oldest_pending_idle_ms: Option<u64>,
    /// Entries in the stream (including handled entries not yet trimmed).
    pub stream_length: u64,
    /// Last id generated in the stream.
    pub last_generated_id: Option<String>,
    /// Id of the first entry.
    pub first_entry_id: Option<String>,
    /// Id of the last entry.
    pub last_entry_id: Option<String>,
    /// Whether the group exists.
    pub group_exists: bool,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Failed messages waiting for their next attempt.
    pub scheduled_retries: u64,
}

/// An entry delivered and not yet acknowledged (see [`Bus::pending`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingEntry {
    /// The entry id.
    pub stream_id: String,
    /// The consumer holding it.
    pub consumer: String,
    /// Milliseconds since it was last delivered (or its lease renewed).
    pub idle_ms: u64,
    /// How many times it has been delivered.
    pub deliveries: u64,
    /// Milliseconds since it was added to the stream.
    pub age_ms: Option<u64>,
}

/// An entry read without consuming it (see [`Bus::peek`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeekedEntry {
    /// The entry id.
    pub stream_id: String,
    /// The 1-based attempt it is queued for.
    pub attempt: u32,
    /// The message, if the entry is a valid one.
    pub message: Option<Message>,
    /// The raw `data` field of an invalid entry.
    pub raw_data: Option<String>,
}

/// A dead-lettered message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (pass it to requeue).
    pub dead_id: String,
    /// Why it was dead-lettered (`no_handler`, `bad_payload`, `max_attempts`, …).
    pub reason: String,
    /// The error text.
    pub error: String,
    /// When (naive UTC ISO-8601).
    pub dead_at: String,
    /// Handler attempts made.
    pub attempts: u32,
    /// The stream it came from.
    pub stream: String,
    /// Its stream id there.
    pub stream_id: String,
    /// The envelope, if it could be decoded.
    pub message: Option<Message>,
    /// The raw `data` field, when it could not be decoded.
    pub raw_data: Option<String>,
}

impl Bus {
    /// A builder for `url`.
    pub fn builder(url: impl Into<String>) -> BusBuilder {
        BusBuilder {
            url: url.into(),
            cluster: false,
            notify: true,
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// Connects to `url` with default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Bus> {
        Bus::builder(url).connect().await
    }

    /// Connects to `REDIS_URL` (default `redis://127.0.0.1:6379`).
    pub async fn from_env() -> Result<Bus> {
        Bus::connect(redis_url_from_env()).await
    }

    /// The server URL, password masked.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The shared connection for ordinary (non-blocking) commands (a cheap clone).
    pub(crate) fn conn(&self) -> Conn {
        self.inner.backend.conn()
    }

    /// A new connection of its own, for a blocking command that must not hold up others.
    pub(crate) async fn dedicated_connection(&self, block: Duration) -> Result<Conn> {
        self.inner
            .backend
            .dedicated(block, self.inner.timeouts, &self.inner.url)
            .await
    }

    /// Whether this bus talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.backend.is_cluster()
    }

    /// Makes sure `group` exists on `stream` (cached per bus).
    pub(crate) async fn ensure_group(&self, stream: &str, group: &str) -> Result<()> {
        let key = (stream.to_owned(), group.to_owned());
        if self
            .inner
            .groups
            .lock()
            .map(|g| g.contains(&key))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut conn = self.conn();
        wire::ensure_group(&mut conn, stream, group).await?;
        if let Ok(mut g) = self.inner.groups.lock() {
            g.insert(key);
        }
        Ok(())
    }

    pub(crate) fn forget_group(&self, stream: &str, group: &str) {
        if let Ok(mut g) = self.inner.groups.lock() {
            g.remove(&(stream.to_owned(), group.to_owned()));
        }
    }

    /// Sends a message to `message.to_agent`'s inbox.
    ///
    /// A `task` without `reply_to` gets `agent:<from_agent>:results`, as the Python bus does.
    /// Unless turned off with [`BusBuilder::notify`], `agent.<to>.new_message` is published
    /// after the entry is written. An error means the message was not queued.
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
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>> {
        let mut prepared = Vec::with_capacity(messages.len());
        for mut m in messages {
            if m.message_type == "task" && m.reply_to.is_none() {
                m.reply_to = Some(keys::results(&m.from_agent));
            }
            m.validate()?;
            let data = m.to_data()?;
            let headers = m.headers_json()?;
            prepared.push((m, data, headers));
        }
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let xadd = |pipe: &mut redis::Pipeline, (m, data, headers): &Prepared| {
            let cmd = pipe
                .cmd("XADD")
                .arg(keys::inbox(&m.to_agent))
                .arg("*")
                .arg(fields::DATA)
                .arg(data);
            if let Some(h) = headers {
                cmd.arg(fields::HEADERS).arg(h);
            }
        };
        // One notification per recipient: for its last message in the batch, with the
        // number of messages it got ("count" only appears when it is more than one).
        let mut notes: Vec<(&Message, usize)> = Vec::new();
        if self.inner.notify {
            for (m, _, _) in &prepared {
                match notes.iter_mut().find(|(n, _)| n.to_agent == m.to_agent) {
                    Some(entry) => *entry = (m, entry.1 + 1),
                    None => notes.push((m, 1)),
                }
            }
        }
        let notification = |(m, count): &(&Message, usize)| {
            let mut note = json!({
                "from": m.from_agent,
                "type": m.message_type,
                "priority": m.priority.as_u8(),
                "message_id": m.id,
            });
            if *count > 1 {
                note["count"] = json!(count);
            }
            (keys::new_message_channel(&m.to_agent), note.to_string())
        };
        let mut conn = self.conn();
        let ids: Vec<String> = if !self.is_cluster() {
            // One round trip for everything.
            let mut pipe = redis::pipe();
            for p in &prepared {
                xadd(&mut pipe, p);
            }
            for n in &notes {
                let (channel, note) = notification(n);
                pipe.cmd("PUBLISH").arg(channel).arg(note).ignore();
            }
            let first_inbox = keys::inbox(&prepared[0].0.to_agent);
            pipe.query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("XADD", &first_inbox, e))?
        } else {
            // A cluster pipeline must stay in one slot: one pipeline per inbox, concurrently.
            let mut by_inbox: Vec<(String, Vec<usize>)> = Vec::new();
            for (i, (m, _, _)) in prepared.iter().enumerate() {
                let inbox = keys::inbox(&m.to_agent);
                match by_inbox.iter_mut().find(|(k, _)| *k == inbox) {
                    Some((_, idx)) => idx.push(i),
                    None => by_inbox.push((inbox, vec![i])),
                }
            }
            let runs = by_inbox.iter().map(|(inbox, idx)| {
                let mut pipe = redis::pipe();
                for i in idx {
                    xadd(&mut pipe, &prepared[*i]);
                }
                async move {
                    let mut c = self.conn(); // a clone of the shared cluster connection
                    let ids: Vec<String> = pipe
                        .query_async(&mut c)
                        .await
                        .map_err(|e| Error::redis("XADD", inbox, e))?;
                    Ok::<_, Error>(ids)
                }
            });
            let results = futures::future::join_all(runs).await;
            let mut ids = vec![String::new(); prepared.len()];
            for ((_, idx), r) in by_inbox.iter().zip(results) {
                for (i, id) in idx.iter().zip(r?) {
                    ids[*i] = id;
                }
            }
            {
                for n in &notes {
                    let (channel, note) = notification(n);
                    if let Err(e) = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(note)
                        .query_async::<i64>(&mut conn)
                        .await
                    {
                        tracing::debug!(%channel, error = %e, "new-message notification not published");
                    }
                }
            }
            ids
        };
        if ids.len() != prepared.len() {
            return Err(Error::protocol(
                "XADD",
                format!("{} ids for {} messages", ids.len(), prepared.len()),
            ));
        }
        Ok(prepared
            .into_iter()
            .zip(ids)
            .map(|((m, _, _), stream_id)| {
                tracing::debug!(message_id = %m.id, to_agent = %m.to_agent, stream_id = %stream_id, "message queued");
                SendReceipt {
                    message_id: m.id,
                    status: "queued",
                    stream_id,
                    timestamp: m.timestamp,
                }
            })
            .collect())
    }

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
        let block = opts.block.filter(|b| !b.is_zero());
        if let Some(b) = block
            && b > MAX_BLOCK
        {
            return Err(Error::invalid(
                "block",
                &format!("{}ms", b.as_millis()),
                format!("must be at most {} ms", MAX_BLOCK.as_millis()),
            ));
        }
        let stream = keys::inbox(agent);
        self.ensure_group(&stream, &group).await?;
        let entries = match self
            .read_group(&stream, &group, &consumer, count, block)
            .await
        {
            Err(Error::Redis { source, .. }) if wire::is_nogroup(&source) => {
                // The stream or group was deleted meanwhile: recreate and read once more.
                self.forget_group(&stream, &group);
                self.ensure_group(&stream, &group).await?;
                self.read_group(&stream, &group, &consumer, count, block)
                    .await?
            }
            other => other?,
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match e.decode() {
                Ok(message) => out.push(Received {
                    attempt: e.attempt(),
                    message,
                    stream_id: e.id,
                    consumer_group: group.clone(),
                }),
                Err(reason) => {
                    tracing::warn!(agent, stream_id = %e.id, %reason, "invalid entry moved to dead letters");
                    self.dead_letter(
                        &stream,
                        &group,
                        &e,
                        "invalid_envelope",
                        &reason,
                        e.attempt(),
                        1,
                    )
                    .await?;
                }
            }
        }
        Ok(out)
    }

    /// Runs a read: a blocking one on a connection of its own (dropped afterwards, so it
    /// never holds up other commands), a non-blocking one on the shared connection.
    async fn query_read(
        &self,
        cmd: &redis::Cmd,
        block: Option<Duration>,
        command: &'static str,
        stream: &str,
    ) -> Result<redis::Value> {
        match block {
            Some(b) => {
                let mut conn = self.dedicated_connection(b).await?;
                cmd.query_async(&mut conn).await
            }
            None => {
                let mut conn = self.conn();
                cmd.query_async(&mut conn).await
            }
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
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
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
        let mut conn = self.conn();
        let counts: Vec<i64> = pipe
            .query_async(&mut conn)
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

    /// Publishes `message` on a Pub/Sub topic in the Python bus's format
    /// (`{"data", "from", "timestamp", "topic"}`). Returns how many subscribers received it.
    /// Pub/Sub is fire-and-forget: subscribers that are not connected miss it.
    pub async fn publish(
        &self,
        topic: &str,
        message: Value,
        from_agent: Option<&str>,
    ) -> Result<u64> {
        keys::validate_topic(topic)?;
        if let Some(f) = from_agent {
            keys::validate_agent(f).map_err(|e| e.renamed("from_agent"))?;
        }
        let body = json!({
            "data": message,
            "from": from_agent,
            "timestamp": now_timestamp(),
            "topic": topic,
        });
        let mut conn = self.conn();
        let n: u64 = conn
            .publish(topic, body.to_string())
            .await
            .map_err(|e| Error::redis("PUBLISH", topic, e))?;
        Ok(n)
    }

    /// Subscribes to Pub/Sub topics: exact names, or patterns with `*`, `?` or `[…]`
    /// (e.g. `analytics.*`, `agent.*.new_message`). Each event is decoded from the Python
    /// bus's format (`{"data", "from", "timestamp", "topic"}`); other payloads come back as
    /// they are in `data`. Pub/Sub is at most once: events published while the subscription is
    /// not connected are missed, and [`Subscription::next`] returns `None` once the connection
    /// is gone (subscribe again).
    pub async fn subscribe(&self, topics: &[&str]) -> Result<Subscription> {
        if topics.is_empty() {
            return Err(Error::invalid(
                "topics",
                "",
                "give at least one topic or pattern",
            ));
        }
        for t in topics {
            keys::validate_topic(t)?;
        }
        let mut ps = self
            .inner
            .pubsub
            .get_async_pubsub()
            .await
            .map_err(|source| Error::Connect {
                url: self.inner.url.clone(),
                source,
            })?;
        for t in topics {
            let r = if t.contains(['*', '?', '[']) {
                ps.psubscribe(*t).await
            } else {
                ps.subscribe(*t).await
            };
            r.map_err(|e| Error::redis("SUBSCRIBE", t, e))?;
        }
        Ok(Subscription {
            stream: ps.into_on_message(),
        })
    }

    /// Sends `message` with a private `reply_to` stream of this process and waits up to
    /// `timeout` for the handler's reply. Many requests may run concurrently; each gets its own reply.
    ///
    /// Returns the reply message (type `response`). A handler that failed for good answers
    /// with an `error` message, returned as [`Error::RequestFailed`]. On timeout the request
    /// stays queued; its eventual reply is discarded.
    pub async fn request(&self, mut message: Message, timeout: Duration) -> Result<Message> {
        keys::validate_agent(&message.from_agent).map_err(|e| e.renamed("from_agent"))?;
        let listener = self.reply_listener(&message.from_agent).await?;
        message.reply_to = Some(listener.stream.clone());
        if message.correlation_id.is_none() {
            message.correlation_id = Some(uuid::Uuid::new_v4().to_string());
        }
        let (tx, rx) = oneshot::channel();
        let id = message.id.clone();
        let to_agent = message.to_agent.clone();
        listener.register(&id, message.correlation_id.clone(), tx);
        let _unregister = Unregister {
            listener: listener.clone(),
            id: id.clone(),
        };
        self.send(message).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) if reply.message_type == "error" => Err(Error::RequestFailed {
                message_id: id,
                to_agent,
                error: reply
                    .payload
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
            }),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Error::protocol(
                "request",
                "the reply listener stopped (the bus is shutting down)",
            )),
            Err(_) => Err(Error::RequestTimeout {
                message_id: id,
                to_agent,
                timeout,
            }),
        }
    }

    async fn reply_listener(&self, agent: &str) -> Result<Arc<ReplyListener>> {
        if let Some(l) = self
            .inner
            .replies
            .lock()
            .ok()
            .and_then(|m| m.get(agent).cloned())
        {
            return Ok(l);
        }
        let stream = keys::reply_stream(agent, &self.inner.instance);
        let block = Duration::from_secs(5);
        let conn = self.dedicated_connection(block).await?;
        let listener = Arc::new(ReplyListener {
            stream,
            waiters: Mutex::new(HashMap::new()),
        });
        let winner = {
            let mut map = self
                .inner
                .replies
                .lock()
                .map_err(|_| Error::protocol("request", "reply listener registry poisoned"))?;
            map.entry(agent.to_owned())
                .or_insert_with(|| listener.clone())
                .clone()
        };
        if Arc::ptr_eq(&winner, &listener) {
            tokio::spawn(run_reply_listener(
                listener.clone(),
                conn,
                ListenerLink {
                    backend: self.inner.backend.clone(),
                    timeouts: self.inner.timeouts,
                    url: self.inner.url.clone(),
                },
                block,
                self.inner.cancel.clone(),
            ));
        }
        Ok(winner)
    }

    /// The state of `agent`'s inbox for a consumer group (default `<agent>_workers`).
    pub async fn queue_status(&self, agent: &str, group: Option<&str>) -> Result<QueueStatus> {
        let group = agent_group(agent, group)?;
        let stream = keys::inbox(agent);
        let mut conn = self.conn();
        let (exists, dead, retries): (bool, u64, u64) = redis::pipe()
            .exists(&stream)
            .xlen(keys::dead_letters(&stream))
            .zcard(keys::retries(&stream))
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("EXISTS", &stream, e))?;
        let mut st = QueueStatus {
            agent_id: agent.to_owned(),
            stream: stream.clone(),
            consumer_group: group.clone(),
            queue_depth: 0,
            undelivered: Some(0),
            pending: 0,
            consumers: Vec::new(),
            oldest_pending_age_ms: None,
            oldest_pending_idle_ms: None,
            stream_length: 0,
            last_generated_id: None,
            first_entry_id: None,
            last_entry_id: None,
            group_exists: false,
            dead_letters: dead,
            scheduled_retries: retries,
        };
        if !exists {
            return Ok(st);
        }
        let (info, groups): (redis::Value, redis::Value) = redis::pipe()
            .cmd("XINFO")
            .arg("STREAM")
            .arg(&stream)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XINFO", &stream, e))?;
        let info = wire::as_map(&info)
            .ok_or_else(|| Error::protocol("XINFO STREAM", format!("{info:?}")))?;
        st.stream_length = info
            .get("length")
            .and_then(wire::as_i64)
            .unwrap_or(0)
            .max(0) as u64;
        st.last_generated_id = info.get("last-generated-id").and_then(wire::as_string);
        st.first_entry_id = info
            .get("first-entry")
            .and_then(wire::parse_entry)
            .map(|e| e.id);
        st.last_entry_id = info
            .get("last-entry")
            .and_then(wire::parse_entry)
            .map(|e| e.id);
        let group_info = wire::as_array(&groups)
            .unwrap_or(&[])
            .iter()
            .filter_map(wire::as_map)
            .find(|g| g.get("name").and_then(wire::as_string).as_deref() == Some(group.as_str()));
        let Some(g) = group_info else {
            // No group yet: everything in the stream is undelivered.
            st.undelivered = Some(st.stream_length);
            st.queue_depth = st.stream_length;
            return Ok(st);
        };
        st.group_exists = true;
        st.pending = g.get("pending").and_then(wire::as_i64).unwrap_or(0).max(0) as u64;
        st.undelivered = match g.get("lag") {
            Some(v) => wire::as_i64(v).map(|l| l.max(0) as u64),
            None => None,
        };
        if st.undelivered.is_none() {
            // Redis cannot tell (deletions after the group's position): count entries after it.
            let last = g
                .get("last-delivered-id")
                .and_then(wire::as_string)
                .unwrap_or_else(|| "0-0".into());
            st.undelivered = Some(count_after(&mut conn, &stream, &last).await?);
        }
        st.queue_depth = st.undelivered.unwrap_or(0) + st.pending;
        let (consumers, oldest): (redis::Value, redis::Value) = redis::pipe()
            .cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg(&group)
            .cmd("XPENDING")
            .arg(&stream)
            .arg(&group)
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XINFO CONSUMERS", &stream, e))?;
        st.consumers = wire::as_array(&consumers)
            .unwrap_or(&[])
            .iter()
            .filter_map(wire::as_map)
            .map(|c| ConsumerStatus {
                name: c.get("name").and_then(wire::as_string).unwrap_or_default(),
                pending: c.get("pending").and_then(wire::as_i64).unwrap_or(0).max(0) as u64,
                idle_ms: c.get("idle").and_then(wire::as_i64).unwrap_or(0).max(0) as u64,
                inactive_ms: c.get("inactive").and_then(wire::as_i64),
            })
            .collect();
        if let Some(first) = wire::as_array(&oldest)
            .and_then(|a| a.first())
            .and_then(wire::as_array)
        {
            let id = first.first().and_then(wire::as_string).unwrap_or_default();
            let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
            st.oldest_pending_age_ms = wire::stream_id_ms(&id).map(|ms| now.saturating_sub(ms));
            st.oldest_pending_idle_ms =
                first.get(2).and_then(wire::as_i64).map(|i| i.max(0) as u64);
        }
        Ok(st)
    }

    /// Entries of `agent`'s inbox delivered to a consumer of `group` (default
    /// `<agent>_workers`) and not yet acknowledged, oldest first (at most `count`).
    pub async fn pending(
        &self,
        agent: &str,
        group: Option<&str>,
        count: usize,
    ) -> Result<Vec<PendingEntry>> {
        let group = agent_group(agent, group)?;
        let stream = keys::inbox(agent);
        let mut conn = self.conn();
        let v: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(&group)
            .arg("-")
            .arg("+")
            .arg(count.clamp(1, 10_000))
            .query_async(&mut conn)
            .await;
        let v = match v {
            Ok(v) => v,
            Err(e) if wire::is_nogroup(&e) => return Ok(Vec::new()),
            Err(e) => return Err(Error::redis("XPENDING", &stream, e)),
        };
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        Ok(wire::as_array(&v)
            .unwrap_or(&[])
            .iter()
            .filter_map(wire::as_array)
            .filter_map(|p| {
                let stream_id = wire::as_string(p.first()?)?;
                Some(PendingEntry {
                    age_ms: wire::stream_id_ms(&stream_id).map(|ms| now.saturating_sub(ms)),
                    consumer: wire::as_string(p.get(1)?)?,
                    idle_ms: wire::as_i64(p.get(2)?)?.max(0) as u64,
                    deliveries: wire::as_i64(p.get(3)?)?.max(0) as u64,
                    stream_id,
                })
            })
            .collect())
    }

    /// Reads entries of `agent`'s inbox after `after` (a stream id; `"$"` for only new
    /// ones) without a consumer group: nothing is consumed, acknowledged or changed.
    /// Waits up to `block` for the first entry. Returns the entries and the id to pass as
    /// `after` next time. Entries that are not valid messages come back with their raw `data`.
    pub async fn peek(
        &self,
        agent: &str,
        after: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<(Vec<PeekedEntry>, String)> {
        keys::validate_agent(agent)?;
        if after != "$" && !wire::is_stream_id(after) {
            return Err(Error::invalid(
                "stream id",
                after,
                "expected an entry id like 1700000000000-0, 0 for the start, or $ for only new entries",
            ));
        }
        let stream = keys::inbox(agent);
        let mut after = after.to_owned();
        if after == "$" {
            // Resolve "$" now, so that the returned cursor is concrete.
            let mut conn = self.conn();
            let v: redis::Value = redis::cmd("XREVRANGE")
                .arg(&stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("XREVRANGE", &stream, e))?;
            after = wire::parse_entries(&v)?
                .first()
                .map(|e| e.id.clone())
                .unwrap_or_else(|| "0-0".into());
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.clamp(1, MAX_RECEIVE_COUNT));
        let block = block.filter(|b| !b.is_zero()).map(|b| b.min(MAX_BLOCK));
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&stream).arg(&after);
        let v = self.query_read(&cmd, block, "XREAD", &stream).await?;
        let entries: Vec<RawEntry> = wire::parse_read_reply(&v)?
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect();
        let next = entries.last().map(|e| e.id.clone()).unwrap_or(after);
        let out = entries
            .into_iter()
            .map(|e| {
                let (message, raw_data) = match e.decode() {
                    Ok(m) => (Some(m), None),
                    Err(_) => (
                        None,
                        e.get(fields::DATA)
                            .map(|d| String::from_utf8_lossy(d).into_owned()),
                    ),
                };
                PeekedEntry {
                    stream_id: e.id.clone(),
                    attempt: e.attempt(),
                    message,
                    raw_data,
                }
            })
            .collect();
        Ok((out, next))
    }

    /// Moves an entry to the dead letters of `stream` and acknowledges it, atomically
    /// (`MULTI`: both keys are in the stream's slot).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        entry: &RawEntry,
        reason: &str,
        error: &str,
        attempts: u32,
        deliveries: u64,
    ) -> Result<()> {
        let dead = keys::dead_letters(stream);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let cmd = pipe.cmd("XADD").arg(&dead).arg("*");
        for (k, v) in &entry.fields {
            if !k.starts_with("dead_") {
                cmd.arg(k).arg(v.as_slice());
            }
        }
        cmd.arg(fields::DEAD_REASON)
            .arg(reason)
            .arg(fields::DEAD_ERROR)
            .arg(error)
            .arg(fields::DEAD_AT)
            .arg(now_timestamp())
            .arg(fields::DEAD_ATTEMPTS)
            .arg(attempts)
            .arg(fields::DEAD_DELIVERIES)
            .arg(deliveries)
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
        let mut conn = self.conn();
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XADD", &dead, e))?;
        Ok(())
    }

    /// Lists up to `count` dead letters of `agent`'s inbox, oldest first.
    pub async fn dead_letters(&self, agent: &str, count: usize) -> Result<Vec<DeadLetter>> {
        keys::validate_agent(agent)?;
        let dead = keys::dead_letters(&keys::inbox(agent));
        let mut conn = self.conn();
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XRANGE", &dead, e))?;
        Ok(wire::parse_entries(&v)?
            .iter()
            .map(to_dead_letter)
            .collect())
    }

    /// Puts dead letters back into their stream as fresh first attempts; `None` requeues
    /// all of them. Each move is atomic (`MULTI`: `XADD` to the stream, `XDEL` from the dead
    /// letters). Returns how many were requeued.
    pub async fn requeue_dead_letters(
        &self,
        agent: &str,
        dead_ids: Option<&[String]>,
    ) -> Result<usize> {
        keys::validate_agent(agent)?;
        let stream = keys::inbox(agent);
        let dead = keys::dead_letters(&stream);
        let mut conn = self.conn();
        let entries: Vec<RawEntry> = match dead_ids {
            Some(ids) => {
                if let Some(bad) = ids.iter().find(|id| !wire::is_stream_id(id)) {
                    return Err(Error::invalid(
                        "dead letter id",
                        bad,
                        "expected an entry id like 1700000000000-0",
                    ));
                }
                let mut pipe = redis::pipe();
                for id in ids {
                    pipe.cmd("XRANGE").arg(&dead).arg(id).arg(id);
                }
                let vs: Vec<redis::Value> = pipe
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XRANGE", &dead, e))?;
                let mut out = Vec::new();
                for v in &vs {
                    out.extend(wire::parse_entries(v)?);
                }
                out
            }
            None => {
                let v: redis::Value = redis::cmd("XRANGE")
                    .arg(&dead)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XRANGE", &dead, e))?;
                wire::parse_entries(&v)?
            }
        };
        let mut n = 0;
        for chunk in entries.chunks(100) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for e in chunk {
                let cmd = pipe.cmd("XADD").arg(&stream).arg("*");
                for (k, v) in &e.fields {
                    if !k.starts_with("dead_")
                        && k != fields::ATTEMPT
                        && k != fields::TARGET_GROUP
                        && k != fields::LAST_ERROR
                    {
                        cmd.arg(k).arg(v.as_slice());
                    }
                }
                cmd.ignore();
                pipe.cmd("XDEL").arg(&dead).arg(&e.id).ignore();
            }
            let _: () = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("XADD", &stream, e))?;
            n += chunk.len();
        }
        Ok(n)
    }

    /// Deletes all dead letters of `agent`'s inbox. Returns how many there were.
    pub async fn purge_dead_letters(&self, agent: &str) -> Result<u64> {
        keys::validate_agent(agent)?;
        let dead = keys::dead_letters(&keys::inbox(agent));
        let mut conn = self.conn();
        let (n, _): (u64, i64) = redis::pipe()
            .atomic()
            .xlen(&dead)
            .del(&dead)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("DEL", &dead, e))?;
        Ok(n)
    }
}

fn to_dead_letter(e: &RawEntry) -> DeadLetter {
    let message = e.decode().ok();
    DeadLetter {
        dead_id: e.id.clone(),
        reason: e.get_str(fields::DEAD_REASON).unwrap_or("").to_owned(),
        error: e.get_str(fields::DEAD_ERROR).unwrap_or("").to_owned(),
        dead_at: e.get_str(fields::DEAD_AT).unwrap_or("").to_owned(),
        attempts: e
            .get_str(fields::DEAD_ATTEMPTS)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        stream: e.get_str(fields::DEAD_STREAM).unwrap_or("").to_owned(),
        stream_id: e.get_str(fields::DEAD_STREAM_ID).unwrap_or("").to_owned(),
        raw_data: if message.is_none() {
            e.get(fields::DATA)
                .map(|d| String::from_utf8_lossy(d).into_owned())
        } else {
            None
        },
        message,
    }
}

async fn count_after(conn: &mut Conn, stream: &str, after: &str) -> Result<u64> {
    // Bounded walk (at most 100 pages of 1000), used only when XINFO cannot report lag.
    let mut start = format!("({after}");
    let mut total = 0u64;
    for _ in 0..100 {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| Error::redis("XRANGE", stream, e))?;
        let entries = wire::parse_entries(&v)?;
        total += entries.len() as u64;
        match entries.last() {
            Some(last) if entries.len() == 1000 => start = format!("({}", last.id),
            _ => break,
        }
    }
    Ok(total)
}

/// Checks `agent` and the consumer group (default `<agent>_workers`); returns the group.
fn agent_group(agent: &str, group: Option<&str>) -> Result<String> {
    keys::validate_agent(agent)?;
    let group = group
        .map(str::to_owned)
        .unwrap_or_else(|| keys::default_group(agent));
    keys::validate_group(&group)?;
    Ok(group)
}

/// `REDIS_URL`, or the default `redis://127.0.0.1:6379`.
pub fn redis_url_from_env() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
}

/// A request waiting for its reply: its correlation id and where to deliver the reply.
type Waiter = (Option<String>, oneshot::Sender<Message>);

struct ReplyListener {
    stream: String,
    /// Keyed by request message id.
    waiters: Mutex<HashMap<String, Waiter>>,
}

impl ReplyListener {
    fn register(&self, id: &str, correlation: Option<String>, tx: oneshot::Sender<Message>) {
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(id.to_owned(), (correlation, tx));
        }
    }

    fn deliver(&self, in_reply_to: Option<&str>, msg: Message) {
        let Ok(mut w) = self.waiters.lock() else {
            return;
        };
        let key = in_reply_to
            .filter(|id| w.contains_key(*id))
            .map(str::to_owned)
            .or_else(|| {
                let c = msg.correlation_id.as_deref()?;
                w.iter()
                    .find(|(_, (corr, _))| corr.as_deref() == Some(c))
                    .map(|(k, _)| k.clone())
            });
        match key.and_then(|k| w.remove(&k)) {
            Some((_, tx)) => {
                let _ = tx.send(msg);
            }
            None => {
                tracing::debug!(stream = %self.stream, message_id = %msg.id, "reply for no waiting request (timed out?) discarded")
            }
        }
    }
}

struct Unregister {
    listener: Arc<ReplyListener>,
    id: String,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if let Ok(mut w) = self.listener.waiters.lock() {
            w.remove(&self.id);
        }
    }
}

/// What a reply listener needs to reach Redis (not the `Bus` itself, whose last drop stops it).
struct ListenerLink {
    backend: Backend,
    timeouts: Timeouts,
    url: String,
}

async fn run_reply_listener(
    listener: Arc<ReplyListener>,
    mut conn: Conn,
    link: ListenerLink,
    block: Duration,
    cancel: CancellationToken,
) {
    let stream = listener.stream.clone();
    let mut last = "0-0".to_string();
    let mut backoff = crate::runtime::reconnect_backoff();
    loop {
        let read = async {
            let v: redis::Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&last)
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(v)
        };
        let v = tokio::select! {
            _ = cancel.cancelled() => break,
            v = read => v,
        };
        match v
            .map_err(|e| Error::redis("XREAD", &stream, e))
            .and_then(|v| wire::parse_read_reply(&v))
        {
            Ok(streams) => {
                backoff = crate::runtime::reconnect_backoff();
                let entries: Vec<RawEntry> = streams.into_iter().flat_map(|(_, e)| e).collect();
                if entries.is_empty() {
                    continue;
                }
                if let Some(l) = entries.last() {
                    last = l.id.clone();
                }
                let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
                for e in entries {
                    match e.decode() {
                        Ok(m) => listener.deliver(e.get_str(fields::IN_REPLY_TO), m),
                        Err(reason) => {
                            tracing::warn!(stream = %stream, stream_id = %e.id, %reason, "undecodable reply ignored")
                        }
                    }
                }
                // Replies are consumed: delete them, and let the stream expire if this process goes away.
                let mut c = link.backend.conn();
                let _: redis::RedisResult<()> = redis::pipe()
                    .cmd("XDEL")
                    .arg(&stream)
                    .arg(&ids)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&stream)
                    .arg(3600)
                    .ignore()
                    .query_async(&mut c)
                    .await;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(stream = %stream, error = %e, retry_in_ms = delay.as_millis() as u64, "reply listener read failed; reconnecting");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                // Reconnect on a fresh connection of its own.
                match link
                    .backend
                    .dedicated(block, link.timeouts, &link.url)
                    .await
                {
                    Ok(c) => conn = c,
                    Err(e) => {
                        tracing::debug!(stream = %stream, error = %e, "reply listener reconnect failed")
                    }
                }
            }
        }
    }
    let mut c = link.backend.conn();
    let _: redis::RedisResult<()> = c.del(&stream).await;
}
