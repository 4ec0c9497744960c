//! Consumer-group creation.

use redis::Value;

use crate::broker::wire;
use crate::error::{Error, Result};

/// Creates the group at id 0 (so entries written before the group existed are delivered),
/// creating the stream if missing. An existing group is fine.
pub(super) async fn create<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> Result<()> {
    create_at(conn, stream, group, "0").await
}

/// Creates the group delivering the entries after `start`, creating the stream if missing.
/// An existing group is fine (and keeps its position).
pub(super) async fn create_at<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<()> {
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Ok(_) => {
            tracing::debug!(stream, group, "created consumer group");
            Ok(())
        }
        Err(e) if wire::is_busygroup(&e) => Ok(()),
        Err(e) => Err(Error::redis("XGROUP CREATE", stream, e)),
    }
}
