use fabric_worker::prelude::*;

// The handler's future must be `Send`: it runs on a multi-threaded runtime.
#[handler(message_type = "task")]
async fn review(ctx: Context) {
    let not_send = std::rc::Rc::new(ctx);
    std::future::ready(()).await;
    drop(not_send);
}

fn main() {}
