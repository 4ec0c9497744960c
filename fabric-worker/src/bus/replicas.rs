//! Waiting for replicas (`WAIT`) before a send counts as done:
//! [`BusBuilder::wait_for_replicas`].

use std::time::Duration;

use super::BusBuilder;
use crate::error::{Error, Result};

/// `WAIT <replicas> <timeout>` after each write that must survive a primary's failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplicaWait {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}

impl BusBuilder {
    /// The replica wait in force: the explicit one, else `FABRIC_WAIT_REPLICAS` (0 = none).
    pub(super) fn replica_wait(&self) -> Result<Option<ReplicaWait>> {
        if let Some(w) = self.wait_replicas {
            if w.timeout.is_zero() {
                return Err(Error::Config(
                    "wait_for_replicas: the timeout must be above zero (WAIT 0 would block a send forever while a replica is down)".into(),
                ));
            }
            return Ok((w.replicas > 0).then_some(w));
        }
        let timeout = self.from_env.wait_timeout.unwrap_or(Duration::from_secs(1));
        if timeout.is_zero() {
            return Err(Error::Config(
                "FABRIC_WAIT_TIMEOUT_MS must be above 0 (WAIT 0 would block a send forever while a replica is down)".into(),
            ));
        }
        Ok(self
            .from_env
            .wait_replicas
            .filter(|n| *n > 0)
            .map(|replicas| ReplicaWait { replicas, timeout }))
    }
}
