//! One message by id, wherever it is: [`Bus::message`].
//!
//! An entry of an agent's inbox lives in one of five places: the inbox (or one of its
//! priority lanes), waiting or delivered to a consumer; the retry set `S:retry{S}` after a
//! failed attempt; the schedule `S:delayed{S}` when sent for later; the dead letters
//! `S:dead{S}`. This finds it by the id an operator sees (`fabric tail`, `fabric pending`,
//! `fabric retries list`, `fabric dead-letters list`) or by its message id.

use std::collections::BTreeMap;

use serde::Serialize;

use super::scan::{Member, contains, glob_escape, id_le, newest_where, range_one, score_ms, zscan};
use super::{Bus, Mode};
use crate::broker::{Conn, DeadReason, RawEntry, wire};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields};
use crate::time::now_ms;

/// Entries looked at, per place, when looking a message up by its message id (newest
/// first in streams); a stream id is found in any number.
pub const MESSAGE_ID_SCAN_LIMIT: usize = 10_000;

/// Where a message is, and what happens to it next (see [`Bus::message`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MessageLocation {
    /// In the inbox (or a lane), not yet delivered to the agent's workers' group.
    Queued {
        /// The priority lane (`urgent`, `high`, `low`), or `None` for the inbox itself.
        lane: Option<String>,
    },
    /// Delivered to a consumer of the workers' group and not yet acknowledged.
    Pending {
        /// The priority lane, or `None` for the inbox itself.
        lane: Option<String>,
        /// The consumer holding it.
        consumer: String,
        /// Milliseconds since it was last delivered (or its lease renewed).
        idle_ms: u64,
        /// How many times it has been delivered.
        deliveries: u64,
    },
    /// Delivered to the workers' group and acknowledged (handled, or moved on to a retry
    /// or dead letter that is no longer there); kept in the stream until it is trimmed.
    Acknowledged {
        /// The priority lane, or `None` for the inbox itself.
        lane: Option<String>,
    },
    /// Failed, waiting in the retry set for its next attempt.
    Retry {
        /// When it is due, ms since the epoch (server clock).
        due_at_ms: u64,
        /// Milliseconds until then (0 when already due).
        due_in_ms: u64,
        /// The lane it goes back into, if any.
        lane: Option<String>,
    },
    /// Sent for later, waiting in the schedule for its delivery time.
    Scheduled {
        /// When it is due, ms since the epoch.
        due_at_ms: u64,
        /// Milliseconds until then (0 when already due).
        due_in_ms: u64,
        /// The lane it goes into, if any.
        lane: Option<String>,
    },
    /// Failed for good, in the dead letters.
    DeadLetter {
        /// Why.
        reason: DeadReason,
        /// The error text.
        error: String,
        /// When (naive UTC ISO-8601).
        dead_at: String,
        /// The stream it came from.
        from_stream: String,
        /// Its id there.
        from_stream_id: String,
    },
}

/// How one consumer group of the stream sees an entry of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// The group.
    pub group: String,
    /// `queued`, `pending` or `acknowledged`.
    pub state: String,
    /// The consumer holding it, when pending.
    pub consumer: Option<String>,
    /// Milliseconds since it was last delivered, when pending.
    pub idle_ms: Option<u64>,
    /// Deliveries so far, when pending.
    pub deliveries: Option<u64>,
}

/// One message and where it is (see [`Bus::message`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MessageDetails {
    /// The agent.
    #[serde(rename = "agent_id")]
    pub agent: String,
    /// Where it is.
    pub location: MessageLocation,
    /// The Redis key holding it (the inbox, a lane, `S:retry{S}`, `S:delayed{S}` or
    /// `S:dead{S}`).
    pub key: String,
    /// Its id there: the stream entry id (with `<lane>/` before it in a lane), the
    /// dead-letter id, or for a retry the id of the entry that failed (`from`). `None` for
    /// a scheduled message.
    pub id: Option<String>,
    /// The 1-based attempt it is at (or queued for).
    pub attempt: u32,
    /// The error of the previous attempt, when one failed.
    pub last_error: Option<String>,
    /// The envelope, if it could be decoded (its headers are in `headers`).
    pub message: Option<Message>,
    /// The headers carried beside the envelope (the `headers` field).
    pub headers: BTreeMap<String, String>,
    /// Why the envelope could not be decoded, when it could not.
    pub decode_error: Option<String>,
    /// The raw `data` field, when the envelope could not be decoded.
    pub raw_data: Option<String>,
    /// The entry's other fields (`target_group`, `sender`, the `dead_*` notes, …), as text.
    pub fields: BTreeMap<String, String>,
    /// How each consumer group of the stream sees the entry (for an entry in a stream).
    pub groups: Vec<GroupView>,
}

