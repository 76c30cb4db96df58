//! `basic-bench`: end-to-end figures for Basic, measured on this machine.
//!
//! ```text
//! cargo run --release --bin basic-bench -- ingest --json
//! cargo run --release --bin basic-bench -- write --json
//! cargo run --release --bin basic-bench -- query --json
//! cargo run --release --bin basic-bench -- sync --json
//! cargo run --release --bin basic-bench -- sync --store sled,redb,lsm --rows 1000000
//! cargo run --release --bin basic-bench -- live --json
//! cargo run --release --bin basic-bench -- first-sync --json
//! cargo run --release --bin basic-bench -- compare --json
//! cargo run --release --bin basic-bench -- all --json
//! ```
//!
//! Each scenario prints one JSON object per line (`--json`) with a `name`
//! and its figures, or a readable line otherwise. Everything runs in a
//! temporary directory on the real store (the LSM tree) and SQLite view; `live` and
//! `first-sync` run two real nodes (this executable as the `basic`
//! command) on loopback.

/// The allocator the `basic` executable uses (D44), so the figures are
/// those of what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod compare;
mod engines;
mod first_sync;
mod fixture;
mod ingest;
mod live;
mod query;
mod report;
mod sync;
mod write;

use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// Measures Basic end to end: ingest of signed commits, durable writes, queries.
#[derive(Debug, Parser)]
#[command(name = "basic-bench", version)]
struct Args {
    /// Which scenario to run.
    scenario: Scenario,
    /// Print one JSON object per result line.
    #[arg(long)]
    json: bool,
    /// Smaller sizes and shorter runs, to check the benchmark itself works.
    #[arg(long)]
    quick: bool,
    /// `compare` only: run just these parts (default: all of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<compare::Part>,
    /// `sync` only: instead of its default run, a new device's first sync
    /// with its replica on each of these engines, each in a child process
    /// (rows/s, peak memory, size on disk).
    #[arg(long, value_enum, value_delimiter = ',')]
    store: Vec<engines::Engine>,
    /// `sync --store` only: the rows to sync, a multiple of 1,000
    /// (default 100,000; 5,000 with `--quick`).
    #[arg(long)]
    rows: Option<i64>,
    /// `sync --store` only: the new device's store cache in MiB (default:
    /// the node's, `basic_store::CACHE_BYTES`).
    #[arg(long)]
    cache_mib: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Commits from 4 other authors verified, decrypted, merged and persisted.
    Ingest,
    /// Durable local writes from 1 and from 16 concurrent writers.
    Write,
    /// Point lookups, indexed range scans and a join over 100k rows.
    Query,
    /// A second device pulls 100k rows through the sync protocol, then one new row.
    Sync,
    /// An app's replica (basic-client) pulls the same 100k rows; opens, queries, memory.
    Client,
    /// Two `basic up` nodes over libp2p on loopback: a write on one seen live on the other.
    Live,
    /// Two `basic up` nodes: a new device's first sync of 1M rows over libp2p; time, memory.
    FirstSync,
    /// Each figure beside its anchor (automerge-rs, SQLite, sled, the disk), same run.
    Compare,
    /// Every scenario above.
    All,
}

fn main() -> ExitCode {
    basic::without_huge_pages();
    if std::env::var_os(live::NODE_ENV).is_some() {
        // A node of the `live` scenario: the `basic` command.
        return basic::main();
    }
    let mut argv = std::env::args_os().skip(1);
    let first = argv.next();
    if first.as_ref().is_some_and(|arg| arg == engines::CHILD_ARG) {
        // One engine's first sync for `sync --store`, in a process of its own.
        return match engines::child(argv) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("basic-bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if first.is_some_and(|arg| arg == client::PROBE_ARG) {
        // The app-start probe of the `client` scenario, in a process of its own.
        let dir = argv.next().map(std::path::PathBuf::from).unwrap_or_default();
        return match client::probe_replica(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("basic-bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    let reporter = report::Reporter { json: args.json };
    let scenarios: &[Scenario] = match args.scenario {
        Scenario::All => &[
            Scenario::Ingest,
            Scenario::Write,
            Scenario::Query,
            Scenario::Sync,
            Scenario::Client,
            Scenario::Live,
            Scenario::FirstSync,
            Scenario::Compare,
        ],
        ref one => std::slice::from_ref(one),
    };
    for scenario in scenarios {
        let result = match scenario {
            Scenario::Ingest => ingest::run(&reporter, args.quick),
            Scenario::Write => write::run(&reporter, args.quick),
            Scenario::Query => query::run(&reporter, args.quick),
            Scenario::Sync if !args.store.is_empty() => {
                engines::run(&reporter, args.quick, &args.store, args.rows, args.cache_mib)
            }
            Scenario::Sync => sync::run(&reporter, args.quick),
            Scenario::Client => client::run(&reporter, args.quick),
            Scenario::Live => {
                live::run(&reporter, args.quick).map_err(|e| -> Box<dyn std::error::Error> { e })
            }
            Scenario::FirstSync => first_sync::run(&reporter, args.quick)
                .map_err(|e| -> Box<dyn std::error::Error> { e }),
            Scenario::Compare => compare::run(&reporter, args.quick, &args.only),
            Scenario::All => Ok(()),
        };
        if let Err(error) = result {
            eprintln!("basic-bench: {scenario:?} failed: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
