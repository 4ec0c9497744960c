use fabric_worker::prelude::*;

#[handler(message_type = "task", timeout = "30s", message_type = "other")]
async fn review(ctx: Context) {
    let _ = ctx;
}

fn main() {}
