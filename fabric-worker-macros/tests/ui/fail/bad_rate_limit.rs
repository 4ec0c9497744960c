use fabric_worker::prelude::*;

#[handler(message_type = "a", rate_limit = "60/day")]
async fn unit(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "b", rate_limit = "open ai:60/m")]
async fn name(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "c", rate_limit = "0/s")]
async fn zero(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "d", rate_limit = "openai:60/m,burst=0")]
async fn no_burst(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "e", rate_limit = "60")]
async fn no_period(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "f", rate_limit = 60)]
async fn not_a_string(ctx: Context) {
    let _ = ctx;
}

fn main() {}
