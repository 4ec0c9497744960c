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

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn dashboard_and_mcp_share_the_protection_flags() {
        let c = Cli::try_parse_from(["fabric", "dashboard"]).unwrap();
        let Command::Dashboard(d) = c.command else {
            panic!()
        };
        assert_eq!(d.listen, crate::dashboard::DEFAULT_ADDR);
        assert_eq!(d.sample_interval_ms, 2000);
        assert!(!d.protection.allow_remote);
        let c = Cli::try_parse_from([
            "fabric",
            "dashboard",
            "--listen",
            "0.0.0.0:9000",
            "--allow-remote",
            "--allow-host",
            "ops.example.com",
            "--tokens-file",
            "t.json",
            "--public-url",
            "https://ops.example.com",
        ])
        .unwrap();
        let Command::Dashboard(d) = c.command else {
            panic!()
        };
        assert!(d.protection.allow_remote);
        assert_eq!(d.protection.allow_hosts, ["ops.example.com"]);
        assert_eq!(
            d.protection.tokens_file.as_deref(),
            Some(std::path::Path::new("t.json"))
        );
        assert!(
            Cli::try_parse_from(["fabric", "dashboard", "--sample-interval-ms", "10"]).is_err()
        );
        // The same flags, flattened, still parse for mcp.
        let c = Cli::try_parse_from([
            "fabric",
            "mcp",
            "--http",
            "--tokens-file",
            "t.json",
            "--allow-origin",
            "https://app.example.com",
        ])
        .unwrap();
        let Command::Mcp(m) = c.command else { panic!() };
        assert_eq!(m.protection.allow_origins, ["https://app.example.com"]);
        assert!(
            Cli::try_parse_from([
                "fabric",
                "mcp",
                "--jwt-hs256-secret-file",
                "a",
                "--jwt-rs256-public-key-file",
                "b"
            ])
            .is_err()
        );
    }
}
