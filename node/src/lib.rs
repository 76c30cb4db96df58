//! The Basic node: the `basic` command line, the node it runs (`basic up`)
//! and its local HTTP API.
//!
//! Operations ([`ops`]) run against a [`node::Node`] — the database and the
//! node's files in the data directory ([`paths`]). The API ([`api`]) runs
//! them for HTTP requests, checking tokens ([`tokens`]) and app grants
//! ([`capability`]); the CLI ([`commands`]) runs them through the running
//! node's API or directly on the database ([`backend`]).

pub mod api;
pub mod attribution;
pub mod backend;
pub mod capability;
pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod join;
pub mod keystore;
pub mod network;
pub mod node;
pub mod ops;
pub mod paths;
pub mod peers;
pub mod pinner;
pub mod recover;
pub mod status;
pub mod tokens;

/// The `basic` command: parses the command line, sets up logging, runs it
/// and turns an error into one line on stderr and exit code 1.
pub fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    use std::process::ExitCode;

    use clap::Parser;
    use cli::{Cli, Command};
    use tracing_subscriber::EnvFilter;

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout and succeed; usage errors fail.
            let _ = error.print();
            return if error.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    // The node logs what it does; other commands only warnings.
    let default = if matches!(cli.command, Command::Up(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
