//! `fabric`: the MCP server and operator CLI of the Fabric message bus.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use fabric_cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The router is one loop of I/O: on one thread it saves the cross-thread wake-ups
    // (measured in `fabric-bench --only secure`). Everything else gets a thread per core.
    let runtime = if matches!(cli.command, fabric_cli::cli::Command::Router(_)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    // Logs go to stderr: stdout carries MCP messages (stdio) or command output.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal: logs redirected to a file or a pipe stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let json = cli.json;
    match fabric_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = e.to_string().replace(['\n', '\r'], " ");
            eprintln!("error: {}", fabric_cli::output::terminal_safe(&text));
            if json {
                // Scripts reading stdout with `--json` see the error as JSON too.
                let err =
                    serde_json::json!({"error": {"message": text, "exit_code": e.exit_code()}});
                println!("{err}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
