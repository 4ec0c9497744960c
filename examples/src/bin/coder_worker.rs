//! `coder_worker`: the coder agent. Sends percy a `code_review` task with `reply_to` its
//! own results stream (`agent:coder:results`), handles percy's reply (a `response`
//! message) and prints it. It serves only coder's results stream (`consume_inbox(false)`):
//! coder's inbox is left to whatever else serves coder (an MCP session, say).
//!
//! `cargo run -p examples --bin coder_worker -- [--tasks N] [--timeout-secs S] [--forever]`
//! By default it sends one task, waits for the reply, prints it and exits (exit code 1 if
//! no reply came within the timeout). Replies to tasks of earlier runs are acknowledged and
//! counted, not printed. With `--forever` it keeps handling replies.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fabric_worker::prelude::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Correlation ids of the tasks this run sent, and a wake-up for every reply.
fn sent() -> &'static (Mutex<HashSet<String>>, Notify) {
    static SENT: OnceLock<(Mutex<HashSet<String>>, Notify)> = OnceLock::new();
    SENT.get_or_init(|| (Mutex::new(HashSet::new()), Notify::new()))
}

/// Replies to tasks this run did not send (earlier runs, other senders as coder).
static OTHERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether the reply `ctx` answers a task of this run (and marks it answered).
fn ours(ctx: &Context) -> bool {
    let (set, notify) = sent();
    let mine = ctx
        .correlation_id()
        .is_some_and(|c| set.lock().map(|mut s| s.remove(c)).unwrap_or(false));
    if mine {
        notify.notify_one();
    } else {
        OTHERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            from = ctx.from_agent(),
            "a reply to a task of an earlier run: acknowledged, not shown"
        );
    }
    mine
}

#[handler(message_type = "response")]
async fn handle_reply(ctx: Context, review: Value) -> Result<(), HandlerError> {
    if ours(&ctx) {
        println!(
            "coder got a reply from {} (message {}): {}",
            ctx.from_agent(),
            ctx.message_id(),
            review
        );
    }
    Ok(())
}

#[handler(message_type = "error")]
async fn handle_error(ctx: Context, err: Value) -> Result<(), HandlerError> {
    if ours(&ctx) {
        println!("coder got an error from {}: {}", ctx.from_agent(), err);
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    examples::init_tracing();
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let mut tasks = 1usize;
    let mut timeout = Duration::from_secs(30);
    let mut forever = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tasks" => {
                tasks = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--tasks needs a number"))?;
            }
            "--timeout-secs" => {
                timeout = Duration::from_secs(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| anyhow::anyhow!("--timeout-secs needs a number"))?,
                );
            }
            "--forever" => forever = true,
            "-h" | "--help" => {
                println!("usage: coder_worker [--tasks N] [--timeout-secs S] [--forever]");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; try --help"),
        }
    }
    let worker = Worker::builder("coder")
        .from_env()?
        .consume_inbox(false)
        .consume_results(true)
        .build()
        .await?;
    let bus = worker.bus().clone();
    for i in 0..tasks {
        let task = Message::task(
            "coder",
            "percy",
            "code_review",
            json!({ "pr_id": format!("{}", 100 + i) }),
        )
        .with_header("trace", format!("demo-{i}"));
        if let Some(c) = &task.correlation_id {
            sent()
                .0
                .lock()
                .map_err(|_| anyhow::anyhow!("lock poisoned"))?
                .insert(c.clone());
        }
        let receipt = bus.send(task).await?;
        println!(
            "coder sent code_review {} to percy (stream id {})",
            receipt.message_id, receipt.stream_id
        );
    }
    if forever {
        worker.run().await?;
        return Ok(());
    }
    let all_replied = async {
        loop {
            if sent().0.lock().map(|s| s.is_empty()).unwrap_or(true) {
                return;
            }
            sent().1.notified().await;
        }
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<bool>();
    let waiter = tokio::spawn(async move {
        let ok = tokio::time::timeout(timeout, all_replied).await.is_ok();
        let _ = done_tx.send(ok);
    });
    let mut ok = false;
    worker
        .run_until(async {
            ok = done_rx.await.unwrap_or(false);
        })
        .await?;
    waiter.await?;
    if !ok {
        anyhow::bail!(
            "no reply from percy within {timeout:?}; is percy_worker running against the same Redis?"
        );
    }
    let others = OTHERS.load(std::sync::atomic::Ordering::Relaxed);
    if others > 0 {
        println!(
            "coder: all {tasks} replies received (and {others} to earlier runs' tasks, not shown)"
        );
    } else {
        println!("coder: all {tasks} replies received");
    }
    Ok(())
}