impl Bus {
    /// Finds one message of `agent`'s inbox and says where it is: queued or pending in the
    /// inbox or a priority lane (with the consumer, idle time and deliveries), waiting as a
    /// retry or a scheduled message (with its due time), or dead-lettered (with the reason);
    /// with its envelope, headers, attempt and last error. `None` when it is in none of them.
    ///
    /// `id` is one of:
    /// - a stream entry id (`1700000000000-0`, or `urgent/1700000000000-0` for a lane, as
    ///   [`Bus::receive`] gives them): an entry of the inbox or its lanes, a dead-letter id,
    ///   or the id of a failed entry now waiting as a retry (or dead-lettered: an entry
    ///   acknowledged by the workers is looked for there by its original id);
    /// - a message id (the envelope's `id`, e.g. `msg:…`): looked for among the newest
    ///   [`MESSAGE_ID_SCAN_LIMIT`] entries of the inbox, of each lane and of the dead
    ///   letters, and every retry and scheduled message.
    ///
    /// Read-only; works with any user that may read the agent's keys.
    pub async fn message(&self, agent: &str, id: &str) -> Result<Option<MessageDetails>> {
        keys::validate_agent(agent)?;
        let id = id.trim();
        if id.is_empty() || id.len() > keys::MAX_KEY_LEN || id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "message id",
                id,
                "expected a stream entry id like 1700000000000-0 (optionally urgent/, high/ or low/ before it) or a message id",
            ));
        }
        let look = Lookup {
            bus: self,
            agent,
            inbox: keys::inbox(agent),
            stamped: self.inner.mode == Mode::Secure,
        };
        match keys::split_received_id(id) {
            Ok((lane, entry_id)) if entry_id.contains('-') => {
                look.by_stream_id(lane, entry_id).await
            }
            Ok((lane, entry_id)) => look.by_stream_id(lane, &format!("{entry_id}-0")).await,
            Err(_) => look.by_message_id(id).await,
        }
    }
}

struct Lookup<'a> {
    bus: &'a Bus,
    agent: &'a str,
    inbox: String,
    stamped: bool,
}

