//! The router of [`Mode::Secure`](crate::bus::Mode::Secure): it moves each entry of an
//! agent's outbox (`agent:<id>:outbox`) to its recipient, stamping the outbox's owner as
//! the authenticated sender, and rejects what breaks policy into the sender's outbox dead
//! letters (`agent:<id>:outbox:dead{agent:<id>:outbox}`) with a reason.
//!
//! - It runs under its own Redis user (`fabric_worker::acl::Role::Router`): it can read,
//!   acknowledge and trim outboxes, and append to inboxes, results and reply streams.
//! - Several routers share the work through the consumer group `fabric_routers` of every
//!   outbox. A router killed mid-forward loses nothing: its entries stay pending and another
//!   router reclaims them. Nothing is delivered twice either: every delivery is remembered
//!   as `<sender>/<message id>` in the recipient's slot, atomically with the append, for
//!   `dedup_window` (default 15 min), and what is remembered is not delivered again
//!   (`forward.rs`).
//! - New outboxes are found with `SCAN` every `scan_interval` (default 1 s); `fabric setup`
//!   creates them ahead of time.
//!
//! `policy.rs` holds the decision for one entry (pure), `forward.rs` the delivery; this
//! file holds the loops.

mod forward;
mod policy;
mod topics;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use policy::AllowList;

use crate::broker::functions::fcall;
use crate::broker::{
    Broker, Conn, DeadLetterNote, RawEntry, dead_letter, lock, reconnect_backoff, wire,
};
use crate::bus::Bus;
use crate::bus::send::notes_for;
use crate::error::{Error, Result};
use crate::keys;
use crate::message::Message;
use forward::Outcome;

/// Builds a [`Router`].
#[derive(Debug)]
#[must_use]
pub struct RouterBuilder {
    url: Option<String>,
    bus: Option<Bus>,
    allow: AllowList,
    max_entry_bytes: usize,
    batch_size: usize,
    block: Duration,
    reclaim_idle: Duration,
    scan_interval: Duration,
    dedup_window: Duration,
    consumer: Option<String>,
}

