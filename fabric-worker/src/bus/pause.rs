//! Pausing and resuming an agent's workers: [`Bus::pause`], [`Bus::resume`],
//! [`Bus::is_paused`] (`docs/protocol.md` §5.11).

use super::Bus;
use crate::error::{Error, Result};
use crate::keys;

impl Bus {
    /// Pauses `agent`: within a second every worker serving its inbox stops starting
    /// handlers (running ones finish and are acknowledged); messages keep arriving and
    /// wait, retries and delayed messages still move into the inbox. Lasts until
    /// [`Bus::resume`], across worker restarts. Returns false if it was already paused.
    /// MCP sessions' `receive` is not affected (an AI agent pulls its own messages).
    pub async fn pause(&self, agent: &str) -> Result<bool> {
        keys::validate_agent(agent)?;
        let key = keys::paused(&keys::inbox(agent));
        let mut conn = self.conn();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(crate::time::now_ms())
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("SET", &key, e))?;
        Ok(set.is_some())
    }

    /// Resumes `agent` after [`Bus::pause`]: its workers read again within a second.
    /// Returns false if it was not paused.
    pub async fn resume(&self, agent: &str) -> Result<bool> {
        keys::validate_agent(agent)?;
        let key = keys::paused(&keys::inbox(agent));
        let mut conn = self.conn();
        let n: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("DEL", &key, e))?;
        Ok(n > 0)
    }

    /// Whether `agent` is paused.
    pub async fn is_paused(&self, agent: &str) -> Result<bool> {
        keys::validate_agent(agent)?;
        let key = keys::paused(&keys::inbox(agent));
        let mut conn = self.conn();
        let n: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("EXISTS", &key, e))?;
        Ok(n > 0)
    }
}
