//! The reader: `XREADGROUP` for new entries, taking a slot per entry so that no more are
//! read than can start at once. An inbox with priority lanes is read as one: each read
//! shares its free slots among the lanes (`lanes.rs`) and dispatches urgent entries first.
//!
//! Two ways to wait for entries (`WorkerConfig::blocking_readers`):
//! - **blocking** (a process serving few inboxes): `XREADGROUP … BLOCK` on a connection of
//!   the reader's own, the lowest latency;
//! - **shared** (a process serving many): non-blocking reads on the process's shared
//!   connection, issued when the inbox's `agent.<id>.new_message` notification arrives
//!   (`notes.rs`: one Pub/Sub connection for the process), when the promoter moved entries
//!   in, or every `read_poll_interval` otherwise. The connections do not grow with the
//!   number of agents served.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::lanes;
use super::pause;
use super::stream::StreamState;
use crate::broker::{Conn, RawEntry, reconnect_backoff, wire};

/// How long an inbox with lanes waits for a free slot per lane before it reads with fewer.
const LANE_SLOTS_WAIT: Duration = Duration::from_millis(2);

/// What one read got: per lane (index into the reader's lanes), its entries.
type Got = Vec<(usize, Vec<RawEntry>)>;

/// Whether some lane gave all that was asked of it (then more may be waiting: the next
/// read does not block).
fn filled(got: &Got, asked: impl Fn(usize) -> usize) -> bool {
    got.iter().any(|(i, e)| e.len() >= asked(*i))
}

