//! Workflows (chain, group, chord) across agents served by separate worker processes
//! (`test_worker`, step handlers `wf_step` and `wf_collect` in `fabric_tests::handlers`):
//! results flow from step to step and to the caller's `reply_to`, survive every worker
//! being SIGKILLed midway, and a step that fails for good fails its workflow with its reason.

use std::time::Duration;

use fabric_tests::{RedisServer, WorkerProcess, init_tracing, unique_agent, wait_until_async};
use fabric_worker::bus::Mode;
use fabric_worker::prelude::*;
use fabric_worker::workflow::{
    PartOutcome, Step, Workflow, WorkflowError, WorkflowId, WorkflowState,
};
use fabric_worker::{Error, keys};
use serde_json::{Value, json};

/// Workers that reclaim a dead worker's entries after a second.
fn env() -> Vec<(&'static str, String)> {
    vec![
        ("FABRIC_BLOCK_MS", "200".to_string()),
        ("FABRIC_RECLAIM_IDLE_MS", "1000".to_string()),
        ("FABRIC_BACKOFF_BASE_MS", "100".to_string()),
        ("FABRIC_RETRY_POLL_INTERVAL_MS", "100".to_string()),
    ]
}

fn agents(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| unique_agent(&format!("{prefix}{i}")))
        .collect()
}

fn start_workers(url: &str, agents: &[String]) -> Vec<WorkerProcess> {
    agents
        .iter()
        .map(|a| WorkerProcess::start(url, a, &env()))
        .collect()
}

fn as_workflow_error(e: Error) -> WorkflowError {
    match e {
        Error::Workflow(w) => *w,
        other => panic!("expected a workflow error, got {other}"),
    }
}

