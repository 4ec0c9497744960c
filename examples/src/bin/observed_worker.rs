//! `observed_worker`: percy's worker (the handlers of `src/percy.rs`) with the seed plan's
//! telemetry recorder and memory archiver as hooks (`src/observe.rs`): every message it
//! handles becomes an `a2a.message` event in the Redis stream `fabric:telemetry` and is
//! archived under `memory:message:<id>` with the tags `a2a`, its sender and its recipient.
//!
//! `cargo run -p examples --bin observed_worker` (Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379`; the hooks write to the same Redis unless `OBSERVE_REDIS_URL`
//! names another). The usual `FABRIC_*` settings apply. Stop it with Ctrl-C: it waits for the
//! hooks to record what was handled.

use examples::observe::{MemoryArchiver, TelemetryRecorder};
use examples::percy;
use fabric_worker::Worker;

#[tokio::main]
async fn main() {
    examples::init_tracing();
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::var("OBSERVE_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| fabric_worker::bus::DEFAULT_REDIS_URL.to_owned());
    let telemetry = TelemetryRecorder::connect(&url).await.map_err(|e| {
        anyhow::anyhow!(
            "the telemetry recorder cannot connect to OBSERVE_REDIS_URL or REDIS_URL: {e}"
        )
    })?;
    let memory = MemoryArchiver::connect(&url).await.map_err(|e| {
        anyhow::anyhow!("the memory archiver cannot connect to OBSERVE_REDIS_URL or REDIS_URL: {e}")
    })?;
    Worker::builder(percy::AGENT)
        .from_env()?
        .hook(telemetry)
        .hook(memory)
        .run()
        .await?;
    Ok(())
}
