// Arguments may come in any order, use patterns, and name `Context` by any
// path whose last segment is `Context`.
use fabric_worker::prelude::*;

#[derive(Deserialize)]
struct Pair {
    left: i64,
    right: i64,
}

#[handler(message_type = "payload.first")]
async fn payload_first(task: Pair, ctx: fabric_worker::Context) -> Result<i64, HandlerError> {
    let _ = ctx;
    Ok(task.left + task.right)
}

#[handler(message_type = "patterns")]
async fn patterns(mut ctx: ::fabric_worker::Context, Pair { left, .. }: Pair) -> Result<i64, HandlerError> {
    ctx = ctx.clone();
    let _ = ctx;
    Ok(left)
}

#[handler(message_type = "wildcards")]
async fn wildcards(_: Context, _: Vec<String>) {}

#[handler(message_type = "raw.ident")]
async fn r#match(items: Vec<Option<u8>>) -> Result<usize, HandlerError> {
    Ok(items.len())
}

fn main() {
    use fabric_worker::__private::{Registration, inventory};

    let reg = inventory::iter::<Registration>
        .into_iter()
        .find(|r| r.message_type == "raw.ident")
        .expect("registered");
    assert!(reg.name.ends_with("::match"), "{}", reg.name);
}
