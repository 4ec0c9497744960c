//! The percy/coder exchange in secure mode, as a user would run it: a redis-server with
//! the ACL file `fabric_worker::acl` generates, `fabric setup` done as the admin, a router
//! under its own user, and the two example binaries each logged in as its own agent with
//! `FABRIC_MODE=secure`.

use std::process::{Command, Stdio};

use fabric_tests::{RunningRouter, SecureRedis, init_tracing};

/// A child process killed (by its pid) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exchange_works_in_secure_mode() {
    init_tracing();
    let redis = SecureRedis::start(&["percy".to_owned(), "coder".to_owned()], false);
    redis.prepare().await;
    let router = RunningRouter::serve(&redis.router_url()).await;
    let _percy = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_percy_worker"))
            .env("REDIS_URL", redis.url_of("percy"))
            .env("FABRIC_MODE", "secure")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start percy_worker"),
    );
    let out = tokio::task::spawn_blocking({
        let url = redis.url_of("coder");
        move || {
            Command::new(env!("CARGO_BIN_EXE_coder_worker"))
                .args(["--tasks", "3", "--timeout-secs", "30"])
                .env("REDIS_URL", url)
                .env("FABRIC_MODE", "secure")
                .env("RUST_LOG", "warn")
                .output()
                .expect("run coder_worker")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("coder got a reply from percy").count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("coder: all 3 replies received"), "{stdout}");
    // The replies came through the router: nothing is left in either outbox's dead letters.
    let percy_bus = redis.agent_bus("percy").await;
    assert!(percy_bus.rejected("percy", 10).await.unwrap().is_empty());
    router.stop().await;
}
