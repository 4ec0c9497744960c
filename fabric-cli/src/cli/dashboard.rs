//! `fabric dashboard`: serves the web dashboard until Ctrl-C (see [`crate::dashboard`]).

use std::time::Duration;

use super::{DashboardArgs, Target};
use crate::dashboard::{self, DashboardConfig};
use crate::error::Result;

pub(crate) async fn run(at: &Target, args: DashboardArgs) -> Result<()> {
    let addr = super::mcp::parse_addr(&args.listen, 8787, "--listen")?;
    let p = &args.protection;
    let mut config = DashboardConfig::new(at.url.clone(), at.mode);
    config.auth = super::mcp::authenticator(p)?;
    config.allowed_origins = p.allow_origins.clone();
    config.allowed_hosts = p.allow_hosts.clone();
    config.public_url = p.public_url.clone();
    config.allow_remote = p.allow_remote;
    config.insecure_http = p.insecure_http;
    config.sample_interval = Duration::from_millis(args.sample_interval_ms);
    config.history = Duration::from_secs(args.history_minutes * 60);
    let server = dashboard::bind(config, addr).await?;
    eprintln!("fabric dashboard on {} (Ctrl-C to stop)", server.url());
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        super::mcp::shutdown_signal().await;
        stop.cancel();
    });
    server.wait().await
}
