// A payload type of the user's that happens to be named `Context` is a payload.
use fabric_worker::prelude::{Deserialize, handler};

mod model {
    #[derive(serde::Deserialize)]
    pub struct Context {
        pub topic: String,
    }
}

#[derive(Deserialize)]
struct Context {
    conversation: String,
}

#[handler(message_type = "ctx_payload")]
async fn uses_own_context(c: Context) {
    let _ = c.conversation;
}

#[handler(message_type = "ctx_payload_and_real")]
async fn both(real: fabric_worker::Context, payload: model::Context) {
    let _ = (real.agent(), payload.topic);
}

fn main() {}
