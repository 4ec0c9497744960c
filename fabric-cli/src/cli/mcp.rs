//! `fabric mcp`.

use std::net::{SocketAddr, ToSocketAddrs};

use super::{HttpProtectionArgs, McpArgs, Target};
use crate::error::{Error, Result};
use crate::mcp::auth::{ADMIN, Authenticator, Identity, JwtConfig};
use crate::mcp::http::{self, HttpConfig};
use crate::mcp::{FabricMcp, McpConfig};

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} {}: {e}", path.display())))
}

/// The authenticator described by the HTTP flags (of `mcp --http` and `dashboard`).
pub(crate) fn authenticator(args: &HttpProtectionArgs) -> Result<Authenticator> {
    let mut auth = Authenticator::new().with_admins(args.admin_agents.iter().cloned());
    if let Some(path) = &args.tokens_file {
        let n = auth.load_tokens_file(path)?;
        tracing::info!(tokens = n, file = %path.display(), "static tokens loaded");
    }
    let jwt = match (&args.jwt_hs256_secret_file, &args.jwt_rs256_public_key_file) {
        (Some(p), _) => Some(JwtConfig::hs256(&read_file(p, "JWT secret file")?)?),
        (None, Some(p)) => Some(JwtConfig::rs256_pem(&read_file(p, "JWT public key file")?)?),
        (None, None) => None,
    };
    match jwt {
        Some(mut j) => {
            if let Some(iss) = &args.jwt_issuer {
                j = j.issuer(iss.clone());
            }
            match &args.jwt_audience {
                Some(aud) => j = j.audience(aud.clone()),
                None if !args.jwt_any_audience => {
                    return Err(Error::Usage(
                        "--jwt-audience AUD is required with JWTs: without it a token minted for any other service would be accepted here; pass --jwt-any-audience to accept that on purpose".into(),
                    ));
                }
                None => {}
            }
            auth.set_jwt(j);
        }
        None if args.jwt_issuer.is_some() || args.jwt_audience.is_some() => {
            return Err(Error::Usage(
                "--jwt-issuer / --jwt-audience need --jwt-hs256-secret-file or --jwt-rs256-public-key-file".into(),
            ));
        }
        None => {}
    }
    Ok(auth)
}

fn stdio_identity(args: &McpArgs) -> Result<Identity> {
    let agent = args
        .agent
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    if let Some(a) = agent {
        fabric_worker::keys::validate_agent(a)
            .map_err(|e| Error::Usage(format!("--agent / FABRIC_AGENT: {e}")))?;
    }
    match (agent, args.admin.unwrap_or(false)) {
        (a, true) => Ok(Identity::Admin(a.unwrap_or(ADMIN).to_owned())),
        (Some(a), false) => Ok(Identity::Agent(a.to_owned())),
        (None, false) => Err(Error::Usage(
            "fabric mcp needs to know who is calling: pass --agent ID (or set FABRIC_AGENT) to act as that agent, or --admin to act for any agent".into(),
        )),
    }
}

/// An address to listen on (`HOST:PORT`, or `HOST` with `default_port`).
pub(crate) fn parse_addr(s: &str, default_port: u16, flag: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let with_port = if s.contains(':') {
        s.to_owned()
    } else {
        format!("{s}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{flag} {s:?}: expected an address like 127.0.0.1:{default_port}"
            ))
        })
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) async fn run(at: &Target, args: McpArgs) -> Result<()> {
    let mut config = McpConfig::new(at.url.clone(), at.mode);
    config.visibility_timeout = std::time::Duration::from_secs(args.visibility_timeout);
    for t in &args.topics {
        fabric_worker::keys::validate_topic(t)
            .map_err(|e| Error::Usage(format!("--topic: {e}")))?;
    }
    config.topics = args.topics.clone();
    config.limits = crate::mcp::limits::LimitsConfig {
        blocking_per_identity: args.max_blocking_receives_per_identity as usize,
        blocking_total: args.max_blocking_receives as usize,
        calls_per_second: f64::from(args.calls_per_second),
        burst: f64::from(args.calls_per_second) * 2.0,
    };
    match &args.http {
        None => {
            if args.protection.tokens_file.is_some()
                || args.protection.jwt_hs256_secret_file.is_some()
                || args.protection.jwt_rs256_public_key_file.is_some()
                || args.issue_credentials_as.is_some()
            {
                return Err(Error::Usage(
                    "token, JWT and credentials options apply to --http only; over stdio the identity comes from --agent / --admin".into(),
                ));
            }
            let identity = stdio_identity(&args)?;
            tracing::info!(%identity, "MCP server on stdio");
            let server = FabricMcp::new(&config, Some(identity))?;
            tokio::select! {
                r = server.serve_stdio() => r,
                _ = shutdown_signal() => Ok(()),
            }
        }
        Some(addr) => {
            let addr = parse_addr(addr, 8765, "--http")?;
            let p = &args.protection;
            let mut cfg = HttpConfig::new(config, authenticator(p)?);
            cfg.allowed_origins = p.allow_origins.clone();
            cfg.allowed_hosts = p.allow_hosts.clone();
            cfg.public_url = p.public_url.clone();
            cfg.authorization_servers = args.authorization_servers.clone();
            cfg.allow_remote = p.allow_remote;
            cfg.insecure_http = p.insecure_http;
            if let Some(admin_url) = &args.issue_credentials_as {
                fabric_worker::bus::validate_url(admin_url)
                    .map_err(|e| Error::Usage(format!("--issue-credentials-as: {e}")))?;
                cfg.credentials = Some(crate::mcp::credentials::CredentialsConfig {
                    admin_url: admin_url.clone(),
                    lifetime: std::time::Duration::from_secs(args.credentials_lifetime),
                    mode: at.mode,
                    topics: args.topics.clone(),
                });
            }
            let server = http::bind(cfg, addr).await?;
            eprintln!("fabric MCP server listening on {}", server.mcp_url());
            let stop = server.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                stop.cancel();
            });
            server.wait().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn mcp_args(line: &[&str]) -> McpArgs {
        let mut argv = vec!["fabric", "mcp"];
        argv.extend_from_slice(line);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Mcp(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn stdio_identity_needs_agent_or_admin() {
        let mut a = mcp_args(&[]);
        a.agent = None;
        a.admin = None;
        assert!(matches!(stdio_identity(&a), Err(Error::Usage(_))));
        a.agent = Some("coder".into());
        assert_eq!(stdio_identity(&a).unwrap(), Identity::Agent("coder".into()));
        a.admin = Some(true);
        assert_eq!(stdio_identity(&a).unwrap(), Identity::Admin("coder".into()));
        a.agent = Some("bad id".into());
        assert!(matches!(stdio_identity(&a), Err(Error::Usage(_))));
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:9", 1, "--http").unwrap().port(), 9);
        assert_eq!(parse_addr("127.0.0.1", 1, "--http").unwrap().port(), 1);
        assert!(
            parse_addr("localhost:9", 1, "--http")
                .unwrap()
                .ip()
                .is_loopback()
        );
        assert!(parse_addr("not an address", 1, "--http").is_err());
    }
}
