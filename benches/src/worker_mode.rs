//! `fabric-bench __worker`: the worker under test, a process of its own.
//!
//! Exactly what a user writes: `#[handler]` functions and
//! `Worker::builder(agent).from_env()?.run().await`, with default settings (the benchmark
//! clears every `FABRIC_*` variable except `FABRIC_AGENTS` and those a scenario sets with
//! `procs::with_ours_env`). The handlers parse the
//! payload into a struct and do nothing else but count the message and, for messages
//! carrying a send timestamp, record the send → handler-start latency. On SIGTERM the
//! worker shuts down gracefully and the process writes its stats to `BENCH_STATS_FILE`.

use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::Context as _;
use fabric_worker::Worker;

use crate::stats::{BenchPayload, Recorder, write_stats};

static RECORDER: LazyLock<Recorder> = LazyLock::new(Recorder::default);

/// The no-op handler of the benchmark's messages (`message_type = "bench"`, no `reply_to`).
#[fabric_worker::handler(message_type = "bench")]
async fn bench(p: BenchPayload) {
    RECORDER.record(&p);
}

/// The same for `Message::task` messages: their `reply_to` is set, so the worker writes
/// one reply per message (this is how a task's result travels back).
#[fabric_worker::handler(message_type = "task")]
async fn task(p: BenchPayload) {
    RECORDER.record(&p);
}

/// Runs the worker until SIGTERM/SIGINT, then writes the stats file.
pub(crate) fn main() -> anyhow::Result<()> {
    crate::init_tracing("warn");
    let stats_file = PathBuf::from(std::env::var("BENCH_STATS_FILE").context("BENCH_STATS_FILE")?);
    let agents = std::env::var("FABRIC_AGENTS").context("FABRIC_AGENTS")?;
    let first = agents
        .split(',')
        .map(str::trim)
        .find(|a| !a.is_empty())
        .context("FABRIC_AGENTS is empty")?
        .to_owned();
    // The same runtime `#[tokio::main]` builds: multi-threaded, one thread per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // FABRIC_AGENTS is added by from_env (duplicates are ignored).
        Worker::builder(first).from_env()?.run().await?;
        anyhow::Ok(())
    })?;
    write_stats(&stats_file, &RECORDER.snapshot())
}
