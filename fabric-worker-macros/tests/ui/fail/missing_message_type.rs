use fabric_worker::prelude::*;

#[handler]
async fn bare(ctx: Context) {
    let _ = ctx;
}

#[handler(agent = "percy", timeout = "30s")]
async fn without_type(ctx: Context) {
    let _ = ctx;
}

fn main() {}
