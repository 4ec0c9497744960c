use fabric_worker::prelude::*;

// Independent problems are all reported at once.
#[handler(message_type = "a b", retries = 3, timeout = "soon")]
fn review<T>(ctx: &Context, task: T) {
    let _ = (ctx, task);
}

fn main() {}
