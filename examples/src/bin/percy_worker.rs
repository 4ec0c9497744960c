//! `percy_worker`: the percy agent. Handles `task` messages (a `code_review`, or a `summarize`)
//! and replies to the task's `reply_to` stream; the handlers are in `src/percy.rs`.
//!
//! Run it against the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`):
//! `cargo run -p examples --bin percy_worker`. Start it several times to share the load:
//! all processes join the consumer group `percy_workers`. Stop it with Ctrl-C (graceful).

use fabric_worker::prelude::*;
// percy's handlers live in the examples library (so tests can run them); naming
// `examples::percy` links them into this binary, where the worker finds them.
use examples::percy;

#[tokio::main]
async fn main() {
    examples::init_tracing();
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> fabric_worker::Result<()> {
    Worker::builder(percy::AGENT).from_env()?.run().await
}
