use fabric_worker::prelude::*;

#[handler(message_type = "task", retries = 3)]
async fn review(ctx: Context) {
    let _ = ctx;
}

fn main() {}
