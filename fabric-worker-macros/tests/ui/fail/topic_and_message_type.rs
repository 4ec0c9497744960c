use fabric_worker::prelude::*;

#[handler(message_type = "event", topic = "analytics.*")]
async fn both(_ctx: Context) {}

#[handler(topic = ".analytics")]
async fn bad_topic(_ctx: Context) {}

fn main() {}
