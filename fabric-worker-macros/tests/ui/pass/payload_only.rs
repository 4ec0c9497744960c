use fabric_worker::prelude::*;

#[handler(message_type = "echo")]
async fn echo(payload: serde_json::Value) -> Result<serde_json::Value, HandlerError> {
    Ok(payload)
}

// The function is left as written, so it can still be called directly (as a
// unit test would).
fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let value = serde_json::json!({ "hello": "world" });
    let echoed = rt.block_on(echo(value.clone())).expect("echo succeeds");
    assert_eq!(echoed, value);
}
