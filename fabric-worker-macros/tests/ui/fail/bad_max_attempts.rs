use fabric_worker::prelude::*;

#[handler(message_type = "task", max_attempts = 0)]
async fn zero(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "task", max_attempts = -1)]
async fn negative(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "task", max_attempts = 4294967296)]
async fn too_large(ctx: Context) {
    let _ = ctx;
}

fn main() {}
