use fabric_worker::prelude::*;

#[derive(Deserialize)]
struct CodeReview {
    pr_id: String,
}

#[handler(message_type = "task")]
async fn review(ctx: &Context, task: &CodeReview) {
    let _ = (ctx, &task.pr_id);
}

fn main() {}
