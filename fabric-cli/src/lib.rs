//! The `fabric` command, as a library: an MCP server that exposes the agent message bus
//! to AI agents ([`mcp`]), an operator command line ([`cli`]) and a web dashboard
//! ([`dashboard`]).
//!
//! `main.rs` only parses the command line and calls [`run`]; errors carry the process
//! exit code ([`Error::exit_code`], see [`error::exit`]).

pub mod cli;
pub mod dashboard;
pub mod error;
pub mod mcp;
pub mod output;

pub use cli::{Cli, run};
pub use error::{Error, Result};
