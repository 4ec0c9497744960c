use fabric_worker::prelude::*;

#[handler(message_type = "task")]
fn review(ctx: Context) -> Result<(), HandlerError> {
    let _ = ctx;
    Ok(())
}

fn main() {}
