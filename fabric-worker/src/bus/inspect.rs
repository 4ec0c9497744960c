//! Looking without consuming: [`Bus::queue_status`], [`Bus::pending`], [`Bus::peek`],
//! [`Bus::stream_info`], [`Bus::agents`]; and [`Bus::create_group`].

use std::time::Duration;

use serde::Serialize;

use super::consume::{MAX_RECEIVE_COUNT, check_block};
use super::{Bus, Mode, agent_group};
use crate::broker::{Conn, RawEntry, wire};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields};
use crate::time::now_ms;

/// Most agents [`Bus::agents`] returns.
const MAX_AGENTS: usize = 100_000;

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
    #[serde(rename = "agent_id")]
    pub agent: String,
    /// Its inbox stream.
    pub stream: String,
    /// The consumer group the figures are for.
    #[serde(rename = "consumer_group")]
    pub group: String,
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
    /// Messages sent for later, waiting for their delivery time (`agent:<id>:inbox:delayed{…}`).
    pub scheduled: u64,
    /// Whether an operator paused the agent's workers ([`Bus::pause`]).
    pub paused: bool,
    /// The inbox's priority lanes that exist (urgent, high, low), for the same group; their
    /// entries count in `queue_depth` too.
    pub lanes: Vec<super::lanes::LaneStatus>,
    /// Messages whose `ttl_seconds` had passed when they were reached (dead-lettered as
    /// `expired`, or dropped), ever.
    pub expired: u64,
    /// `XINFO STREAM` of the inbox (`None` when it does not exist).
    pub stream_info: Option<StreamInfo>,
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

/// A consumer group of an inbox, as `XINFO GROUPS` reports it (see [`Bus::groups`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// How many consumers it has.
    pub consumers: u64,
    /// Entries delivered to it and not yet acknowledged.
    pub pending: u64,
    /// The last entry id delivered to it (`0-0` before any).
    pub last_delivered_id: String,
    /// Entries delivered to it so far (Redis 7.0+; `None` when Redis cannot tell).
    pub entries_read: Option<u64>,
    /// Entries not yet delivered to it (Redis 7.0+; `None` when Redis cannot tell, e.g.
    /// after deletions).
    pub lag: Option<u64>,
}

impl GroupStatus {
    /// Entries delivered to the group and acknowledged, when Redis can tell.
    pub fn acknowledged(&self) -> Option<u64> {
        self.entries_read.map(|r| r.saturating_sub(self.pending))
    }

    fn parse_all(v: &redis::Value) -> Vec<GroupStatus> {
        wire::as_array(v)
            .unwrap_or(&[])
            .iter()
            .filter_map(wire::as_map)
            .map(|g| GroupStatus {
                name: g.get("name").and_then(wire::as_string).unwrap_or_default(),
                consumers: g.get("consumers").and_then(wire::as_u64).unwrap_or(0),
                pending: g.get("pending").and_then(wire::as_u64).unwrap_or(0),
                last_delivered_id: g
                    .get("last-delivered-id")
                    .and_then(wire::as_string)
                    .unwrap_or_else(|| "0-0".into()),
                entries_read: g.get("entries-read").and_then(wire::as_u64),
                lag: g.get("lag").and_then(wire::as_u64),
            })
            .collect()
    }
}

/// `XINFO STREAM` of an inbox, as the Python bus's `queue_status` shows it (entries by id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Entries in the stream.
    pub length: u64,
    /// Radix tree keys.
    pub radix_tree_keys: u64,
    /// Radix tree nodes.
    pub radix_tree_nodes: u64,
    /// Consumer groups.
    pub groups: u64,
    /// The last id generated.
    pub last_generated_id: Option<String>,
    /// The largest id deleted (Redis 7.0+).
    pub max_deleted_entry_id: Option<String>,
    /// Entries ever added (Redis 7.0+).
    pub entries_added: Option<u64>,
    /// Id of the first entry.
    #[serde(rename = "first_entry")]
    pub first_entry_id: Option<String>,
    /// Id of the last entry.
    #[serde(rename = "last_entry")]
    pub last_entry_id: Option<String>,
}

