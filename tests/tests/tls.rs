//! TLS (`rediss://`): against TLS-only `redis-server`s (`--port 0 --tls-port …`) whose
//! certificates a test CA made with rcgen signed. Every connection that works here went
//! through TLS (there is no plain port), and each refusal is checked by its message.

use std::time::{Duration, Instant};

use fabric_tests::{RedisCluster, RedisServer, TestPki, WorkerProcess, init_tracing, unique_agent};
use fabric_worker::prelude::*;
use fabric_worker::{Error, bus::ReceiveOptions};
use serde_json::json;

/// The Bus sends, receives (a blocking read on a dedicated connection), subscribes (Pub/Sub)
/// and requests over TLS with the right CA; a worker process configured only through the
/// environment (`REDIS_URL=rediss://…`, `FABRIC_TLS_CA_FILE`) handles the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_and_worker_work_over_tls_with_the_right_ca() {
    init_tracing();
    let pki = TestPki::generate();
    let server = RedisServer::start_tls(&pki, false);
    let url = server.url();
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
    let bus = Bus::builder(&url)
        .tls_ca_file(pki.ca())
        .connect()
        .await
        .expect("connect over TLS with the test CA");

    // Send and receive through a consumer group (a blocking XREADGROUP on its own connection).
    let agent = unique_agent("tls-inbox");
    let receipt = bus
        .send(Message::new(
            "sender",
            &agent,
            "note",
            json!({"over": "tls"}),
        ))
        .await
        .unwrap();
    let got = bus
        .receive(
            &agent,
            ReceiveOptions::default().block(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].message.id, receipt.message_id);
    assert_eq!(got[0].message.payload, json!({"over": "tls"}));

    // Pub/Sub has a client of its own: it must use TLS too.
    let mut sub = bus.subscribe(&["tls.news"]).await.unwrap();
    bus.publish("tls.news", json!({"n": 1}), Some("sender"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the event arrives")
        .expect("the subscription is alive");
    assert_eq!(event.data, json!({"n": 1}));

    // A worker process that knows TLS only from its environment answers a request (its
    // reads and the bus's reply listener are dedicated TLS connections).
    let worker_agent = unique_agent("tls-worker");
    let mut worker = WorkerProcess::start(
        &url,
        &worker_agent,
        &[(
            "FABRIC_TLS_CA_FILE",
            pki.ca().to_string_lossy().into_owned(),
        )],
    );
    let reply = bus
        .request(
            Message::new("caller", &worker_agent, "echo", json!({"hello": "tls"})),
            Duration::from_secs(10),
        )
        .await
        .expect("the worker over TLS replies");
    assert_eq!(reply.from_agent, worker_agent);
    assert_eq!(
        reply.payload["echo"],
        json!({"hello": "tls"}),
        "{}",
        reply.payload
    );
    worker.signal("TERM");
    assert_eq!(worker.wait_timeout(Duration::from_secs(10)), Some(0));
}

/// A server whose certificate another CA signed is refused, with the CA file and with the
/// built-in roots (verification is on by default), and the error says what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    init_tracing();
    let pki = TestPki::generate();
    let other = TestPki::generate();
    let server = RedisServer::start_tls(&pki, false);

    let err = Bus::builder(server.url())
        .tls_ca_file(other.ca())
        .connect()
        .await
        .expect_err("a certificate signed by an untrusted CA must be refused");
    let text = err.to_string();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        text.contains("TLS connection to Redis at rediss://127.0.0.1:")
            && text.contains("invalid peer certificate")
            && text.contains("not signed by a CA this client trusts")
            && text.contains("FABRIC_TLS_CA_FILE"),
        "{text}"
    );
    assert!(err.is_connection_error());

    // No CA file: the built-in (public) roots do not include the test CA either.
    let err = Bus::builder(server.url())
        .connect()
        .await
        .expect_err("without the CA the test certificate must be refused");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );

    // Certificate checks cannot be turned off.
    let err = Bus::builder(format!("{}/#insecure", server.url()))
        .connect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("#insecure") && err.to_string().contains("not supported"),
        "{err}"
    );
}

/// A plain `redis://` URL to the TLS port fails with an error within the timeouts, not a
/// hang; and TLS files with a plain URL are refused before connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_url_to_the_tls_port_fails_quickly() {
    init_tracing();
    let pki = TestPki::generate();
    let server = RedisServer::start_tls(&pki, false);
    let plain = format!("redis://127.0.0.1:{}", server.port());

    let started = Instant::now();
    let err = Bus::builder(&plain)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect_err("plain RESP to a TLS port cannot work");
    let took = started.elapsed();
    let text = err.to_string();
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to fail: {text}"
    );
    assert!(err.is_connection_error(), "{err:?}");
    assert!(
        text.contains(&format!("cannot connect to Redis at {plain}"))
            && text.contains("if this port only accepts TLS, use a rediss:// URL"),
        "{text}"
    );

    let err = Bus::builder(&plain)
        .tls_ca_file(pki.ca())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("does not use TLS") && err.to_string().contains("rediss://"),
        "{err}"
    );
}

