// The expansion uses absolute paths only, so none of these user items may
// change its meaning.
#![allow(dead_code, non_camel_case_types, unused_macros)]

use fabric_worker::prelude::*;

type Result<T> = ::std::result::Result<T, HandlerError>;
struct Box;
mod core {}
struct Option;
struct Some;
struct None;
struct Ok;
struct Err;
struct Value;
struct BoxFuture;
struct Registration;
struct v;
struct outcome;
fn drop() {}
fn decode_payload() {}
fn into_outcome() {}
macro_rules! concat {
    ($($t:tt)*) => {
        0
    };
}
macro_rules! line {
    () => {
        "not a line"
    };
}
macro_rules! file {
    () => {
        0
    };
}
macro_rules! module_path {
    () => {
        0
    };
}

#[derive(Deserialize)]
struct Task {
    id: u32,
}

#[handler(message_type = "shadowed", max_attempts = 2, timeout = "5s", agent = "percy")]
async fn shadowed(ctx: Context, task: Task) -> Result<u32> {
    let _ = ctx;
    ::std::result::Result::Ok(task.id)
}

#[handler(message_type = "shadowed.unit")]
async fn unit() {}

fn main() {}
