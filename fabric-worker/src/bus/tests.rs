//! Unit tests of the bus builder (settings layering, TLS files) and of the notification's bytes.

use super::*;

#[test]
fn explicit_settings_win_over_the_environment_in_any_order() {
    let vars = env::from_pairs(&[
        ("FABRIC_NOTIFY", "false"),
        ("FABRIC_RESPONSE_TIMEOUT_MS", "7000"),
        ("FABRIC_CONNECT_TIMEOUT_MS", "900"),
    ]);
    let before = Bus::builder("redis://x")
        .notify(true)
        .response_timeout(Duration::from_secs(1))
        .with_vars(&vars)
        .unwrap();
    let after = Bus::builder("redis://x")
        .with_vars(&vars)
        .unwrap()
        .notify(true)
        .response_timeout(Duration::from_secs(1));
    for b in [before, after] {
        assert_eq!(b.notify.or(b.from_env.notify), Some(true));
        assert_eq!(b.response(), Duration::from_secs(1));
        assert_eq!(b.connect_time(), Duration::from_millis(900));
    }
    let e = Bus::builder("redis://x")
        .with_vars(&env::from_pairs(&[("FABRIC_CLUSTER", "perhaps")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("FABRIC_CLUSTER"), "{e}");
}

#[test]
fn tls_files_from_methods_win_over_the_environment() {
    let vars = env::from_pairs(&[
        ("FABRIC_TLS_CA_FILE", "/env/ca.pem"),
        ("FABRIC_TLS_CERT_FILE", "/env/client.crt"),
        ("FABRIC_TLS_KEY_FILE", "/env/client.key"),
    ]);
    let env_only = Bus::builder("rediss://x").with_vars(&vars).unwrap();
    let files = env_only.tls_files();
    assert_eq!(
        files.ca,
        Some(PemFile::from_env(
            "/env/ca.pem".into(),
            "FABRIC_TLS_CA_FILE"
        ))
    );
    assert_eq!(
        files.client,
        Some((
            PemFile::from_env("/env/client.crt".into(), "FABRIC_TLS_CERT_FILE"),
            PemFile::from_env("/env/client.key".into(), "FABRIC_TLS_KEY_FILE"),
        ))
    );
    let before = Bus::builder("rediss://x")
        .tls_ca_file("/code/ca.pem")
        .with_vars(&vars)
        .unwrap();
    let after = Bus::builder("rediss://x")
        .with_vars(&vars)
        .unwrap()
        .tls_ca_file("/code/ca.pem")
        .tls_client_cert("/code/c.crt", "/code/c.key");
    for b in [&before, &after] {
        let ca = b.tls_files().ca.unwrap();
        assert_eq!(ca.path, Path::new("/code/ca.pem"));
        assert_eq!(ca.setting, "BusBuilder::tls_ca_file");
    }
    assert_eq!(
        before.tls_files().client,
        files.client,
        "unset in code: the environment's"
    );
    let (cert, key) = after.tls_files().client.unwrap();
    assert_eq!(
        (cert.path.as_path(), key.path.as_path()),
        (Path::new("/code/c.crt"), Path::new("/code/c.key"))
    );
    assert!(Bus::builder("redis://x").tls_files().is_empty());

    let e = Bus::builder("rediss://x")
        .with_vars(&env::from_pairs(&[(
            "FABRIC_TLS_KEY_FILE",
            "/env/client.key",
        )]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("FABRIC_TLS_KEY_FILE is set but FABRIC_TLS_CERT_FILE is not"),
        "{e}"
    );
}

#[test]
fn topic_retention_comes_from_the_method_over_the_environment() {
    let vars = env::from_pairs(&[("FABRIC_TOPIC_RETENTION", "500")]);
    let env_only = Bus::builder("redis://x").with_vars(&vars).unwrap();
    assert_eq!(env_only.from_env.topic_retention, Some(500));
    let both = Bus::builder("redis://x")
        .topic_retention(7)
        .with_vars(&vars)
        .unwrap();
    assert_eq!(
        both.topic_retention.or(both.from_env.topic_retention),
        Some(7)
    );
    let e = Bus::builder("redis://x")
        .with_vars(&env::from_pairs(&[("FABRIC_TOPIC_RETENTION", "lots")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("FABRIC_TOPIC_RETENTION"), "{e}");
}

#[test]
fn the_replica_wait_comes_from_the_method_over_the_environment() {
    let vars = env::from_pairs(&[
        ("FABRIC_WAIT_REPLICAS", "2"),
        ("FABRIC_WAIT_TIMEOUT_MS", "250"),
    ]);
    let env_only = Bus::builder("redis://x").with_vars(&vars).unwrap();
    assert_eq!(
        env_only.replica_wait().unwrap(),
        Some(ReplicaWait {
            replicas: 2,
            timeout: Duration::from_millis(250)
        })
    );
    let both = Bus::builder("redis://x")
        .wait_for_replicas(1, Duration::from_secs(3))
        .with_vars(&vars)
        .unwrap();
    assert_eq!(
        both.replica_wait().unwrap(),
        Some(ReplicaWait {
            replicas: 1,
            timeout: Duration::from_secs(3)
        })
    );
    // The default timeout; 0 replicas is no wait.
    let default = Bus::builder("redis://x")
        .with_vars(&env::from_pairs(&[("FABRIC_WAIT_REPLICAS", "1")]))
        .unwrap();
    assert_eq!(
        default.replica_wait().unwrap().map(|w| w.timeout),
        Some(Duration::from_secs(1))
    );
    let none = Bus::builder("redis://x")
        .with_vars(&env::from_pairs(&[("FABRIC_WAIT_REPLICAS", "0")]))
        .unwrap();
    assert_eq!(none.replica_wait().unwrap(), None);
    assert_eq!(Bus::builder("redis://x").replica_wait().unwrap(), None);
    // A zero timeout would block a send forever while a replica is down: refused.
    let e = Bus::builder("redis://x")
        .wait_for_replicas(1, Duration::ZERO)
        .replica_wait()
        .unwrap_err()
        .to_string();
    assert!(e.contains("above zero"), "{e}");
    let e = Bus::builder("redis://x")
        .with_vars(&env::from_pairs(&[
            ("FABRIC_WAIT_REPLICAS", "1"),
            ("FABRIC_WAIT_TIMEOUT_MS", "0"),
        ]))
        .unwrap()
        .replica_wait()
        .unwrap_err()
        .to_string();
    assert!(e.contains("FABRIC_WAIT_TIMEOUT_MS"), "{e}");
    let e = Bus::builder("redis://x")
        .with_vars(&env::from_pairs(&[("FABRIC_WAIT_REPLICAS", "one")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("FABRIC_WAIT_REPLICAS"), "{e}");
}

#[test]
fn notifications_are_byte_for_byte_what_the_json_map_wrote() {
    use crate::message::Message;
    use serde_json::json;
    // What the notification was built as before (a `json!` map: keys sorted), for a message
    // alone, a recipient with several, and a message for later.
    let old = |m: &Message, count: usize| {
        let mut note = json!({
            "from": m.from_agent,
            "type": m.message_type,
            "priority": m.priority.as_u8(),
            "message_id": m.id,
        });
        if count > 1 {
            note["count"] = json!(count);
        }
        if let Some(at) = m.deliver_at_ms {
            note["deliver_at_ms"] = json!(at);
        }
        (
            crate::keys::new_message_channel(&m.to_agent),
            note.to_string(),
        )
    };
    let a = Message::new("coder", "percy", "task", json!({"x": "\"quoted\" é"}));
    let b = Message::new("coder", "percy", "review", json!({}));
    let mut later = Message::new("coder", "memory", "note", json!({}));
    later.deliver_at_ms = Some(1_795_637_756_123);
    assert_eq!(super::send::notes_for([&a].into_iter()), vec![old(&a, 1)]);
    assert_eq!(
        super::send::notes_for([&a, &b, &later].into_iter()),
        vec![old(&b, 2), old(&later, 1)]
    );
}
