//! `client`: the light client's figures beside a device's, same run.
//!
//! A device holds 100k rows of `bench.items`. A second device pulls them
//! (the device figure), then an app granted `bench` builds its replica on
//! disk as `basic-client` does and pulls the same scope, through the same
//! sync protocol and store (frames passed in memory). Then a fresh process
//! — as an app starts — opens the app's replica and runs its first query,
//! timing both and reporting its resident memory; twice, the first open
//! after a big sync and a second one. The example
//! app's release size is reported if it was built
//! (`cargo build --release -p todo-app`).

use std::path::Path;
use std::time::{Duration, Instant};

use basic_client::AppView;
use basic_proto::control::Rights;
use basic_proto::{Party, SecretKey, Value as Cell};
use basic_store::Database;
use basic_store::sync::LocalLink;
use serde_json::Value;

use crate::fixture;
use crate::report::{Reporter, millis, per_second};

type Error = Box<dyn std::error::Error>;

/// Rows per commit.
const ROWS_PER_COMMIT: i64 = 1000;
/// The hidden argument under which this binary probes an app's replica.
pub(crate) const PROBE_ARG: &str = "--probe-app-replica";
/// The query an app runs first.
const FIRST_QUERY: &str = "SELECT count(*), max(n) FROM items";

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let commits = if quick { 5 } else { 100 };
    let rows = commits as i64 * ROWS_PER_COMMIT;
    let source = fixture::open()?;
    reporter.note(&format!("client: writing {rows} rows in {commits} commits"));
    let written = fixture::foreign_commits(&source.db, &source.key, commits, ROWS_PER_COMMIT, 3);
    let encoded: Vec<Vec<u8>> = written.iter().map(|c| c.as_bytes().to_vec()).collect();
    for outcome in source.db.ingest(&encoded)? {
        outcome?;
    }

    // The device figure.
    let (_device_dir, device) = fixture::second_device(&source)?;
    let device_secs = first_sync(&device, &source.db)?;
    drop(device);

    // The app's replica, as `Client::request_access` builds it.
    let app = SecretKey::generate(&mut rand::rng());
    source.db.grant(Party::of(&app), fixture::scope(), Rights::Read)?;
    let app_dir = tempfile::tempdir()?;
    let client =
        Database::replicate(app_dir.path(), source.db.id(), &app, &source.db.control_ops()?)?;
    let client_secs = first_sync(&client, &source.db)?;
    let held = AppView::new(&client)?.query("SELECT count(*) FROM items", &[])?;
    if held.rows.first().and_then(|r| r.first()) != Some(&Cell::Integer(rows)) {
        return Err(format!("the app holds {:?} rows, not {rows}", held.rows).into());
    }
    drop(client);

    let after_sync = probe(app_dir.path())?;
    let again = probe(app_dir.path())?;
    let mut figures = vec![
        ("rows", rows.into()),
        ("client_first_sync_rows_per_s", per_second(rows as f64, client_secs)),
        ("device_first_sync_rows_per_s", per_second(rows as f64, device_secs)),
        // Above 1: the client's first sync is faster than the device's.
        (
            "client_speed_vs_device",
            Value::from((device_secs / client_secs * 100.0).round() / 100.0),
        ),
        ("open_and_first_query_after_sync_ms", millis(after_sync.open + after_sync.query)),
        ("open_ms", millis(again.open)),
        ("open_and_first_query_ms", millis(again.open + again.query)),
        ("client_rss_mib", Value::from((again.rss as f64 / 1048576.0).round())),
    ];
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/todo-app");
    match std::fs::metadata(&example) {
        Ok(meta) => figures.push(("example_release_mib", mib(meta.len()))),
        Err(_) => reporter
            .note("client: the example app's size needs `cargo build --release -p todo-app` first"),
    }
    reporter.result("client", &figures);
    Ok(())
}

/// Pulls everything of `from` into `into`; returns the seconds it took.
fn first_sync(into: &Database, from: &Database) -> Result<f64, Error> {
    let mut link = LocalLink::new(into, from)?;
    let start = Instant::now();
    link.run(into, from, 0)?;
    Ok(start.elapsed().as_secs_f64())
}

/// What a fresh process saw opening an app's replica.
struct Probe {
    open: Duration,
    query: Duration,
    rss: u64,
}

/// Runs this binary on the app's replica in `dir` ([`probe_replica`]).
fn probe(dir: &Path) -> Result<Probe, Error> {
    let out =
        std::process::Command::new(std::env::current_exe()?).arg(PROBE_ARG).arg(dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    match numbers[..] {
        [open, query, rss] => Ok(Probe {
            open: Duration::from_micros(open),
            query: Duration::from_micros(query),
            rss,
        }),
        _ => Err(format!("the probe said {text:?} ({})", out.status).into()),
    }
}

/// In a fresh process: opens the app's replica in `dir` and runs its first
/// query, and prints the microseconds each took and the process's resident
/// memory in bytes (Linux: `VmRSS`).
pub(crate) fn probe_replica(dir: &Path) -> Result<(), Error> {
    let start = Instant::now();
    let db = Database::open(dir)?;
    let view = AppView::new(&db)?;
    let open = start.elapsed();
    let start = Instant::now();
    view.query(FIRST_QUERY, &[])?;
    let query = start.elapsed();
    let kib = crate::report::memory_kib("self", "VmRSS")?;
    println!("{} {} {}", open.as_micros(), query.as_micros(), kib * 1024);
    Ok(())
}

fn mib(bytes: u64) -> Value {
    Value::from((bytes as f64 / 1048576.0 * 10.0).round() / 10.0)
}
