//! Secure mode, tried as an attacker holding one agent's credentials would: against a real
//! `redis-server` running the ACL file `fabric_worker::acl` generates, connected as `percy`,
//! every attack on another agent's messages fails, and what the router refuses is visible
//! (a dead letter with its reason).

use std::time::Duration;

use fabric_tests::{RunningRouter, SecureRedis, init_tracing, unique_agent, wait_until_async};
use fabric_worker::bus::DeadReason;
use fabric_worker::{Bus, Error, Message, keys};
use redis::aio::MultiplexedConnection;
use serde_json::json;

struct Agents {
    percy: String,
    coder: String,
    memory: String,
}

fn agents() -> Agents {
    Agents {
        percy: unique_agent("percy"),
        coder: unique_agent("coder"),
        memory: unique_agent("memory"),
    }
}

async fn conn(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Runs `cmd` as the attacker and checks Redis refused it with NOPERM.
async fn refused(c: &mut MultiplexedConnection, cmd: &redis::Cmd, what: &str) {
    match cmd.query_async::<redis::Value>(c).await {
        Err(e) => assert_eq!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "{what}: expected NOPERM, got {e}"
        ),
        Ok(v) => panic!("{what} must be refused, got {v:?}"),
    }
}

fn cmd(parts: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(parts[0]);
    for p in &parts[1..] {
        c.arg(*p);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_touch_another_agents_keys_or_the_server() {
    init_tracing();
    let a = agents();
    let redis = SecureRedis::start(&[a.percy.clone(), a.coder.clone(), a.memory.clone()], false);
    redis.prepare().await;
    let mut admin = redis.server.async_conn().await;
    // coder has a message waiting, read and pending in its worker group.
    let coder_inbox = keys::inbox(&a.coder);
    let id: String = redis::cmd("XADD")
        .arg(&coder_inbox)
        .arg("*")
        .arg("data")
        .arg(
            Message::new(&a.memory, &a.coder, "task", json!({}))
                .to_data()
                .unwrap(),
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let coder_group = keys::default_group(&a.coder);
    let mut percy = conn(&redis.url_of(&a.percy)).await;
    let c = a.coder.as_str();
    let inbox = coder_inbox.as_str();
    let dead = keys::dead_letters(inbox);
    let results = keys::results(c);
    let replies = format!("agent:{c}:replies:0123");
    let outbox = keys::outbox(c);
    let channel = keys::new_message_channel(c);
    let seen = keys::forwarded(inbox);
    let max_id = "18446744073709551615-18446744073709551615";
    let attacks: Vec<(redis::Cmd, &str)> = vec![
        (
            cmd(&["XADD", inbox, "MAXLEN", "0", "*", "data", "x"]),
            "XADD MAXLEN 0 to another inbox",
        ),
        (
            cmd(&["XADD", inbox, max_id, "data", "x"]),
            "XADD the last possible id to another inbox",
        ),
        (
            cmd(&["XADD", inbox, "*", "data", "{}"]),
            "XADD to another inbox",
        ),
        (cmd(&["XTRIM", inbox, "MAXLEN", "0"]), "XTRIM another inbox"),
        (cmd(&["XDEL", inbox, &id]), "XDEL in another inbox"),
        (cmd(&["XRANGE", inbox, "-", "+"]), "XRANGE another inbox"),
        (
            cmd(&[
                "XREADGROUP",
                "GROUP",
                &coder_group,
                "x",
                "STREAMS",
                inbox,
                ">",
            ]),
            "XREADGROUP another inbox",
        ),
        (
            cmd(&["XCLAIM", inbox, &coder_group, "percy", "0", &id]),
            "XCLAIM another agent's entry",
        ),
        (
            cmd(&["XAUTOCLAIM", inbox, &coder_group, "percy", "0", "0-0"]),
            "XAUTOCLAIM another inbox",
        ),
        (
            cmd(&["XACK", inbox, &coder_group, &id]),
            "XACK in another inbox",
        ),
        (
            cmd(&["XGROUP", "SETID", inbox, &coder_group, "$"]),
            "XGROUP SETID on another inbox",
        ),
        (
            cmd(&["XGROUP", "DESTROY", inbox, &coder_group]),
            "XGROUP DESTROY on another inbox",
        ),
        (
            cmd(&["XGROUP", "CREATE", inbox, "evil", "0"]),
            "XGROUP CREATE on another inbox",
        ),
        (
            cmd(&["XADD", &dead, "*", "data", "{}"]),
            "XADD to another agent's dead letters",
        ),
        (
            cmd(&["XADD", &results, "*", "data", "{}"]),
            "XADD to another agent's results",
        ),
        (
            cmd(&["XADD", &replies, "*", "data", "{}"]),
            "XADD to another agent's reply stream",
        ),
        (
            cmd(&["XADD", &outbox, "*", "data", "{}"]),
            "XADD to another agent's outbox (sending as it)",
        ),
        (
            cmd(&["ZADD", &seen, "0", "x/msg:1"]),
            "write the router's memory of another inbox",
        ),
        (cmd(&["DEL", inbox]), "DEL another inbox"),
        (
            cmd(&["PUBLISH", &channel, "{}"]),
            "PUBLISH on another agent's notification channel",
        ),
        (
            cmd(&[
                "EVAL",
                "redis.call('SET', KEYS[1], 1) while true do end",
                "1",
                "x",
            ]),
            "EVAL a script that writes and loops",
        ),
        (cmd(&["EVAL", "return 1", "0"]), "EVAL"),
        (cmd(&["SCRIPT", "LOAD", "return 1"]), "SCRIPT LOAD"),
        (
            cmd(&[
                "FUNCTION",
                "LOAD",
                "REPLACE",
                "#!lua name=evil\nredis.register_function('evil', function() return 1 end)",
            ]),
            "FUNCTION LOAD",
        ),
        (cmd(&["FUNCTION", "FLUSH"]), "FUNCTION FLUSH"),
        (
            cmd(&[
                "FCALL",
                "fabric_forward",
                "2",
                inbox,
                &seen,
                "m",
                "0",
                "1",
                "data",
                "{}",
            ]),
            "FCALL fabric_forward into another inbox",
        ),
        (
            cmd(&["FCALL", "fabric_trim", "1", inbox]),
            "FCALL fabric_trim on another inbox",
        ),
        (cmd(&["CLIENT", "KILL", "TYPE", "normal"]), "CLIENT KILL"),
        (cmd(&["CLIENT", "LIST"]), "CLIENT LIST"),
        (cmd(&["SHUTDOWN", "NOSAVE"]), "SHUTDOWN"),
        (cmd(&["FLUSHALL"]), "FLUSHALL"),
        (cmd(&["CONFIG", "SET", "maxmemory", "1"]), "CONFIG SET"),
        (cmd(&["KEYS", "*"]), "KEYS"),
        (cmd(&["SCAN", "0"]), "SCAN"),
        (cmd(&["ACL", "LIST"]), "ACL LIST"),
        (cmd(&["ACL", "SETUSER", "percy", "+@all"]), "ACL SETUSER"),
        (cmd(&["MONITOR"]), "MONITOR"),
        (cmd(&["GET", "some:key"]), "GET an unrelated key"),
    ];
    for (c, what) in &attacks {
        refused(&mut percy, c, what).await;
    }
    // DEBUG is off on this server anyway; the ACL refuses it too.
    let dry: redis::RedisResult<String> = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg(&a.percy)
        .arg("DEBUG")
        .arg("SLEEP")
        .arg("0")
        .query_async(&mut admin)
        .await;
    let text = match dry {
        Ok(s) => s,
        Err(e) => e.to_string(),
    };
    assert!(
        text.contains("no permissions to run the 'debug' command"),
        "{text}"
    );
    // Subscribing to another agent's notifications.
    let client = redis::Client::open(redis.url_of(&a.percy)).unwrap();
    let mut ps = client.get_async_pubsub().await.unwrap();
    let e = ps.subscribe(&channel).await.unwrap_err();
    assert_eq!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
        "{e}"
    );
    // coder's message is still there, untouched and still pending nowhere else.
    let len: u64 = redis::cmd("XLEN")
        .arg(inbox)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(len, 1);
    // The server still answers.
    let _: String = redis::cmd("PING").query_async(&mut admin).await.unwrap();

    // The library's own calls, as percy: sending as another agent is refused by Redis.
    let bus = redis.agent_bus(&a.percy).await;
    let e = bus
        .send(Message::new(&a.coder, &a.memory, "task", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    let e = bus.receive(&a.coder, Default::default()).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    // What percy may do: its own keys, its own functions, the shared topics.
    bus.create_group(&a.percy, None).await.unwrap();
    bus.queue_status(&a.percy, None).await.unwrap();
    bus.publish("analytics.insights", json!({"x": 1}), Some(&a.percy))
        .await
        .unwrap();
    let _: i64 = cmd(&["FCALL", "fabric_trim", "1", &keys::inbox(&a.percy)])
        .query_async(&mut percy)
        .await
        .unwrap();
}

/// What percy writes into its own outbox, raw, bypassing the library.
async fn raw_outbox(percy: &mut MultiplexedConnection, agent: &str, fields: &[(&str, String)]) {
    let mut c = redis::cmd("XADD");
    c.arg(keys::outbox(agent)).arg("*");
    for (k, v) in fields {
        c.arg(*k).arg(v);
    }
    let _: String = c.query_async(percy).await.unwrap();
}

async fn rejected(bus: &Bus, agent: &str, n: usize) -> Vec<(String, String)> {
    // The sender's own view: `Bus::rejected` as percy, under percy's user.
    let ok = wait_until_async(Duration::from_secs(10), || async {
        bus.rejected(agent, 100).await.map(|r| r.len()).unwrap_or(0) >= n
    })
    .await;
    let letters = bus.rejected(agent, 100).await.unwrap();
    assert!(ok, "expected {n} rejections of {agent}, got {letters:?}");
    letters
        .iter()
        .map(|d| (d.reason.as_str().to_owned(), d.error.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_stamps_the_sender_and_rejects_forgeries_visibly() {
    init_tracing();
    let a = agents();
    let redis = SecureRedis::start(&[a.percy.clone(), a.coder.clone(), a.memory.clone()], false);
    redis.prepare().await;
    let router = RunningRouter::serve(&redis.router_url()).await;
    let mut admin = redis.server.async_conn().await;
    let mut percy = conn(&redis.url_of(&a.percy)).await;
    let percy_bus = redis.agent_bus(&a.percy).await;

    // A genuine message, sent twice (a sender that could not confirm its first send):
    // delivered once, stamped with its sender.
    let m = Message::new(&a.percy, &a.memory, "task", json!({"n": 1}));
    percy_bus.send(m.clone()).await.unwrap();
    percy_bus.send(m.clone()).await.unwrap();
    let memory = redis.agent_bus(&a.memory).await;
    let got = receive_within(&memory, &a.memory, 5).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.id, m.id);
    assert_eq!(got[0].message.sender.as_deref(), Some(a.percy.as_str()));

    // Forgeries written raw into percy's own outbox.
    let forged_from = Message::new(&a.coder, &a.memory, "task", json!({"forged": "from"}));
    raw_outbox(
        &mut percy,
        &a.percy,
        &[("data", forged_from.to_data().unwrap())],
    )
    .await;
    let mut bad_reply_to = Message::new(&a.percy, &a.memory, "task", json!({"forged": "reply_to"}));
    bad_reply_to.reply_to = Some(keys::results(&a.coder));
    raw_outbox(
        &mut percy,
        &a.percy,
        &[("data", bad_reply_to.to_data().unwrap())],
    )
    .await;
    // A stamp of its own choosing is not copied: the router writes its own.
    let self_stamped = Message::new(&a.percy, &a.memory, "task", json!({"stamp": "mine"}));
    raw_outbox(
        &mut percy,
        &a.percy,
        &[
            ("data", self_stamped.to_data().unwrap()),
            ("sender", a.coder.clone()),
        ],
    )
    .await;
    // A reply aimed at another agent's inbox.
    let reply = Message::new(&a.percy, &a.coder, "response", json!({}));
    raw_outbox(
        &mut percy,
        &a.percy,
        &[
            ("data", reply.to_data().unwrap()),
            ("deliver_to", keys::inbox(&a.coder)),
        ],
    )
    .await;
    let nobody = unique_agent("nobody");
    let unknown = Message::new(&a.percy, &nobody, "task", json!({}));
    raw_outbox(
        &mut percy,
        &a.percy,
        &[("data", unknown.to_data().unwrap())],
    )
    .await;
    let big = Message::new(
        &a.percy,
        &a.memory,
        "task",
        json!({"blob": "x".repeat(1024 * 1024)}),
    );
    raw_outbox(&mut percy, &a.percy, &[("data", big.to_data().unwrap())]).await;
    raw_outbox(&mut percy, &a.percy, &[("data", "not json".into())]).await;

    let reasons = rejected(&percy_bus, &a.percy, 6).await;
    let has = |r: DeadReason, text: &str| {
        reasons
            .iter()
            .any(|(reason, error)| reason == r.as_str() && error.contains(text))
    };
    assert!(
        has(DeadReason::ForgedSender, "sends as itself only"),
        "{reasons:?}"
    );
    assert!(
        has(
            DeadReason::BadReplyTo,
            "replies may only go to a stream of the sender"
        ),
        "{reasons:?}"
    );
    assert!(
        has(DeadReason::BadReplyTo, "may only be delivered to"),
        "{reasons:?}"
    );
    assert!(has(DeadReason::UnknownRecipient, &nobody), "{reasons:?}");
    assert!(
        has(DeadReason::TooLarge, "more than the limit"),
        "{reasons:?}"
    );
    assert!(has(DeadReason::InvalidEnvelope, ""), "{reasons:?}");
    // The self-stamped one was delivered, with the router's stamp, not percy's claim.
    let got = receive_within(&memory, &a.memory, 5).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].message.id, self_stamped.id);
    assert_eq!(got[0].message.sender.as_deref(), Some(a.percy.as_str()));
    assert!(!got.iter().any(|r| r.message.id == forged_from.id));
    // Nothing reached coder's inbox.
    let len: u64 = redis::cmd("XLEN")
        .arg(keys::inbox(&a.coder))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(len, 0);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_reply_is_refused_and_the_real_one_accepted() {
    init_tracing();
    let a = agents();
    let redis = SecureRedis::start(&[a.percy.clone(), a.coder.clone(), a.memory.clone()], false);
    redis.prepare().await;
    let router = RunningRouter::serve(&redis.router_url()).await;
    let admin = redis.server.async_conn().await;
    let coder = redis.agent_bus(&a.coder).await;
    let memory = redis.agent_bus(&a.memory).await;
    let percy = redis.agent_bus(&a.percy).await;

    // coder asks memory, and waits.
    let ask = Message::new(&a.coder, &a.memory, "task", json!({"q": "facts"}));
    let ask_id = ask.id.clone();
    let waiting = tokio::spawn({
        let coder = coder.clone();
        async move { coder.request(ask, Duration::from_secs(20)).await }
    });
    // memory receives the request (and so learns coder's reply stream).
    let got = receive_within(&memory, &a.memory, 10).await;
    assert_eq!(got.len(), 1);
    let reply_to = got[0].message.reply_to.clone().unwrap();
    assert!(
        reply_to.starts_with(&format!("agent:{}:replies:", a.coder)),
        "{reply_to}"
    );

    // percy, knowing the stream (say, leaked), answers for memory: the router delivers it,
    // stamped percy, and coder's request refuses it.
    let mut forged = Message::new(&a.percy, &a.coder, "response", json!({"answer": "forged"}));
    forged.correlation_id = got[0].message.correlation_id.clone();
    let mut percy_conn = conn(&redis.url_of(&a.percy)).await;
    raw_outbox(
        &mut percy_conn,
        &a.percy,
        &[
            ("data", forged.to_data().unwrap()),
            ("in_reply_to", ask_id.clone()),
            ("deliver_to", reply_to.clone()),
        ],
    )
    .await;
    // It does arrive in coder's reply stream (the router checked only that it is coder's)…
    let seen = keys::forwarded(&reply_to);
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            let mut c = admin.clone();
            let s = seen.clone();
            async move {
                redis::cmd("ZCARD")
                    .arg(s)
                    .query_async::<u64>(&mut c)
                    .await
                    .unwrap_or(0)
                    >= 1
            }
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the forged reply was accepted");
    let _ = percy;

    // …and memory's real answer, written the way its worker writes replies, is accepted.
    let mut real = Message::new(&a.memory, &a.coder, "response", json!({"answer": "real"}));
    real.correlation_id = got[0].message.correlation_id.clone();
    let mut memory_conn = conn(&redis.url_of(&a.memory)).await;
    raw_outbox(
        &mut memory_conn,
        &a.memory,
        &[
            ("data", real.to_data().unwrap()),
            ("in_reply_to", ask_id),
            ("deliver_to", reply_to),
        ],
    )
    .await;
    let reply = waiting.await.unwrap().unwrap();
    assert_eq!(reply.payload["answer"], "real");
    assert_eq!(reply.sender.as_deref(), Some(a.memory.as_str()));
    router.stop().await;
}

/// What `agent`'s inbox gives within `secs` seconds.
async fn receive_within(bus: &Bus, agent: &str, secs: u64) -> Vec<fabric_worker::bus::Received> {
    bus.receive(
        agent,
        fabric_worker::bus::ReceiveOptions::default().block(Duration::from_secs(secs)),
    )
    .await
    .unwrap()
}
