use fabric_worker::prelude::*;

#[handler(message_type = task)]
async fn unquoted(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "task", timeout = 30, max_attempts = "8")]
async fn wrong_types(ctx: Context) {
    let _ = ctx;
}

fn main() {}
