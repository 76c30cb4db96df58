//! Durable writes: Basic's local `INSERT`s (signed, encrypted, merged,
//! flushed and fdatasynced) against sled's own insert + flush (which stops
//! at `sync_file_range`), the same with Basic's sync primitive, SQLite WAL
//! with `synchronous=FULL`, and the disk's own `fdatasync` rate.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use basic_store::{Batch, SledStore, Store};
use rand::RngExt;
use rusqlite::Connection;

use super::Error;
use crate::report::{Comparison, Reporter, millis};
use crate::write::{self, Stats};

/// sled's page cache, as Basic's replica uses.
const CACHE_BYTES: u64 = basic_store::database::CACHE_BYTES;

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let prefill = if quick { 20_000 } else { 1_000_000 };
    let (single_ops, per_thread) = if quick { (200, 50) } else { (2_000, 500) };

    reporter.note("compare: Basic's durable writes, 1 and 16 writers");
    let basic_1 = write::measure(1, write::duration(quick)).map_err(|e| e.to_string())?;
    let basic_16 = write::measure(16, write::duration(quick)).map_err(|e| e.to_string())?;

    reporter.note(&format!("compare: sled raw, a tree pre-filled with {prefill} keys"));
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sled");
    let (raw_1, raw_16) = {
        let db = sled::Config::new().path(&path).cache_capacity(CACHE_BYTES).open()?;
        let mut batch = sled::Batch::default();
        for i in 0..prefill {
            batch.insert(&key(i)[..], &[0u8; 100][..]);
            if i % 10_000 == 9_999 {
                db.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        db.apply_batch(batch)?;
        db.flush()?;
        let insert = |_: usize| -> Result<(), Error> {
            db.insert(random_key(), &[1u8; 100][..])?;
            db.flush()?;
            Ok(())
        };
        (threads(1, single_ops, &insert)?, threads(16, per_thread, &insert)?)
    };
    // The same tree, through Basic's store: the same writes, then fdatasync.
    reporter.note("compare: sled with Basic's fdatasync");
    let (ours_1, ours_16) = {
        let store = SledStore::open(&path, CACHE_BYTES)?;
        let insert = |_: usize| -> Result<(), Error> {
            let mut batch = Batch::default();
            batch.put(random_key().to_vec(), vec![2u8; 100]);
            store.apply(batch)?;
            store.flush()?;
            Ok(())
        };
        (threads(1, single_ops, &insert)?, threads(16, per_thread, &insert)?)
    };
    drop(dir);

    reporter.note("compare: SQLite WAL synchronous=FULL, 1 and 16 writers");
    let sqlite_1 = sqlite_own_connections(1, single_ops)?;
    let sqlite_16 = sqlite_own_connections(16, per_thread)?;
    let sqlite_16_shared = sqlite_shared_connection(16, per_thread)?;

    reporter.note("compare: this disk's fdatasync rate");
    let disk = fdatasync_rate(if quick { 200 } else { 2_000 })?;

    let latencies = |basic: &Stats, anchor: &Stats| {
        vec![
            ("basic_p50_ms", millis(basic.p50)),
            ("basic_p99_ms", millis(basic.p99)),
            ("anchor_p50_ms", millis(anchor.p50)),
            ("anchor_p99_ms", millis(anchor.p99)),
        ]
    };
    let basic_note = "Basic: SQL INSERT, signed, encrypted, merged, sled flush + fdatasync";
    let pairs: [(&str, &Stats, &str, &Stats); 8] = [
        (
            "durable local writes, 16 writers",
            &basic_16,
            "SQLite WAL synchronous=FULL, 16 writers, own connections",
            &sqlite_16,
        ),
        (
            "durable local writes, 16 writers",
            &basic_16,
            "SQLite WAL synchronous=FULL, 16 writers, one shared connection",
            &sqlite_16_shared,
        ),
        (
            "durable local writes, 16 writers",
            &basic_16,
            "sled 0.34 insert + flush (sync_file_range), 16 threads",
            &raw_16,
        ),
        (
            "durable local writes, 16 writers",
            &basic_16,
            "sled 0.34 insert + flush + Basic's fdatasync, 16 threads",
            &ours_16,
        ),
        (
            "durable local writes, 1 writer",
            &basic_1,
            "SQLite WAL synchronous=FULL, 1 writer",
            &sqlite_1,
        ),
        (
            "durable local writes, 1 writer",
            &basic_1,
            "sled 0.34 insert + flush (sync_file_range), 1 thread",
            &raw_1,
        ),
        (
            "durable local writes, 1 writer",
            &basic_1,
            "sled 0.34 insert + flush + Basic's fdatasync, 1 thread",
            &ours_1,
        ),
        (
            "durable local writes, 1 writer",
            &basic_1,
            "this disk: 4 KiB pwrite + fdatasync, 1 thread",
            &disk,
        ),
    ];
    for (figure, basic, anchor_name, anchor) in pairs {
        let mut extra = latencies(basic, anchor);
        extra.push(("basic_primitive", basic_note.into()));
        extra.push((
            "prefilled_keys",
            if anchor_name.starts_with("sled") { prefill } else { 0 }.into(),
        ));
        reporter.compare(Comparison {
            figure,
            unit: "commits/s",
            basic: basic.per_second(),
            anchor_name,
            anchor: anchor.per_second(),
            extra,
        });
    }
    Ok(())
}

/// A 16-byte key numbered `i`.
fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&i.to_be_bytes());
    key[8..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
    key
}

