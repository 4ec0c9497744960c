use fabric_worker::prelude::*;

#[handler(message_type = "task")]
async fn review(ctx: Context, pr_id: String, task_type: String) {
    let _ = (ctx, pr_id, task_type);
}

fn main() {}
