//! The Basic node: the `basic` command line, the node it runs (`basic up`)
//! and its local HTTP API.
//!
//! The modules form layers; each uses only those below it:
//!
//! 1. files and words: [`paths`] (the data directory), [`error`],
//!    [`ids`] (principals' text ids), [`status`], [`keystore`];
//! 2. the node's own records: [`tokens`], [`capability`],
//!    [`peers`], [`join`];
//! 3. [`node::Node`]: the database with those records — what operations
//!    run against;
//! 4. the operations ([`ops`]), one per command and API route;
//! 5. the ways operations are reached: the network ([`network`]), the
//!    HTTP API ([`api`]), and for the CLI the running node's API or the
//!    database directly ([`client`], [`backend`]);
//! 6. the processes: `basic up` ([`daemon`]), a pinning peer ([`pinner`]),
//!    recovery ([`recover`]), and the command line ([`cli`], [`commands`]).

pub mod access;
pub mod api;
pub mod backend;
pub mod capability;
pub mod cli;
pub mod client;
pub mod commands;
pub mod daemon;
pub mod error;
pub mod ids;
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

/// Turns transparent huge pages off for this process (D45), as the first
/// thing an executable that uses mimalloc does. mimalloc asks for huge
/// pages on its segments; the writer frees most of what a group allocated
/// before the next, and each 2 MiB page faulted in again is zeroed whole:
/// a fifth of a first sync's writer time, and more memory resident. A
/// kernel that refuses leaves them on: slower, not wrong.
pub fn without_huge_pages() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Makes every file and directory this process creates its owner's
/// alone (umask 077), whatever umask it was started with. The database's
/// directory is made private when it opens, which covers the files made in
/// it later; the LSM store also makes its tables, and an export writes
/// plaintext, and neither should ever be readable by others on its own.
pub fn private_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

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
    // The node logs what it does (lsm-tree, its store's engine, only
    // warnings: it says at `info` each time it opens); other commands only
    // warnings, and the progress of a replica's one-time move into the LSM
    // store (D56).
    let default = if matches!(cli.command, Command::Up(_)) {
        "info,lsm_tree=warn"
    } else {
        "warn,basic_store::storage::device=info"
    };
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
            eprintln!("error: {}", error::causes(&error));
            ExitCode::FAILURE
        }
    }
}
