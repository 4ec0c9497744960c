use fabric_worker::prelude::*;

#[handler(message_type = "a", every = "1h", cron = "0 0 3 * * *")]
async fn both() {}

#[handler(message_type = "b", every = "1h", tz = "Europe/Paris")]
async fn zone_on_an_interval() {}

#[handler(message_type = "c", missed = "skip")]
async fn policy_without_schedule() {}

#[handler(topic = "analytics.*", every = "1h")]
async fn on_a_topic(ctx: Context) {
    let _ = ctx;
}

fn main() {}
