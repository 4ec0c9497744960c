//! A Redis Cluster connection that replaces itself when it stalls.
//!
//! redis-rs's `ClusterConnection` recovers from a primary's failover by itself most of the
//! time (a fresh one reaches the promoted replica within the failover). Under load it was
//! seen to stall instead: after a primary was SIGKILLed and its replica promoted, every
//! command on that connection — to every node, healthy ones included — timed out for as long
//! as the test ran, while a new connection made at that moment worked at once
//! (`tests/tests/cluster_failover.rs`). So every command's outcome is watched: when nothing
//! but timeouts came back for [`STALL`] or more, a new connection is made from the same
//! client and every later command uses it. A command in flight on the old one ends with its
//! timeout, as it would have.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::RoutingInfo;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// How long only timeouts must come back before the connection is replaced (and the least
/// time between two replacements).
const STALL: Duration = Duration::from_secs(5);

/// A cluster connection shared by clones, replaced when it stalls.
pub(crate) struct Watched {
    current: RwLock<ClusterConnection>,
    client: ClusterClient,
    /// The settings it was made with, if not the client's own.
    config: Option<ClusterConfig>,
    /// Whether a timeout came back since the last answer (`health` says since when).
    timing_out: AtomicBool,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// The first timeout since the last command that got an answer.
    timing_out_since: Option<Instant>,
    replacing: bool,
    last_replaced: Option<Instant>,
}

impl Watched {
    pub(crate) fn new(
        conn: ClusterConnection,
        client: ClusterClient,
        config: Option<ClusterConfig>,
    ) -> Arc<Watched> {
        Arc::new(Watched {
            current: RwLock::new(conn),
            client,
            config,
            timing_out: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
        })
    }

    /// A handle on the current connection.
    pub(crate) fn conn(self: &Arc<Self>) -> ClusterConn {
        let inner = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        ClusterConn {
            inner,
            watched: self.clone(),
        }
    }

    /// Called with every command's outcome: on the answered path (nearly every command) one
    /// relaxed load; the lock only while commands are timing out.
    fn record<T>(self: &Arc<Self>, outcome: &RedisResult<T>) {
        match outcome {
            Ok(_) => {
                if self.timing_out.load(Ordering::Relaxed) {
                    if let Ok(mut h) = self.health.lock() {
                        h.timing_out_since = None;
                    }
                    self.timing_out.store(false, Ordering::Relaxed);
                }
            }
            Err(e) if e.is_timeout() => {
                let now = Instant::now();
                let Ok(mut h) = self.health.lock() else {
                    return;
                };
                self.timing_out.store(true, Ordering::Relaxed);
                let since = *h.timing_out_since.get_or_insert(now);
                let due = h.last_replaced.is_none_or(|t| now - t >= STALL);
                if now - since >= STALL && due && !h.replacing {
                    h.replacing = true;
                    drop(h);
                    self.replace(now - since);
                }
            }
            Err(_) => {}
        }
    }

    fn replace(self: &Arc<Self>, stalled: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            tracing::warn!(
                stalled_ms = crate::time::millis(stalled),
                "every Redis Cluster command timed out for a while; connecting again"
            );
            let made = match &me.config {
                Some(c) => me.client.get_async_connection_with_config(c.clone()).await,
                None => me.client.get_async_connection().await,
            };
            match made {
                Ok(conn) => {
                    match me.current.write() {
                        Ok(mut c) => *c = conn,
                        Err(poisoned) => *poisoned.into_inner() = conn,
                    }
                    tracing::info!("connected to the Redis Cluster again");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not connect to the Redis Cluster again; will try at the next stall");
                }
            }
            if let Ok(mut h) = me.health.lock() {
                h.replacing = false;
                h.timing_out_since = None;
                h.last_replaced = Some(Instant::now());
            }
            me.timing_out.store(false, Ordering::Relaxed);
        });
    }
}

/// One handle on a [`Watched`] connection: commands go to the connection current when the
/// handle was taken, and their outcomes are recorded.
#[derive(Clone)]
pub(crate) struct ClusterConn {
    inner: ClusterConnection,
    watched: Arc<Watched>,
}

impl ClusterConn {
    /// `cmd` where `route` says.
    pub(crate) async fn route_command(
        &mut self,
        cmd: Cmd,
        route: RoutingInfo,
    ) -> RedisResult<Value> {
        let r = self.inner.route_command(cmd, route).await;
        self.watched.record(&r);
        r
    }
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let r = self.inner.req_packed_command(cmd).await;
            self.watched.record(&r);
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let r = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.watched.record(&r);
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
