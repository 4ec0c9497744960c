use fabric_worker::prelude::*;

#[handler(message_type = "task")]
async fn review(pr_id: String, task_type: String) {
    let _ = (pr_id, task_type);
}

#[handler(message_type = "task")]
async fn two_contexts(first: Context, second: fabric_worker::Context) {
    let _ = (first, second);
}

fn main() {}
