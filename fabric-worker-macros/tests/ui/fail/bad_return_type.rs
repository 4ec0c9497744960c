use fabric_worker::prelude::*;

#[handler(message_type = "task")]
async fn review(ctx: Context) -> String {
    ctx.agent().to_owned()
}

fn main() {}