impl StreamInfo {
    fn parse(v: &redis::Value) -> Result<StreamInfo> {
        let info =
            wire::as_map(v).ok_or_else(|| Error::protocol("XINFO STREAM", format!("{v:?}")))?;
        let num = |k: &str| info.get(k).and_then(wire::as_u64);
        let text = |k: &str| info.get(k).and_then(wire::as_string);
        let entry_id = |k: &str| info.get(k).and_then(wire::parse_entry).map(|e| e.id);
        Ok(StreamInfo {
            length: num("length").unwrap_or(0),
            radix_tree_keys: num("radix-tree-keys").unwrap_or(0),
            radix_tree_nodes: num("radix-tree-nodes").unwrap_or(0),
            groups: num("groups").unwrap_or(0),
            last_generated_id: text("last-generated-id"),
            max_deleted_entry_id: text("max-deleted-entry-id"),
            entries_added: num("entries-added"),
            first_entry_id: entry_id("first-entry"),
            last_entry_id: entry_id("last-entry"),
        })
    }
}

impl Bus {
    /// The state of `agent`'s inbox for a consumer group (default `<agent>_workers`).
    pub async fn queue_status(&self, agent: &str, group: Option<&str>) -> Result<QueueStatus> {
        let group = agent_group(agent, group)?;
        let stream = keys::inbox(agent);
        let mut conn = self.conn();
        type Counts = (bool, u64, u64, Option<u64>, u64, bool);
        let (exists, dead, retries, expired, scheduled, paused): Counts = redis::pipe()
            .exists(&stream)
            .xlen(keys::dead_letters(&stream))
            .zcard(keys::retries(&stream))
            .get(keys::expired_count(&stream))
            .zcard(keys::delayed(&stream))
            .exists(keys::paused(&stream))
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("EXISTS", &stream, e))?;
        let mut st = QueueStatus {
            agent: agent.to_owned(),
            stream: stream.clone(),
            group: group.clone(),
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
            scheduled,
            paused,
            lanes: self.lane_statuses(agent, &group).await?,
            expired: expired.unwrap_or(0),
            stream_info: None,
        };
        let in_lanes: u64 = st.lanes.iter().map(|l| l.undelivered + l.pending).sum();
        if !exists {
            st.queue_depth = in_lanes;
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
        let info = StreamInfo::parse(&info)?;
        st.stream_length = info.length;
        st.last_generated_id = info.last_generated_id.clone();
        st.first_entry_id = info.first_entry_id.clone();
        st.last_entry_id = info.last_entry_id.clone();
        st.stream_info = Some(info);
        let group_info = GroupStatus::parse_all(&groups)
            .into_iter()
            .find(|g| g.name == group);
        let Some(g) = group_info else {
            // No group yet: everything in the stream is undelivered.
            st.undelivered = Some(st.stream_length);
            st.queue_depth = st.stream_length + in_lanes;
            return Ok(st);
        };
        st.group_exists = true;
        st.pending = g.pending;
        st.undelivered = g.lag;
        if st.undelivered.is_none() {
            // Redis cannot tell (deletions after the group's position): count entries after it.
            st.undelivered = Some(count_after(&mut conn, &stream, &g.last_delivered_id).await?);
        }
        st.queue_depth = st.undelivered.unwrap_or(0) + st.pending + in_lanes;
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
                pending: c.get("pending").and_then(wire::as_u64).unwrap_or(0),
                idle_ms: c.get("idle").and_then(wire::as_u64).unwrap_or(0),
                inactive_ms: c.get("inactive").and_then(wire::as_i64),
            })
            .collect();
        if let Some(first) = wire::as_array(&oldest)
            .and_then(|a| a.first())
            .and_then(wire::as_array)
        {
            let id = first.first().and_then(wire::as_string).unwrap_or_default();
            st.oldest_pending_age_ms =
                wire::stream_id_ms(&id).map(|ms| now_ms().saturating_sub(ms));
            st.oldest_pending_idle_ms = first.get(2).and_then(wire::as_u64);
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
        let now = now_ms();
        Ok(wire::as_array(&v)
            .unwrap_or(&[])
            .iter()
            .filter_map(wire::as_array)
            .filter_map(|p| {
                let stream_id = wire::as_string(p.first()?)?;
                Some(PendingEntry {
                    age_ms: wire::stream_id_ms(&stream_id).map(|ms| now.saturating_sub(ms)),
                    consumer: wire::as_string(p.get(1)?)?,
                    idle_ms: wire::as_u64(p.get(2)?)?,
                    deliveries: wire::as_u64(p.get(3)?)?,
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
        let block = check_block(block)?;
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(crate::time::millis(b));
        }
        cmd.arg("STREAMS").arg(&stream).arg(&after);
        let v = self.query_read(&cmd, block, "XREAD", &stream).await?;
        let entries: Vec<RawEntry> = wire::parse_read_reply(&v)?
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect();
        let next = entries.last().map(|e| e.id.clone()).unwrap_or(after);
        let stamped = self.inner.mode == Mode::Secure;
        let out = entries
            .into_iter()
            .map(|e| {
                let (message, raw_data) = match e.decode_as(stamped) {
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

    /// `XINFO STREAM` of `agent`'s inbox; `None` when it does not exist.
    pub async fn stream_info(&self, agent: &str) -> Result<Option<StreamInfo>> {
        keys::validate_agent(agent)?;
        let stream = keys::inbox(agent);
        let r: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&stream)
            .query_async(&mut self.conn())
            .await;
        match r {
            Ok(v) => StreamInfo::parse(&v).map(Some),
            Err(e) if is_no_such_key(&e) => Ok(None),
            Err(e) => Err(Error::redis("XINFO STREAM", &stream, e)),
        }
    }

    /// Every consumer group of `agent`'s inbox (empty when the inbox does not exist).
    pub async fn groups(&self, agent: &str) -> Result<Vec<GroupStatus>> {
        keys::validate_agent(agent)?;
        self.stream_groups(&keys::inbox(agent)).await
    }

    /// Every consumer group of `stream` (empty when it does not exist).
    pub(crate) async fn stream_groups(&self, stream: &str) -> Result<Vec<GroupStatus>> {
        let r: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut self.conn())
            .await;
        match r {
            Ok(v) => Ok(GroupStatus::parse_all(&v)),
            Err(e) if is_no_such_key(&e) => Ok(Vec::new()),
            Err(e) => Err(Error::redis("XINFO GROUPS", stream, e)),
        }
    }

    /// The agents that have an inbox (a stream `agent:<id>:inbox`), sorted; found with
    /// `SCAN … TYPE stream` on every primary of a cluster (never `KEYS`).
    pub async fn agents(&self) -> Result<Vec<String>> {
        let found = self
            .broker()
            .scan(&keys::inbox("*"), "stream", MAX_AGENTS)
            .await?;
        Ok(found
            .iter()
            .filter_map(|k| k.strip_prefix("agent:")?.strip_suffix(":inbox"))
            .filter(|a| keys::validate_agent(a).is_ok())
            .map(str::to_owned)
            .collect())
    }

    /// Creates consumer group `group` (default `<agent>_workers`) on `agent`'s inbox, at the
    /// start of the stream (so messages already queued are delivered to it), creating the
    /// inbox if needed. An existing group is left as it is.
    pub async fn create_group(&self, agent: &str, group: Option<&str>) -> Result<()> {
        let group = agent_group(agent, group)?;
        self.broker()
            .ensure_group(&keys::inbox(agent), &group)
            .await
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
        total = total.saturating_add(u64::try_from(entries.len()).unwrap_or(u64::MAX));
        match entries.last() {
            Some(last) if entries.len() == 1000 => start = format!("({}", last.id),
            _ => break,
        }
    }
    Ok(total)
}

/// `XINFO` on a key that does not exist.
fn is_no_such_key(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR") && e.detail().is_some_and(|d| d.contains("no such key"))
}