/// The entries of `stream` (read through `url`), decoded, with their `in_reply_to`.
async fn replies(url: &str, stream: &str) -> Vec<(Message, Option<String>)> {
    let mut conn = fabric_tests::conn_as(url).await;
    let mut out = Vec::new();
    for (_, fields) in fabric_tests::stream_entries(&mut conn, stream).await {
        let data = fabric_tests::entry_field(&fields, "data").expect("a data field");
        let m: Message = serde_json::from_str(data).expect("an envelope");
        let in_reply_to = fabric_tests::entry_field(&fields, "in_reply_to").map(str::to_owned);
        out.push((m, in_reply_to));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_across_three_processes_with_per_agent_users_ends_on_the_callers_reply_to() {
    init_tracing();
    let server = RedisServer::start_own(false);
    let mut admin = server.async_conn().await;
    let steps = agents("chain", 3);
    let caller = unique_agent("caller");
    // Every agent logs in as its own direct-mode ACL user: they may run workflow steps.
    for a in steps.iter().chain([&caller]) {
        fabric_tests::set_agent_user(&mut admin, a, Mode::Direct, "pw").await;
    }
    Bus::connect(server.url())
        .await
        .unwrap()
        .setup()
        .await
        .unwrap();
    let _workers: Vec<WorkerProcess> = steps
        .iter()
        .map(|a| WorkerProcess::start(&server.url_as(a, "pw"), a, &env()))
        .collect();
    let bus = Bus::connect(server.url_as(&caller, "pw")).await.unwrap();
    let chain = Workflow::chain([
        Step::new(&steps[0], "wf_step", json!({"tag": "first"})),
        Step::new(&steps[1], "wf_step", json!({})),
        Step::new(&steps[2], "wf_step", json!({"extra": 1})),
    ])
    .with_reply_to(keys::results(&caller));
    let id = bus.start_workflow(&caller, chain).await.unwrap();
    let result = bus
        .await_workflow(&id, Duration::from_secs(20))
        .await
        .unwrap();
    // Each step got the previous reply, sent by the agent that ran the previous step.
    assert_eq!(
        result["trail"],
        json!([
            format!("{caller}->{}", steps[0]),
            format!("{}->{}", steps[0], steps[1]),
            format!("{}->{}", steps[1], steps[2]),
        ]),
        "{result}"
    );
    assert_eq!(result["tag"], "first", "a reply's keys flow on: {result}");
    assert_eq!(result["step"], "2");
    let st = bus.workflow(&id).await.unwrap();
    assert_eq!(st.state, WorkflowState::Succeeded);
    assert_eq!((st.step, st.steps), (2, 3));
    let took = st.finished_ms.unwrap() - st.created_ms;
    eprintln!("a 3-step chain across 3 processes took {took} ms from start to finish");
    // The final reply is on the caller's reply_to: a response answering the workflow.
    let (url, stream) = (server.url(), keys::results(&caller));
    assert!(
        wait_until_async(Duration::from_secs(5), || {
            let (url, stream) = (url.clone(), stream.clone());
            async move { !replies(&url, &stream).await.is_empty() }
        })
        .await
    );
    let got = replies(&url, &stream).await;
    assert_eq!(got.len(), 1, "one final reply: {got:?}");
    let (reply, in_reply_to) = &got[0];
    assert_eq!(reply.message_type, "response");
    assert_eq!(reply.payload, result);
    assert_eq!(reply.from_agent, steps[2]);
    assert_eq!(reply.to_agent, caller);
    assert_eq!(in_reply_to.as_deref(), Some(id.as_str()));
    assert_eq!(reply.correlation_id.as_deref(), Some(id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_feeds_its_three_results_in_part_order_to_the_callback() {
    init_tracing();
    let server = RedisServer::start();
    let parts = agents("part", 3);
    let _workers = start_workers(&server.url(), &parts);
    let bus = Bus::connect(server.url()).await.unwrap();
    // The first part is the slowest: the parts finish in reverse order.
    let chord = Workflow::chord(
        parts
            .iter()
            .enumerate()
            .map(|(i, a)| Step::new(a, "wf_step", json!({"tag": i, "sleep_ms": 600 - 300 * i}))),
        Step::new(&parts[0], "wf_collect", json!({"extra": "static"})),
    );
    let id = bus.start_workflow("chorder", chord).await.unwrap();
    let result = bus
        .await_workflow(&id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(result["tags"], json!([0, 1, 2]), "{result}");
    assert_eq!(result["count"], 3);
    assert_eq!(result["by"], parts[0].as_str());
    assert_eq!(result["extra"], "static", "the callback's own payload too");
    let st = bus.workflow(&id).await.unwrap();
    assert_eq!(
        (st.state, st.step, st.steps),
        (WorkflowState::Succeeded, 1, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_complete_when_every_worker_is_killed_midway_and_restarted() {
    init_tracing();
    let server = RedisServer::start();
    let names = agents("crash", 3);
    let mut first = start_workers(&server.url(), &names);
    let bus = Bus::connect(server.url()).await.unwrap();
    let slow = |a: &String| Step::new(a, "wf_step", json!({"sleep_ms": 1500}));
    let chain = Workflow::chain(names.iter().map(slow));
    let chord = Workflow::chord(
        names
            .iter()
            .enumerate()
            .map(|(i, a)| Step::new(a, "wf_step", json!({"tag": i, "sleep_ms": 1500 * (i % 2)}))),
        slow(&names[2]),
    );
    let chain_id = bus.start_workflow("crasher", chain).await.unwrap();
    let chord_id = bus.start_workflow("crasher", chord).await.unwrap();
    // Midway: the chain's first step is done and its second is running.
    assert!(
        wait_until_async(Duration::from_secs(15), || {
            let (b, id) = (bus.clone(), chain_id.clone());
            async move { b.workflow(&id).await.unwrap().step >= 1 }
        })
        .await,
        "the chain never got past its first step"
    );
    for w in &mut first {
        w.kill();
    }
    let at_kill = [
        bus.workflow(&chain_id).await.unwrap(),
        bus.workflow(&chord_id).await.unwrap(),
    ];
    for st in &at_kill {
        assert_eq!(st.state, WorkflowState::Running, "killed midway: {st:?}");
    }
    assert!(at_kill[0].step < 2, "{:?}", at_kill[0]);
    // New processes reclaim what the dead ones held and carry both workflows on.
    let second = start_workers(&server.url(), &names);
    let chain_result = bus
        .await_workflow(&chain_id, Duration::from_secs(25))
        .await
        .unwrap();
    let chord_result = bus
        .await_workflow(&chord_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(chain_result["trail"].as_array().unwrap().len(), 3);
    let second_pids: Vec<u32> = second.iter().map(WorkerProcess::pid).collect();
    assert!(
        second_pids.contains(&u32::try_from(chain_result["pid"].as_u64().unwrap()).unwrap()),
        "the last step ran in a restarted worker: {chain_result}"
    );
    // The chord's callback got its parts' replies (trail and tag), in part order.
    assert_eq!(chord_result["trail"].as_array().unwrap().len(), 1);
    let chord = bus.workflow(&chord_id).await.unwrap();
    assert_eq!(chord.state, WorkflowState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_for_good_fails_the_workflow_with_its_reason() {
    init_tracing();
    let server = RedisServer::start();
    let names = agents("fail", 3);
    let _workers = start_workers(&server.url(), &names);
    let caller = unique_agent("asker");
    let bus = Bus::connect(server.url()).await.unwrap();
    let chain = Workflow::chain([
        Step::new(&names[0], "wf_step", json!({})),
        Step::new(&names[1], "wf_step", json!({"fail": true})),
        Step::new(&names[2], "wf_step", json!({})),
    ])
    .with_reply_to(keys::results(&caller));
    let id = bus.start_workflow(&caller, chain).await.unwrap();
    let e = as_workflow_error(
        bus.await_workflow(&id, Duration::from_secs(20))
            .await
            .unwrap_err(),
    );
    let WorkflowError::Failed {
        id: failed_id,
        failure,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(failed_id, &id);
    assert_eq!((failure.step, failure.part), (1, 0));
    assert_eq!(failure.to_agent, names[1]);
    assert_eq!(failure.reason, "permanent_error");
    assert!(failure.error.contains("refuses this step"), "{failure:?}");
    assert!(
        e.to_string()
            .contains(&format!("step 1 part 0 (wf_step at agent {})", names[1])),
        "{e}"
    );
    // The caller's reply_to gets an error naming the step; the step is a dead letter; the
    // step after it never ran.
    let got = replies(&server.url(), &keys::results(&caller)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.message_type, "error");
    assert_eq!(got[0].0.payload["reason"], "permanent_error");
    assert_eq!(got[0].0.payload["step"], 1);
    assert_eq!(got[0].0.payload["workflow_id"], id.as_str());
    assert_eq!(
        bus.queue_status(&names[1], None)
            .await
            .unwrap()
            .dead_letters,
        1
    );
    let later = bus.queue_status(&names[2], None).await.unwrap();
    assert_eq!(later.stream_length, 0, "{later:?}");
    let st = bus.workflow(&id).await.unwrap();
    assert_eq!((st.state, st.step), (WorkflowState::Failed, 1));

    // Secure mode refuses workflows with a typed error, before touching Redis.
    let secure = Bus::builder(server.url())
        .mode(Mode::Secure)
        .connect()
        .await
        .unwrap();
    let e = secure
        .start_workflow(&caller, Workflow::chain([Step::new("a", "t", json!({}))]))
        .await
        .unwrap_err();
    assert!(
        matches!(as_workflow_error(e), WorkflowError::NeedsDirectMode),
        "secure mode"
    );
    // An unknown id is its own error.
    let unknown: WorkflowId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    let e = as_workflow_error(bus.workflow(&unknown).await.unwrap_err());
    assert!(matches!(e, WorkflowError::NotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_gives_every_reply_or_each_parts_error() {
    init_tracing();
    let server = RedisServer::start();
    let names = agents("group", 3);
    let _workers = start_workers(&server.url(), &names);
    let bus = Bus::connect(server.url()).await.unwrap();
    let tagged = |i: usize, extra: Value| {
        let mut p = json!({"tag": i});
        if let (Value::Object(p), Value::Object(e)) = (&mut p, extra) {
            p.extend(e);
        }
        Step::new(&names[i], "wf_step", p)
    };
    let ok = bus
        .start_workflow(
            "grouper",
            Workflow::group((0..3).map(|i| tagged(i, json!({"sleep_ms": 300 - 100 * i})))),
        )
        .await
        .unwrap();
    let failing = bus
        .start_workflow(
            "grouper",
            Workflow::group([
                tagged(0, json!({})),
                tagged(1, json!({"fail": true})),
                tagged(2, json!({"sleep_ms": 500})),
            ]),
        )
        .await
        .unwrap();
    let result = bus
        .await_workflow(&ok, Duration::from_secs(20))
        .await
        .unwrap();
    let tags: Vec<&Value> = result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["tag"])
        .collect();
    assert_eq!(tags, [&json!(0), &json!(1), &json!(2)], "{result}");
    let e = as_workflow_error(
        bus.await_workflow(&failing, Duration::from_secs(20))
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(&e, WorkflowError::Failed { failure, .. } if failure.part == 1),
        "{e}"
    );
    // The failed group waited for every part, and reports each one.
    let st = bus.workflow(&failing).await.unwrap();
    assert_eq!(st.state, WorkflowState::Failed);
    assert_eq!(st.parts.len(), 3);
    assert!(matches!(&st.parts[0], PartOutcome::Succeeded { result } if result["tag"] == 0));
    assert!(
        matches!(&st.parts[1], PartOutcome::Failed(f) if f.reason == "permanent_error" && f.to_agent == names[1])
    );
    assert!(matches!(&st.parts[2], PartOutcome::Succeeded { result } if result["tag"] == 2));
}

/// `FCALL fabric_workflow_step` as a worker runs it (what a redelivered step does again).
async fn record(
    conn: &mut redis::aio::MultiplexedConnection,
    id: &WorkflowId,
    step: usize,
    part: usize,
    value: &str,
) -> Vec<Value> {
    let v: redis::Value = redis::cmd("FCALL")
        .arg("fabric_workflow_step")
        .arg(1)
        .arg(id.key())
        .arg(step)
        .arg(part)
        .arg("ok")
        .arg(value)
        .query_async(conn)
        .await
        .unwrap();
    let redis::Value::Array(items) = v else {
        panic!("{v:?}")
    };
    items
        .into_iter()
        .map(|i| match i {
            redis::Value::Int(n) => json!(n),
            other => json!(redis::from_redis_value::<String>(other).unwrap()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_a_part_again_after_a_redelivery_counts_it_once_and_answers_the_same() {
    init_tracing();
    let server = RedisServer::start();
    let bus = Bus::connect(server.url()).await.unwrap();
    let mut conn = server.async_conn().await;
    // Nobody serves these agents: the test plays the workers.
    let (a, b, c) = (unique_agent("ra"), unique_agent("rb"), unique_agent("rc"));
    let group = bus
        .start_workflow(
            "replayer",
            Workflow::chord(
                [Step::new(&a, "t", json!({})), Step::new(&b, "t", json!({}))],
                Step::new(&c, "t", json!({})),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        record(&mut conn, &group, 0, 0, r#"{"x":1}"#).await,
        [json!("wait")]
    );
    // The same part again (a crash before the acknowledgement): still one of two.
    assert_eq!(
        record(&mut conn, &group, 0, 0, r#"{"x":99}"#).await,
        [json!("wait")]
    );
    let st = bus.workflow(&group).await.unwrap();
    assert_eq!((st.state, st.step), (WorkflowState::Running, 0));
    assert!(matches!(&st.parts[1], PartOutcome::Running));
    let next = record(&mut conn, &group, 0, 1, r#"{"x":2}"#).await;
    assert_eq!(next[0], "next");
    assert_eq!(next[1], 1);
    // The first record of a part wins; the input is in part order.
    assert_eq!(next[2], r#"{"results":[{"x":1},{"x":2}]}"#);
    // Either part redelivered now gets the same answer: send step 1 (sent once, as the
    // worker sends it idempotently), and nothing is counted twice.
    assert_eq!(
        record(&mut conn, &group, 0, 0, r#"{"x":1}"#).await[..3],
        next[..3]
    );
    assert_eq!(
        record(&mut conn, &group, 0, 1, r#"{"x":2}"#).await[..3],
        next[..3]
    );
    assert_eq!(bus.workflow(&group).await.unwrap().step, 1);
    // The callback finishes it; a replay of it changes nothing.
    assert_eq!(
        record(&mut conn, &group, 1, 0, r#"{"done":true}"#).await,
        [json!("done")]
    );
    assert_eq!(
        record(&mut conn, &group, 1, 0, r#"{"done":false}"#).await,
        [json!("done")]
    );
    assert_eq!(
        bus.await_workflow(&group, Duration::from_secs(1))
            .await
            .unwrap(),
        json!({"done": true})
    );
    // A step that has not started is refused.
    let e = redis::cmd("FCALL")
        .arg("fabric_workflow_step")
        .arg(1)
        .arg(group.key())
        .arg(5)
        .arg(0)
        .arg("ok")
        .arg("{}")
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("has not started"), "{e}");
}
