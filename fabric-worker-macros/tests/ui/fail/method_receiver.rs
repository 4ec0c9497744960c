use fabric_worker::prelude::*;

struct Reviewer;

impl Reviewer {
    #[handler(message_type = "task")]
    async fn review(&self, ctx: Context) {
        let _ = ctx;
    }
}

fn main() {}
