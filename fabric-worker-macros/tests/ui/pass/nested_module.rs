mod jobs {
    pub mod review {
        use fabric_worker::prelude::*;

        #[derive(Deserialize)]
        pub struct Job {
            pub id: u64,
        }

        #[handler(message_type = "jobs.review")]
        async fn handle(job: Job, ctx: Context) -> Result<u64, HandlerError> {
            let _ = ctx.message_id();
            Ok(job.id)
        }
    }
}

fn main() {
    use fabric_worker::__private::{Registration, inventory};

    let reg = inventory::iter::<Registration>
        .into_iter()
        .next()
        .expect("one registration");
    assert!(reg.name.ends_with("::jobs::review::handle"), "{}", reg.name);
    assert_eq!(reg.message_type, "jobs.review");
}
