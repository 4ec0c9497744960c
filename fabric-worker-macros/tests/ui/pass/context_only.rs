use fabric_worker::prelude::*;

#[handler(message_type = "ping")]
async fn ping(ctx: Context) -> Result<String, HandlerError> {
    Ok(format!("pong from {}", ctx.agent()))
}

fn main() {}
