use fabric_worker::prelude::*;

#[handler(message_type = "a", timeout = "30 seconds")]
async fn words(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "b", timeout = "0s")]
async fn zero(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "c", timeout = "1.5h")]
async fn fractional(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "d", timeout = "30")]
async fn no_unit(ctx: Context) {
    let _ = ctx;
}

fn main() {}
