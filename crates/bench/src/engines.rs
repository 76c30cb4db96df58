//! `sync --store sled,redb,lsm`: a new device's first sync with its
//! replica on each storage engine (issue 14's measure of the LSM
//! tree, now the device's engine, against redb and sled, the engines
//! before it: D40, D41, D56).
//!
//! This process writes the source database (`--rows` rows of a 20-byte
//! text, an integer and a bool, in commits of 1,000 rows by 4 apps) and
//! closes it. Then, for each engine, a child process of this executable
//! opens the source, adds a new device to it, makes that device's replica
//! on the engine in a fresh directory (`Database::replicate_with_store`),
//! runs the first sync with [`LocalLink`] (frames passed in memory; a new
//! session when one stops having made progress, counted), checks
//! that every row arrived, and prints the seconds the sync took, its
//! resident memory before the sync and at its peak (`VmHWM`), and the
//! replica's size on disk after a flush. The child holds the source too,
//! opened with a small cache and the same for every engine: the memory
//! before the sync is its share.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use basic_proto::{Party, SecretKey, Value as Cell};
use basic_store::sync::LocalLink;
use basic_store::{
    CACHE_BYTES, Database, DeviceStore, Environment, LsmStore, RedbStore, SledStore, Store,
};
use clap::ValueEnum;
use serde_json::Value;

use crate::fixture;
use crate::report::{Reporter, memory_kib, per_second};

type Error = Box<dyn std::error::Error>;

/// The hidden argument under which this binary runs one engine's first sync.
pub(crate) const CHILD_ARG: &str = "--first-sync-child";
/// Rows per commit.
const ROWS_PER_COMMIT: i64 = 1000;
/// Commits signed and ingested at a time while writing the source.
const COMMITS_PER_INGEST: i64 = 100;
/// The source's cache in the child (small: the figure is the target's).
const SOURCE_CACHE_BYTES: u64 = 16 << 20;

/// A storage engine for the new device's replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Engine {
    /// sled 0.34 (the device's engine before D41).
    Sled,
    /// redb 4.6 (the device's engine from D41 to D55).
    Redb,
    /// lsm-tree 3.1 (`basic_store::LsmStore`, the device's engine).
    Lsm,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
            Engine::Lsm => "lsm",
        }
    }
}

/// Writes the source and runs each engine's first sync in a child process.
pub(crate) fn run(
    reporter: &Reporter,
    quick: bool,
    engines: &[Engine],
    rows: Option<i64>,
    cache_mib: Option<u64>,
) -> Result<(), Error> {
    let cache = cache_mib.map_or(CACHE_BYTES, |mib| mib << 20);
    let rows = rows.unwrap_or(if quick { 5_000 } else { 100_000 });
    if rows <= 0 || rows % ROWS_PER_COMMIT != 0 {
        return Err(format!("--rows {rows}: a positive multiple of {ROWS_PER_COMMIT}").into());
    }
    let commits = rows / ROWS_PER_COMMIT;
    let source = fixture::open()?;
    reporter.note(&format!("sync --store: writing {rows} rows in {commits} commits"));
    {
        let mut signers = fixture::Signers::new(&source);
        for first in (0..commits).step_by(COMMITS_PER_INGEST as usize) {
            let last = (first + COMMITS_PER_INGEST).min(commits);
            // Rows of a 20-byte text, an integer and a bool (three cells).
            let written = signers.sign(
                (first..last).map(|i| fixture::upserts(i * ROWS_PER_COMMIT, ROWS_PER_COMMIT, 3)),
            );
            let encoded: Vec<Vec<u8>> = written.iter().map(|c| c.as_bytes().to_vec()).collect();
            for outcome in source.db.ingest(&encoded)? {
                outcome?;
            }
        }
    }
    let source_dir = source.close();
    for &engine in engines {
        reporter.note(&format!("sync --store: first sync of {rows} rows into {}", engine.name()));
        let target_dir = tempfile::tempdir()?;
        let out = std::process::Command::new(std::env::current_exe()?)
            .arg(CHILD_ARG)
            .arg(engine.name())
            .arg(source_dir.path())
            .arg(target_dir.path())
            .arg(rows.to_string())
            .arg(cache.to_string())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let numbers: Vec<f64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        let [seconds, before_kib, peak_kib, bytes] = numbers[..] else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "the {} child said {text:?} {stderr:?} ({})",
                engine.name(),
                out.status
            )
            .into());
        };
        reporter.result(
            "sync",
            &[
                ("phase", "first sync in a child process".into()),
                ("store", engine.name().into()),
                ("rows", rows.into()),
                ("cache_mib", (cache >> 20).into()),
                ("rows_per_s", per_second(rows as f64, seconds)),
                ("seconds", Value::from((seconds * 100.0).round() / 100.0)),
                ("child_rss_before_sync_mib", mib(before_kib * 1024.0)),
                ("child_peak_rss_mib", mib(peak_kib * 1024.0)),
                ("replica_on_disk_mib", mib(bytes)),
            ],
        );
    }
    Ok(())
}

