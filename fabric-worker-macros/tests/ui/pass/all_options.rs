use fabric_worker::prelude::*;

#[derive(Deserialize)]
struct Job {
    id: u64,
}

#[handler(
    message_type = "review.v2:code-task_1",
    agent = "percy",
    max_attempts = 3,
    timeout = "500ms",
)]
async fn with_everything(job: Job, ctx: Context) -> Result<u64, HandlerError> {
    let _ = ctx.attempt();
    Ok(job.id)
}

// A second handler in the same module: the generated items must not clash.
#[handler(message_type = "other", agent = "Percy-2_x", max_attempts = 1u32, timeout = "2m")]
async fn second(ctx: Context) {
    let _ = ctx;
}

#[handler(message_type = "hourly", timeout = "1h")]
async fn hourly() {}

fn main() {
    use fabric_worker::__private::{Registration, inventory};

    let find = |ty: &str| {
        inventory::iter::<Registration>
            .into_iter()
            .find(|r| r.message_type == ty)
            .unwrap_or_else(|| panic!("no registration for {ty}"))
    };

    let reg = find("review.v2:code-task_1");
    assert_eq!(reg.agent, Some("percy"));
    assert_eq!(reg.max_attempts, Some(3));
    assert_eq!(reg.timeout_ms, Some(500));
    assert!(reg.name.ends_with("::with_everything"), "{}", reg.name);

    let reg = find("other");
    assert_eq!(reg.agent, Some("Percy-2_x"));
    assert_eq!(reg.max_attempts, Some(1));
    assert_eq!(reg.timeout_ms, Some(120_000));

    let reg = find("hourly");
    assert_eq!(reg.agent, None);
    assert_eq!(reg.max_attempts, None);
    assert_eq!(reg.timeout_ms, Some(3_600_000));

    assert_eq!(inventory::iter::<Registration>.into_iter().count(), 3);
}
