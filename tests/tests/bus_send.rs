//! What `send` and `send_batch` report: `Ok` exactly when the message is in the inbox.
//! A notification Redis refuses never turns a queued message into an error (a caller that
//! retried would duplicate it), and a batch Redis partly refuses says which messages were
//! queued and which were not.

use fabric_tests::{RedisServer, init_tracing};
use fabric_worker::{Bus, Error, Message, keys};
use serde_json::json;

async fn xlen(conn: &mut redis::aio::MultiplexedConnection, agent: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(keys::inbox(agent))
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refused_notification_does_not_fail_a_queued_send() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let mut admin = server.async_conn().await;
    // A sender that may append to inboxes but publish on no channel at all.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("sender")
        .arg("reset")
        .arg("on")
        .arg(">sender-pw")
        .arg("resetchannels")
        .arg("~agent:*")
        .arg("+xadd")
        .arg("+ping")
        .arg("+hello")
        .arg("+client|setname")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://sender:sender-pw@127.0.0.1:{}", server.port());
    let bus = Bus::connect(&url).await.unwrap(); // notifications on, as by default

    // The channel really is refused to this user.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let e = redis::cmd("PUBLISH")
        .arg(keys::new_message_channel("percy"))
        .arg("x")
        .query_async::<i64>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
    );

    let receipt = bus
        .send(Message::new("coder", "percy", "task", json!({"n": 1})))
        .await
        .expect("the message is queued, so send must say Ok");
    assert_eq!(receipt.to, "percy");
    assert_eq!(xlen(&mut admin, "percy").await, 1);

    let receipts = bus
        .send_batch(vec![
            Message::new("coder", "percy", "task", json!({"n": 2})),
            Message::new("coder", "memory", "task", json!({"n": 3})),
            Message::new("coder", "percy", "task", json!({"n": 4})),
        ])
        .await
        .expect("every message is queued");
    assert_eq!(receipts.len(), 3);
    assert_eq!(xlen(&mut admin, "percy").await, 3);
    assert_eq!(xlen(&mut admin, "memory").await, 1);
}

#[tokio::test]
async fn a_partly_refused_batch_says_what_was_queued_and_what_was_not() {
    init_tracing();
    let server = RedisServer::start();
    let mut admin = server.async_conn().await;
    let good = fabric_tests::unique_agent("good");
    let bad = fabric_tests::unique_agent("bad");
    // Something else owns the bad agent's inbox key: every XADD there is refused.
    let _: () = redis::cmd("SET")
        .arg(keys::inbox(&bad))
        .arg("not a stream")
        .query_async(&mut admin)
        .await
        .unwrap();
    let bus = Bus::connect(server.url()).await.unwrap();
    let batch = vec![
        Message::new("coder", &good, "task", json!({"n": 1})),
        Message::new("coder", &bad, "task", json!({"n": 2})),
        Message::new("coder", &good, "task", json!({"n": 3})),
    ];
    let bad_id = batch[1].id.clone();
    match bus.send_batch(batch).await {
        Err(Error::PartlySent { queued, failed }) => {
            assert_eq!(queued.len(), 2);
            assert!(queued.iter().all(|r| r.to == good));
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].message_id, bad_id);
            assert!(failed[0].error.contains("WRONGTYPE"), "{:?}", failed[0]);
            let text = Error::PartlySent { queued, failed }.to_string();
            assert!(text.starts_with("2 of 3 messages were queued"), "{text}");
        }
        other => panic!("expected PartlySent, got {other:?}"),
    }
    assert_eq!(xlen(&mut admin, &good).await, 2);

    // Refused entirely: the plain error, nothing queued.
    let e = bus
        .send(Message::new("coder", &bad, "task", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Redis { .. }), "{e:?}");
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
}
