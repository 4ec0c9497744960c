//! Dead letters by hand: [`Bus::dead_letters`], [`Bus::requeue_dead_letters`],
//! [`Bus::purge_dead_letters`], [`Bus::delete_dead_letter`], and what the secure-mode router rejected,
//! [`Bus::rejected`].

use serde::Serialize;

use super::Bus;
use crate::broker::{Conn, DeadReason, RawEntry, wire};
use crate::error::{Error, Result};
use crate::keys;
use crate::message::{Message, fields};

/// A dead-lettered message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (pass it to requeue).
    pub dead_id: String,
    /// Why it was dead-lettered.
    pub reason: DeadReason,
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
    /// Lists up to `count` dead letters of `agent`'s inbox, oldest first.
    pub async fn dead_letters(&self, agent: &str, count: usize) -> Result<Vec<DeadLetter>> {
        keys::validate_agent(agent)?;
        self.list_dead(&keys::inbox(agent), count).await
    }

    /// Lists up to `count` entries of `agent`'s outbox that the secure-mode router refused
    /// to deliver (the dead letters of `agent:<agent>:outbox`), oldest first; each says why
    /// (`forged_sender`, `unknown_recipient`, …). An agent may list its own.
    pub async fn rejected(&self, agent: &str, count: usize) -> Result<Vec<DeadLetter>> {
        keys::validate_agent(agent)?;
        self.list_dead(&keys::outbox(agent), count).await
    }

    async fn list_dead(&self, stream: &str, count: usize) -> Result<Vec<DeadLetter>> {
        let dead = keys::dead_letters(stream);
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

    /// Puts dead letters back into their stream as fresh first attempts (one from a priority
    /// lane into its lane); `None` requeues all of them. Each move is atomic (`MULTI`: `XADD`
    /// to the stream — `FCALL fabric_send_lane` for a lane — and `XDEL` from the dead
    /// letters). Returns how many were requeued.
    pub async fn requeue_dead_letters(
        &self,
        agent: &str,
        dead_ids: Option<&[String]>,
    ) -> Result<usize> {
        self.requeue_dead_letters_with_progress(agent, dead_ids, |_, _| {})
            .await
    }

    /// [`Bus::requeue_dead_letters`], calling `progress(requeued, total)` after each batch
    /// of up to 100 (each batch one `MULTI`), for a progress display. All of them (`None`)
    /// means those there are when it starts, read 1,000 at a time.
    pub async fn requeue_dead_letters_with_progress(
        &self,
        agent: &str,
        dead_ids: Option<&[String]>,
        mut progress: impl FnMut(usize, usize) + Send,
    ) -> Result<usize> {
        keys::validate_agent(agent)?;
        let stream = keys::inbox(agent);
        let dead = keys::dead_letters(&stream);
        let mut conn = self.conn();
        let Some(ids) = dead_ids else {
            return self
                .requeue_all(&mut conn, &stream, &dead, &mut progress)
                .await;
        };
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
        let mut entries = Vec::new();
        for v in &vs {
            entries.extend(wire::parse_entries(v)?);
        }
        let total = entries.len();
        let mut n = 0;
        self.move_back(&mut conn, &stream, &dead, &entries, &mut |done| {
            n += done;
            progress(n, total);
        })
        .await?;
        Ok(n)
    }

    /// Requeues every dead letter there is now, 1,000 at a time (those dead-lettered
    /// meanwhile, e.g. a requeued message failing again, are left for the next requeue).
    async fn requeue_all(
        &self,
        conn: &mut Conn,
        stream: &str,
        dead: &str,
        progress: &mut (impl FnMut(usize, usize) + Send),
    ) -> Result<usize> {
        let (total, last): (usize, redis::Value) = redis::pipe()
            .xlen(dead)
            .cmd("XREVRANGE")
            .arg(dead)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await
            .map_err(|e| Error::redis("XREVRANGE", dead, e))?;
        let Some(end) = wire::parse_entries(&last)?.pop().map(|e| e.id) else {
            return Ok(0);
        };
        let mut start = "-".to_owned();
        let mut n = 0;
        loop {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(dead)
                .arg(&start)
                .arg(&end)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(|e| Error::redis("XRANGE", dead, e))?;
            let entries = wire::parse_entries(&v)?;
            let Some(last) = entries.last() else {
                return Ok(n);
            };
            start = format!("({}", last.id);
            self.move_back(conn, stream, dead, &entries, &mut |done| {
                n += done;
                progress(n, total.max(n));
            })
            .await?;
        }
    }

    /// Moves `entries` of the dead letters `dead` back into `stream` (one from a priority
    /// lane into its lane), 100 per `MULTI`, calling `moved(count)` after each.
    async fn move_back(
        &self,
        conn: &mut Conn,
        stream: &str,
        dead: &str,
        entries: &[RawEntry],
        moved: &mut (impl FnMut(usize) + Send),
    ) -> Result<()> {
        // An entry dead-lettered from a priority lane goes back into its lane (when it still
        // exists; else the inbox), through fabric_send_lane.
        let lane_of = |e: &RawEntry| {
            e.get_str(fields::DEAD_STREAM)
                .and_then(|s| keys::lane_of(stream, s))
                .map(|l| keys::lane(stream, l))
        };
        if entries.iter().any(|e| lane_of(e).is_some()) {
            self.broker().ensure_library_once().await?;
        }
        for chunk in entries.chunks(100) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for e in chunk {
                let cmd = match lane_of(e) {
                    Some(lane) => pipe
                        .cmd("FCALL")
                        .arg("fabric_send_lane")
                        .arg(2)
                        .arg(lane)
                        .arg(stream),
                    None => pipe.cmd("XADD").arg(stream).arg("*"),
                };
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
                pipe.cmd("XDEL").arg(dead).arg(&e.id).ignore();
            }
            let _: () = pipe
                .query_async(conn)
                .await
                .map_err(|e| Error::redis("XADD", stream, e))?;
            moved(chunk.len());
        }
        Ok(())
    }

    /// Deletes the dead letter `dead_id` of `agent`'s inbox for good (`XDEL`). Returns it,
    /// or `None` when there is no such dead letter.
    pub async fn delete_dead_letter(
        &self,
        agent: &str,
        dead_id: &str,
    ) -> Result<Option<DeadLetter>> {
        keys::validate_agent(agent)?;
        keys::validate_stream_id(dead_id)?;
        let dead = keys::dead_letters(&keys::inbox(agent));
        let mut conn = self.conn();
        let (v, n): (redis::Value, i64) = redis::pipe()
            .atomic()
            .cmd("XRANGE")
            .arg(&dead)
            .arg(dead_id)
            .arg(dead_id)
            .cmd("XDEL")
            .arg(&dead)
            .arg(dead_id)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XDEL", &dead, e))?;
        if n == 0 {
            return Ok(None);
        }
        tracing::info!(agent, dead_id, "dead letter deleted");
        Ok(wire::parse_entries(&v)?.first().map(to_dead_letter))
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
        reason: e
            .get_str(fields::DEAD_REASON)
            .unwrap_or("")
            .parse()
            .unwrap_or_else(|never| match never {}),
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