/// In a child process: `ENGINE SOURCE_DIR TARGET_DIR ROWS CACHE_BYTES`
/// (the replica's cache; see the module
/// documentation); prints `seconds rss_before_kib peak_kib replica_bytes`.
pub(crate) fn child(mut args: impl Iterator<Item = OsString>) -> Result<(), Error> {
    let usage =
        || format!("usage: {CHILD_ARG} sled|redb|lsm SOURCE_DIR TARGET_DIR ROWS CACHE_BYTES");
    let mut next = || args.next().ok_or_else(usage);
    let engine = Engine::from_str(&next()?.to_string_lossy(), false)?;
    let source_dir = PathBuf::from(next()?);
    let target_dir = PathBuf::from(next()?);
    let rows: i64 = next()?.to_string_lossy().parse()?;
    let cache: u64 = next()?.to_string_lossy().parse()?;
    let source = Database::with_store(
        DeviceStore::open(&source_dir.join("replica"), SOURCE_CACHE_BYTES)?,
        &source_dir.join("view.sqlite"),
    )?;
    let replica = target_dir.join("replica");
    match engine {
        Engine::Sled => first_sync(SledStore::open(&replica, cache)?, &target_dir, &source, rows),
        Engine::Redb => first_sync(RedbStore::open(&replica, cache)?, &target_dir, &source, rows),
        Engine::Lsm => first_sync(LsmStore::open(&replica, cache)?, &target_dir, &source, rows),
    }
}

/// A new device of `source` with its replica in `store`: the first sync,
/// timed, then the figures printed.
fn first_sync<S: Store>(store: S, dir: &Path, source: &Database, rows: i64) -> Result<(), Error> {
    let device = SecretKey::generate(&mut rand::rng());
    source.add_device(Party::of(&device))?;
    let target = Database::replicate_with_store(
        store,
        &dir.join("view.sqlite"),
        source.id(),
        &device,
        &source.control_ops()?,
        Environment::system(),
    )?;
    let before = memory_kib("self", "VmRSS")?;
    let start = Instant::now();
    LocalLink::new(&target, source)?.run(&target, source, 0)?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = memory_kib("self", "VmHWM")?;
    let held = count(&target)?;
    if held != rows {
        return Err(format!("the new device holds {held} rows, not {rows}").into());
    }
    let store = target.replica().store();
    store.flush()?;
    println!("{seconds} {before} {peak} {}", store.size_on_disk()?);
    Ok(())
}

/// The rows of `bench.items` that `db` holds.
fn count<S: Store>(db: &Database<S>) -> Result<i64, Error> {
    // An error: no table yet, the schema has not arrived.
    let Ok(held) = db.query("SELECT count(*) FROM bench.items", &[], None) else {
        return Ok(0);
    };
    match held.rows.first().and_then(|r| r.first()) {
        Some(Cell::Integer(n)) => Ok(*n),
        other => Err(format!("count(*) gave {other:?}").into()),
    }
}

fn mib(bytes: f64) -> Value {
    Value::from((bytes / 1048576.0 * 10.0).round() / 10.0)
}
