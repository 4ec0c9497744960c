use fabric_worker::prelude::*;

#[handler(message_type = "digest", every = "1h")]
async fn hourly() {}

#[handler(
    message_type = "nightly",
    agent = "memory",
    cron = "0 0 3 * * *",
    tz = "Europe/Paris",
    missed = "skip"
)]
async fn nightly(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "plain")]
async fn plain() {}

fn main() {
    use fabric_worker::__private::{Registration, inventory};

    let find = |ty: &str| {
        inventory::iter::<Registration>
            .into_iter()
            .find(|r| r.message_type == ty)
            .unwrap_or_else(|| panic!("no registration for {ty}"))
    };
    let s = find("digest").schedule.as_ref().unwrap();
    assert_eq!((s.every_ms, s.cron, s.tz, s.missed), (3_600_000, "", "", ""));
    let s = find("nightly").schedule.as_ref().unwrap();
    assert_eq!(
        (s.every_ms, s.cron, s.tz, s.missed),
        (0, "0 0 3 * * *", "Europe/Paris", "skip")
    );
    assert!(find("plain").schedule.is_none());
}
