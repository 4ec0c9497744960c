//! `fabric dashboard` in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver) shows the figures of a real Redis while real
//! workers run, updates them live without a reload, pauses an agent, and its Requeue button
//! moves a dead letter back into the inbox.
//!
//! Without Chromium it fails, saying how to install it. Set
//! `FABRIC_DASHBOARD_SCREENSHOT=docs/dashboard.png` to refresh the README's screenshot.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::FABRIC;
use fabric_tests::{RedisServer, RunningWorker, entry_field, stream_entries, wait_until_async};
use fabric_worker::keys;
use fabric_worker::prelude::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Debian's paths; `FABRIC_CHROMIUM` and `FABRIC_CHROMEDRIVER` name others.
fn chromium() -> String {
    std::env::var("FABRIC_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("FABRIC_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// Flags for Chromium on a machine without network or display.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--window-size=1440,1080",
];

#[handler(message_type = "dash_work")]
async fn dash_work(p: Value) -> Result<(), HandlerError> {
    let ms = p.get("ms").and_then(Value::as_u64).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

#[handler(message_type = "dash_fail")]
async fn dash_fail() -> Result<(), HandlerError> {
    Err(HandlerError::permanent(
        "review service rejected the patch: missing tests",
    ))
}

/// The browser's profile directory; when dropped (the test passed, failed or panicked), the
/// Chromium processes started with it are killed by pid (chromedriver leaves them running
/// when it is killed itself) and the directory is removed.
struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        let marker = format!("--user-data-dir={}", self.0.display());
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let ours = cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == marker.as_bytes());
                if ours {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (by its pid) and reaped when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn require_browser() {
    for (path, package) in [
        (chromium(), "chromium"),
        (chromedriver(), "chromium-driver"),
    ] {
        assert!(
            Path::new(&path).exists(),
            "{path} is missing: this test drives headless Chromium through chromedriver. Install them with `apt-get install -y chromium chromium-driver` (Debian; package {package}) and run it again"
        );
    }
}

async fn wait_port(port: u16, what: &str) {
    let up = wait_until_async(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "{what} did not listen on 127.0.0.1:{port}");
}

/// Waits until the text of `css` satisfies `want`; the error says what it showed.
async fn wait_text(
    c: &Client,
    css: &str,
    want: impl Fn(&str) -> bool,
    what: &str,
) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if want(&t) {
                return Ok(t);
            }
            last = Some(t);
        }
        if Instant::now() > deadline {
            let banner = match c.find(Locator::Css("#banner")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            return Err(format!(
                "{what}: `{css}` shows {last:?} (banner: {banner:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn xlen(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

/// Sends work to coder and percy (every sixth of percy's fails for good) until `stop`.
fn traffic(bus: Bus, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let work = json!({"ms": 20, "n": i});
            let _ = bus
                .send(Message::new("planner", "coder", "dash_work", work.clone()))
                .await;
            let kind = if i % 6 == 5 { "dash_fail" } else { "dash_work" };
            let _ = bus
                .send(
                    Message::new("coder", "percy", kind, json!({"pr": 100 + i}))
                        .with_header("tenant", "acme"),
                )
                .await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_live_figures_and_requeues_a_dead_letter() {
    require_browser();
    fabric_tests::init_tracing();
    // A server of its own: the agents are exactly these three.
    let mut redis = RedisServer::start_own(false);
    let url = redis.url();
    let bus = Bus::connect(&url).await.unwrap();
    let mut conn = redis.async_conn().await;
    let coder = RunningWorker::fast(&url, "coder", |b| b).await;
    let percy = RunningWorker::fast(&url, "percy", |b| b).await;
    // memory has no worker: what is sent to it waits.
    for i in 0..7 {
        bus.send(Message::new(
            "percy",
            "memory",
            "archive",
            json!({"doc": i}),
        ))
        .await
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(bus.clone(), stop.clone());

    let port = free_port();
    let _dashboard = Child(
        Command::new(FABRIC)
            .args([
                "dashboard",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--sample-interval-ms",
                "500",
            ])
            .env("REDIS_URL", &url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start fabric dashboard"),
    );
    let driver_port = free_port();
    let _driver = Child(
        Command::new(chromedriver())
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    wait_port(port, "fabric dashboard").await;
    wait_port(driver_port, "chromedriver").await;

    let profile = Profile(std::env::temp_dir().join(format!(
        "fabric-dashboard-chromium-{}",
        uuid::Uuid::new_v4().simple()
    )));
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.0.display()));
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chromium(), "args": args}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session through chromedriver");

    let mut result = drive(&client, port, &bus, &mut conn, &stop).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;
    if result.is_ok() {
        // Redis goes away: the page says so in a banner, and comes back by itself.
        coder.stop().await;
        percy.stop().await;
        drop(conn);
        redis.stop();
        result = wait_text(
            &client,
            "#banner",
            |t| t.contains("Cannot read Redis") && t.contains("retries"),
            "the banner while Redis is down",
        )
        .await
        .map(drop);
        if result.is_ok() {
            redis.start_again();
            result = wait_text(
                &client,
                "#conn-text",
                |t| t == "Connected",
                "the connection state once Redis is back",
            )
            .await
            .map(drop);
        }
        if result.is_ok() {
            // The restarted server kept nothing: a fresh agent to look at.
            let bus = Bus::connect(&url).await.expect("connect after the restart");
            for i in 0..2 {
                bus.send(Message::new("ops", "auditor", "audit", json!({ "i": i })))
                    .await
                    .expect("send to auditor after the restart");
            }
            result = sign_in(&client, &url).await;
        }
    }
    let _ = client.close().await;
    drop(profile);
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn drive(
    c: &Client,
    port: u16,
    bus: &Bus,
    conn: &mut redis::aio::MultiplexedConnection,
    stop: &AtomicBool,
) -> Result<(), String> {
    let e = |what: &'static str| move |err: fantoccini::error::CmdError| format!("{what}: {err}");
    c.set_window_size(1440, 1080)
        .await
        .map_err(e("window size"))?;
    c.goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(e("open the dashboard"))?;

    // The depth of memory (no worker) is what Redis holds.
    let memory_inbox = keys::inbox("memory");
    let n = xlen(conn, &memory_inbox).await;
    assert_eq!(n, 7);
    wait_text(
        c,
        r#"tr[data-agent="memory"] [data-field="depth"]"#,
        |t| t == n.to_string(),
        "memory's depth",
    )
    .await?;
    // More arrive: the page shows them without a reload.
    c.execute("window.__fabricNoReload = 42; return null;", vec![])
        .await
        .map_err(e("mark the page"))?;
    for i in 0..3 {
        bus.send(Message::new(
            "percy",
            "memory",
            "archive",
            json!({"late": i}),
        ))
        .await
        .unwrap();
    }
    let n = xlen(conn, &memory_inbox).await;
    assert_eq!(n, 10);
    wait_text(
        c,
        r#"tr[data-agent="memory"] [data-field="depth"]"#,
        |t| t == n.to_string(),
        "memory's depth after 3 more",
    )
    .await?;
    let marker = c
        .execute("return window.__fabricNoReload || null;", vec![])
        .await
        .map_err(e("read the mark"))?;
    if marker != json!(42) {
        return Err(format!("the page was reloaded (mark {marker})"));
    }
    wait_text(
        c,
        r#"tr[data-agent="memory"] [data-field="state"]"#,
        |t| t.contains("No workers"),
        "memory's state",
    )
    .await?;

    // Live throughput of coder's worker, failures of percy's.
    wait_text(
        c,
        r#"tr[data-agent="coder"] [data-field="rate"]"#,
        |t| t.ends_with("/s") && t != "0/s",
        "coder's throughput",
    )
    .await?;
    wait_text(
        c,
        r#"tr[data-agent="percy"] [data-field="dead"]"#,
        |t| t.parse::<u64>().is_ok_and(|d| d >= 2),
        "percy's dead letters",
    )
    .await?;
    wait_text(
        c,
        r#"tr[data-agent="percy"] [data-field="failure"]"#,
        |t| t.ends_with('%') && t != "0%",
        "percy's failure rate",
    )
    .await?;
    if std::env::var_os("FABRIC_DASHBOARD_SCREENSHOT").is_some() {
        // For the README: a minute of traffic in the charts.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    stop.store(true, Ordering::Relaxed);

    // Percy's details; pause it from the page so that a requeued message stays queued.
    c.find(Locator::Css(r#"tr[data-agent="percy"]"#))
        .await
        .map_err(e("percy's row"))?
        .click()
        .await
        .map_err(e("click percy's row"))?;
    wait_text(c, "#pause-btn", |t| t == "Pause", "the pause button").await?;
    c.find(Locator::Css("#pause-btn"))
        .await
        .map_err(e("pause button"))?
        .click()
        .await
        .map_err(e("click pause"))?;
    let paused = wait_until_async(Duration::from_secs(10), || async {
        bus.is_paused("percy").await.unwrap_or(false)
    })
    .await;
    if !paused {
        return Err("clicking Pause did not pause percy".into());
    }
    wait_text(
        c,
        r#"tr[data-agent="percy"] [data-field="state"]"#,
        |t| t.contains("Paused"),
        "percy's state",
    )
    .await?;
    // Workers honour a pause within a second: its consumer stops reading (idle grows past
    // its 500 ms read block); the last sends are handled by then.
    let stopped = wait_until_async(Duration::from_secs(15), || async {
        bus.queue_status("percy", None)
            .await
            .is_ok_and(|st| st.consumers.iter().all(|c| c.idle_ms >= 1500))
    })
    .await;
    if !stopped {
        return Err("percy's worker kept reading while paused".into());
    }

    let dead_key = keys::dead_letters(&keys::inbox("percy"));
    let dead = stream_entries(conn, &dead_key).await;
    let before = dead.len();
    let (dead_id, fields) = dead.first().ok_or("percy has no dead letter")?;
    let data = entry_field(fields, "data").ok_or("a dead letter without data")?;
    let message_id = serde_json::from_str::<Value>(data).map_err(|e| e.to_string())?["id"]
        .as_str()
        .ok_or("no message id")?
        .to_owned();
    wait_text(
        c,
        "#tab-dead-count",
        |t| t == before.to_string(),
        "the dead-letter count of the tab",
    )
    .await?;
    let button = format!(r#"button[data-action="requeue"][data-dead-id="{dead_id}"]"#);
    wait_text(c, &button, |t| t == "Requeue", "the Requeue button").await?;
    screenshot(c).await?;

    c.find(Locator::Css(&button))
        .await
        .map_err(e("requeue button"))?
        .click()
        .await
        .map_err(e("click requeue"))?;
    let moved = wait_until_async(Duration::from_secs(10), || async {
        let mut conn = conn.clone();
        xlen(&mut conn, &dead_key).await == u64::try_from(before - 1).unwrap_or(0)
    })
    .await;
    if !moved {
        return Err("clicking Requeue did not remove the dead letter".into());
    }
    let inbox = stream_entries(conn, &keys::inbox("percy")).await;
    let back = inbox.iter().rev().find(|(_, f)| {
        entry_field(f, "data").is_some_and(|d| d.contains(&format!("\"id\":\"{message_id}\"")))
    });
    if back.is_none() {
        return Err(format!(
            "{message_id} is not back in percy's inbox after Requeue"
        ));
    }
    // Paused: it waits there, undelivered, and the page lists it as waiting.
    let details = bus
        .message("percy", &message_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the requeued message is nowhere")?;
    if !matches!(
        details.location,
        fabric_worker::bus::MessageLocation::Queued { .. }
    ) {
        return Err(format!("requeued message is {:?}", details.location));
    }
    wait_text(
        c,
        "#toasts",
        |t| t.contains("Requeued 1 message"),
        "the requeue notice",
    )
    .await?;

    // A click on a dead letter shows its envelope, headers and where it is.
    let (other_id, _) = stream_entries(conn, &dead_key)
        .await
        .into_iter()
        .next()
        .ok_or("no dead letter left")?;
    c.find(Locator::Css(&format!(r#"tr[data-dead-id="{other_id}"]"#)))
        .await
        .map_err(e("a dead letter row"))?
        .click()
        .await
        .map_err(e("click a dead letter"))?;
    wait_text(
        c,
        r#"[data-field="location"]"#,
        |t| t.contains("Dead letter") && t.contains("missing tests"),
        "the message's location",
    )
    .await?;
    wait_text(
        c,
        "#drawer-body",
        |t| t.contains("tenant") && t.contains("acme") && t.contains("dash_fail"),
        "the message's envelope and headers",
    )
    .await?;
    click(c, "#close-drawer").await?;

    // Purge asks first: Cancel keeps them, Delete for good removes them.
    let left = xlen(conn, &dead_key).await;
    if left == 0 {
        return Err("no dead letter left to purge".into());
    }
    click(c, "#purge-all").await?;
    wait_text(
        c,
        "#modal-text",
        |t| t.contains(&format!("{left} dead letter")) && t.contains("for good"),
        "the purge confirmation",
    )
    .await?;
    click(c, "#modal-cancel").await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    if xlen(conn, &dead_key).await != left {
        return Err("Cancel purged the dead letters".into());
    }
    click(c, "#purge-all").await?;
    wait_text(
        c,
        "#modal-ok",
        |t| t == "Delete for good",
        "the confirm button",
    )
    .await?;
    click(c, "#modal-ok").await?;
    let purged = wait_until_async(Duration::from_secs(10), || async {
        xlen(&mut conn.clone(), &dead_key).await == 0
    })
    .await;
    if !purged {
        return Err("confirming the purge did not delete the dead letters".into());
    }
    wait_text(
        c,
        "#dead-empty",
        |t| t.starts_with("No dead letters"),
        "the empty dead-letter list",
    )
    .await?;
    Ok(())
}

async fn click(c: &Client, css: &str) -> Result<(), String> {
    c.find(Locator::Css(css))
        .await
        .map_err(|e| format!("find {css}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("click {css}: {e}"))
}

/// A dashboard that requires a token (one was given, even on loopback) shows a sign-in form,
/// and the figures once the admin token is entered.
async fn sign_in(c: &Client, url: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("fabric-dash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = sign_in_with(c, url, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn sign_in_with(c: &Client, url: &str, dir: &Path) -> Result<(), String> {
    let tokens = dir.join("tokens.json");
    let token = "dash-admin-0123456789abcdefghijklmnop";
    std::fs::write(&tokens, json!({ token: "admin" }).to_string()).map_err(|e| e.to_string())?;
    let port = free_port();
    let _dashboard = Child(
        Command::new(FABRIC)
            .args([
                "dashboard",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--tokens-file",
            ])
            .arg(&tokens)
            .env("REDIS_URL", url)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start fabric dashboard --tokens-file"),
    );
    wait_port(port, "fabric dashboard --tokens-file").await;
    c.goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(|e| format!("open the protected dashboard: {e}"))?;
    wait_text(c, "#login h2", |t| t == "Sign in", "the sign-in form").await?;
    c.find(Locator::Css("#token"))
        .await
        .map_err(|e| format!("token field: {e}"))?
        .send_keys(token)
        .await
        .map_err(|e| format!("type the token: {e}"))?;
    click(c, "#login-form button").await?;
    wait_text(
        c,
        r#"tr[data-agent="auditor"] [data-field="depth"]"#,
        |t| t == "2",
        "auditor's depth after signing in",
    )
    .await?;
    Ok(())
}

/// Saves the page as a PNG (under the target dir; also where `FABRIC_DASHBOARD_SCREENSHOT`
/// says, e.g. `docs/dashboard.png`).
async fn screenshot(c: &Client) -> Result<(), String> {
    c.execute(
        "document.getElementById('toasts').replaceChildren(); return null;",
        vec![],
    )
    .await
    .map_err(|e| format!("clear the notices: {e}"))?;
    let png = c
        .screenshot()
        .await
        .map_err(|e| format!("screenshot: {e}"))?;
    let mut paths = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")];
    if let Ok(p) = std::env::var("FABRIC_DASHBOARD_SCREENSHOT")
        && !p.is_empty()
    {
        let p = PathBuf::from(p);
        paths.push(if p.is_absolute() {
            p
        } else {
            fabric_tests::workspace_root().join(p)
        });
    }
    for p in paths {
        std::fs::write(&p, &png).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    Ok(())
}
