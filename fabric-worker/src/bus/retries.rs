//! Retries by hand: [`Bus::retries`] lists the failed messages waiting in `S:retry{S}` for
//! their next attempt, [`Bus::retry_now`] makes one due at once, [`Bus::delete_retry`]
//! drops one. A retry is named by the id of the entry that failed (its member's `from`).

use serde::Serialize;

use super::Bus;
use super::scan::{Member, glob_escape, score_ms, zscan};
use crate::broker::{Conn, wire};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields};
use crate::time::now_ms;

/// A failed message waiting for its next attempt (see [`Bus::retries`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduledRetry {
    /// The id of the entry that failed (pass it to [`Bus::retry_now`] or
    /// [`Bus::delete_retry`]); `None` for a member written without one.
    pub id: Option<String>,
    /// When it is due, ms since the epoch (server clock).
    pub due_at_ms: u64,
    /// Milliseconds until then (0 when already due).
    pub due_in_ms: u64,
    /// The attempt it waits for (2 for the first retry).
    pub attempt: u32,
    /// The priority lane it goes back into, if any.
    pub lane: Option<String>,
    /// The consumer group that handles it (`target_group`).
    pub target_group: Option<String>,
    /// The error of the attempt that failed.
    pub last_error: Option<String>,
    /// It waits for its turn under a rate limit rather than after a failure.
    pub rate_limited: bool,
    /// The envelope, if it could be decoded.
    pub message: Option<Message>,
    /// The raw `data` field, when it could not.
    pub raw_data: Option<String>,
}

impl ScheduledRetry {
    fn from_member(m: &Member, score: f64) -> ScheduledRetry {
        let entry = m.entry(m.from.clone().unwrap_or_default());
        let message = entry.decode().ok();
        let due_at_ms = score_ms(score);
        ScheduledRetry {
            id: m.from.clone(),
            due_at_ms,
            due_in_ms: due_at_ms.saturating_sub(now_ms()),
            attempt: entry.attempt(),
            lane: m.lane.clone(),
            target_group: entry.get_str(fields::TARGET_GROUP).map(str::to_owned),
            last_error: entry.get_str(fields::LAST_ERROR).map(str::to_owned),
            rate_limited: entry.get("rate_reserved").is_some(),
            raw_data: if message.is_none() {
                entry
                    .get(fields::DATA)
                    .map(|d| String::from_utf8_lossy(d).into_owned())
            } else {
                None
            },
            message,
        }
    }
}

impl Bus {
    /// Up to `count` failed messages of `agent`'s inbox (and its lanes) waiting for their
    /// next attempt, soonest due first (`ZRANGE S:retry{S} 0 count-1 WITHSCORES`).
    pub async fn retries(&self, agent: &str, count: usize) -> Result<Vec<ScheduledRetry>> {
        keys::validate_agent(agent)?;
        let set = keys::retries(&keys::inbox(agent));
        let last = isize::try_from(count.clamp(1, 100_000)).unwrap_or(100_000) - 1;
        let v: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&set)
            .arg(0)
            .arg(last)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("ZRANGE", &set, e))?;
        Ok(v.iter()
            .filter_map(|(text, score)| {
                let m = serde_json::from_str::<Member>(text).ok()?;
                Some(ScheduledRetry::from_member(&m, *score))
            })
            .collect())
    }

    /// Runs the retry of the failed entry `id` of `agent`'s inbox now: makes it due
    /// (`ZADD … XX 0`) and moves what is due into the inbox or its lane
    /// (`FCALL fabric_promote`, what a worker's promoter runs), keeping its attempt number.
    /// Interrupted between the two steps, the retry is due and the next promotion moves it.
    /// Returns the retry as it was, or `None` when there is no retry of that id.
    pub async fn retry_now(&self, agent: &str, id: &str) -> Result<Option<ScheduledRetry>> {
        keys::validate_agent(agent)?;
        keys::validate_stream_id(id)?;
        let inbox = keys::inbox(agent);
        let set = keys::retries(&inbox);
        let mut conn = self.conn();
        let Some((m, text, score)) = find_retry(&mut conn, &set, id).await? else {
            return Ok(None);
        };
        let (was, _): (Option<f64>, i64) = redis::pipe()
            .atomic()
            .zscore(&set, &text)
            .cmd("ZADD")
            .arg(&set)
            .arg("XX")
            .arg(0)
            .arg(&text)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("ZADD", &set, e))?;
        if was.is_none() {
            // Promoted (or deleted) since it was found.
            return Ok(None);
        }
        let broker = self.broker();
        broker.ensure_library_once().await?;
        let (_, _, failed): (i64, i64, i64) = broker
            .call(
                &crate::broker::functions::promote(&inbox),
                "FCALL fabric_promote",
                &inbox,
            )
            .await?;
        if failed > 0 {
            tracing::warn!(
                agent,
                failed,
                "retries that could not be put back in the stream were moved to dead letters (reason promote_failed)"
            );
        }
        tracing::info!(agent, stream_id = id, "retry run now");
        Ok(Some(ScheduledRetry::from_member(&m, score)))
    }

    /// Deletes the retry of the failed entry `id` of `agent`'s inbox for good (`ZREM`): the
    /// message is not attempted again. Returns it, or `None` when there is no retry of that
    /// id (already run, or never).
    pub async fn delete_retry(&self, agent: &str, id: &str) -> Result<Option<ScheduledRetry>> {
        keys::validate_agent(agent)?;
        keys::validate_stream_id(id)?;
        let set = keys::retries(&keys::inbox(agent));
        let mut conn = self.conn();
        let Some((m, text, score)) = find_retry(&mut conn, &set, id).await? else {
            return Ok(None);
        };
        let removed: i64 = redis::cmd("ZREM")
            .arg(&set)
            .arg(&text)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("ZREM", &set, e))?;
        if removed == 0 {
            return Ok(None);
        }
        tracing::info!(agent, stream_id = id, "retry deleted");
        Ok(Some(ScheduledRetry::from_member(&m, score)))
    }
}

/// The member of `set` whose `from` is `id`, as parsed, as stored, and its score.
async fn find_retry(conn: &mut Conn, set: &str, id: &str) -> Result<Option<(Member, String, f64)>> {
    let pattern = format!("*\"from\":\"{}\"*", glob_escape(id));
    Ok(zscan(conn, set, &pattern)
        .await?
        .into_iter()
        .find(|(m, _, _)| m.from.as_deref() == Some(id) && wire::is_stream_id(id)))
}
