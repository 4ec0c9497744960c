use fabric_worker::prelude::*;

#[handler(message_type = "a", every = "1 hour")]
async fn words() {}

#[handler(message_type = "b", every = "500ms")]
async fn too_short() {}

#[handler(message_type = "c", cron = "0 3 * * *")]
async fn no_seconds() {}

#[handler(message_type = "d", cron = "0 0 25 * * *")]
async fn no_such_hour() {}

#[handler(message_type = "e", cron = "0 0 3 * * *", tz = "Europe/Pariss")]
async fn no_such_zone() {}

#[handler(message_type = "f", every = "1h", missed = "later")]
async fn no_such_policy() {}

fn main() {}
