//! The operator's per-message commands in secure mode, as the admin user (and what the
//! read-only monitor may do), on a redis-server running the generated ACL file, with the
//! agent's worker logged in as the agent.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{expect_code, json_of, stderr};
use fabric_tests::{RunningWorker, SecureRedis, init_tracing, unique_agent, wait_until_async};
use fabric_worker::acl;
use fabric_worker::bus::ReceiveOptions;
use fabric_worker::prelude::*;

static SEC_FAILS: AtomicBool = AtomicBool::new(true);
static SEC_HANDLED: AtomicUsize = AtomicUsize::new(0);

#[handler(message_type = "sec_flaky")]
async fn sec_flaky(ctx: Context) -> Result<(), HandlerError> {
    if SEC_FAILS.load(Ordering::SeqCst) {
        return Err(HandlerError::permanent("sec_flaky failed on purpose"));
    }
    if ctx.attempt() == 1 && ctx.message().payload["retry"] == true {
        return Err(HandlerError::retry("wait an hour").with_retry_after(Duration::from_secs(3600)));
    }
    SEC_HANDLED.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// `fabric --mode secure ARGS` as `url`'s user.
fn secure(url: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--mode", "secure"];
    all.extend_from_slice(args);
    common::fabric(url, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_commands_work_for_the_admin_in_secure_mode() {
    init_tracing();
    let percy = unique_agent("percy");
    let redis = SecureRedis::start(std::slice::from_ref(&percy), false);
    redis.prepare().await;
    let admin = redis.server.url();
    let monitor = redis.url_of(acl::MONITOR_USER);
    let admin_bus = Bus::connect(admin.clone()).await.unwrap();
    let percy_bus = redis.agent_bus(&percy).await;
    let worker = RunningWorker::start(
        Worker::builder(&percy)
            .bus(percy_bus)
            .block(Duration::from_millis(300))
            .retry_poll_interval(Duration::from_millis(50)),
    )
    .await;

    // A dead letter, retried by id by the admin, handled by percy's worker.
    admin_bus
        .send(Message::new(
            "coder",
            &percy,
            "sec_flaky",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    assert!(
        common::dead_letters_reach(&admin_bus, &percy, 1).await,
        "no dead letter"
    );
    let dead_id = admin_bus.dead_letters(&percy, 1).await.unwrap()[0]
        .dead_id
        .clone();
    // The monitor may look at it, not move it.
    let shown = json_of(&secure(&monitor, &["show", &percy, &dead_id, "--json"]));
    assert_eq!(shown["location"]["state"], "dead_letter", "{shown}");
    let o = secure(&monitor, &["dead-letters", "retry", &percy, &dead_id]);
    expect_code(&o, 1);
    assert!(
        stderr(&o).contains("refused by the server's ACL"),
        "{}",
        stderr(&o)
    );
    SEC_FAILS.store(false, Ordering::SeqCst);
    expect_code(
        &secure(&admin, &["dead-letters", "retry", &percy, &dead_id]),
        0,
    );
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            SEC_HANDLED.load(Ordering::SeqCst) == 1
        })
        .await,
        "the retried dead letter was not handled"
    );

    // A retry, listed and run now by the admin.
    admin_bus
        .send(Message::new(
            "coder",
            &percy,
            "sec_flaky",
            serde_json::json!({"retry": true}),
        ))
        .await
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            admin_bus
                .retries(&percy, 10)
                .await
                .is_ok_and(|r| r.len() == 1)
        })
        .await,
        "no retry scheduled"
    );
    let list = json_of(&secure(&admin, &["retries", "list", &percy, "--json"]));
    let id = list[0]["id"].as_str().unwrap().to_owned();
    expect_code(&secure(&admin, &["retries", "run", &percy, &id]), 0);
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            SEC_HANDLED.load(Ordering::SeqCst) == 2
        })
        .await,
        "the retry run now was not handled"
    );
    worker.stop().await;

    // A stuck pending entry, moved and then acknowledged by the admin.
    let receipt = admin_bus
        .send(Message::new(
            "coder",
            &percy,
            "sec_flaky",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    admin_bus
        .receive(&percy, ReceiveOptions::default().consumer("stuck"))
        .await
        .unwrap();
    let id = receipt.stream_id;
    let o = secure(&monitor, &["pending", "ack", &percy, &id, "--yes"]);
    expect_code(&o, 1);
    expect_code(
        &secure(&admin, &["pending", "claim", &percy, &id, "--to", "spare"]),
        0,
    );
    let shown = json_of(&secure(&monitor, &["show", &percy, &id, "--json"]));
    assert_eq!(shown["location"]["consumer"], "spare", "{shown}");
    expect_code(
        &secure(&admin, &["pending", "ack", &percy, &id, "--yes"]),
        0,
    );
    assert!(
        admin_bus
            .pending(&percy, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