/// Reads new entries of `lanes` (one stream, or an inbox's lanes in priority order: urgent,
/// high, the inbox, low — all sharing one semaphore) and dispatches them, on a connection
/// of its own.
pub(super) async fn reader(lanes: Vec<Arc<StreamState>>, stop: CancellationToken) {
    let Some(main) = lanes
        .iter()
        .find(|s| crate::keys::home(&s.spec.stream) == s.spec.stream)
        .or(lanes.first())
        .cloned()
    else {
        return;
    };
    let spec = &main.spec;
    let block = main.config.block;
    // Shared reads: woken by notifications, the promoter or the poll; never blocking.
    let poll = main.config.read_poll_interval;
    let mut wake = main
        .read_wake
        .clone()
        .map(|w| (w, crate::time::housekeeping_interval(poll, true)));
    let n = lanes.len();
    let mut conn: Option<Conn> = None;
    let mut backoff = reconnect_backoff();
    let mut failing = false;
    // Lanes that had entries at the last read; whether the last read left every lane
    // drained (then the next one blocks, or with shared reads waits for a wake-up; a shared
    // reader reads once at start without waiting); how many reads had fewer slots than
    // lanes (for the aging rule).
    let mut busy = vec![false; n];
    let mut idle = wake.is_none();
    let mut narrow_reads: u64 = 0;
    let beat = crate::metrics::Beat::register(
        &spec.agent,
        &spec.stream,
        crate::metrics::liveness_bound(if wake.is_some() {
            poll.max(block)
        } else {
            block
        }),
        main.sem.clone(),
        main.config.concurrency,
    );
    loop {
        // Wait for capacity before reading, and read no more than can start at once.
        // Permits are taken per entry after the read, so a blocked read holds none (the
        // reclaimer needs them too).
        // An inbox with lanes waits a little (LANE_SLOTS_WAIT) for a slot per lane (all of
        // its slots, if fewer): a read of fewer entries than lanes asks them one by one, a
        // round trip each, and a drain made most of its reads so. Only a little: a slow
        // handler must not keep the other free slots idle.
        let want = n.min(main.config.concurrency);
        if n > 1 && main.sem.available_permits() < want {
            let want = u32::try_from(want).unwrap_or(1);
            let enough =
                tokio::time::timeout(LANE_SLOTS_WAIT, main.sem.clone().acquire_many_owned(want));
            tokio::select! {
                _ = stop.cancelled() => return,
                r = enough => if matches!(r, Ok(Err(_))) { return },
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            p = main.slot() => if p.is_none() { return },
        }
        // Paused by an operator: read nothing until resumed.
        if *main.pause.borrow() {
            if !pause::wait_while_paused(&main.pause, &stop).await {
                return;
            }
            // A read dropped as the pause began may have been answered: handle those entries
            // now instead of leaving them to a reclaim.
            for l in &lanes {
                drain_own(l).await;
            }
        }
        if let Some((wake, poll_tick)) = &mut wake
            && idle
        {
            // Drained at the last read: wait for a reason to read again.
            beat.read_done(); // waiting on purpose: not stalled
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = pause::paused(&main.pause) => continue,
                _ = wake.notified() => {}
                _ = poll_tick.tick() => {}
            }
        }
        beat.reading();
        let count = main.free_slots().clamp(1, main.config.batch_size);
        if wake.is_some() && conn.is_none() {
            conn = Some(main.broker.conn());
        }
        let block = if wake.is_some() { None } else { Some(block) };
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match main.broker.dedicated(main.config.block).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    crate::metrics::redis_error(&spec.agent, "connect");
                    let d = backoff.next().unwrap_or(Duration::from_secs(5));
                    if !failing {
                        warn!(agent = %spec.agent, stream = %spec.stream, error = %e, "cannot reach Redis; retrying with backoff");
                        failing = true;
                    }
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
                    continue;
                }
            },
        };
        let read = async {
            if n == 1 || idle {
                let per_lane = (count / n).max(1);
                read_blocking(c, &lanes, per_lane, block)
                    .await
                    .map(|g| (filled(&g, |_| per_lane), g))
            } else if count >= n {
                let quotas = lanes::quotas(count, &busy);
                read_quotas(c, &lanes, &quotas)
                    .await
                    .map(|g| (filled(&g, |i| quotas[i]), g))
            } else {
                narrow_reads += 1;
                let g = read_in_order(c, &lanes, count, &lanes::order(n, narrow_reads - 1)).await;
                g.map(|g| (g.iter().map(|(_, e)| e.len()).sum::<usize>() >= count, g))
            }
        };
        let reply = tokio::select! {
            // Dropping a blocked read: drop the connection too, so the server unblocks it.
            _ = stop.cancelled() => return,
            _ = pause::paused(&main.pause) => {
                conn = None;
                beat.read_done(); // paused on purpose: not stalled
                continue;
            }
            r = read => r,
        };
        match reply {
            Ok((full, mut got)) => {
                beat.read_done();
                if failing {
                    crate::metrics::reconnected(&spec.agent);
                    info!(agent = %spec.agent, stream = %spec.stream, "reconnected to Redis; reading again");
                    failing = false;
                }
                backoff = reconnect_backoff();
                got.sort_by_key(|(i, _)| *i);
                busy = vec![false; n];
                // A lane that gave less than asked was drained at that moment: block next,
                // unless one gave all it was asked (more may be waiting).
                idle = !full;
                let mut batch = Vec::new();
                for (i, mut entries) in got {
                    busy[i] = !entries.is_empty();
                    if lanes[i].spec.stream == spec.stream {
                        sort_by_envelope_priority(&mut entries);
                    }
                    for entry in entries {
                        // Normally free at once (we read no more than were available).
                        let Some(p) = main.slot().await else {
                            StreamState::dispatch_batch(batch);
                            return;
                        };
                        batch.push((lanes[i].clone(), entry, p));
                    }
                }
                StreamState::dispatch_batch(batch);
            }
            Err(e) if wire::is_nogroup(&e) => {
                warn!(stream = %spec.stream, group = %spec.group, "consumer group missing (stream deleted?); recreating it");
                for l in &lanes {
                    l.broker.forget_group(&l.spec.stream, &l.spec.group);
                    if let Err(e) = l.broker.ensure_group(&l.spec.stream, &l.spec.group).await {
                        warn!(stream = %l.spec.stream, error = %e, "cannot recreate the consumer group");
                        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                    }
                }
            }
            Err(e) => {
                crate::metrics::redis_error(&spec.agent, "read");
                conn = None;
                // Blocking: the next read blocks. Shared: read again after the backoff,
                // without waiting for a notification.
                idle = wake.is_none();
                let d = backoff.next().unwrap_or(Duration::from_secs(5));
                if !failing {
                    warn!(agent = %spec.agent, stream = %spec.stream, error = %e, retry_in_ms = crate::time::millis(d), "read failed; reconnecting with backoff");
                    failing = true;
                }
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(d) => {} }
            }
        }
    }
}

/// `XREADGROUP` of new entries of `streams` (lanes of one inbox: one group and consumer), up
/// to `count` from each, blocking for up to `block` when given.
fn xreadgroup(streams: &[&StreamState], count: usize, block: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    if let Some(first) = streams.first() {
        cmd.arg("GROUP")
            .arg(&first.spec.group)
            .arg(&first.spec.consumer);
    }
    cmd.arg("COUNT").arg(count);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(crate::time::millis(block));
    }
    cmd.arg("STREAMS");
    for st in streams {
        cmd.arg(&st.spec.stream);
    }
    for _ in streams {
        cmd.arg(">");
    }
    cmd
}

