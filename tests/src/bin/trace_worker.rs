//! A worker process for the trace tests (`tests/tests/traces.rs`): exports its spans over
//! OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (fabric-worker's feature `otel`) and serves the
//! agents in `FABRIC_AGENTS`, their inboxes and results streams, with:
//!
//! - `trace_start` `{"to": <agent>}`: sends `<agent>` a `trace_task` whose replies go to this
//!   agent's results stream (coder's part);
//! - `trace_task`: replies `{"reviewed": true}` (percy's part);
//! - `response`: records the reply's correlation id in the Redis list `trace:done`.

use fabric_worker::prelude::*;
use redis::AsyncCommands;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Start {
    to: String,
}

#[handler(message_type = "trace_start")]
async fn start(ctx: Context, s: Start) -> Result<(), HandlerError> {
    let task = Message::new(ctx.agent(), &s.to, "trace_task", json!({"pr": 1}))
        .with_reply_to(fabric_worker::keys::results(ctx.agent()))
        .with_correlation_id(ctx.message_id());
    ctx.bus()
        .send(task)
        .await
        .map_err(|e| HandlerError::retry(e.to_string()))?;
    Ok(())
}

#[handler(message_type = "trace_task")]
async fn task(_ctx: Context, _v: Value) -> Result<Value, HandlerError> {
    Ok(json!({"reviewed": true}))
}

#[handler(message_type = "response")]
async fn response(ctx: Context, _v: Value) -> Result<(), HandlerError> {
    let url = std::env::var("REDIS_URL").map_err(|e| HandlerError::permanent(e.to_string()))?;
    let client = redis::Client::open(url).map_err(|e| HandlerError::retry(e.to_string()))?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| HandlerError::retry(e.to_string()))?;
    let id = ctx.correlation_id().unwrap_or_default().to_owned();
    let _: i64 = c
        .rpush("trace:done", id)
        .await
        .map_err(|e| HandlerError::retry(e.to_string()))?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let guard = match fabric_worker::otel::init("trace_worker") {
        Ok(g) => g,
        Err(e) => {
            eprintln!("trace_worker: {e}");
            std::process::exit(2);
        }
    };
    let first = std::env::var("FABRIC_AGENTS").unwrap_or_default();
    let first = first.split(',').next().unwrap_or("coder").trim().to_owned();
    let run = async {
        Worker::builder(first)
            .from_env()?
            .consume_results(true)
            .run()
            .await
    };
    let r = run.await;
    drop(guard); // exports the spans still buffered
    if let Err(e) = r {
        eprintln!("trace_worker: {e}");
        std::process::exit(1);
    }
}
