//! Durable topics (`docs/protocol.md` §11) against a real redis-server: an agent that was
//! down gets what was published meanwhile, every subscribing agent gets every event, one
//! agent's processes share its load, pattern subscriptions find new topics, retention
//! bounds the stream, failures retry and dead-letter; in secure mode the router gives each
//! subscriber its own copy, and agents with their own users can use them in direct mode.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use fabric_tests::{
    RedisServer, RunningRouter, RunningWorker, SecureRedis, WorkerProcess, blocked_clients,
    entry_field, init_tracing, records, stream_entries, unique_agent, wait_until, wait_until_async,
};
use fabric_worker::bus::{Mode, TopicMessage};
use fabric_worker::keys;
use fabric_worker::prelude::*;
use serde_json::json;

/// agent → message ids its topic handlers handled, in order.
static HANDLED: LazyLock<Mutex<HashMap<String, Vec<String>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

#[handler(topic = "analytics.*")]
async fn analytics(ctx: Context) -> Result<(), HandlerError> {
    assert!(ctx.topic().is_some_and(|t| t.starts_with("analytics.")));
    HANDLED
        .lock()
        .unwrap()
        .entry(ctx.agent().to_owned())
        .or_default()
        .push(ctx.message_id().to_owned());
    Ok(())
}

#[handler(topic = "failing.always")]
async fn always_fails(ctx: Context) -> Result<(), HandlerError> {
    Err(HandlerError::new(format!(
        "failing on purpose (attempt {})",
        ctx.attempt()
    )))
}

fn handled(agent: &str) -> Vec<String> {
    HANDLED
        .lock()
        .unwrap()
        .get(agent)
        .cloned()
        .unwrap_or_default()
}

/// Waits up to `secs` seconds until `agent` handled at least `n` events.
async fn handled_at_least(agent: &str, n: usize, secs: u64) -> bool {
    wait_until_async(Duration::from_secs(secs), || async {
        handled(agent).len() >= n
    })
    .await
}

/// A fresh server, a bus and a connection to it.
async fn fresh() -> (RedisServer, Bus, redis::aio::MultiplexedConnection) {
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    let conn = server.async_conn().await;
    (server, bus, conn)
}