/// Maps a read reply's streams to lane indexes.
fn by_lane(lanes: &[Arc<StreamState>], v: redis::Value) -> redis::RedisResult<Got> {
    let streams = wire::read_reply_of(v).map_err(|e| {
        error!(error = %e, "unreadable XREADGROUP reply");
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unreadable XREADGROUP reply",
        ))
    })?;
    Ok(streams
        .into_iter()
        .filter_map(|(key, entries)| {
            let i = lanes.iter().position(|l| l.spec.stream == key)?;
            Some((i, entries))
        })
        .collect())
}

/// One `XREADGROUP` over every lane, up to `per_lane` entries from each, blocking for up to
/// `block` when given.
async fn read_blocking(
    c: &mut Conn,
    lanes: &[Arc<StreamState>],
    per_lane: usize,
    block: Option<Duration>,
) -> redis::RedisResult<Got> {
    let all: Vec<&StreamState> = lanes.iter().map(|l| &**l).collect();
    let cmd = xreadgroup(&all, per_lane, block);
    by_lane(lanes, wire::query_value(c, &cmd).await?)
}

/// One pipeline of non-blocking reads, `quotas[i]` entries from lane `i`: one `XREADGROUP`
/// per distinct quota, over the lanes given it (`COUNT` applies to each stream of a read).
/// The usual read — one busy lane, the others asked for one entry each — is two commands,
/// not one per lane.
async fn read_quotas(
    c: &mut Conn,
    lanes: &[Arc<StreamState>],
    quotas: &[usize],
) -> redis::RedisResult<Got> {
    let mut pipe = redis::pipe();
    for (i, q) in quotas.iter().enumerate() {
        if quotas[..i].contains(q) {
            continue; // read with the first lane of this quota
        }
        let same: Vec<&StreamState> = lanes
            .iter()
            .zip(quotas)
            .skip(i)
            .filter(|(_, other)| *other == q)
            .map(|(l, _)| &**l)
            .collect();
        pipe.add_command(xreadgroup(&same, *q, None));
    }
    let replies = wire::query_values(c, &pipe).await?;
    let mut got = Got::new();
    for v in replies {
        got.extend(by_lane(lanes, v)?);
    }
    Ok(got)
}

/// Non-blocking reads lane by lane in `order` until `count` entries are read.
async fn read_in_order(
    c: &mut Conn,
    lanes: &[Arc<StreamState>],
    count: usize,
    order: &[usize],
) -> redis::RedisResult<Got> {
    let mut got = Got::new();
    let mut left = count;
    for &i in order {
        if left == 0 {
            break;
        }
        let cmd = xreadgroup(&[&*lanes[i]], left, None);
        let v = wire::query_value(c, &cmd).await?;
        for (i, entries) in by_lane(lanes, v)? {
            left = left.saturating_sub(entries.len());
            got.push((i, entries));
        }
    }
    Ok(got)
}

/// Orders the entries of one read of a plain inbox by their envelope's priority, highest
/// first (stable): what a Python sender writes with `"priority": 4` into the inbox is taken
/// before the normal entries read with it.
fn sort_by_envelope_priority(entries: &mut [RawEntry]) {
    if entries.len() > 1 {
        // Stable: equal priorities keep their stream order.
        entries.sort_by_cached_key(|e| std::cmp::Reverse(e.envelope_priority()));
    }
}

/// At shutdown, after the reader stopped (and when a pause ends): handles what Redis already
/// handed to this consumer and nobody is handling — entries of a read that was answered just
/// as it was cancelled. Without this they would wait for another worker's reclaim (`reclaim_idle`).
pub(super) async fn drain_own(st: &Arc<StreamState>) {
    let spec = &st.spec;
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&spec.group)
        .arg(&spec.consumer)
        .arg("COUNT")
        .arg(st.config.batch_size)
        .arg("STREAMS")
        .arg(&spec.stream)
        .arg("0");
    let reply = cmd.query_async::<redis::Value>(&mut st.broker.conn()).await;
    let entries = match reply
        .map_err(|e| e.to_string())
        .and_then(|v| wire::parse_read_reply(&v).map_err(|e| e.to_string()))
    {
        Ok(streams) => streams.into_iter().flat_map(|(_, e)| e).collect::<Vec<_>>(),
        Err(e) => {
            warn!(stream = %spec.stream, error = %e, "could not look for entries handed to this worker as it stopped; another worker reclaims them");
            return;
        }
    };
    for entry in entries {
        // An entry of our own history: a running handler, one whose acknowledgement is
        // queued, or (the case here) one read and never dispatched.
        if st.is_in_flight(&entry.id) || entry.fields.is_empty() {
            continue;
        }
        info!(stream = %spec.stream, stream_id = %entry.id, "handling an entry read as the worker stopped");
        let Some(p) = st.slot().await else {
            return;
        };
        st.dispatch(entry, 1, p);
    }
}
