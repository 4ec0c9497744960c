// The context is found by its type, not by its name: an alias works, in either position.
use fabric_worker::Context as Ctx;
use fabric_worker::prelude::{Deserialize, HandlerError, handler};

#[derive(Deserialize)]
struct Task {
    n: u32,
}

#[handler(message_type = "aliased")]
async fn aliased(ctx: Ctx, task: Task) -> Result<u32, HandlerError> {
    let _ = ctx.agent();
    Ok(task.n)
}

type Job = Task;

#[handler(message_type = "aliased_second")]
async fn payload_first(job: Job, c: Ctx) {
    let _ = (job.n, c.message_id());
}

fn main() {}
