use fabric_worker::prelude::*;

#[handler(message_type = "task")]
async fn review<T: serde::de::DeserializeOwned>(ctx: Context, task: T) {
    let _ = (ctx, task);
}

fn main() {}
