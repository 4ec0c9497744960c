//! percy's handlers: a `task` is a `code_review` or a `summarize`; the reply goes to the
//! task's `reply_to` stream. In the library (not in the binary) so that tests can run
//! them with `fabric_worker::testing` (see `tests/percy.rs`).

use fabric_worker::prelude::*;
use serde_json::{Value, json};

/// The agent these handlers serve (naming it also links them into a binary or test, where
/// the worker finds them).
pub const AGENT: &str = "percy";

/// The payload of a `task`: `task_type` plus task-specific fields.
#[derive(Debug, Deserialize)]
struct Task {
    task_type: String,
    #[serde(default)]
    pr_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[handler(message_type = "task", agent = "percy")]
async fn handle_task(ctx: Context, task: Task) -> Result<Value, HandlerError> {
    tracing::info!(
        from = ctx.from_agent(),
        message_id = ctx.message_id(),
        task_type = %task.task_type,
        attempt = ctx.attempt(),
        "percy got a task"
    );
    match task.task_type.as_str() {
        "code_review" => {
            let pr = task
                .pr_id
                .ok_or_else(|| HandlerError::permanent("a code_review needs a pr_id"))?;
            // A real agent would call an LLM here.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(json!({
                "pr_id": pr,
                "verdict": "approve",
                "comments": ["naming is clear", "add a test for the error path"],
                "reviewer": "percy",
            }))
        }
        "summarize" => {
            let text = task.text.unwrap_or_default();
            let words = text.split_whitespace().count();
            Ok(json!({ "summary": text.chars().take(80).collect::<String>(), "words": words }))
        }
        other => Err(HandlerError::permanent(format!(
            "percy does not know task_type {other:?}"
        ))),
    }
}
