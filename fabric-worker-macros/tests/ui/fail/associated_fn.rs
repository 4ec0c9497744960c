use fabric_worker::prelude::*;

// Associated functions without a receiver cannot be detected from the
// function's tokens alone; rustc rejects the expansion inside the `impl`.
// This case documents the resulting errors.
struct Reviewer;

impl Reviewer {
    #[handler(message_type = "task")]
    async fn review(ctx: Context) {
        let _ = ctx;
    }
}

fn main() {}
