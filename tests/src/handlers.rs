//! Handlers every test binary that uses this harness gets (registering them here, once,
//! keeps two test files from defining the same message type twice):
//!
//! | message type | does |
//! | --- | --- |
//! | `echo` | replies `{"echo": <payload>, "trace": <header>, "attempt", "delivery"}` |
//! | `typed` | takes `{"x": <u32>}`, replies `2x` (a payload that does not decode is `bad_payload`) |
//! | `never_works` | fails for good (`permanent_error`) |
//! | `wf_step` | a workflow step: appends `<from_agent>-><agent>` to `trail`, keeps `tag`; `sleep_ms` waits first, `"fail": true` fails for good |
//! | `wf_collect` | a chord callback: replies the `tag`s of its `results`, in order |

use fabric_worker::prelude::*;
use serde_json::{Value, json};

/// The payload of `typed`.
#[derive(Debug, Deserialize)]
pub struct Typed {
    /// The number to double.
    pub x: u32,
}

/// `echo`.
#[handler(message_type = "echo")]
pub async fn echo(ctx: Context, payload: Value) -> Result<Value, HandlerError> {
    Ok(json!({
        "echo": payload,
        "trace": ctx.header("trace"),
        "attempt": ctx.attempt(),
        "delivery": ctx.delivery_count(),
    }))
}

/// `typed`.
#[handler(message_type = "typed")]
pub async fn typed(t: Typed) -> Result<u32, HandlerError> {
    Ok(t.x * 2)
}

/// `never_works`.
#[handler(message_type = "never_works")]
pub async fn never_works(_ctx: Context) -> Result<(), HandlerError> {
    Err(HandlerError::permanent("this task is impossible"))
}

/// `wf_step`: a workflow step (see the table above).
#[handler(message_type = "wf_step")]
pub async fn wf_step(ctx: Context, p: Value) -> Result<Value, HandlerError> {
    let sleep_ms = p.get("sleep_ms").and_then(Value::as_u64).unwrap_or(0);
    if sleep_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)).await;
    }
    if p.get("fail").and_then(Value::as_bool) == Some(true) {
        return Err(HandlerError::permanent(format!(
            "{} refuses this step",
            ctx.agent()
        )));
    }
    let mut trail = p
        .get("trail")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    trail.push(json!(format!(
        "{}->{}",
        ctx.message().from_agent,
        ctx.agent()
    )));
    Ok(json!({
        "trail": trail,
        "tag": p.get("tag"),
        "step": ctx.header("fabric-step"),
        "pid": std::process::id(),
    }))
}

/// `wf_collect`: a chord callback.
#[handler(message_type = "wf_collect")]
pub async fn wf_collect(ctx: Context, p: Value) -> Result<Value, HandlerError> {
    let results = p
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tags: Vec<Value> = results.iter().map(|r| r["tag"].clone()).collect();
    Ok(json!({
        "tags": tags,
        "count": results.len(),
        "by": ctx.agent(),
        "extra": p.get("extra"),
    }))
}
