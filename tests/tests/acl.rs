//! Per-agent ACL users (fabric_worker::acl) on a real redis-server: the percy/coder
//! exchange works with each agent's own credentials, and neither can read, consume or
//! delete the other's keys.

use std::time::Duration;

use fabric_tests::{RedisServer, RunningWorker, init_tracing, wait_until_async};
use fabric_worker::bus::Mode;
use fabric_worker::keys;
use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::{Value, json};

#[handler(message_type = "acl_task")]
async fn acl_task(ctx: Context, p: Value) -> Result<Value, HandlerError> {
    Ok(json!({"seen": p, "by": ctx.agent()}))
}

fn url_for(server: &RedisServer, user: &str, pw: &str) -> String {
    format!("redis://{user}:{pw}@127.0.0.1:{}", server.port())
}

async fn denied<T: redis::FromRedisValue + std::fmt::Debug>(r: redis::RedisResult<T>, what: &str) {
    match r {
        Err(e) => assert_eq!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "{what}: expected NOPERM, got {e}"
        ),
        Ok(v) => panic!("{what} must be refused, got {v:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_uses_only_its_own_keys() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let mut admin = server.async_conn().await;
    for (agent, pw) in [("percy", "percy-pw"), ("coder", "coder-pw")] {
        fabric_tests::set_agent_user(&mut admin, agent, Mode::Direct, pw).await;
    }

    // The function library is loaded by an admin (agents may FCALL, not load).
    Bus::connect(server.url())
        .await
        .unwrap()
        .setup()
        .await
        .unwrap();

    // percy's worker runs with percy's credentials.
    let percy_url = url_for(&server, "percy", "percy-pw");
    let worker = RunningWorker::start(
        Worker::builder("percy")
            .url(&percy_url)
            .block(Duration::from_millis(500)),
    )
    .await;

    // coder sends with coder's credentials; percy replies into coder's results stream.
    let coder = Bus::connect(url_for(&server, "coder", "coder-pw"))
        .await
        .unwrap();
    let task = Message::new("coder", "percy", "acl_task", json!({"pr": 1}))
        .with_reply_to(keys::results("coder"));
    coder.send(task).await.unwrap();
    let coder_conn = redis::Client::open(url_for(&server, "coder", "coder-pw"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = coder_conn.clone();
            async move { c.xlen::<_, u64>("agent:coder:results").await.unwrap_or(0) == 1 }
        })
        .await,
        "percy's reply did not reach agent:coder:results"
    );
    // Request/reply through coder's private reply stream.
    let reply = coder
        .request(
            Message::new("coder", "percy", "acl_task", json!({"pr": 2})),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(reply.payload["by"], "percy");
    assert_eq!(
        coder.queue_status("coder", None).await.unwrap().agent,
        "coder"
    );
    assert!(
        coder
            .publish("shared:news", json!({"hi": 1}), Some("coder"))
            .await
            .is_ok()
    );

    // What percy may not do to coder's keys, or to anything else.
    let mut percy = redis::Client::open(percy_url.clone())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    denied::<redis::Value>(
        redis::cmd("XRANGE")
            .arg("agent:coder:inbox")
            .arg("-")
            .arg("+")
            .query_async(&mut percy)
            .await,
        "XRANGE another inbox",
    )
    .await;
    denied::<i64>(
        percy.xdel("agent:coder:inbox", &["0-1"]).await,
        "XDEL in another inbox",
    )
    .await;
    denied::<i64>(
        percy.del("agent:coder:results").await,
        "DEL another agent's results",
    )
    .await;
    denied::<redis::Value>(
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("coder_workers")
            .arg("x")
            .arg("STREAMS")
            .arg("agent:coder:inbox")
            .arg(">")
            .query_async(&mut percy)
            .await,
        "consume another inbox",
    )
    .await;
    denied::<String>(
        percy
            .xadd(
                "agent:coder:inbox:dead{agent:coder:inbox}",
                "*",
                &[("data", "{}")],
            )
            .await,
        "write another agent's dead letters",
    )
    .await;
    denied::<Option<String>>(percy.get("some:key").await, "GET an unrelated key").await;
    denied::<redis::Value>(
        redis::cmd("EVAL")
            .arg("return 1")
            .arg(0)
            .query_async(&mut percy)
            .await,
        "EVAL",
    )
    .await;
    denied::<i64>(
        percy.publish("secret.channel", "x").await,
        "PUBLISH outside the allowed topics",
    )
    .await;
    // ...and what it may: send to another inbox, publish on shared topics.
    let _: String = percy
        .xadd(
            "agent:coder:inbox",
            "*",
            &[("data", r#"{"message_type":"event"}"#)],
        )
        .await
        .unwrap();
    let _: i64 = percy.publish("analytics.insights", "{}").await.unwrap();
    let percy_bus = Bus::connect(percy_url).await.unwrap();
    let err = percy_bus
        .receive("coder", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, fabric_worker::Error::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no permission"), "{err}");

    worker.stop().await;
}

/// The read-only monitor user (`fabric-monitor`: dashboards, an operator's read-only
/// commands) lists an agent's retries and looks a message up by its id (`fabric retries
/// list`, `fabric show`: `ZRANGE` and `ZSCAN` of the retry and schedule sets), and may still
/// change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_user_lists_retries_and_looks_messages_up() {
    use fabric_worker::acl;
    init_tracing();
    let agent = fabric_tests::unique_agent("monitored");
    let secure = fabric_tests::SecureRedis::start(std::slice::from_ref(&agent), false);
    secure.prepare().await;
    // A failed message waiting for its next attempt, as a worker parks it.
    let m = Message::new("ops", &agent, "acl_task", json!({"n": 1}));
    let envelope = serde_json::to_string(&m).unwrap();
    let member = json!({"fields": ["data", envelope, "attempt", "2"], "from": "1700000000000-0"});
    let mut admin = fabric_tests::conn_as(&secure.server.url()).await;
    let set = keys::retries(&keys::inbox(&agent));
    let _: i64 = admin
        .zadd(&set, member.to_string(), 4_000_000_000_000u64)
        .await
        .unwrap();

    let monitor = Bus::connect(secure.url_of(acl::MONITOR_USER))
        .await
        .expect("the monitor connects");
    let retries = monitor
        .retries(&agent, 10)
        .await
        .expect("the monitor lists an agent's retries");
    assert_eq!(retries.len(), 1);
    let found = monitor
        .message(&agent, &m.id)
        .await
        .expect("the monitor looks a message up by its id")
        .expect("the retry is found");
    assert_eq!(found.key, set);
    // Still read-only: running or deleting the retry is refused.
    assert!(monitor.retry_now(&agent, "1700000000000-0").await.is_err());
    assert!(
        monitor
            .delete_retry(&agent, "1700000000000-0")
            .await
            .is_err()
    );
    let left: i64 = admin.zcard(&set).await.unwrap();
    assert_eq!(left, 1);
}