/// A random 16-byte key.
fn random_key() -> [u8; 16] {
    rand::rng().random()
}

/// `count` threads, each calling `operation` `per_thread` times.
fn threads(
    count: usize,
    per_thread: usize,
    operation: &(dyn Fn(usize) -> Result<(), Error> + Sync),
) -> Result<Stats, Error> {
    let start = Instant::now();
    let latencies = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|thread| {
                scope.spawn(move || -> Result<Vec<Duration>, String> {
                    let mut latencies = Vec::with_capacity(per_thread);
                    for _ in 0..per_thread {
                        let began = Instant::now();
                        operation(thread).map_err(|e| e.to_string())?;
                        latencies.push(began.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "thread panicked".to_string())?)
            .collect::<Result<Vec<_>, String>>()
    })?;
    Ok(Stats::of(latencies.into_iter().flatten().collect(), start.elapsed().as_secs_f64()))
}

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY,
    list_id INTEGER, title TEXT, done INTEGER, n INTEGER);
    CREATE INDEX IF NOT EXISTS items_n ON items (n);";
const SQLITE_INSERT: &str =
    "INSERT INTO items (id, list_id, title, done, n) VALUES (?1, ?2, ?3, ?4, ?5)";

fn sqlite_open(path: &std::path::Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch(SQLITE_SCHEMA)?;
    Ok(conn)
}

fn sqlite_row(conn: &Connection, id: i64) -> Result<(), Error> {
    conn.prepare_cached(SQLITE_INSERT)?.execute(rusqlite::params![
        id,
        id % 1000,
        format!("{:0>20}", id * 31 + 1),
        id % 2 == 0,
        id
    ])?;
    Ok(())
}

/// SQLite, WAL, `synchronous=FULL`: `writers` threads with a connection
/// each (SQLite's busy handler serialises them), one row per transaction.
fn sqlite_own_connections(writers: usize, per_thread: usize) -> Result<Stats, Error> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("writes.sqlite");
    drop(sqlite_open(&path)?);
    let connections: Vec<Mutex<Connection>> =
        (0..writers).map(|_| sqlite_open(&path).map(Mutex::new)).collect::<Result<_, _>>()?;
    let next = std::sync::atomic::AtomicI64::new(0);
    threads(writers, per_thread, &|thread| {
        let conn = connections[thread].lock().map_err(|_| "poisoned")?;
        sqlite_row(&conn, next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    })
}

/// The same through one connection shared behind a mutex (writers queue
/// in the process instead of in SQLite's busy handler).
fn sqlite_shared_connection(writers: usize, per_thread: usize) -> Result<Stats, Error> {
    let dir = tempfile::tempdir()?;
    let conn = Mutex::new(sqlite_open(&dir.path().join("writes.sqlite"))?);
    let next = std::sync::atomic::AtomicI64::new(0);
    threads(writers, per_thread, &|_| {
        let conn = conn.lock().map_err(|_| "poisoned")?;
        sqlite_row(&conn, next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    })
}

/// 4 KiB written with `pwrite` then `fdatasync`, `count` times, over a
/// 256 KiB file.
fn fdatasync_rate(count: usize) -> Result<Stats, Error> {
    let dir = tempfile::tempdir()?;
    let file = std::fs::File::create(dir.path().join("probe"))?;
    file.set_len(256 << 10)?;
    file.sync_all()?;
    let block = [0x5au8; 4096];
    let written = std::sync::atomic::AtomicU64::new(0);
    threads(1, count, &|_| {
        let at = written.fetch_add(4096, std::sync::atomic::Ordering::Relaxed);
        file.write_all_at(&block, at % (256 << 10))?;
        file.sync_data()?;
        Ok(())
    })
}
