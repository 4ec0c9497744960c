//! A router process for the integration tests: `fabric_worker::router::Router` against
//! `REDIS_URL` (the router's credentials) until SIGTERM or SIGINT.
//! `TEST_ROUTER_RECLAIM_IDLE_MS` (default 500) sets how soon it takes over another router's
//! unacknowledged entries.

use std::time::Duration;

use fabric_worker::router::Router;

#[tokio::main]
async fn main() {
    fabric_tests::init_process_tracing();
    let reclaim = std::env::var("TEST_ROUTER_RECLAIM_IDLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let run = async {
        let router = Router::builder()
            .url(fabric_worker::bus::redis_url_from_env())
            .reclaim_idle(Duration::from_millis(reclaim))
            .scan_interval(Duration::from_millis(100))
            .build()
            .await?;
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        router.run_until(stop).await
    };
    if let Err(e) = run.await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
