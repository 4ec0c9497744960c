use fabric_worker::prelude::*;

#[handler(message_type = "tick")]
async fn tick() {}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let () = rt.block_on(tick());
}