impl RouterBuilder {
    /// Redis URL (default `REDIS_URL`, else `redis://127.0.0.1:6379`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Use an existing bus connection.
    pub fn bus(mut self, bus: Bus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Who may send to whom (default: everyone to everyone).
    pub fn allow(mut self, allow: AllowList) -> Self {
        self.allow = allow;
        self
    }

    /// Larger outbox entries, or entries with more than 64 fields, are rejected with reason
    /// `too_large` (default 1 MiB).
    pub fn max_entry_bytes(mut self, n: usize) -> Self {
        self.max_entry_bytes = n.max(1);
        self
    }

    /// Entries read per outbox per read (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How long one read blocks (default 500 ms).
    pub fn block(mut self, d: Duration) -> Self {
        self.block = d.max(Duration::from_millis(1));
        self
    }

    /// Entries another router has held this long unacknowledged are taken over (default 10 s).
    pub fn reclaim_idle(mut self, d: Duration) -> Self {
        self.reclaim_idle = d.max(Duration::from_millis(10));
        self
    }

    /// How often to look for new outboxes (default 1 s).
    pub fn scan_interval(mut self, d: Duration) -> Self {
        self.scan_interval = d.max(Duration::from_millis(10));
        self
    }

    /// How long a delivered message id is remembered, so that a router that died between
    /// delivering and acknowledging does not deliver it twice (default 15 min). An entry
    /// left unacknowledged longer than this (every router down) may be delivered again.
    pub fn dedup_window(mut self, d: Duration) -> Self {
        self.dedup_window = d;
        self
    }

    /// Consumer name (default `router-<host>-<pid>-<random>`).
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Connects and checks the function library.
    pub async fn build(self) -> Result<Router> {
        let bus = match self.bus {
            Some(b) => b,
            None => Bus::connect(self.url.unwrap_or_else(crate::bus::redis_url_from_env)).await?,
        };
        bus.broker().ensure_library().await?;
        let consumer = self.consumer.unwrap_or_else(|| {
            format!(
                "router-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        keys::validate_consumer(&consumer)?;
        Ok(Router {
            broker: bus.broker().clone(),
            _bus: bus,
            allow: self.allow,
            max_entry_bytes: self.max_entry_bytes,
            batch_size: self.batch_size,
            block: self.block,
            reclaim_idle: self.reclaim_idle,
            scan_interval: self.scan_interval,
            dedup_window: self.dedup_window,
            consumer,
            subscriptions: topics::Subscriptions::default(),
        })
    }
}

/// What one pass over some entries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// Delivered.
    pub delivered: u64,
    /// Already delivered earlier (a retried forward): acknowledged, not delivered again.
    pub duplicates: u64,
    /// Rejected into the sender's outbox dead letters.
    pub rejected: u64,
}

/// The secure-mode router (see the module docs).
#[derive(Debug)]
pub struct Router {
    broker: Broker,
    _bus: Bus,
    allow: AllowList,
    max_entry_bytes: usize,
    batch_size: usize,
    block: Duration,
    reclaim_idle: Duration,
    scan_interval: Duration,
    dedup_window: Duration,
    consumer: String,
    /// Durable topic subscriptions (secure mode's fan-out).
    subscriptions: topics::Subscriptions,
}

impl Router {
    /// A builder with the defaults.
    pub fn builder() -> RouterBuilder {
        RouterBuilder {
            url: None,
            bus: None,
            allow: AllowList::everyone(),
            max_entry_bytes: crate::broker::wire::DEFAULT_MAX_ENTRY_BYTES,
            batch_size: 500,
            block: Duration::from_millis(500),
            reclaim_idle: Duration::from_secs(10),
            scan_interval: Duration::from_secs(1),
            dedup_window: Duration::from_secs(15 * 60),
            consumer: None,
        }
    }

    /// This router's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Routes until `shutdown` completes. Entries being forwarded when it completes are
    /// finished; anything read and not yet acknowledged stays pending for another router.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let work = self.work(stop);
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => r,
            () = shutdown => {
                stopper.cancel();
                work.await
            }
        }
    }

    async fn work(&self, stop: CancellationToken) -> Result<()> {
        info!(consumer = %self.consumer, "router started");
        let outboxes = Mutex::new(BTreeSet::new());
        let found = Notify::new();
        // Finding outboxes and taking over stalled entries run beside the reads, so that a
        // SCAN never holds up a delivery.
        tokio::join!(
            self.maintain(&outboxes, &found, &stop),
            self.read_loop(&outboxes, &found, &stop)
        );
        info!(consumer = %self.consumer, "router stopped");
        Ok(())
    }

    /// Every `scan_interval`, finds new outboxes and trims the delivered entries of the known
    /// ones; every half `reclaim_idle`, takes over entries other routers left unacknowledged.
    async fn maintain(
        &self,
        outboxes: &Mutex<BTreeSet<String>>,
        found: &Notify,
        stop: &CancellationToken,
    ) {
        let mut next_reclaim = tokio::time::Instant::now() + self.reclaim_idle / 2;
        while !stop.is_cancelled() {
            let known = lock(outboxes).clone();
            match self.discover(&known).await {
                Ok(new) if !new.is_empty() => {
                    lock(outboxes).extend(new);
                    found.notify_one();
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot list outboxes"),
            }
            for o in &known {
                let cmd = fcall("fabric_trim", &[o]);
                if let Err(e) = self.broker.call::<i64>(&cmd, "FCALL fabric_trim", o).await {
                    debug!(outbox = %o, error = %e, "trim failed");
                }
            }
            if tokio::time::Instant::now() >= next_reclaim {
                for o in &known {
                    if let Err(e) = self.reclaim(o).await {
                        debug!(outbox = %o, error = %e, "reclaim failed");
                    }
                }
                next_reclaim = tokio::time::Instant::now() + self.reclaim_idle / 2;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.scan_interval) => {}
            }
        }
    }

    /// Reads new entries of every known outbox and routes them.
    async fn read_loop(
        &self,
        outboxes: &Mutex<BTreeSet<String>>,
        found: &Notify,
        stop: &CancellationToken,
    ) {
        let mut conn: Option<Conn> = None;
        let mut backoff = reconnect_backoff();
        while !stop.is_cancelled() {
            let known = lock(outboxes).clone();
            if known.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = found.notified() => {}
                }
                continue;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.broker.dedicated(self.block).await {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        let d = backoff.next().unwrap_or(Duration::from_secs(5));
                        warn!(error = %e, "cannot reach Redis; retrying");
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(d) => {}
                        }
                        continue;
                    }
                },
            };
            let r = tokio::select! {
                () = stop.cancelled() => break,
                r = self.read(c, &known) => r,
            };
            match r {
                Ok(batches) => {
                    backoff = reconnect_backoff();
                    for (outbox, entries) in batches {
                        if let Err(e) = self.route(&outbox, entries).await {
                            warn!(outbox = %outbox, error = %e, "routing failed; the entries stay pending for a retry");
                        }
                    }
                }
                Err(Error::Redis { source, .. }) if wire::is_nogroup(&source) => {
                    // An outbox (or its group) was deleted: find them all again.
                    lock(outboxes).clear();
                }
                Err(e) => {
                    conn = None;
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    warn!(error = %e, retry_in_ms = crate::time::millis(d), "outbox read failed; reconnecting");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }

    /// Outboxes not in `known` (with the routers' group created on them).
    async fn discover(&self, known: &BTreeSet<String>) -> Result<Vec<String>> {
        let found = self
            .broker
            .scan(&keys::outbox("*"), "stream", 1_000_000)
            .await?;
        let mut new = Vec::new();
        for o in found {
            if known.contains(&o)
                || keys::outbox_owner(&o).is_none_or(|a| keys::validate_agent(a).is_err())
            {
                continue;
            }
            self.broker.forget_group(&o, keys::ROUTER_GROUP);
            self.broker.ensure_group(&o, keys::ROUTER_GROUP).await?;
            debug!(outbox = %o, "routing a new outbox");
            new.push(o);
        }
        Ok(new)
    }

    /// New entries of the outboxes: one blocking read over all of them on one server; on a
    /// cluster (where one read must stay in one slot), one read per outbox without blocking.
    async fn read(
        &self,
        conn: &mut Conn,
        outboxes: &BTreeSet<String>,
    ) -> Result<Vec<(String, Vec<RawEntry>)>> {
        if self.broker.is_cluster() {
            let mut out = Vec::new();
            for o in outboxes {
                let v: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(keys::ROUTER_GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(self.batch_size)
                    .arg("STREAMS")
                    .arg(o)
                    .arg(">")
                    .query_async(&mut self.broker.conn())
                    .await
                    .map_err(|e| Error::redis("XREADGROUP", o, e))?;
                out.extend(wire::read_reply_of(v)?);
            }
            if out.iter().all(|(_, e)| e.is_empty()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            return Ok(out);
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(keys::ROUTER_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.batch_size)
            .arg("BLOCK")
            .arg(crate::time::millis(self.block))
            .arg("STREAMS");
        for o in outboxes {
            cmd.arg(o);
        }
        for _ in outboxes {
            cmd.arg(">");
        }
        let v = wire::query_value(conn, &cmd)
            .await
            .map_err(|e| Error::redis("XREADGROUP", "agent:*:outbox", e))?;
        wire::read_reply_of(v)
    }

    /// Takes over entries another router left unacknowledged for too long.
    async fn reclaim(&self, outbox: &str) -> Result<()> {
        let mut cursor = "0-0".to_owned();
        for _ in 0..10 {
            let v: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(outbox)
                .arg(keys::ROUTER_GROUP)
                .arg(&self.consumer)
                .arg(crate::time::millis(self.reclaim_idle))
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.batch_size)
                .query_async(&mut self.broker.conn())
                .await
                .map_err(|e| Error::redis("XAUTOCLAIM", outbox, e))?;
            let parts = wire::as_array(&v)
                .filter(|p| p.len() >= 2)
                .ok_or_else(|| Error::protocol("XAUTOCLAIM", format!("{v:?}")))?;
            let next = wire::as_string(&parts[0]).unwrap_or_else(|| "0-0".into());
            let entries: Vec<RawEntry> = wire::parse_entries(&parts[1])?
                .into_iter()
                .filter(|e| !e.fields.is_empty())
                .collect();
            if !entries.is_empty() {
                info!(
                    outbox,
                    count = entries.len(),
                    "took over entries another router left unacknowledged"
                );
                self.route(outbox, entries).await?;
            }
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        Ok(())
    }

    /// Delivers or rejects each entry of `outbox`, then acknowledges and deletes them, and
    /// announces what reached an inbox.
    pub(crate) async fn route(&self, outbox: &str, entries: Vec<RawEntry>) -> Result<Routed> {
        let Some(owner) = keys::outbox_owner(outbox) else {
            return Ok(Routed::default());
        };
        let decisions: Vec<Result<policy::Delivery, policy::Rejection>> = entries
            .iter()
            .map(|e| policy::decide(owner, e, &self.allow, self.max_entry_bytes))
            .collect();
        // Durable topic events: one copy per subscribed agent.
        let copies = if decisions
            .iter()
            .any(|d| d.as_ref().is_ok_and(|d| d.topic.is_some()))
        {
            let subs = self
                .subscriptions
                .get(&self.broker, self.scan_interval)
                .await?;
            topics::fan_out(&decisions, &subs)
        } else {
            Vec::new()
        };
        // One FCALL per target (and 100 entries), in order within it, all sent at once.
        let chunks = forward::chunks(
            decisions
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    d.as_ref()
                        .ok()
                        .filter(|d| d.topic.is_none())
                        .map(|d| (i, d))
                })
                .chain(copies.iter().map(|(i, d)| (*i, d))),
        );
        let results = futures::future::join_all(
            chunks
                .iter()
                .map(|c| forward::forward(&self.broker, owner, c, self.dedup_window)),
        )
        .await;
        let mut outcome: Vec<Option<Outcome>> = vec![None; entries.len()];
        for (chunk, r) in chunks.iter().zip(results) {
            // A Redis failure: leave the entries pending, to be taken over and tried again.
            for (i, o) in chunk.indexes().zip(r?) {
                outcome[i] = Some(o);
            }
        }
        let mut routed = Routed::default();
        let mut announced: Vec<&Message> = Vec::new();
        for ((entry, decision), out) in entries.iter().zip(&decisions).zip(outcome) {
            let rejection = match (decision, out) {
                (Ok(d), Some(Outcome::Delivered(id))) => {
                    debug!(from = owner, to = %d.message.to_agent, message_id = %d.message.id, target = %d.target, stream_id = %id, "delivered");
                    routed.delivered += 1;
                    if d.must_exist {
                        announced.push(&d.message);
                    }
                    None
                }
                (Ok(d), Some(Outcome::Scheduled)) => {
                    debug!(from = owner, to = %d.message.to_agent, message_id = %d.message.id, deliver_at_ms = ?d.message.deliver_at_ms, "scheduled");
                    routed.delivered += 1;
                    announced.push(&d.message);
                    None
                }
                (Ok(d), None) if d.topic.is_some() => {
                    debug!(from = owner, topic = ?d.topic, message_id = %d.message.id, "topic event with no subscriber; nothing to copy");
                    None
                }
                (Ok(d), Some(Outcome::Duplicate)) => {
                    debug!(from = owner, message_id = %d.message.id, "already delivered; acknowledging only");
                    routed.duplicates += 1;
                    None
                }
                (Ok(d), _) => Some((
                    crate::broker::DeadReason::UnknownRecipient,
                    format!(
                        "no agent {:?}: it has no inbox (register it with `fabric setup`, or start its worker)",
                        d.message.to_agent
                    ),
                )),
                (Err(rejection), _) => Some(rejection.clone()),
            };
            if let Some((reason, error)) = rejection {
                warn!(from = owner, stream_id = %entry.id, %reason, %error, "rejected into the sender's outbox dead letters");
                let note = DeadLetterNote {
                    reason: &reason,
                    error: &error,
                    attempts: 1,
                    deliveries: 1,
                };
                dead_letter(&self.broker, outbox, keys::ROUTER_GROUP, entry, &note).await?;
                routed.rejected += 1;
            }
        }
        // Acknowledge the entries and announce the deliveries, in one round trip. (Outboxes
        // are trimmed apart, every scan interval: cheaper than an XDEL per batch.)
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            pipe.cmd("XACK")
                .arg(outbox)
                .arg(keys::ROUTER_GROUP)
                .arg(&ids);
            for (channel, note) in notes_for(announced.into_iter()) {
                pipe.cmd("PUBLISH").arg(channel).arg(note);
            }
            topics::after_copies(&mut pipe, &copies);
            let replies: Vec<redis::Value> = pipe
                .query_async(&mut self.broker.conn())
                .await
                .map_err(|e| Error::redis("XACK", outbox, e))?;
            if let Some(redis::Value::ServerError(e)) = replies.first() {
                return Err(Error::redis(
                    "XACK",
                    outbox,
                    redis::RedisError::from(e.clone()),
                ));
            }
        }
        Ok(routed)
    }
}
