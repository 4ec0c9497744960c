//! `fabric show` and `fabric pending claim` on the places the other operator tests do not
//! reach: a priority lane (by its bare id and by `urgent/ID`) and the schedule of messages
//! sent for later, with the built `fabric` binary against a real redis-server.

mod common;

use std::time::Duration;

use common::{expect_code, fabric, json_of};
use fabric_tests::{RedisServer, RunningWorker, init_tracing, lanes_created, unique_agent};
use fabric_worker::bus::ReceiveOptions;
use fabric_worker::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_finds_lane_entries_and_scheduled_messages() {
    init_tracing();
    let redis = RedisServer::start_own(false);
    let url = redis.url();
    let percy = unique_agent("percy");
    // A worker creates the inbox's lanes; stopped, it leaves what comes next queued.
    let worker = RunningWorker::serve(&url, &percy).await;
    assert!(lanes_created(&mut redis.client(), &percy), "no lanes");
    worker.stop().await;

    let sent = json_of(&fabric(
        &url,
        &["send", &percy, "{}", "--priority", "urgent", "--json"],
    ));
    let id = sent["stream_id"].as_str().unwrap().to_owned();
    let shown = json_of(&fabric(&url, &["show", &percy, &id, "--json"]));
    assert_eq!(shown["location"]["state"], "queued", "{shown}");
    assert_eq!(shown["location"]["lane"], "urgent", "{shown}");
    assert_eq!(shown["id"], format!("urgent/{id}"), "{shown}");
    assert!(
        shown["key"].as_str().unwrap().contains(":urgent{"),
        "{shown}"
    );
    let o = fabric(&url, &["show", &percy, &format!("urgent/{id}")]);
    expect_code(&o, 0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(urgent lane), not yet delivered"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Not in another lane.
    expect_code(&fabric(&url, &["show", &percy, &format!("low/{id}")]), 4);

    // Pending in the lane: claimed by its lane id.
    let bus = Bus::connect(url.clone()).await.unwrap();
    let got = bus
        .receive(&percy, ReceiveOptions::default().consumer("stuck"))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].stream_id, format!("urgent/{id}"));
    let lane_id = format!("urgent/{id}");
    expect_code(
        &fabric(
            &url,
            &["pending", "claim", &percy, &lane_id, "--to", "spare"],
        ),
        0,
    );
    let shown = json_of(&fabric(&url, &["show", &percy, &lane_id, "--json"]));
    assert_eq!(shown["location"]["state"], "pending", "{shown}");
    assert_eq!(shown["location"]["consumer"], "spare", "{shown}");

    // Sent for later: in the schedule, found by its message id, with its due time.
    let sent = json_of(&fabric(
        &url,
        &["send", &percy, "{}", "--in", "600", "--json"],
    ));
    let message_id = sent["message_id"].as_str().unwrap();
    let shown = json_of(&fabric(&url, &["show", &percy, message_id, "--json"]));
    assert_eq!(shown["location"]["state"], "scheduled", "{shown}");
    let due_in = shown["location"]["due_in_ms"].as_u64().unwrap();
    assert!(
        Duration::from_millis(due_in) > Duration::from_secs(590),
        "{shown}"
    );
    assert_eq!(shown["message"]["id"], message_id, "{shown}");
}
