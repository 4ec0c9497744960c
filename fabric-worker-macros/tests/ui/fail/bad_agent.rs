use fabric_worker::prelude::*;

#[handler(message_type = "task", agent = "percy.bot")]
async fn dotted(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "task", agent = "_percy")]
async fn leading_underscore(ctx: Context) {
    let _ = ctx;
}

fn main() {}
