//! Deployment: `fabric acl generate` files that `redis-server --aclfile` loads, the example
//! ACL file and the compose file's Redis arguments (a setup, a router, a worker and the CLI
//! against them), and `fabric acl rotate` on a live server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::FABRIC;
use fabric_tests::{RunningRouter, RunningWorker, init_tracing, unique_agent, wait_until_async};
use fabric_worker::bus::Mode;
use fabric_worker::prelude::*;
use fabric_worker::{Bus, keys};
use serde_json::json;

/// A redis-server of this test, stopped by its pid when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// `redis-server --port <free> --bind 127.0.0.1 <args>`, in a directory of its own.
    fn start(args: &[String], dir: PathBuf) -> Server {
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--logfile", &dir.join("redis.log").display().to_string()])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is on PATH (apt-get install -y redis-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                    assert!(
                        log.contains("Address already in use"),
                        "redis-server exited ({status}) with {args:?}:\n{log}"
                    );
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Server { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server");
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("fabric-deploy-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `fabric ARGS` with `REDIS_URL` = `url` and extra environment.
fn fabric(url: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(FABRIC);
    cmd.args(args)
        .env("REDIS_URL", url)
        .env("RUST_LOG", "error")
        .env_remove("FABRIC_MODE")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fabric")
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether `user` can log in with `password`.
async fn logs_in(port: u16, user: &str, password: &str) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://{user}:{password}@127.0.0.1:{port}"))
    else {
        return false;
    };
    client.get_multiplexed_async_connection().await.is_ok()
}

/// The passwords file `fabric acl generate` wrote: user → password.
fn passwords(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_acl_file_loads_and_each_user_gets_its_role() {
    init_tracing();
    let dir = temp_dir();
    let (percy, coder) = (unique_agent("percy"), unique_agent("coder"));
    let acl = dir.join("users.acl");
    let pw = dir.join("passwords.txt");
    let o = fabric(
        "redis://127.0.0.1:1",
        &[
            "--mode",
            "secure",
            "acl",
            "generate",
            "--agent",
            &percy,
            "--agent",
            &coder,
            "--out",
            acl.to_str().unwrap(),
            "--passwords-out",
            pw.to_str().unwrap(),
        ],
        &[(
            "FABRIC_ACL_PASSWORD_FABRIC_ADMIN",
            "admin-from-the-environment",
        )],
    );
    ok(&o);
    let file = std::fs::read_to_string(&acl).unwrap();
    let pws = passwords(&pw);
    // Only hashes in the file; the clear passwords only in a file of the owner's.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for (user, p) in &pws {
        assert!(
            !file.contains(p.as_str()),
            "{user}'s password is in the ACL file"
        );
        assert!(
            file.contains(&fabric_worker::acl::password_hash_rule(p)),
            "{user}"
        );
    }
    assert!(!file.contains(" >"), "a clear password in {file}");
    assert_eq!(pws["fabric-admin"], "admin-from-the-environment");
    assert_eq!(pws.len(), 6, "{pws:?}");

    let server = Server::start(
        &["--aclfile".into(), acl.display().to_string()],
        dir.clone(),
    );
    for (user, p) in &pws {
        assert!(logs_in(server.port, user, p).await, "{user} cannot log in");
        assert!(
            !logs_in(server.port, user, "wrong").await,
            "{user} logs in with a wrong password"
        );
    }
    // Nobody gets in as the default user.
    let mut anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", server.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    if let Ok(c) = &mut anonymous {
        let r: redis::RedisResult<String> = redis::cmd("PING").query_async(c).await;
        assert!(r.is_err(), "the default user may run commands");
    }
    // The roles: setup as admin, percy and coder each on their own keys, monitor read-only.
    let admin = server.url("fabric-admin", &pws["fabric-admin"]);
    ok(&fabric(
        &admin,
        &["setup", "--agent", &percy, "--agent", &coder],
        &[],
    ));
    let percy_bus = Bus::builder(server.url(&percy, &pws[&percy]))
        .mode(Mode::Secure)
        .connect()
        .await
        .unwrap();
    percy_bus
        .send(Message::new(&percy, &coder, "note", json!({})))
        .await
        .unwrap();
    let e = percy_bus.peek(&coder, "0", 10, None).await.unwrap_err();
    assert!(
        matches!(e, fabric_worker::Error::PermissionDenied { .. }),
        "{e:?}"
    );
    let monitor = server.url("fabric-monitor", &pws["fabric-monitor"]);
    let status = ok(&fabric(&monitor, &["status", &percy, "--json"], &[]));
    assert!(status.contains(&percy), "{status}");
    let o = fabric(&monitor, &["dead-letters", "purge", &percy, "--yes"], &[]);
    assert!(!o.status.success());
    // Usage errors say what to do.
    let o = fabric("redis://127.0.0.1:1", &["acl", "generate"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no agents"));
}

/// The compose file's `REDIS_ARGS`, with the container's paths made local.
fn compose_redis_args(acl: &Path, data: &Path) -> Vec<String> {
    let compose = std::fs::read_to_string(
        fabric_tests::workspace_root().join("deploy/docker-compose.redis.yml"),
    )
    .unwrap();
    let line = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("REDIS_ARGS:"))
        .expect("REDIS_ARGS in deploy/docker-compose.redis.yml");
    let args: Vec<String> = line
        .trim()
        .trim_matches('"')
        .split_whitespace()
        .map(|a| match a {
            "/etc/redis/users.acl" => acl.display().to_string(),
            "/data" => data.display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{args:?}"
    );
    assert!(args.contains(&"--aclfile".to_owned()), "{args:?}");
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_acl_and_the_compose_arguments_run_the_exchange() {
    init_tracing();
    let root = fabric_tests::workspace_root();
    let dir = temp_dir();
    // The example file loads as is (a copy: the rotation below saves into it).
    let acl = dir.join("users.acl");
    std::fs::copy(root.join("config/redis/users.acl.example"), &acl).unwrap();
    let server = Server::start(&compose_redis_args(&acl, &dir), dir.clone());
    let pw = |user: &str| format!("change-me-{user}");
    // It is what `fabric acl generate` makes of config/redis/fabric-acl.toml.
    let o = fabric(
        "redis://127.0.0.1:1",
        &[
            "acl",
            "generate",
            "--placeholder-passwords",
            "--config",
            root.join("config/redis/fabric-acl.toml").to_str().unwrap(),
        ],
        &[],
    );
    let generated = ok(&o);
    let example = std::fs::read_to_string(root.join("config/redis/users.acl.example")).unwrap();
    let not_default = |f: &str| -> Vec<String> {
        f.lines()
            .filter(|l| !l.starts_with("user default "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        not_default(&generated),
        not_default(&example),
        "config/redis/users.acl.example is stale: regenerate it (see config/redis/README.md)"
    );

    let (percy, coder) = ("percy", "coder");
    let admin = server.url("fabric-admin", &pw("fabric-admin"));
    ok(&fabric(
        &admin,
        &["setup", "--agent", percy, "--agent", coder],
        &[],
    ));
    let router = RunningRouter::serve(&server.url("fabric-router", &pw("fabric-router"))).await;
    let percy_bus = Bus::builder(server.url(percy, &pw(percy)))
        .mode(Mode::Secure)
        .connect()
        .await
        .unwrap();
    let worker = RunningWorker::start(
        Worker::builder(percy)
            .bus(percy_bus)
            .block(Duration::from_millis(300)),
    )
    .await;
    let coder_bus = Bus::builder(server.url(coder, &pw(coder)))
        .mode(Mode::Secure)
        .connect()
        .await
        .unwrap();
    let reply = coder_bus
        .request(
            Message::new(coder, percy, "echo", json!({"hi": 1})),
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    assert_eq!(reply.sender.as_deref(), Some(percy));
    let monitor = server.url("fabric-monitor", &pw("fabric-monitor"));
    let status = ok(&fabric(&monitor, &["status", percy, "--json"], &[]));
    assert!(status.contains("\"agent_id\": \"percy\""), "{status}");

    // Rotating percy's password: saved into the ACL file; the old one stops working.
    let new_pw = dir.join("percy.pw");
    ok(&fabric(
        &admin,
        &[
            "acl",
            "rotate",
            percy,
            "--password-out",
            new_pw.to_str().unwrap(),
        ],
        &[],
    ));
    let new = std::fs::read_to_string(&new_pw).unwrap().trim().to_owned();
    assert!(!logs_in(server.port, percy, &pw(percy)).await);
    assert!(logs_in(server.port, percy, &new).await);
    let saved = std::fs::read_to_string(&acl).unwrap();
    assert!(
        saved.contains(&fabric_worker::acl::password_hash_rule(&new)),
        "not saved: {saved}"
    );
    worker.stop().await;
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_password_loses_no_message() {
    init_tracing();
    let dir = temp_dir();
    let percy = unique_agent("percy");
    let acl = dir.join("users.acl");
    let pw = dir.join("passwords.txt");
    ok(&fabric(
        "redis://127.0.0.1:1",
        &[
            "acl",
            "generate",
            "--agent",
            &percy,
            "--out",
            acl.to_str().unwrap(),
            "--passwords-out",
            pw.to_str().unwrap(),
        ],
        &[],
    ));
    let pws = passwords(&pw);
    let server = Server::start(
        &["--aclfile".into(), acl.display().to_string()],
        dir.clone(),
    );
    let admin = server.url("fabric-admin", &pws["fabric-admin"]);
    ok(&fabric(&admin, &["setup", "--agent", &percy], &[]));
    let old = pws[&percy].clone();
    let sender = Bus::connect(&admin).await.unwrap();
    let send = |n: usize| {
        let sender = sender.clone();
        let percy = percy.clone();
        async move {
            for i in 0..n {
                sender
                    .send(Message::new("coder", &percy, "echo", json!({"i": i})))
                    .await
                    .unwrap();
            }
        }
    };
    let worker_on = |password: String| {
        let url = server.url(&percy, &password);
        let percy = percy.clone();
        async move {
            RunningWorker::start(
                Worker::builder(&percy)
                    .url(url)
                    .block(Duration::from_millis(200)),
            )
            .await
        }
    };
    let handled = |n: u64| {
        let sender = sender.clone();
        let percy = percy.clone();
        async move {
            wait_until_async(Duration::from_secs(15), || async {
                let g = sender.groups(&percy).await.unwrap();
                g.iter()
                    .find(|g| g.name == keys::default_group(&percy))
                    .is_some_and(|g| g.acknowledged() == Some(n) && g.pending == 0)
            })
            .await
        }
    };
    let w1 = worker_on(old.clone()).await;
    send(20).await;
    assert!(handled(20).await);

    // Rolling rotation: the new password is added, the old one still works...
    let new_pw = dir.join("new.pw");
    ok(&fabric(
        &admin,
        &[
            "acl",
            "rotate",
            &percy,
            "--keep-old",
            "--password-out",
            new_pw.to_str().unwrap(),
        ],
        &[],
    ));
    let new = std::fs::read_to_string(&new_pw).unwrap().trim().to_owned();
    assert!(logs_in(server.port, &percy, &old).await && logs_in(server.port, &percy, &new).await);
    // ...a second worker starts on the new one, the first stops gracefully, while sending.
    let sending = tokio::spawn(send(30));
    let w2 = worker_on(new.clone()).await;
    w1.stop().await;
    sending.await.unwrap();
    // ...then only the new one works.
    ok(&fabric(
        &admin,
        &[
            "acl",
            "rotate",
            &percy,
            "--password-file",
            new_pw.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(!logs_in(server.port, &percy, &old).await);
    assert!(logs_in(server.port, &percy, &new).await);
    send(10).await;
    let all = handled(60).await;
    assert!(
        all,
        "messages were lost or left pending across the rotation: {:?}, dead letters {:?}",
        sender.groups(&percy).await.unwrap(),
        sender.dead_letters(&percy, 10).await.unwrap()
    );

    // A compromised password: cut off at once, open connections included.
    let mut open = redis::Client::open(server.url(&percy, &new))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let third = dir.join("third.pw");
    ok(&fabric(
        &admin,
        &[
            "acl",
            "rotate",
            &percy,
            "--disconnect",
            "--password-out",
            third.to_str().unwrap(),
        ],
        &[],
    ));
    let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut open).await;
    assert!(
        r.is_err(),
        "a connection of the old password survived --disconnect"
    );
    assert!(!logs_in(server.port, &percy, &new).await);
    w2.stop().await;
    // An unknown user is a clear error.
    let o = fabric(&admin, &["acl", "rotate", "nobody-here"], &[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such Redis user"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
