//! `fabric`: the MCP server and operator CLI of the Fabric message bus.

use std::process::ExitCode;

use clap::Parser;
use fabric_cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: stdout carries MCP messages (stdio) or command output.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match fabric_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string().replace(['\n', '\r'], " ");
            eprintln!("error: {text}");
            ExitCode::from(e.exit_code())
        }
    }
}