/// The length of `stream`.
async fn xlen(
    mut conn: redis::aio::MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<usize> {
    redis::cmd("XLEN").arg(stream).query_async(&mut conn).await
}

/// A worker for `agent` that looks for new topics every 100 ms.
async fn worker(url: &str, agent: &str) -> RunningWorker {
    RunningWorker::fast(url, agent, |b| {
        b.topic_poll_interval(Duration::from_millis(100))
            .max_attempts(2)
    })
    .await
}

async fn publish(bus: &Bus, topic: &str, i: usize) -> String {
    publish_as(bus, "publisher", topic, i).await.message_id
}

async fn publish_as(
    bus: &Bus,
    from: &str,
    topic: &str,
    i: usize,
) -> fabric_worker::bus::TopicReceipt {
    bus.publish_durable(TopicMessage::new(topic, from, json!({ "i": i })))
        .await
        .unwrap()
}

/// Whether `group` exists on `stream`.
async fn has_group(mut conn: redis::aio::MultiplexedConnection, stream: &str, group: &str) -> bool {
    let groups: redis::RedisResult<Vec<HashMap<String, redis::Value>>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await;
    groups.is_ok_and(|gs| {
        gs.iter().any(|g| {
            g.get("name")
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .is_some_and(|n| n == group)
        })
    })
}

/// Whether the worker of `group` has recorded its subscription to `pattern`.
async fn subscribed(
    mut conn: redis::aio::MultiplexedConnection,
    group: &str,
    pattern: &str,
) -> bool {
    redis::cmd("HEXISTS")
        .arg("fabric:topic_subscriptions")
        .arg(format!("{group}/{pattern}"))
        .query_async::<bool>(&mut conn)
        .await
        .unwrap_or(false)
}

/// Waits until `agent`'s worker has recorded its `analytics.*` subscription.
async fn await_subscribed(conn: &redis::aio::MultiplexedConnection, agent: &str) {
    let group = format!("{agent}_workers");
    assert!(
        wait_until_async(Duration::from_secs(10), || subscribed(
            conn.clone(),
            &group,
            "analytics.*"
        ))
        .await,
        "{agent} never recorded its subscription"
    );
}

fn assert_exactly(got: &[String], want: &[String]) {
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "duplicates: {got:?}");
    assert_eq!(unique, want.iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_was_down_gets_what_was_published_meanwhile_once() {
    init_tracing();
    let (server, bus, conn) = fresh().await;
    let agent = unique_agent("down");
    let topic = "analytics.downtime";
    // Published before the agent ever subscribed: not for it (§11's start rule).
    let before = publish(&bus, topic, 0).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let w = worker(&server.url(), &agent).await;
    let group = format!("{agent}_workers");
    assert!(
        wait_until_async(Duration::from_secs(10), || has_group(
            conn.clone(),
            "topic:analytics.downtime",
            &group
        ))
        .await
    );
    let mut want = vec![publish(&bus, topic, 1).await];
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            handled(&agent).len() == 1
        })
        .await
    );
    w.stop().await;

    for i in 2..=30 {
        want.push(publish(&bus, topic, i).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handled(&agent).len(),
        1,
        "nothing is handled while the agent is down"
    );

    let w = worker(&server.url(), &agent).await;
    assert!(
        handled_at_least(&agent, want.len(), 15).await,
        "handled {} of {}",
        handled(&agent).len(),
        want.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // a duplicate would show by now
    let got = handled(&agent);
    assert_exactly(&got, &want);
    assert!(
        !got.contains(&before),
        "an event from before the subscription was delivered"
    );
    w.stop().await;
}

/// A subscriber that is down when a topic first appears still gets the topic's events when
/// it starts: the other subscriber, which handled them at once, does not trim them away
/// (it creates the missing group where the subscription starts before it trims). Before,
/// the first subscriber to handle a new topic trimmed its events before the others' groups
/// existed — seen as `every_subscribing_agent_gets_every_event` failing under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_down_when_a_topic_appears_gets_its_events_despite_the_others_trim() {
    init_tracing();
    let (server, bus, conn) = fresh().await;
    let (fast, late) = (unique_agent("trims"), unique_agent("late"));
    // The late agent subscribes, then goes down before the topic exists.
    let w = worker(&server.url(), &late).await;
    let late_group = format!("{late}_workers");
    await_subscribed(&conn, &late).await;
    w.stop().await;
    // The other handles every event at once and trims every 100 ms.
    let wf = RunningWorker::fast(&server.url(), &fast, |b| {
        b.topic_poll_interval(Duration::from_millis(100))
            .trim_interval(Duration::from_millis(100))
    })
    .await;
    await_subscribed(&conn, &fast).await;
    let topic = format!("analytics.{}", unique_agent("new"));
    let stream = format!("topic:{topic}");
    let mut want = Vec::new();
    for i in 0..20 {
        want.push(publish(&bus, &topic, i).await);
    }
    assert!(handled_at_least(&fast, 20, 10).await);
    // Several trims later, the late agent's events are still there, in its group.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        has_group(conn.clone(), &stream, &late_group).await,
        "the late subscriber's group was not created before the trim"
    );
    let len = xlen(conn.clone(), &stream).await.unwrap();
    assert_eq!(
        len, 20,
        "the topic was trimmed before the late subscriber read it"
    );

    let wl = worker(&server.url(), &late).await;
    assert!(
        handled_at_least(&late, 20, 10).await,
        "the late subscriber handled {} of 20",
        handled(&late).len()
    );
    assert_exactly(&handled(&late), &want);
    // Once both have them, they are trimmed.
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            xlen(conn.clone(), &stream).await.unwrap_or(1) == 0
        })
        .await,
        "handled events were not trimmed"
    );
    wl.stop().await;
    wf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscribing_agent_gets_every_event() {
    init_tracing();
    let (server, bus, conn) = fresh().await;
    let (a, b) = (unique_agent("sub-a"), unique_agent("sub-b"));
    let wa = worker(&server.url(), &a).await;
    let wb = worker(&server.url(), &b).await;
    for agent in [&a, &b] {
        await_subscribed(&conn, agent).await;
    }
    let mut want = Vec::new();
    for i in 0..50 {
        want.push(publish(&bus, "analytics.shared", i).await);
    }
    assert!(
        wait_until_async(Duration::from_secs(15), || async {
            handled(&a).len() >= 50 && handled(&b).len() >= 50
        })
        .await,
        "a handled {}, b {}",
        handled(&a).len(),
        handled(&b).len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_exactly(&handled(&a), &want);
    assert_exactly(&handled(&b), &want);
    wa.stop().await;
    wb.stop().await;
}

#[test]
fn two_processes_of_one_agent_share_its_topic_events() {
    let server = RedisServer::start();
    let url = server.url();
    let mut conn = server.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // `test_worker` has a `proc.*` topic handler for the agent `topic_sub`.
    let agent = "topic_sub";
    let env = [("FABRIC_TOPIC_POLL_INTERVAL_MS", "100".to_string())];
    let procs: Vec<WorkerProcess> = (0..2)
        .map(|_| WorkerProcess::start(&url, agent, &env))
        .collect();
    let bus = rt.block_on(Bus::connect(url.clone())).unwrap();
    // Events published before the agent first subscribed are not for it (§11).
    assert!(wait_until(Duration::from_secs(20), || {
        redis::cmd("HEXISTS")
            .arg("fabric:topic_subscriptions")
            .arg("topic_sub_workers/proc.*")
            .query::<bool>(&mut conn)
            .unwrap_or(false)
    }));
    let warm_up = rt.block_on(publish(&bus, "proc.load", 0));
    // Each process reads its inbox and the topic: 4 blocked readers once both serve it.
    assert!(
        wait_until(Duration::from_secs(20), || blocked_clients(&mut conn) >= 4),
        "both processes did not start serving the topic"
    );
    let mut want = vec![warm_up];
    for i in 1..200 {
        want.push(rt.block_on(publish(&bus, "proc.load", i)));
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            records(&mut conn, "test:done", agent).len() >= want.len()
        }),
        "handled {} of {}",
        records(&mut conn, "test:done", agent).len(),
        want.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let done = records(&mut conn, "test:done", agent);
    let ids: Vec<String> = done
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_exactly(&ids, &want);
    let pids: HashSet<u64> = done.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 2, "both processes must take part: {pids:?}");
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscription_picks_up_a_topic_created_later() {
    init_tracing();
    let (server, bus, conn) = fresh().await;
    let agent = unique_agent("late");
    let w = worker(&server.url(), &agent).await;
    let group = format!("{agent}_workers");
    assert!(
        wait_until_async(Duration::from_secs(10), || subscribed(
            conn.clone(),
            &group,
            "analytics.*"
        ))
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // a few checks find nothing
    let not_ours = publish(&bus, "billing.late", 0).await;
    let want = vec![
        publish(&bus, "analytics.late", 1).await,
        publish(&bus, "analytics.later", 2).await,
    ];
    assert!(
        handled_at_least(&agent, 2, 10).await,
        "{:?}",
        handled(&agent)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_exactly(&handled(&agent), &want);
    assert!(!handled(&agent).contains(&not_ours));
    assert!(!has_group(conn.clone(), "topic:billing.late", &group).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_a_topic_bounded() {
    let server = RedisServer::start();
    let bus = Bus::builder(server.url())
        .topic_retention(100)
        .connect()
        .await
        .unwrap();
    for i in 0..1000 {
        publish(&bus, "retention.test", i).await;
    }
    let mut conn = server.async_conn().await;
    let len = xlen(conn.clone(), "topic:retention.test").await.unwrap();
    // MAXLEN ~ trims whole stream nodes (100 entries each by default).
    assert!((100..=200).contains(&len), "XLEN {len}");
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("fabric:topics")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, ["retention.test"]);
    let e = Bus::builder(server.url())
        .topic_retention(0)
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("topic_retention (FABRIC_TOPIC_RETENTION) must be at least 1"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_topic_handler_retries_then_dead_letters_with_its_group() {
    init_tracing();
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    let mut conn = server.async_conn().await;
    let agent = unique_agent("fails");
    let group = format!("{agent}_workers");
    let w = worker(&server.url(), &agent).await;
    assert!(
        wait_until_async(Duration::from_secs(10), || subscribed(
            conn.clone(),
            &group,
            "failing.always"
        ))
        .await
    );
    let id = publish(&bus, "failing.always", 1).await;
    let dead = "topic:failing.always:dead{topic:failing.always}";
    assert!(
        wait_until_async(Duration::from_secs(15), || async {
            !stream_entries(&mut server.async_conn().await, dead)
                .await
                .is_empty()
        })
        .await,
        "nothing was dead-lettered"
    );
    let entries = stream_entries(&mut conn, dead).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let f = &entries[0].1;
    assert_eq!(entry_field(f, "dead_reason"), Some("max_attempts"));
    assert_eq!(entry_field(f, "dead_group"), Some(group.as_str()));
    assert_eq!(entry_field(f, "dead_stream"), Some("topic:failing.always"));
    assert_eq!(entry_field(f, "dead_attempts"), Some("2"));
    assert_eq!(entry_field(f, "topic"), Some("failing.always"));
    assert!(
        entry_field(f, "dead_error").is_some_and(|e| e.contains("failing on purpose (attempt 2)"))
    );
    let data: serde_json::Value = serde_json::from_str(entry_field(f, "data").unwrap()).unwrap();
    assert_eq!(data["id"], id.as_str());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_secure_mode_each_subscriber_gets_its_own_copy_through_the_router() {
    init_tracing();
    let (publisher, sub1, sub2) = (
        unique_agent("spub"),
        unique_agent("ssub1"),
        unique_agent("ssub2"),
    );
    let redis = SecureRedis::start(&[publisher.clone(), sub1.clone(), sub2.clone()], false);
    redis.prepare().await;
    let router = RunningRouter::serve(&redis.router_url()).await;
    let admin = redis.server.async_conn().await;
    let secure_worker = |agent: String| {
        let redis = &redis;
        async move {
            let bus = redis.agent_bus(&agent).await;
            RunningWorker::fast(&redis.server.url(), &agent, |b| {
                b.bus(bus).topic_poll_interval(Duration::from_millis(100))
            })
            .await
        }
    };
    // Both subscribe (their workers record it under their own keys); sub2 then goes down.
    let w1 = secure_worker(sub1.clone()).await;
    let w2 = secure_worker(sub2.clone()).await;
    for agent in [&sub1, &sub2] {
        let key = keys::agent_topic_subscriptions(agent);
        let field = format!("{agent}_workers/analytics.*");
        assert!(
            wait_until_async(Duration::from_secs(10), || {
                let mut c = admin.clone();
                let (key, field) = (key.clone(), field.clone());
                async move {
                    redis::cmd("HEXISTS")
                        .arg(key)
                        .arg(field)
                        .query_async::<bool>(&mut c)
                        .await
                        .unwrap_or(false)
                }
            })
            .await
        );
    }
    w2.stop().await;
    // The router reads subscriptions at most every scan interval (1 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bus = redis.agent_bus(&publisher).await;
    let mut want = Vec::new();
    for i in 0..20 {
        let r = publish_as(&bus, &publisher, "analytics.sec", i).await;
        assert_eq!(r.stream, keys::outbox(&publisher));
        want.push(r.message_id);
    }
    assert!(
        handled_at_least(&sub1, 20, 10).await,
        "sub1 handled {}",
        handled(&sub1).len()
    );
    // sub2 was down: it gets everything when it comes back.
    let w2 = secure_worker(sub2.clone()).await;
    assert!(
        handled_at_least(&sub2, 20, 10).await,
        "sub2 handled {}",
        handled(&sub2).len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_exactly(&handled(&sub1), &want);
    assert_exactly(&handled(&sub2), &want);
    // Each copy is its agent's own: sub1 cannot read, acknowledge or delete sub2's.
    let mut as_sub1 = fabric_tests::conn_as(&redis.url_of(&sub1)).await;
    let theirs = keys::agent_topic_stream(&sub2, "analytics.sec");
    fabric_tests::assert_noperm(
        &mut as_sub1,
        &[
            redis::cmd("XRANGE").arg(&theirs).arg("-").arg("+").clone(),
            redis::cmd("DEL").arg(&theirs).clone(),
            redis::cmd("XADD")
                .arg(&theirs)
                .arg("*")
                .arg("data")
                .arg("{}")
                .clone(),
            redis::cmd("XADD")
                .arg("topic:analytics.sec")
                .arg("*")
                .arg("data")
                .arg("{}")
                .clone(),
        ],
    )
    .await;
    // An event claiming another sender is rejected into the publisher's outbox dead letters.
    let forged = json!({"id": "msg:forged", "from_agent": sub1, "to_agent": "",
        "message_type": "x", "payload": {}, "timestamp": "", "priority": 2,
        "ttl_seconds": 0, "reply_to": null, "correlation_id": null});
    let mut as_pub = fabric_tests::conn_as(&redis.url_of(&publisher)).await;
    let _: String = redis::cmd("XADD")
        .arg(keys::outbox(&publisher))
        .arg("*")
        .arg("data")
        .arg(forged.to_string())
        .arg("topic")
        .arg("analytics.sec")
        .query_async(&mut as_pub)
        .await
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            bus.rejected(&publisher, 10)
                .await
                .unwrap()
                .iter()
                .any(|d| d.reason.as_str() == "forged_sender")
        })
        .await
    );
    assert!(!handled(&sub1).iter().any(|id| id == "msg:forged"));
    w1.stop().await;
    w2.stop().await;
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_publish_and_subscribe_with_their_own_direct_mode_users() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let mut admin = server.async_conn().await;
    let (publisher, sub) = (unique_agent("pub"), unique_agent("sub"));
    for agent in [&publisher, &sub] {
        fabric_tests::set_agent_user(&mut admin, agent, Mode::Direct, "pw-1234").await;
    }
    Bus::connect(server.url())
        .await
        .unwrap()
        .setup()
        .await
        .unwrap();
    let url_of = |a: &str| format!("redis://{a}:pw-1234@127.0.0.1:{}", server.port());
    let w = worker(&url_of(&sub), &sub).await;
    let group = format!("{sub}_workers");
    assert!(
        wait_until_async(Duration::from_secs(10), || subscribed(
            admin.clone(),
            &group,
            "analytics.*"
        ))
        .await
    );
    let bus = Bus::connect(url_of(&publisher)).await.unwrap();
    let mut want = Vec::new();
    for i in 0..20 {
        let r = publish_as(&bus, &publisher, "analytics.acl", i).await;
        want.push(r.message_id);
    }
    assert!(
        handled_at_least(&sub, 20, 10).await,
        "handled {}",
        handled(&sub).len()
    );
    assert_exactly(&handled(&sub), &want);
    // An agent may not delete a topic, nor another agent's group on it.
    let mut as_pub = fabric_tests::conn_as(&url_of(&publisher)).await;
    fabric_tests::assert_noperm(
        &mut as_pub,
        &[
            redis::cmd("DEL").arg("topic:analytics.acl").clone(),
            redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg("topic:analytics.acl")
                .arg(&group)
                .clone(),
        ],
    )
    .await;
    w.stop().await;
}
