//! Handlers every test binary that uses this harness gets (registering them here, once,
//! keeps two test files from defining the same message type twice):
//!
//! | message type | does |
//! | --- | --- |
//! | `echo` | replies `{"echo": <payload>, "trace": <header>, "attempt", "delivery"}` |
//! | `typed` | takes `{"x": <u32>}`, replies `2x` (a payload that does not decode is `bad_payload`) |
//! | `never_works` | fails for good (`permanent_error`) |

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
