use fabric_worker::prelude::*;

#[derive(Deserialize)]
struct CodeReview {
    task_type: String,
    pr_id: String,
}

#[derive(Serialize)]
struct Review {
    pr_id: String,
    approved: bool,
    comments: Vec<String>,
}

#[handler(message_type = "task", max_attempts = 8, timeout = "30s")]
async fn review(ctx: Context, task: CodeReview) -> Result<Review, HandlerError> {
    let reviewer = ctx.agent().to_owned();
    Ok(Review {
        pr_id: task.pr_id,
        approved: task.task_type == "code_review",
        comments: vec![format!("reviewed by {reviewer}")],
    })
}

fn main() {
    use fabric_worker::__private::{Registration, inventory};

    let regs: Vec<&Registration> = inventory::iter::<Registration>.into_iter().collect();
    assert_eq!(regs.len(), 1);
    let reg = regs[0];
    assert_eq!(reg.message_type, "task");
    assert_eq!(reg.agent, None);
    assert!(reg.name.ends_with("::review"), "{}", reg.name);
    assert!(reg.file.ends_with("basic.rs"), "{}", reg.file);
    // `line!()` expands at the attribute: the line of `#[handler(...)]`.
    assert_eq!(reg.line, 16);
    assert_eq!(reg.max_attempts, Some(8));
    assert_eq!(reg.timeout_ms, Some(30_000));
}
