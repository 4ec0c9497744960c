//! The Bus client against a real redis-server: receive / acknowledge / queue status,
//! notifications and topics, peek and pending, and the errors a caller can cause.

use std::time::{Duration, Instant};

use fabric_tests::{RedisServer, init_tracing, unique_agent};
use fabric_worker::bus::ReceiveOptions;
use fabric_worker::{Bus, Error, Message, Priority, keys};
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_acknowledge_and_queue_status() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("inbox");
    let bus = Bus::connect(server.url()).await.unwrap();
    let sent: Vec<Message> = (0..5)
        .map(|i| Message::new("tester", &agent, "event", json!({"i": i})))
        .collect();
    bus.send_batch(sent.clone()).await.unwrap();

    let st = bus.queue_status(&agent, None).await.unwrap();
    assert_eq!(
        (
            st.queue_depth,
            st.pending,
            st.stream_length,
            st.group_exists
        ),
        (5, 0, 5, false),
        "{st:?}"
    );

    let got = bus
        .receive(&agent, ReceiveOptions::default().count(3))
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].message, sent[0]);
    let json = got[0].to_json();
    assert_eq!(json["_consumer_group"], format!("{agent}_workers"));
    assert_eq!(json["_stream_id"], got[0].stream_id.as_str());
    assert_eq!(json["payload"], json!({"i": 0}));
    let st = bus.queue_status(&agent, None).await.unwrap();
    assert_eq!(
        (st.queue_depth, st.pending, st.undelivered),
        (5, 3, Some(2)),
        "{st:?}"
    );
    assert_eq!(st.consumers.len(), 1);
    assert_eq!(st.consumers[0].pending, 3);
    assert!(st.oldest_pending_age_ms.is_some());
    let pending = bus.pending(&agent, None, 10).await.unwrap();
    assert_eq!(pending.len(), 3);
    assert_eq!(pending[0].deliveries, 1);

    let ids = vec![
        got[0].stream_id.clone(),
        got[1].stream_id.clone(),
        "1-1".to_string(),
    ];
    let acked = bus.acknowledge(&agent, &ids, None).await.unwrap();
    let flags: Vec<bool> = acked.iter().map(|a| a.acked).collect();
    assert_eq!(
        flags,
        [true, true, false],
        "an id that was not pending is reported as such"
    );
    let st = bus.queue_status(&agent, None).await.unwrap();
    assert_eq!((st.queue_depth, st.pending), (3, 1), "{st:?}");

    // A blocking receive on an empty inbox returns empty at its block time.
    let rest = bus
        .receive(&agent, ReceiveOptions::default().count(10))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    let t0 = Instant::now();
    let none = bus
        .receive(
            &agent,
            ReceiveOptions::default().block(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // Peek reads without consuming.
    let (peeked, next) = bus.peek(&agent, "0", 100, None).await.unwrap();
    assert_eq!(peeked.len(), 5);
    assert_eq!(next, peeked[4].stream_id);
    assert_eq!(peeked[2].message.as_ref().unwrap().payload, json!({"i": 2}));
    assert_eq!(
        bus.queue_status(&agent, None).await.unwrap().pending,
        3,
        "peek changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_topics_use_the_python_bus_format() {
    init_tracing();
    let server = RedisServer::start();
    let agent = unique_agent("notified");
    let bus = Bus::connect(server.url()).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe(keys::new_message_channel(&agent))
        .await
        .unwrap();
    sub.subscribe("analytics.insights").await.unwrap();
    let mut msgs = sub.on_message();

    let m = Message::new("coder", &agent, "task", json!({"task_type": "x"}))
        .with_priority(Priority::Urgent);
    bus.send(m.clone()).await.unwrap();
    let note = msgs.next().await.unwrap();
    assert_eq!(
        note.get_channel_name(),
        format!("agent.{agent}.new_message")
    );
    let body: Value = serde_json::from_str(&note.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"from": "coder", "type": "task", "priority": 4, "message_id": m.id})
    );

    // A batch rings each recipient's doorbell once.
    let batch: Vec<Message> = (0..3)
        .map(|i| Message::new("coder", &agent, "event", json!({"i": i})))
        .collect();
    bus.send_batch(batch.clone()).await.unwrap();
    let note = msgs.next().await.unwrap();
    let body: Value = serde_json::from_str(&note.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(body["message_id"], batch[2].id.as_str());
    assert_eq!(body["count"], 3);

    let n = bus
        .publish(
            "analytics.insights",
            json!({"pattern": "spike"}),
            Some("monitor"),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let event = msgs.next().await.unwrap();
    assert_eq!(event.get_channel_name(), "analytics.insights");
    let body: Value = serde_json::from_str(&event.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(body["data"], json!({"pattern": "spike"}));
    assert_eq!(body["from"], "monitor");
    assert_eq!(body["topic"], "analytics.insights");
    assert_eq!(body["timestamp"].as_str().unwrap().len(), 26);

    // Notifications can be turned off.
    let quiet = Bus::builder(server.url())
        .notify(false)
        .connect()
        .await
        .unwrap();
    quiet
        .send(Message::new("coder", &agent, "event", json!({})))
        .await
        .unwrap();
    bus.publish("analytics.insights", json!({"after": true}), None)
        .await
        .unwrap();
    let next = msgs.next().await.unwrap();
    assert_eq!(
        next.get_channel_name(),
        "analytics.insights",
        "no notification from the quiet bus"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_errors_are_clear_and_nothing_is_written() {
    init_tracing();
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    let agent = unique_agent("strict");
    let cases: Vec<(Result<(), Error>, &str)> = vec![
        (
            bus.send(Message::new("coder", "bad agent", "task", json!({})))
                .await
                .map(|_| ()),
            "invalid to_agent \"bad agent\"",
        ),
        (
            bus.send(Message::new("coder", &agent, "task", json!([1, 2])))
                .await
                .map(|_| ()),
            "invalid payload",
        ),
        (
            bus.send(Message::new("co:der", &agent, "task", json!({})))
                .await
                .map(|_| ()),
            "invalid from_agent",
        ),
        (
            bus.send(Message::new("coder", &agent, "has space", json!({})))
                .await
                .map(|_| ()),
            "invalid message type",
        ),
        (
            bus.receive(&agent, ReceiveOptions::default().count(0))
                .await
                .map(|_| ()),
            "invalid count",
        ),
        (
            bus.receive(
                &agent,
                ReceiveOptions::default().block(Duration::from_secs(3600)),
            )
            .await
            .map(|_| ()),
            "invalid block",
        ),
        (
            bus.acknowledge(&agent, &["msg:abc".into()], None)
                .await
                .map(|_| ()),
            "invalid stream id",
        ),
        (
            bus.publish("has space", json!({}), None).await.map(|_| ()),
            "invalid topic",
        ),
        (
            bus.queue_status("x{y}", None).await.map(|_| ()),
            "invalid agent id",
        ),
    ];
    for (r, expected) in cases {
        let e = r.unwrap_err().to_string();
        assert!(
            e.starts_with(expected),
            "{e:?} should start with {expected:?}"
        );
    }
    // A batch with one bad message writes nothing.
    let batch = vec![
        Message::new("coder", &agent, "event", json!({})),
        Message::new("coder", &agent, "event", json!("no")),
    ];
    assert!(bus.send_batch(batch).await.is_err());
    assert_eq!(
        bus.queue_status(&agent, None).await.unwrap().stream_length,
        0
    );
    // An unreachable server is one clear error.
    let err = Bus::connect("redis://127.0.0.1:1").await.unwrap_err();
    assert!(err.is_connection_error());
    assert!(
        err.to_string()
            .starts_with("cannot connect to Redis at redis://127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_topic_events_by_name_and_pattern() {
    init_tracing();
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    let agent = unique_agent("sub");
    let notes = format!("agent.{agent}.new_message");
    let mut sub = bus
        .subscribe(&["analytics.*", "system.alerts", &notes])
        .await
        .unwrap();

    assert_eq!(
        bus.publish(
            "analytics.insights",
            json!({"pattern": "spike"}),
            Some("monitor")
        )
        .await
        .unwrap(),
        1
    );
    let e = sub.next().await.unwrap();
    assert_eq!(e.topic, "analytics.insights");
    assert_eq!(e.pattern.as_deref(), Some("analytics.*"));
    assert_eq!(e.data, json!({"pattern": "spike"}));
    assert_eq!(e.from.as_deref(), Some("monitor"));
    assert!(e.timestamp.is_some());

    // A foreign publisher's plain payload comes through as it is.
    let mut conn = server.async_conn().await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg("system.alerts")
        .arg("disk full")
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = sub.next().await.unwrap();
    assert_eq!(
        (e.topic.as_str(), e.pattern.as_deref()),
        ("system.alerts", None)
    );
    assert_eq!(e.data, json!("disk full"));
    assert_eq!(e.from, None);

    // New-message notifications are topics too.
    let m = Message::new("coder", &agent, "task", json!({}));
    bus.send(m.clone()).await.unwrap();
    let e = sub.next().await.unwrap();
    assert_eq!(e.topic, notes);
    assert_eq!(e.data["message_id"], m.id.as_str());

    assert!(bus.subscribe(&[]).await.is_err());
    assert!(
        bus.subscribe(&["bad topic"])
            .await
            .unwrap_err()
            .to_string()
            .starts_with("invalid topic")
    );
}

#[tokio::test]
async fn groups_agents_and_stream_info_describe_inboxes() {
    init_tracing();
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    let agent = unique_agent("groups");
    assert!(bus.groups(&agent).await.unwrap().is_empty());
    assert_eq!(bus.stream_info(&agent).await.unwrap(), None);
    bus.create_group(&agent, None).await.unwrap();
    bus.create_group(&agent, Some("auditors")).await.unwrap();
    bus.create_group(&agent, Some("auditors")).await.unwrap(); // existing: fine
    for n in 0..3 {
        bus.send(Message::new("coder", &agent, "task", json!({ "n": n })))
            .await
            .unwrap();
    }
    let got = bus
        .receive(&agent, ReceiveOptions::default().count(2))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let mut groups = bus.groups(&agent).await.unwrap();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["auditors", keys::default_group(&agent).as_str()]);
    let (auditors, workers) = (&groups[0], &groups[1]);
    assert_eq!((auditors.pending, auditors.lag), (0, Some(3)));
    assert_eq!((workers.pending, workers.lag), (2, Some(1)));
    assert_eq!(workers.acknowledged(), Some(0));
    assert_eq!(workers.last_delivered_id, got[1].stream_id);
    let info = bus.stream_info(&agent).await.unwrap().unwrap();
    assert_eq!((info.length, info.groups), (3, 2));
    assert!(bus.agents().await.unwrap().contains(&agent));
    let e = bus.groups("not an agent").await.unwrap_err().to_string();
    assert!(e.starts_with("invalid agent id"), "{e}");
}
