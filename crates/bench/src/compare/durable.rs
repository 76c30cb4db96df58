//! Durable writes: Basic's local `INSERT`s (signed, encrypted, merged,
//! flushed and fdatasynced) against sled's own insert + flush (which stops
//! at `sync_file_range`), Basic's storage primitive alone (an LSM
//! memtable insert, then the log's `fdatasync`), SQLite WAL with `synchronous=FULL`, and the disk's
//! own `fdatasync` rate.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use basic_store::{Batch, DeviceStore, Store};
use rand::RngExt;
use rusqlite::Connection;

use super::Error;
use crate::report::{Comparison, Reporter, millis};
use crate::write::{self, Stats};

/// The storage engines' cache, as Basic's replica uses.
const CACHE_BYTES: u64 = basic_store::CACHE_BYTES;
/// Rounds of every measurement (the median is kept).
const ROUNDS: usize = 3;

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let prefill = if quick { 20_000 } else { 1_000_000 };
    let (single_ops, per_thread) = if quick { (200, 50) } else { (2_000, 500) };

    // Every variant once per round, rounds in turn, the median round kept:
    // a shared machine's load then weighs on all of them alike.
    let rounds = if quick { 1 } else { ROUNDS };
    let basic_duration = if quick { Duration::from_millis(300) } else { Duration::from_secs(2) };

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sled");
    let store_path = dir.path().join("store");
    reporter
        .note(&format!("compare: a sled tree and Basic's store pre-filled with {prefill} keys"));
    {
        let db = open_sled(&path)?;
        let store = DeviceStore::open(&store_path, CACHE_BYTES)?;
        let mut batch = sled::Batch::default();
        let mut ours = Batch::default();
        for i in 0..prefill {
            batch.insert(&key(i)[..], &[0u8; 100][..]);
            ours.put(key(i).to_vec(), vec![0u8; 100]);
            if i % 10_000 == 9_999 {
                db.apply_batch(std::mem::take(&mut batch))?;
                store.apply(std::mem::take(&mut ours))?;
            }
        }
        db.apply_batch(batch)?;
        db.flush()?;
        store.apply(ours)?;
        store.flush()?;
    }

    let mut all: [Vec<Stats>; 10] = Default::default();
    for round in 1..=rounds {
        reporter.note(&format!("compare: durable writes, round {round} of {rounds}"));
        all[0].push(write::measure(1, basic_duration).map_err(|e| e.to_string())?);
        all[1].push(write::measure(16, basic_duration).map_err(|e| e.to_string())?);
        {
            let db = open_sled(&path)?;
            let insert = |_: usize| -> Result<(), Error> {
                db.insert(random_key(), &[1u8; 100][..])?;
                db.flush()?;
                Ok(())
            };
            all[2].push(threads(1, single_ops, &insert)?);
            all[3].push(threads(16, per_thread, &insert)?);
        }
        {
            // Basic's storage primitive alone: a commit, then a durable one.
            let store = DeviceStore::open(&store_path, CACHE_BYTES)?;
            let insert = |_: usize| -> Result<(), Error> {
                let mut batch = Batch::default();
                batch.put(random_key().to_vec(), vec![2u8; 100]);
                store.apply(batch)?;
                store.flush()?;
                Ok(())
            };
            all[4].push(threads(1, single_ops, &insert)?);
            all[5].push(threads(16, per_thread, &insert)?);
        }
        all[6].push(sqlite_own_connections(1, single_ops)?);
        all[7].push(sqlite_own_connections(16, per_thread)?);
        all[8].push(sqlite_shared_connection(16, per_thread)?);
        all[9].push(fdatasync_rate(single_ops)?);
    }
    drop(dir);
    let [
        basic_1,
        basic_16,
        raw_1,
        raw_16,
        ours_1,
        ours_16,
        sqlite_1,
        sqlite_16,
        sqlite_16_shared,
        disk,
    ] = all.map(|mut stats| {
        stats.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
        stats.get(stats.len() / 2).copied().unwrap_or(Stats::of(Vec::new(), 1.0))
    });

    let latencies = |basic: &Stats, anchor: &Stats| {
        vec![
            ("basic_p50_ms", millis(basic.p50)),
            ("basic_p99_ms", millis(basic.p99)),
            ("anchor_p50_ms", millis(anchor.p50)),
            ("anchor_p99_ms", millis(anchor.p99)),
        ]
    };
    let basic_note = "Basic: SQL INSERT, signed, encrypted, merged, logged and fdatasynced (D43)";
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
            "Basic's store alone (LSM memtable insert + log fdatasync), 16 threads",
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
            "Basic's store alone (LSM memtable insert + log fdatasync), 1 thread",
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
            if anchor_name.starts_with("sled") || anchor_name.starts_with("Basic's store") {
                prefill
            } else {
                0
            }
            .into(),
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

/// sled at `path`, raw, with Basic's cache size; a lock still held by a
/// handle being dropped (sled releases it from a background thread) is
/// waited for.
fn open_sled(path: &std::path::Path) -> Result<sled::Db, Error> {
    let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
    let mut attempts = 0;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(error))
                if error.to_string().starts_with("could not acquire lock") && attempts < 500 =>
            {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error.into()),
        }
    }
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
