use fabric_worker::prelude::*;

#[handler(message_type = "task")]
struct Review;

fn main() {}