impl Lookup<'_> {
    async fn by_stream_id(
        &self,
        lane: Option<&'static str>,
        id: &str,
    ) -> Result<Option<MessageDetails>> {
        let mut conn = self.bus.conn();
        let streams: Vec<(Option<&'static str>, String)> = match lane {
            Some(l) => vec![(Some(l), keys::lane(&self.inbox, l))],
            None => keys::in_read_order(
                self.inbox.clone(),
                keys::LANES.map(|l| (l, keys::lane(&self.inbox, l))),
            ),
        };
        let mut acknowledged = None;
        for (lane, stream) in &streams {
            let Some(entry) = range_one(&mut conn, stream, id).await? else {
                continue;
            };
            let d = self.in_stream(&mut conn, *lane, stream, entry).await?;
            if matches!(d.location, MessageLocation::Acknowledged { .. }) {
                acknowledged = Some(d);
                break;
            }
            return Ok(Some(d));
        }
        if lane.is_none() {
            let dead = keys::dead_letters(&self.inbox);
            if let Some(e) = range_one(&mut conn, &dead, id).await? {
                return Ok(Some(self.dead(dead, &e)));
            }
        }
        // A failed entry: its retry, or its dead letter, by the id it had.
        if let Some(d) = self.retry_from(&mut conn, id).await? {
            return Ok(Some(d));
        }
        if let Some(d) = self.dead_from(&mut conn, id).await? {
            return Ok(Some(d));
        }
        Ok(acknowledged)
    }

    async fn by_message_id(&self, message_id: &str) -> Result<Option<MessageDetails>> {
        let mut conn = self.bus.conn();
        let matches = |e: &RawEntry| {
            e.get(fields::DATA)
                .is_some_and(|d| contains(d, message_id.as_bytes()))
                && e.decode().is_ok_and(|m| m.id == message_id)
        };
        // An entry the workers acknowledged may live on as a retry or a dead letter: those
        // come first.
        let mut acknowledged = None;
        for (lane, stream) in keys::in_read_order(
            self.inbox.clone(),
            keys::LANES.map(|l| (l, keys::lane(&self.inbox, l))),
        ) {
            if let Some(e) = newest_where(&mut conn, &stream, &matches).await? {
                let d = self.in_stream(&mut conn, lane, &stream, e).await?;
                if matches!(d.location, MessageLocation::Acknowledged { .. }) {
                    acknowledged = Some(d);
                    break;
                }
                return Ok(Some(d));
            }
        }
        for (set, retry) in [
            (keys::retries(&self.inbox), true),
            (keys::delayed(&self.inbox), false),
        ] {
            let pattern = format!("*{}*", glob_escape(message_id));
            for (m, _, score) in zscan(&mut conn, &set, &pattern).await? {
                let entry = m.entry(m.from.clone().unwrap_or_default());
                if m.id.as_deref() == Some(message_id) || matches(&entry) {
                    return Ok(Some(self.in_set(set, retry, &m, &entry, score)));
                }
            }
        }
        let dead = keys::dead_letters(&self.inbox);
        if let Some(e) = newest_where(&mut conn, &dead, &matches).await? {
            return Ok(Some(self.dead(dead, &e)));
        }
        Ok(acknowledged)
    }

    /// The retry whose failed entry had id `from`.
    async fn retry_from(&self, conn: &mut Conn, from: &str) -> Result<Option<MessageDetails>> {
        let set = keys::retries(&self.inbox);
        let pattern = format!("*\"from\":\"{}\"*", glob_escape(from));
        for (m, _, score) in zscan(conn, &set, &pattern).await? {
            if m.from.as_deref() == Some(from) {
                let entry = m.entry(from.to_owned());
                return Ok(Some(self.in_set(set, true, &m, &entry, score)));
            }
        }
        Ok(None)
    }

    /// The dead letter of the inbox entry (or lane entry) that had id `from`: looked for
    /// among the dead letters added at or after that id's time.
    async fn dead_from(&self, conn: &mut Conn, from: &str) -> Result<Option<MessageDetails>> {
        let dead = keys::dead_letters(&self.inbox);
        let ms = wire::stream_id_ms(from).unwrap_or(0);
        let mut start = ms.to_string();
        for _ in 0..MESSAGE_ID_SCAN_LIMIT.div_ceil(1000) {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(&dead)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(|e| Error::redis("XRANGE", &dead, e))?;
            let entries = wire::parse_entries(&v)?;
            let full = entries.len() == 1000;
            let next = entries.last().map(|e| format!("({}", e.id));
            for e in entries {
                let from_home = e
                    .get_str(fields::DEAD_STREAM)
                    .is_some_and(|s| keys::home(s) == self.inbox);
                if from_home && e.get_str(fields::DEAD_STREAM_ID) == Some(from) {
                    return Ok(Some(self.dead(dead, &e)));
                }
            }
            match next {
                Some(n) if full => start = n,
                _ => break,
            }
        }
        Ok(None)
    }

    async fn in_stream(
        &self,
        conn: &mut Conn,
        lane: Option<&'static str>,
        stream: &str,
        entry: RawEntry,
    ) -> Result<MessageDetails> {
        let workers = keys::default_group(self.agent);
        let mut groups = Vec::new();
        for g in self.bus.stream_groups(stream).await? {
            let v: redis::Value = redis::cmd("XPENDING")
                .arg(stream)
                .arg(&g.name)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .query_async(conn)
                .await
                .map_err(|e| Error::redis("XPENDING", stream, e))?;
            let row = wire::as_array(&v)
                .and_then(|a| a.first())
                .and_then(wire::as_array);
            groups.push(match row {
                Some(r) => GroupView {
                    group: g.name,
                    state: "pending".into(),
                    consumer: r.get(1).and_then(wire::as_string),
                    idle_ms: r.get(2).and_then(wire::as_u64),
                    deliveries: r.get(3).and_then(wire::as_u64),
                },
                None => GroupView {
                    state: if id_le(&entry.id, &g.last_delivered_id) {
                        "acknowledged".into()
                    } else {
                        "queued".into()
                    },
                    group: g.name,
                    consumer: None,
                    idle_ms: None,
                    deliveries: None,
                },
            });
        }
        let lane_name = lane.map(str::to_owned);
        let location = match groups.iter().find(|g| g.group == workers) {
            Some(g) if g.state == "pending" => MessageLocation::Pending {
                lane: lane_name,
                consumer: g.consumer.clone().unwrap_or_default(),
                idle_ms: g.idle_ms.unwrap_or(0),
                deliveries: g.deliveries.unwrap_or(0),
            },
            Some(g) if g.state == "acknowledged" => {
                MessageLocation::Acknowledged { lane: lane_name }
            }
            _ => MessageLocation::Queued { lane: lane_name },
        };
        let id = match lane {
            Some(l) => format!("{l}/{}", entry.id),
            None => entry.id.clone(),
        };
        let mut d = self.details(location, stream.to_owned(), Some(id), &entry);
        d.groups = groups;
        Ok(d)
    }

    fn in_set(
        &self,
        key: String,
        retry: bool,
        m: &Member,
        entry: &RawEntry,
        score: f64,
    ) -> MessageDetails {
        let due_at_ms = score_ms(score);
        let due_in_ms = due_at_ms.saturating_sub(now_ms());
        let lane = m.lane.clone();
        let (location, id) = if retry {
            let loc = MessageLocation::Retry {
                due_at_ms,
                due_in_ms,
                lane,
            };
            (loc, m.from.clone())
        } else {
            let loc = MessageLocation::Scheduled {
                due_at_ms,
                due_in_ms,
                lane,
            };
            (loc, None)
        };
        self.details(location, key, id, entry)
    }

    fn dead(&self, key: String, e: &RawEntry) -> MessageDetails {
        let location = MessageLocation::DeadLetter {
            reason: e
                .get_str(fields::DEAD_REASON)
                .unwrap_or("")
                .parse()
                .unwrap_or_else(|never| match never {}),
            error: e.get_str(fields::DEAD_ERROR).unwrap_or("").to_owned(),
            dead_at: e.get_str(fields::DEAD_AT).unwrap_or("").to_owned(),
            from_stream: e.get_str(fields::DEAD_STREAM).unwrap_or("").to_owned(),
            from_stream_id: e.get_str(fields::DEAD_STREAM_ID).unwrap_or("").to_owned(),
        };
        let mut d = self.details(location, key, Some(e.id.clone()), e);
        if let Some(n) = e
            .get_str(fields::DEAD_ATTEMPTS)
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|n| *n >= 1)
        {
            d.attempt = n;
        }
        d
    }

    fn details(
        &self,
        location: MessageLocation,
        key: String,
        id: Option<String>,
        e: &RawEntry,
    ) -> MessageDetails {
        let (message, decode_error) = match e.decode_as(self.stamped) {
            Ok(m) => (Some(m), None),
            Err(why) => (None, Some(why)),
        };
        let raw_data = if message.is_none() {
            e.get(fields::DATA)
                .map(|d| String::from_utf8_lossy(d).into_owned())
        } else {
            None
        };
        MessageDetails {
            headers: message
                .as_ref()
                .map(|m| m.headers.clone())
                .unwrap_or_default(),
            agent: self.agent.to_owned(),
            location,
            key,
            id,
            attempt: e.attempt(),
            last_error: e.get_str(fields::LAST_ERROR).map(str::to_owned),
            message,
            decode_error,
            raw_data,
            fields: e
                .fields
                .iter()
                .filter(|(k, _)| k != fields::DATA && k != fields::HEADERS)
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            groups: Vec::new(),
        }
    }
}
