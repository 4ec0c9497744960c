//! The benchmark's own `redis-server`: a free loopback port, no persistence, killed by pid.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running `redis-server` child; killed (by its pid) and its directory removed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    dir: PathBuf,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl RedisServer {
    /// Starts `bin` on a free 127.0.0.1 port (never 6379) and waits until it answers PING.
    pub(crate) async fn start(bin: &str) -> anyhow::Result<RedisServer> {
        let port = loop {
            let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
            let p = l.local_addr()?.port();
            if p != 6379 {
                break p;
            }
        };
        let dir = std::env::temp_dir().join(format!("fabric-bench-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!("cannot start {bin:?} (install redis-server or pass --redis-url)")
            })?;
        let mut server = RedisServer {
            child,
            dir,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let client = redis::Client::open(server.url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("redis-server exited at start: {status}");
            }
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
