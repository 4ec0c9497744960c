//! Who serves an agent: the presence its worker processes write (`agent:<id>:workers`), the
//! message types they handle, and whether an MCP session reads its inbox —
//! [`Bus::workers`], [`Bus::handled_types`], [`Bus::agent_info`].

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Bus;
use crate::broker::wire;
use crate::error::{Error, Result};
use crate::keys;

/// How often a worker refreshes its presence.
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(10);

/// A worker whose presence is older than this is not live (three missed refreshes).
pub const PRESENCE_LIVE_FOR: Duration = Duration::from_secs(30);

/// An MCP session that read an agent's inbox within this long counts as live.
pub const MCP_LIVE_FOR: Duration = Duration::from_secs(300);

/// One worker process of an agent, as it describes itself in `agent:<id>:workers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerPresence {
    /// Its consumer name (the hash field).
    pub consumer: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The consumer group it reads through.
    pub group: String,
    /// The message types its handlers take.
    pub message_types: Vec<String>,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// When it last refreshed this record, ms since the epoch.
    pub seen_ms: u64,
    /// When it stopped gracefully, ms since the epoch (absent while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_ms: Option<u64>,
    /// The fabric-worker version it runs.
    #[serde(default)]
    pub version: String,
    /// Messages its handlers were running at its last refresh (0 in records of older
    /// versions, which did not write it).
    #[serde(default)]
    pub in_flight: u64,
}

impl WorkerPresence {
    /// Whether it runs: not stopped, and refreshed within [`PRESENCE_LIVE_FOR`] of `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.stopped_ms.is_none()
            && now_ms.saturating_sub(self.seen_ms) <= crate::time::millis(PRESENCE_LIVE_FOR)
    }
}

/// What [`Bus::agent_info`] knows of one agent.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AgentInfo {
    /// The agent id.
    pub agent: String,
    /// Whether its inbox exists.
    pub inbox: bool,
    /// Entries in the inbox not yet delivered to its workers' group, plus those delivered
    /// and not acknowledged (0 without an inbox).
    pub queue_depth: u64,
    /// Its worker processes (live or not; records of stopped ones are dropped after an hour).
    pub workers: Vec<WorkerPresence>,
    /// Whether any worker process is live.
    pub worker_live: bool,
    /// The message types its workers handle (what is not in it goes to its MCP sessions).
    pub handles: Vec<String>,
    /// How long ago an MCP session last read its inbox or replies (if within
    /// [`MCP_LIVE_FOR`]).
    pub mcp_idle_ms: Option<u64>,
    /// Whether an MCP session read within [`MCP_LIVE_FOR`].
    pub mcp_live: bool,
}

impl AgentInfo {
    /// Whether anything (a worker or an MCP session) is consuming its messages.
    pub fn is_live(&self) -> bool {
        self.worker_live || self.mcp_live
    }
}

impl Bus {
    /// The worker processes of `agent`, from `agent:<id>:workers`.
    pub async fn workers(&self, agent: &str) -> Result<Vec<WorkerPresence>> {
        keys::validate_agent(agent)?;
        let key = keys::workers(agent);
        let v: redis::Value = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("HGETALL", &key, e))?;
        let mut out = Vec::new();
        for (field, value) in wire::as_map(&v).unwrap_or_default() {
            let value = wire::as_string(&value).unwrap_or_default();
            match serde_json::from_str::<WorkerPresence>(&value) {
                Ok(p) => out.push(p),
                Err(e) => {
                    tracing::debug!(%key, %field, error = %e, "unreadable worker presence ignored");
                }
            }
        }
        out.sort_by(|a, b| a.consumer.cmp(&b.consumer));
        Ok(out)
    }

    /// The message types `agent`'s registered workers handle (live or not: a worker being
    /// restarted keeps its messages).
    pub async fn handled_types(&self, agent: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .workers(agent)
            .await?
            .into_iter()
            .flat_map(|w| w.message_types)
            .collect())
    }

    /// What is known of `agent`: inbox, depth, worker processes and the types they handle,
    /// and whether an MCP session reads its messages.
    pub async fn agent_info(&self, agent: &str) -> Result<AgentInfo> {
        let now = crate::time::now_ms();
        let workers = self.workers(agent).await?;
        let info = self.stream_info(agent).await?;
        let mut queue_depth = 0;
        if let Some(i) = &info {
            let groups = self.groups(agent).await?;
            // What is not handled yet: the workers' group's view, else the MCP group's,
            // else every entry.
            let of = |name: String| groups.iter().find(|g| g.name == name).cloned();
            queue_depth =
                match of(keys::default_group(agent)).or_else(|| of(keys::mcp_group(agent))) {
                    Some(g) => g.pending + g.lag.unwrap_or(0),
                    None => i.length,
                };
        }
        let mcp_idle_ms = self.mcp_idle(agent).await?;
        let worker_live = workers.iter().any(|w| w.is_live(now));
        let handles: BTreeSet<String> = workers
            .iter()
            .flat_map(|w| w.message_types.iter().cloned())
            .collect();
        Ok(AgentInfo {
            agent: agent.to_owned(),
            inbox: info.is_some(),
            queue_depth,
            worker_live,
            handles: handles.into_iter().collect(),
            workers,
            mcp_live: mcp_idle_ms.is_some(),
            mcp_idle_ms,
        })
    }

    /// Records that an MCP session is reading `agent`'s messages now (`agent:<id>:mcp_seen`,
    /// expiring after [`MCP_LIVE_FOR`]); [`Bus::agent_info`] reports it.
    pub async fn mark_mcp_seen(&self, agent: &str) -> Result<()> {
        keys::validate_agent(agent)?;
        let key = keys::mcp_seen(agent);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(crate::time::now_ms())
            .arg("PX")
            .arg(crate::time::millis(MCP_LIVE_FOR))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("SET", &key, e))?;
        Ok(())
    }

    /// How long ago an MCP session last read `agent`'s messages (within [`MCP_LIVE_FOR`]).
    async fn mcp_idle(&self, agent: &str) -> Result<Option<u64>> {
        let key = keys::mcp_seen(agent);
        let seen: Option<u64> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| Error::redis("GET", &key, e))?;
        Ok(seen.map(|at| crate::time::now_ms().saturating_sub(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_the_last_refresh_and_a_stop() {
        let mut p = WorkerPresence {
            consumer: "h-1-x".into(),
            host: "h".into(),
            pid: 1,
            group: "percy_workers".into(),
            message_types: vec!["task".into()],
            started_ms: 1_000,
            seen_ms: 100_000,
            stopped_ms: None,
            version: "0".into(),
            in_flight: 0,
        };
        assert!(p.is_live(100_000 + 30_000));
        assert!(!p.is_live(100_000 + 30_001));
        p.stopped_ms = Some(100_001);
        assert!(!p.is_live(100_002));
        let json = serde_json::to_string(&p).unwrap();
        let back: WorkerPresence = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
