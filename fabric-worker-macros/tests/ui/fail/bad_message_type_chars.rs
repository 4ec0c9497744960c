use fabric_worker::prelude::*;

#[handler(message_type = "code review")]
async fn with_space(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "")]
async fn empty(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "-task")]
async fn leading_dash(ctx: Context) {
    let _ = ctx;
}

fn main() {}