/// `--tls-auth-clients yes`: no client certificate, or one from another CA, is refused;
/// the right one connects, and every connection of the bus presents it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    init_tracing();
    let pki = TestPki::generate();
    let other = TestPki::generate();
    let server = RedisServer::start_tls(&pki, true);

    let err = Bus::builder(server.url())
        .tls_ca_file(pki.ca())
        .connect()
        .await
        .expect_err("without a client certificate the server refuses");
    let text = err.to_string();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        text.contains("refused the TLS connection") && text.contains("FABRIC_TLS_CERT_FILE"),
        "{text}"
    );

    let err = Bus::builder(server.url())
        .tls_ca_file(pki.ca())
        .tls_client_cert(other.client_cert(), other.client_key())
        .connect()
        .await
        .expect_err("a client certificate from another CA is refused");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");

    let bus = Bus::builder(server.url())
        .tls_ca_file(pki.ca())
        .tls_client_cert(pki.client_cert(), pki.client_key())
        .connect()
        .await
        .expect("the right client certificate connects");
    let agent = unique_agent("mtls");
    bus.send(Message::new("sender", &agent, "note", json!({"n": 1})))
        .await
        .unwrap();
    let got = bus
        .receive(
            &agent,
            ReceiveOptions::default().block(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let mut sub = bus.subscribe(&["mtls.*"]).await.unwrap();
    bus.publish("mtls.news", json!("hi"), None).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the event arrives")
        .expect("the subscription is alive");
    assert_eq!(event.data, json!("hi"));
}

/// Unreadable or malformed files, and a key that is not the certificate's, are
/// configuration errors naming the file and the setting, found before connecting.
#[tokio::test]
async fn bad_tls_files_are_configuration_errors() {
    let pki = TestPki::generate();
    let other = TestPki::generate();
    // Nothing listens here: each error must come from the files, before any connection.
    let url = "rediss://127.0.0.1:1";

    let missing = pki.dir().join("nope.pem");
    let err = Bus::builder(url)
        .tls_ca_file(&missing)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("BusBuilder::tls_ca_file")
            && text.contains("nope.pem")
            && text.contains("cannot be read"),
        "{text}"
    );

    let junk = pki.dir().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let err = Bus::builder(url)
        .tls_ca_file(&junk)
        .connect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("junk.pem") && err.to_string().contains("holds no certificate"),
        "{err}"
    );

    let err = Bus::builder(url)
        .tls_client_cert(pki.client_cert(), other.client_key())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("cannot be used together")
            && err.to_string().contains("client.crt")
            && err.to_string().contains("client.key"),
        "{err}"
    );

    let err = Bus::builder(url)
        .tls_client_cert(pki.client_cert(), pki.client_cert())
        .connect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("holds no usable private key"),
        "{err}"
    );
}

/// A cluster of TLS-only nodes, reached through one `rediss://` seed: the nodes the cluster
/// client finds through `CLUSTER SLOTS` are checked with the same CA, so messages to agents
/// spread over every node's slots are sent and received; another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_uses_the_same_certificates_on_every_node() {
    init_tracing();
    let pki = TestPki::generate();
    let other = TestPki::generate();
    let cluster = RedisCluster::start_tls(3, &pki);
    let seed = cluster.nodes()[0].url();
    assert!(seed.starts_with("rediss://"), "{seed}");

    let bus = Bus::builder(&seed)
        .cluster(true)
        .tls_ca_file(pki.ca())
        .connect()
        .await
        .expect("connect to the TLS cluster");
    assert!(bus.is_cluster());
    // Enough agents that every node holds some of their inboxes.
    let agents: Vec<String> = (0..12).map(|_| unique_agent("tls-slot")).collect();
    for a in &agents {
        bus.send(Message::new("sender", a, "note", json!({"to": a})))
            .await
            .unwrap();
    }
    for a in &agents {
        let got = bus
            .receive(a, ReceiveOptions::default().block(Duration::from_secs(2)))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{a}: {got:?}");
        assert_eq!(got[0].message.payload, json!({"to": a}));
    }
    // Pub/Sub goes through a client of the first seed: TLS with the same CA.
    let mut sub = bus.subscribe(&["cluster.tls"]).await.unwrap();
    bus.publish("cluster.tls", json!(7), None).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the event arrives")
        .expect("the subscription is alive");
    assert_eq!(event.data, json!(7));
    let listed = bus.agents().await.unwrap();
    for a in &agents {
        assert!(listed.contains(a), "{a} missing from {listed:?}");
    }

    let err = Bus::builder(cluster.url())
        .tls_ca_file(other.ca())
        .connect()
        .await
        .expect_err("another CA is refused by the cluster client too");
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
}
