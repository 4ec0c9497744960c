//! The janitor: removes consumers of dead processes (consumer names are unique per process,
//! so they would pile up), once they have nothing pending.

use std::time::Duration;

use tracing::{debug, info};

use super::stream::StreamState;
use crate::broker::wire;
use crate::error::{Error, Result};

/// Deletes consumers that have nothing pending and have not been seen for a long time
/// (dead processes; consumer names are unique per process, so they would pile up).
pub(super) async fn remove_dead_consumers(st: &StreamState) {
    let spec = &st.spec;
    let gone_after = (st.config.reclaim_idle * 20).max(Duration::from_secs(3600));
    let r: Result<()> = async {
        let mut conn = st.broker.conn();
        let v: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&spec.stream)
            .arg(&spec.group)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XINFO CONSUMERS", &spec.stream, e))?;
        for c in wire::as_array(&v).unwrap_or(&[]).iter().filter_map(wire::as_map) {
            let name = c.get("name").and_then(wire::as_string).unwrap_or_default();
            let pending = c.get("pending").and_then(wire::as_u64).unwrap_or(1);
            let idle = c.get("idle").and_then(wire::as_u64).unwrap_or(0);
            if pending == 0 && idle > crate::time::millis(gone_after) && name != spec.consumer {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&spec.stream)
                    .arg(&spec.group)
                    .arg(&name)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis("XGROUP DELCONSUMER", &spec.stream, e))?;
                info!(stream = %spec.stream, consumer = %name, idle_ms = idle, "removed a long-idle consumer with nothing pending");
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        debug!(error = %e, "consumer cleanup failed");
    }
}
