//! The janitor: removes consumers of dead processes (consumer names are unique per process,
//! so they would pile up), once they have nothing pending.

use std::time::Duration;

use tracing::{debug, info};

use super::stream::StreamState;

/// Deletes consumers that have nothing pending and have not been seen for a long time
/// (dead processes; consumer names are unique per process, so they would pile up).
pub(super) async fn remove_dead_consumers(st: &StreamState) {
    let spec = &st.spec;
    let gone_after =
        crate::time::millis((st.config.reclaim_idle * 20).max(Duration::from_secs(3600)));
    let r = st
        .bus
        .remove_consumers_where(&spec.stream, &spec.group, |name, idle| {
            idle > gone_after && name != spec.consumer
        })
        .await;
    match r {
        Ok(removed) => {
            for name in removed {
                info!(stream = %spec.stream, consumer = %name, "removed a long-idle consumer with nothing pending");
            }
        }
        Err(e) => debug!(error = %e, "consumer cleanup failed"),
    }
}
