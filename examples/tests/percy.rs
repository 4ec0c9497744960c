//! percy's handlers, run in process with `fabric_worker::testing` (no Redis): what the
//! worker would do with each kind of task.

use examples::percy;
use fabric_worker::Message;
use fabric_worker::bus::DeadReason;
use fabric_worker::testing::{TestWorker, Verdict};
use serde_json::json;

fn percy() -> TestWorker {
    TestWorker::new(percy::AGENT).expect("percy's handlers are registered")
}

fn task(payload: serde_json::Value) -> Message {
    Message::new("coder", "percy", "task", payload)
}

#[tokio::test]
async fn a_code_review_is_approved_with_comments() {
    let v = percy()
        .handle(Message::task(
            "coder",
            "percy",
            "code_review",
            json!({"pr_id": "123"}),
        ))
        .await;
    let reply = v.reply().expect("a reply");
    assert_eq!(reply["pr_id"], "123");
    assert_eq!(reply["verdict"], "approve");
    assert_eq!(reply["reviewer"], "percy");
    assert!(reply["comments"].as_array().is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn a_summary_counts_words_and_cuts_the_text() {
    let text = "word ".repeat(30);
    let v = percy()
        .handle(task(json!({"task_type": "summarize", "text": text})))
        .await;
    let reply = v.reply().expect("a reply");
    assert_eq!(reply["words"], 30);
    assert_eq!(reply["summary"].as_str().unwrap().chars().count(), 80);
}

#[tokio::test]
async fn a_review_without_a_pr_is_dead_lettered_at_once() {
    let v = percy()
        .handle(task(json!({"task_type": "code_review"})))
        .await;
    assert_eq!(
        v,
        Verdict::DeadLettered {
            reason: DeadReason::PermanentError,
            error: "a code_review needs a pr_id".into()
        }
    );
}

#[tokio::test]
async fn an_unknown_task_type_is_refused_for_good() {
    let v = percy().handle(task(json!({"task_type": "dance"}))).await;
    assert_eq!(v.dead_reason(), Some(&DeadReason::PermanentError));
    assert!(matches!(v, Verdict::DeadLettered { ref error, .. } if error.contains("\"dance\"")));
}

#[tokio::test]
async fn a_task_without_task_type_does_not_decode() {
    let v = percy().handle(task(json!({"pr_id": "1"}))).await;
    assert_eq!(v.dead_reason(), Some(&DeadReason::BadPayload));
}

#[tokio::test]
async fn percy_handles_tasks_only() {
    let p = percy();
    assert_eq!(p.message_types(), ["task"]);
    let v = p
        .handle(Message::new("coder", "percy", "event", json!({})))
        .await;
    assert_eq!(v.dead_reason(), Some(&DeadReason::NoHandler));
    // coder's handlers live in its binary, which this test does not link.
    assert!(TestWorker::new("coder").is_err());
}
