//! The store on redb: the replica's engine on a device from D41 to D55,
//! now opened only to move a replica it kept into the LSM store (D56, see
//! [`crate::storage::device`]), and measured beside it by `basic-bench`.
//!
//! One redb table holds the whole keyspace. [`Store::apply`] stages its
//! batch as a record of the write-ahead log (the `wal` module, D43) and
//! keeps it in memory with the applies before it that redb has not been
//! given yet (D47): every later read in this process sees it at once,
//! reading there before redb. Before an apply would take those past
//! 64 KiB (`UNWRITTEN_BYTES`), they are handed to a thread of their own, which
//! writes them to redb in one write transaction committed with
//! [`Durability::None`] (one redb commit for many small applies) while
//! the writer goes on (D48); reads find them in memory until the next
//! hand-off joins that thread. [`Store::flush`] writes the staged records
//! to the log file and `fdatasync`s it: one sync, of the bytes written,
//! where a redb
//! durable commit syncs twice and writes every page the batches dirtied.
//! Concurrent flushes share a sync: a flush returns at once if the applies
//! it must cover are on disk already.
//!
//! A batch whose encoding is over a log record's limit (8 MiB,
//! `wal::MAX_RECORD`), or one that would take the log past its checkpoint
//! size (32 MiB, `wal::CHECKPOINT_BYTES`), is committed
//! durably by redb instead, with every apply not yet written (a
//! checkpoint): redb writes the pages of every commit since the last
//! durable one and its alternate commit slot, `fdatasync`s the file, flips
//! the primary slot and `fdatasync`s again (two-phase commit, which quick
//! repair turns on); then the log starts over. Each write to redb records
//! the sequence number of the last apply it holds, in the same
//! transaction, so on opening the log's records past redb's last durable
//! commit are applied again, and the store reopens as its last flush left
//! it. Two-phase commit also means the slot in use never depends on a
//! checksum over data that peers chose (redb's one-phase commit does).
//!
//! Reads share one read transaction: the newest, begun by the first read
//! after a write to redb was joined and ended by the next join or durable
//! commit (beginning a transaction and opening the table cost more than a
//! lookup). A read holds the applies not yet written (shared) while it
//! reads redb, so an apply is always in memory or in what its transaction
//! sees (while a handed-off write runs, both may hold it), and every read
//! sees every apply that returned before it started. The transaction must
//! end with each write: redb reuses no page freed while one is open.
//!
//! [`Store::scan`] reads in chunks of [`SCAN_CHUNK`] entries, each from
//! the shared transaction of its moment (with the applies not yet written
//! over it), which the chunk does not keep: an iterator kept open (or
//! dropped late) holds no read transaction, so it never keeps redb from
//! reusing the pages that later commits free, which would grow the file.
//! Like sled's iterator, a scan is not one snapshot: each chunk sees the
//! writes applied before it was read.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use ::redb::{
    Database, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable, Table, TableDefinition,
};

use super::kv::{Batch, Entry, Store, StoreError, sync_file};
use super::wal::{self, Log};

/// The one table: the replica's keyspace.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("basic");
/// The sequence number of the last apply, under [`APPLIED_KEY`].
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("applied");
const APPLIED_KEY: &str = "seq";
/// The file in the store's directory.
pub(super) const DATA_FILE: &str = "data.redb";
/// Entries a scan reads at a time.
pub const SCAN_CHUNK: usize = 512;

/// The table as a read transaction sees it.
type Snapshot = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The store on redb (see the [module documentation](self)).
pub struct RedbStore {
    /// Shared with the thread writing handed-off applies.
    db: Arc<Database>,
    /// The data file.
    path: PathBuf,
    /// The sequence number of the last apply (set under `log`'s lock).
    applied: AtomicU64,
    /// The write-ahead log; held by an apply from its start to its end,
    /// and by a flush while it syncs.
    log: Mutex<Log>,
    /// Applies logged but not yet written to redb. Reads look here first;
    /// a read holds it (shared) while it reads redb, so it never meets
    /// an apply in neither place.
    unwritten: RwLock<Unwritten>,
    /// How many times redb was written: a read transaction begun before
    /// the last write does not see it.
    writes: AtomicU64,
    /// The shared read transaction's table, with the count of redb's
    /// writes there were when it began.
    snapshot: Mutex<Option<(u64, Arc<Snapshot>)>>,
    /// The thread writing the last applies handed off (only touched with
    /// `log` held).
    background: Mutex<Background>,
}

/// Writes of applies, the newest per key (`None`: deleted).
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The applies redb does not hold yet, as reads see them.
#[derive(Default)]
struct Unwritten {
    /// Held since the last hand-off: the newest.
    writes: Writes,
    /// Their size as logged.
    bytes: usize,
    /// Handed to [`Background::Writing`] (older than `writes`): kept until
    /// the thread is joined, whether or not its commit has happened yet.
    handed: Arc<Writes>,
}

/// Where the last hand-off's write to redb stands.
#[derive(Default)]
enum Background {
    /// Nothing handed off since the last join.
    #[default]
    Idle,
    /// A thread writing handed-off applies to redb.
    Writing(JoinHandle<Result<(), StoreError>>),
    /// That write failed (why): redb is not given anything more.
    Failed(String),
}

/// Logged bytes of applies held in memory that the next apply may not
/// take past: it writes them and itself to redb (one write transaction
/// for many small applies). Larger, redb's commits come less often but
/// each stalls its apply longer (D47).
const UNWRITTEN_BYTES: usize = 64 << 10;

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store in directory `dir`, with a
    /// cache of `cache_bytes` (redb's read cache and write buffer
    /// together), applying again what its log holds past redb's last
    /// durable commit. New directories and files are synced to the disk.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_file(dir, DATA_FILE, cache_bytes)
    }

    /// [`RedbStore::open`] with the data file named `name` in `dir` (and
    /// its log [`log_file`]`(name)`).
    pub(super) fn open_file(dir: &Path, name: &str, cache_bytes: u64) -> Result<Self, StoreError> {
        let io = |source| StoreError::Sync { path: dir.to_path_buf(), source };
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(name);
        let log_path = dir.join(log_file(name));
        let new_file = !path.exists() || !log_path.exists();
        let cache = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        if !path.exists() {
            create_whole(&path, cache)?;
        }
        let db = Database::builder().set_cache_size(cache).create(&path).map_err(engine)?;
        // One durable commit makes the tables (so readers never meet a
        // missing one) and applies the log again; then the log starts over.
        let mut txn = db.begin_write().map_err(engine)?;
        let mut applied = txn
            .open_table(APPLIED)
            .map_err(engine)?
            .get(APPLIED_KEY)
            .map_err(engine)?
            .map_or(0, |seq| seq.value());
        let durable = applied;
        let (mut log, records) = Log::open(&log_path, durable)?;
        {
            let mut table = txn.open_table(TABLE).map_err(engine)?;
            for (seq, batch) in records {
                if seq != applied + 1 {
                    return Err(StoreError::Corrupt {
                        what: "write-ahead log",
                        reason: format!(
                            "its record {seq} follows redb's {applied}: the records between are missing"
                        ),
                    });
                }
                write(&mut table, batch)?;
                applied = seq;
            }
        }
        txn.open_table(APPLIED).map_err(engine)?.insert(APPLIED_KEY, applied).map_err(engine)?;
        txn.set_quick_repair(true);
        txn.commit().map_err(engine)?;
        log.checkpointed(applied);
        if applied > durable {
            let replayed = applied - durable;
            tracing::info!("applied {replayed} logged writes again to {}", path.display());
        }
        if new_file {
            sync_file(dir)?;
        }
        if created && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_file(parent)?;
        }
        Ok(Self {
            path,
            applied: AtomicU64::new(applied),
            log: Mutex::new(log),
            unwritten: RwLock::new(Unwritten::default()),
            writes: AtomicU64::new(0),
            snapshot: Mutex::new(None),
            background: Mutex::new(Background::Idle),
            db: Arc::new(db),
        })
    }

    /// Commits redb durably and starts the log over: afterwards the data
    /// file alone holds every apply (the move renames it without its log).
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        let mut log = lock(&self.log);
        log.usable()?;
        let seq = self.applied.load(Ordering::SeqCst);
        self.write_durably(&Batch::default(), seq)?;
        log.checkpointed(seq);
        Ok(())
    }

    /// Writes the held applies and then `batch`, apply `seq`, to redb in
    /// one transaction committed durably (two-phase, quick repair), after
    /// the last hand-off's write (call with `log` held). On an error redb
    /// and the held applies are as they were.
    fn write_durably(&self, batch: &Batch, seq: u64) -> Result<(), StoreError> {
        self.join_background()?;
        let mut unwritten = exclusive(&self.unwritten);
        drop(lock(&self.snapshot).take());
        let writes = unwritten.writes.iter().chain(&batch.writes);
        commit(&self.db, writes, seq, true)?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        drop(lock(&self.snapshot).take());
        *unwritten = Unwritten::default();
        Ok(())
    }

    /// Hands the held applies, the last of them apply `seq`, to a thread
    /// that writes them to redb (call with `log` held), once the last
    /// hand-off's write is joined. Should no thread start, they are
    /// written here.
    fn hand_off(&self, seq: u64) -> Result<(), StoreError> {
        self.join_background()?;
        let handed = {
            let mut unwritten = exclusive(&self.unwritten);
            let handed = Arc::new(std::mem::take(&mut unwritten.writes));
            unwritten.bytes = 0;
            unwritten.handed = Arc::clone(&handed);
            handed
        };
        let db = Arc::clone(&self.db);
        let writing = Arc::clone(&handed);
        let spawned = std::thread::Builder::new()
            .name("basic-redb".into())
            .spawn(move || commit(&db, writing.iter(), seq, false));
        *lock(&self.background) = match spawned {
            Ok(thread) => Background::Writing(thread),
            Err(_) => match commit(&self.db, handed.iter(), seq, false) {
                Ok(()) => {
                    self.forget_handed();
                    Background::Idle
                }
                Err(error) => Background::Failed(error.to_string()),
            },
        };
        Ok(())
    }

    /// Waits for the last hand-off's write; once redb holds it, reads no
    /// longer look at its applies in memory. An error if it (or one
    /// before) failed: its applies stay in memory for reads, and in the
    /// log for the next opening.
    fn join_background(&self) -> Result<(), StoreError> {
        let mut background = lock(&self.background);
        let joined = match std::mem::take(&mut *background) {
            Background::Idle => return Ok(()),
            Background::Failed(cause) => Err(cause),
            Background::Writing(thread) => match thread.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("its thread panicked".to_owned()),
            },
        };
        match joined {
            Ok(()) => {
                self.forget_handed();
                Ok(())
            }
            Err(cause) => {
                *background = Background::Failed(cause.clone());
                Err(background_failed(&cause))
            }
        }
    }

    /// Drops the handed-off applies from memory: redb holds them.
    fn forget_handed(&self) {
        let mut unwritten = exclusive(&self.unwritten);
        // Reads begun from now on must see redb's new commit.
        self.writes.fetch_add(1, Ordering::SeqCst);
        drop(lock(&self.snapshot).take());
        unwritten.handed = Arc::default();
    }

    /// An error if the last hand-off's write to redb failed.
    fn background_usable(&self) -> Result<(), StoreError> {
        match &*lock(&self.background) {
            Background::Failed(cause) => Err(background_failed(cause)),
            _ => Ok(()),
        }
    }

    /// The shared read transaction's table, begun now if redb was written
    /// since the last one began (or none is open).
    fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let writes = self.writes.load(Ordering::SeqCst);
        let mut shared = lock(&self.snapshot);
        if let Some((seen, table)) = shared.as_ref()
            && *seen == writes
        {
            return Ok(Arc::clone(table));
        }
        let table =
            Arc::new(self.db.begin_read().map_err(engine)?.open_table(TABLE).map_err(engine)?);
        *shared = Some((writes, Arc::clone(&table)));
        Ok(table)
    }

    /// Up to [`SCAN_CHUNK`] entries under `prefix` from `start`, read from
    /// the shared read transaction with the applies not yet written over
    /// them, and where the next chunk starts.
    fn chunk(&self, prefix: &[u8], start: &Bound<Vec<u8>>) -> Result<Chunk, StoreError> {
        let unwritten = shared(&self.unwritten);
        let table = self.snapshot()?;
        let range = table
            .range::<&[u8]>((start.as_ref().map(Vec::as_slice), Bound::Unbounded))
            .map_err(engine)?;
        let mut stored = Vec::new();
        for entry in range {
            let (key, value) = entry.map_err(engine)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            stored.push((key.value().to_vec(), value.value().to_vec()));
            if stored.len() == SCAN_CHUNK {
                break;
            }
        }
        // Up to where redb's entries reach, or to the prefix's end.
        let resume = match stored.len() == SCAN_CHUNK {
            true => stored.last().map(|(key, _)| key.clone()),
            false => None,
        };
        let end = resume.clone().map_or(Bound::Unbounded, Bound::Included);
        // The handed-off applies, then the held ones over them.
        let mut newer = [&*unwritten.handed, &unwritten.writes]
            .into_iter()
            .flat_map(|writes| {
                (writes.range((start.clone(), end.clone())))
                    .take_while(|(key, _)| key.starts_with(prefix))
            })
            .peekable();
        if newer.peek().is_none() {
            return Ok(Chunk { entries: stored, resume });
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (key, value) in newer {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        let mut entries: Vec<Entry> = merged.into_iter().collect();
        if entries.len() > SCAN_CHUNK {
            entries.truncate(SCAN_CHUNK);
            let last = entries.last().map(|(key, _)| key.clone());
            return Ok(Chunk { entries, resume: last });
        }
        Ok(Chunk { entries, resume })
    }
}

impl Drop for RedbStore {
    /// Checkpoints if the log holds records, so that the next opening has
    /// none to apply again (after a first sync, whose groups are logged,
    /// that took a reopen 40 ms and 24 MiB: D51), and waits for the last
    /// hand-off's write: nothing touches the file after the store is gone
    /// (it may be opened again at once).
    fn drop(&mut self) {
        let logged = lock(&self.log).has_records();
        let closed = if logged { self.checkpoint() } else { self.join_background() };
        if let Err(error) = closed {
            tracing::warn!("{}: {error}", self.path.display());
        }
    }
}

/// Entries of a scan, and the key after which the next chunk starts
/// (`None`: the scan ends with these).
struct Chunk {
    entries: Vec<Entry>,
    resume: Option<Vec<u8>>,
}

impl Store for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let unwritten = shared(&self.unwritten);
        if let Some(value) = unwritten.writes.get(key).or_else(|| unwritten.handed.get(key)) {
            return Ok(value.clone());
        }
        let table = self.snapshot()?;
        Ok(table.get(key).map_err(engine)?.map(|value| value.value().to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_> {
        Box::new(Scan {
            store: self,
            prefix: prefix.to_vec(),
            start: Bound::Included(from.to_vec()),
            chunk: Vec::new().into_iter(),
            done: false,
        })
    }

    /// Staged in the log and held in memory with the applies before it
    /// that redb has not been given yet; if those would pass
    /// 64 KiB (`UNWRITTEN_BYTES`) with it, they are handed off first, to be
    /// written to redb in one transaction committed with
    /// [`Durability::None`] on a thread of their own. A batch over a log
    /// record's size, or one for a full log, is committed durably with
    /// every apply before it. On an error the store is as it was.
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut log = lock(&self.log);
        log.usable()?;
        self.background_usable()?;
        let seq = self.applied.load(Ordering::SeqCst) + 1;
        let encoded = wal::encoded_len(&batch);
        if encoded > wal::MAX_RECORD || log.is_full_with(encoded) {
            self.write_durably(&batch, seq)?;
            self.applied.store(seq, Ordering::SeqCst);
            log.checkpointed(seq);
            return Ok(());
        }
        let held = shared(&self.unwritten).bytes;
        if held > 0 && held + encoded > UNWRITTEN_BYTES {
            self.hand_off(seq - 1)?;
        }
        log.stage(seq, &batch);
        let mut unwritten = exclusive(&self.unwritten);
        unwritten.bytes += encoded;
        unwritten.writes.append(&mut { batch }.writes);
        self.applied.store(seq, Ordering::SeqCst);
        Ok(())
    }

    /// Writes the staged log records and `fdatasync`s the log (see the
    /// [module documentation](self)), unless every apply before this call
    /// is on disk already.
    fn flush(&self) -> Result<(), StoreError> {
        let needed = self.applied.load(Ordering::SeqCst);
        let mut log = lock(&self.log);
        if log.synced >= needed {
            return Ok(());
        }
        // Applies hold the log while they run: every one counted now has
        // its record staged.
        log.sync(self.applied.load(Ordering::SeqCst))
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|source| StoreError::Sync { path: self.path.clone(), source })?;
        Ok(meta.len() + lock(&self.log).allocated())
    }
}

/// The write-ahead log of data file `name`.
pub(super) fn log_file(name: &str) -> String {
    format!("{name}.wal")
}

/// Writes `batch` into `table`.
fn write(table: &mut Table<&[u8], &[u8]>, batch: Batch) -> Result<(), StoreError> {
    for (key, value) in &batch.writes {
        put_or_remove(table, key, value.as_deref())?;
    }
    Ok(())
}

/// Sets `key` to `value` in `table`, or removes it (`None`).
fn put_or_remove(
    table: &mut Table<&[u8], &[u8]>,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), StoreError> {
    match value {
        Some(value) => table.insert(key, value).map(drop),
        None => table.remove(key).map(drop),
    }
    .map_err(engine)
}

/// A scan in chunks, each read in a transaction of its own.
struct Scan<'a> {
    store: &'a RedbStore,
    prefix: Vec<u8>,
    /// Where the next chunk starts.
    start: Bound<Vec<u8>>,
    /// What is left of the current chunk.
    chunk: std::vec::IntoIter<Entry>,
    /// No chunk is left to read.
    done: bool,
}

impl Iterator for Scan<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.chunk.next() {
                return Some(Ok(entry));
            }
            if self.done {
                return None;
            }
            match self.store.chunk(&self.prefix, &self.start) {
                Ok(Chunk { entries, resume }) => {
                    match resume {
                        Some(key) => self.start = Bound::Excluded(key),
                        None => self.done = true,
                    }
                    self.chunk = entries.into_iter();
                }
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

/// `mutex` locked; a panic while it was held leaves nothing half done in
/// the values kept here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `lock` read; a panic while it was held for writing leaves nothing half
/// done (the unwritten applies are replaced only once redb holds them).
fn shared<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `lock` held for writing (see [`shared`]).
fn exclusive<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `writes` to redb in one transaction that records `seq` as the
/// last apply it holds, committed durably (two-phase, quick repair) or
/// with [`Durability::None`].
fn commit<'a>(
    db: &Database,
    writes: impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
    seq: u64,
    durably: bool,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(engine)?;
    match durably {
        true => txn.set_quick_repair(true),
        false => txn.set_durability(Durability::None).map_err(engine)?,
    }
    {
        let mut table = txn.open_table(TABLE).map_err(engine)?;
        for (key, value) in writes {
            put_or_remove(&mut table, key, value.as_deref())?;
        }
    }
    txn.open_table(APPLIED).map_err(engine)?.insert(APPLIED_KEY, seq).map_err(engine)?;
    txn.commit().map_err(engine)
}

/// The error of every apply after a hand-off's write to redb failed.
fn background_failed(cause: &str) -> StoreError {
    let cause = std::io::Error::other(format!("writing applies to redb failed earlier: {cause}"));
    StoreError::Redb(Box::new(::redb::Error::Io(cause)))
}

/// Any redb error as a [`StoreError`].
fn engine(error: impl Into<::redb::Error>) -> StoreError {
    StoreError::Redb(Box::new(error.into()))
}

/// Makes an empty redb file at `path`, whole or not at all. redb fills a
/// new file in several writes and its header last: a process killed in
/// between left a file redb refuses ever after ("magic number mismatch").
/// So redb fills it under a name of its own (one left by such a kill is
/// started over), synced, then renamed into place (the caller syncs the
/// directory).
fn create_whole(path: &Path, cache: usize) -> Result<(), StoreError> {
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = PathBuf::from(fresh);
    let io = |source| StoreError::Sync { path: fresh.clone(), source };
    match std::fs::remove_file(&fresh) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(error)),
        _ => {}
    }
    drop(Database::builder().set_cache_size(cache).create(&fresh).map_err(engine)?);
    File::open(&fresh).and_then(|file| file.sync_all()).map_err(io)?;
    std::fs::rename(&fresh, path).map_err(io)
}

/// `fsync` of a directory, so that an entry made in it survives a crash.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::kv::scan_prefix;
    use crate::storage::kv::tests::{
        contract, keeps_only_flushed_writes_across_a_crash, scans_in_chunks,
    };

    fn put(store: &RedbStore, key: &[u8], value: &[u8]) {
        let mut batch = Batch::default();
        batch.put(key.to_vec(), value.to_vec());
        store.apply(batch).unwrap();
    }

    #[test]
    fn redb_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&RedbStore::open(dir.path(), 1 << 20).unwrap());
    }

    #[test]
    fn redb_store_keeps_flushed_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica");
        {
            let store = RedbStore::open(&path, 1 << 20).unwrap();
            put(&store, b"k", b"v");
            store.flush().unwrap();
            assert!(store.size_on_disk().unwrap() > 0);
        }
        let store = RedbStore::open(&path, 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    /// A store in `live` under a new temporary directory (dropped with the
    /// returned guard), for the tests that copy it as a crash would leave
    /// it, or reopen it.
    fn live_store() -> (tempfile::TempDir, PathBuf, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = RedbStore::open(&live, 1 << 20).unwrap();
        (dir, live, store)
    }

    #[test]
    fn redb_store_keeps_only_flushed_writes_across_a_crash() {
        let (_dir, live, store) = live_store();
        keeps_only_flushed_writes_across_a_crash(&store, &live, &|path| {
            Box::new(RedbStore::open(path, 1 << 20).unwrap())
        });
    }

    /// Chunks, taking writes made while the scan runs without holding a
    /// read transaction between chunks.
    #[test]
    fn redb_scan_reads_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        scans_in_chunks(&RedbStore::open(dir.path(), 1 << 20).unwrap(), SCAN_CHUNK);
    }

    /// Applies held in memory read as if redb held them: gets and scans see
    /// their puts and deletes over redb's entries, across chunks; past
    /// [`UNWRITTEN_BYTES`] they are written to redb; a reopen after a
    /// flush finds all of it.
    #[test]
    fn unwritten_applies_read_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let key = |i: usize| format!("a/{i:06}").into_bytes();
        let expect = |store: &RedbStore| {
            assert_eq!(store.get(&key(0)).unwrap(), None);
            assert_eq!(store.get(&key(700)).unwrap(), Some(vec![2]));
            assert_eq!(store.get(&key(701)).unwrap(), Some(vec![1]));
            let scanned: Vec<Entry> = store.scan(b"a/", b"a/").map(Result::unwrap).collect();
            let mut wanted: Vec<Entry> = (600..1024).map(|i| (key(i), vec![1])).collect();
            wanted[100].1 = vec![2];
            wanted.push((key(1500), vec![3]));
            assert_eq!(scanned, wanted);
            assert_eq!(store.scan(b"a/", &key(1000)).count(), 25);
        };
        {
            let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
            let mut written = Batch::default();
            for i in 0..1024 {
                written.put(key(i), vec![1]);
            }
            store.apply(written).unwrap();
            // Over a log record's size: redb takes it and all before it.
            put(&store, b"z", &vec![0; wal::MAX_RECORD]);
            assert_eq!(shared(&store.unwritten).bytes, 0);
            let mut newer = Batch::default();
            for i in 0..600 {
                newer.delete(key(i));
            }
            newer.put(key(700), vec![2]);
            newer.put(key(1500), vec![3]);
            newer.put(b"b/0".to_vec(), vec![4]);
            store.apply(newer).unwrap();
            assert!(shared(&store.unwritten).bytes > 0);
            expect(&store);
            store.flush().unwrap();
        }
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        expect(&store);
        // Small applies pass the limit: what they held is written to redb.
        for i in 0..40 {
            put(&store, format!("c/{i}").as_bytes(), &vec![5; UNWRITTEN_BYTES / 32]);
        }
        assert!(shared(&store.unwritten).bytes < UNWRITTEN_BYTES);
        assert_eq!(store.get(b"c/0").unwrap(), Some(vec![5; UNWRITTEN_BYTES / 32]));
        expect(&store);
    }

    /// A flush with nothing applied since the last one writes nothing, so
    /// flushes waiting on one another share a sync; a flush writes the
    /// log, not the data file.
    #[test]
    fn a_flush_with_nothing_new_to_cover_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let log = dir.path().join(log_file(DATA_FILE));
        let modified = |path: &Path| std::fs::metadata(path).unwrap().modified().unwrap();
        let pause = || std::thread::sleep(std::time::Duration::from_millis(50));
        put(&store, b"k", b"v");
        store.flush().unwrap();
        let (data, after_first) = (modified(&store.path), modified(&log));
        assert!(lock(&store.log).len() > 0, "the flush logged nothing");
        pause();
        store.flush().unwrap();
        assert_eq!(modified(&log), after_first, "a second flush wrote the log");
        put(&store, b"k", b"w");
        pause();
        store.flush().unwrap();
        assert_ne!(modified(&log), after_first, "a flush after an apply wrote no log");
        assert_eq!(modified(&store.path), data, "a flush wrote the data file");
        drop(store);
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"w".to_vec()));
    }

    /// The files of the store in `live` as a crash now would leave them,
    /// opened again.
    fn crash_copy(live: &Path) -> RedbStore {
        let crashed = live.with_file_name(format!("crashed-{}", rand::random::<u64>()));
        basic_testkit::copy_dir_at_rest(live, &crashed);
        RedbStore::open(&crashed, 1 << 20).unwrap()
    }

    /// What flushes made durable through the log survives a crash: puts,
    /// overwrites and deletes, in order, and the store then goes on
    /// numbering its applies after them.
    #[test]
    fn a_reopen_applies_the_logged_batches_again() {
        let (_dir, live, store) = live_store();
        for i in 0..100u32 {
            let mut batch = Batch::default();
            batch.put(format!("k/{i:03}").into_bytes(), i.to_be_bytes().to_vec());
            batch.put(b"last".to_vec(), i.to_be_bytes().to_vec());
            if i % 3 == 0 && i > 0 {
                batch.delete(format!("k/{:03}", i - 1).into_bytes());
            }
            store.apply(batch).unwrap();
            if i % 7 == 0 {
                store.flush().unwrap();
            }
        }
        store.flush().unwrap();
        put(&store, b"unflushed", b"x");
        let expected: Vec<Entry> =
            scan_prefix(&store, b"k/").map(Result::unwrap).collect::<Vec<_>>();
        let reopened = crash_copy(&live);
        assert_eq!(scan_prefix(&reopened, b"k/").map(Result::unwrap).collect::<Vec<_>>(), expected);
        assert_eq!(reopened.get(b"last").unwrap(), Some(99u32.to_be_bytes().to_vec()));
        assert_eq!(reopened.get(b"unflushed").unwrap(), None);
        // The replayed applies were committed, and later ones follow them.
        put(&reopened, b"after", b"y");
        reopened.flush().unwrap();
        let path = reopened.path.parent().unwrap().to_path_buf();
        drop(reopened);
        let again = crash_copy(&path);
        assert_eq!(again.get(b"after").unwrap(), Some(b"y".to_vec()));
        assert_eq!(scan_prefix(&again, b"k/").count(), expected.len());
    }

    /// `count` puts of `row/{i:05}`, each a KiB of `i % 251`.
    fn rows_of_a_kib(count: u32) -> Batch {
        let mut batch = Batch::default();
        for i in 0..count {
            batch.put(format!("row/{i:05}").into_bytes(), vec![(i % 251) as u8; 1024]);
        }
        batch
    }

    /// A group of a first sync, megabytes of writes, is logged like a
    /// small one (D51): not durable until its flush, then kept by a crash,
    /// with the applies after it.
    #[test]
    fn a_batch_of_megabytes_is_logged_and_survives_a_crash_once_flushed() {
        let (_dir, live, store) = live_store();
        let large = rows_of_a_kib(4_096);
        assert!(wal::encoded_len(&large) > 4 << 20 && wal::encoded_len(&large) <= wal::MAX_RECORD);
        store.apply(large).unwrap();
        put(&store, b"after", b"y");
        assert_eq!(crash_copy(&live).get(b"row/00000").unwrap(), None, "durable before its flush");
        store.flush().unwrap();
        assert!(lock(&store.log).len() > 4 << 20, "the batch was not logged");
        let reopened = crash_copy(&live);
        assert_eq!(scan_prefix(&reopened, b"row/").count(), 4_096);
        assert_eq!(reopened.get(b"row/04095").unwrap(), Some(vec![(4_095 % 251) as u8; 1024]));
        assert_eq!(reopened.get(b"after").unwrap(), Some(b"y".to_vec()));
    }

    /// A store closed cleanly leaves nothing in its log for the next
    /// opening to apply again: its data file alone holds every apply.
    #[test]
    fn a_clean_close_leaves_no_log_to_apply_again() {
        let (_dir, live, store) = live_store();
        store.apply(rows_of_a_kib(2_048)).unwrap();
        store.flush().unwrap();
        put(&store, b"small", b"x");
        store.flush().unwrap();
        drop(store);
        std::fs::remove_file(live.join(log_file(DATA_FILE))).unwrap();
        let reopened = RedbStore::open(&live, 1 << 20).unwrap();
        assert_eq!(scan_prefix(&reopened, b"row/").count(), 2_048);
        assert_eq!(reopened.get(b"small").unwrap(), Some(b"x".to_vec()));
    }

    /// A log cut short inside its last record (an append a crash tore
    /// before its sync) reopens as the flush before it left the store.
    #[test]
    fn a_torn_log_tail_loses_only_the_write_it_held() {
        let (_dir, live, store) = live_store();
        put(&store, b"kept", b"1");
        store.flush().unwrap();
        let log = live.join(log_file(DATA_FILE));
        let synced = lock(&store.log).len() as usize;
        put(&store, b"torn", b"2");
        store.flush().unwrap();
        let end = lock(&store.log).len() as usize;
        let full = std::fs::read(&log).unwrap();
        for cut in [synced + 1, synced + 20, end - 1] {
            let mut torn = full.clone();
            torn[cut..end].fill(0);
            // The file cut short, and the file as long as before.
            for bytes in [&torn[..cut], &torn[..]] {
                std::fs::write(&log, bytes).unwrap();
                let reopened = crash_copy(&live);
                let what = format!("cut at {cut}, {} bytes", bytes.len());
                assert_eq!(reopened.get(b"kept").unwrap(), Some(b"1".to_vec()), "{what}");
                assert_eq!(reopened.get(b"torn").unwrap(), None, "{what}");
            }
        }
    }

    /// After a checkpoint the log is written again from its start, over
    /// the records of the round before: a reopen skips those (redb holds
    /// them), so none of them undoes a later write.
    #[test]
    fn records_left_from_before_a_checkpoint_are_not_applied_again() {
        let (_dir, live, store) = live_store();
        for n in 1..=50u64 {
            put(&store, b"x", &n.to_be_bytes());
            store.flush().unwrap();
        }
        let allocated = lock(&store.log).allocated();
        store.checkpoint().unwrap();
        // Records of the same size, so that the old ones line up after it.
        put(&store, b"x", &100u64.to_be_bytes());
        store.flush().unwrap();
        assert_eq!(lock(&store.log).allocated(), allocated, "the log was not reused");
        let reopened = crash_copy(&live);
        assert_eq!(reopened.get(b"x").unwrap(), Some(100u64.to_be_bytes().to_vec()));
    }

    /// A batch too large to log, and one that would take the log past its
    /// bound, are committed durably and empty the log: the log never
    /// grows past the bound, and a crash loses none of them.
    #[test]
    fn large_batches_and_a_full_log_commit_redb_durably() {
        let (_dir, live, store) = live_store();
        let mut large = Batch::default();
        large.put(b"large".to_vec(), vec![1; wal::MAX_RECORD]);
        store.apply(large).unwrap();
        assert_eq!(lock(&store.log).len(), 0, "a large batch was logged");
        assert!(crash_copy(&live).get(b"large").unwrap().is_some(), "unflushed, yet durable");
        let value = vec![2; 256 << 10];
        let writes = 2 * wal::CHECKPOINT_BYTES / value.len() as u64;
        for i in 0..writes {
            put(&store, &i.to_be_bytes(), &value);
            store.flush().unwrap();
            assert!(lock(&store.log).len() <= wal::CHECKPOINT_BYTES);
        }
        let reopened = crash_copy(&live);
        assert_eq!(scan_prefix(&reopened, &[0; 4]).count() as u64, writes);
        assert!(reopened.get(b"large").unwrap().is_some());
    }

    /// After a write or sync of the log failed, nothing more is applied
    /// or reported flushed: the file's tail is unknown, and a later sync
    /// that succeeded would not show the lost pages were written.
    #[test]
    fn a_failed_log_write_refuses_every_later_apply_and_flush() {
        let (_dir, live, store) = live_store();
        put(&store, b"a", b"1");
        store.flush().unwrap();
        // A descriptor that cannot write stands in for a failing disk.
        lock(&store.log).replace_file(File::open(live.join(log_file(DATA_FILE))).unwrap());
        put(&store, b"b", b"2");
        assert!(matches!(store.flush(), Err(StoreError::Sync { .. })));
        let mut batch = Batch::default();
        batch.put(b"c".to_vec(), b"3".to_vec());
        assert!(store.apply(batch).is_err(), "an apply after the failure");
        assert!(store.flush().is_err(), "a second flush reported the lost write durable");
        assert!(store.checkpoint().is_err());
        let crashed = crash_copy(&live);
        assert_eq!(crashed.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(crashed.get(b"b").unwrap(), None);
    }

    /// A log whose next record is not the one after redb's last durable
    /// commit has lost records: opening refuses it with a typed error
    /// rather than open without them.
    #[test]
    fn a_log_with_records_missing_is_refused() {
        let (dir, live, store) = live_store();
        put(&store, b"a", b"1");
        put(&store, b"b", b"2");
        store.flush().unwrap();
        let log = live.join(log_file(DATA_FILE));
        let bytes = std::fs::read(&log).unwrap();
        // Without its first record (each record's length leads it).
        let first = 28 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        std::fs::write(&log, &bytes[first..]).unwrap();
        let crashed = dir.path().join("crashed");
        basic_testkit::copy_dir_at_rest(&live, &crashed);
        let error = RedbStore::open(&crashed, 1 << 20).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { what: "write-ahead log", .. }), "{error}");
    }

    /// Reads share a read transaction, yet every read sees every apply
    /// that returned before it began: readers on other threads, racing
    /// the applies, never find less than what an apply had returned.
    #[test]
    fn a_read_sees_every_apply_that_returned_before_it() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let returned = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        put(&store, b"n", &0u64.to_be_bytes());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let mut reads = 0;
                    while !done.load(Ordering::SeqCst) || reads == 0 {
                        let at_least = returned.load(Ordering::SeqCst);
                        let value = store.get(b"n").unwrap().unwrap();
                        let seen = u64::from_be_bytes(value.try_into().unwrap());
                        assert!(seen >= at_least, "read {seen} after apply {at_least} returned");
                        // Scans go through the shared transaction too.
                        let scanned: Vec<Entry> =
                            scan_prefix(&store, b"n").map(Result::unwrap).collect();
                        let [(_, value)] = &scanned[..] else { panic!("{scanned:?}") };
                        let seen = u64::from_be_bytes(value[..].try_into().unwrap());
                        assert!(seen >= at_least, "scanned {seen} after apply {at_least} returned");
                        reads += 1;
                    }
                });
            }
            for n in 1..=2_000u64 {
                // With 1 KiB more, applies are handed off to redb's
                // thread every 60 or so, while the reads race them.
                let mut batch = Batch::default();
                batch.put(b"n".to_vec(), n.to_be_bytes().to_vec());
                batch.put(format!("pad/{n}").into_bytes(), vec![0; 1024]);
                store.apply(batch).unwrap();
                returned.store(n, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        });
    }

    /// The shared read transaction ends with the next apply: a read made
    /// once, before the whole keyspace is rewritten again and again, does
    /// not keep redb from reusing the pages the rewrites free.
    #[test]
    fn a_read_does_not_keep_the_pages_later_applies_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let rewrite = |fill: u8| {
            let mut batch = Batch::default();
            for key in 0..4_096u32 {
                batch.put(key.to_be_bytes().to_vec(), vec![fill; 1024]);
            }
            store.apply(batch).unwrap();
            // Durably, so that redb may reuse what the rewrite freed.
            store.checkpoint().unwrap();
        };
        rewrite(0);
        let one_copy = store.size_on_disk().unwrap();
        assert!(store.get(&0u32.to_be_bytes()).unwrap().is_some());
        for fill in 1..=4 {
            rewrite(fill);
        }
        // Rewriting every key in one transaction takes a second copy until
        // it commits (the same without the read); with the read's
        // transaction kept open, four rewrites made the file four copies.
        let size = store.size_on_disk().unwrap();
        assert!(size < one_copy * 5 / 2, "{size} bytes, against {one_copy} for one copy");
    }

    /// A new data file left half made by a kill (under its own name: see
    /// [`create_whole`]) is made again; the store opens.
    #[test]
    fn a_data_file_left_half_made_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join(format!("{DATA_FILE}.new"));
        std::fs::write(&fresh, vec![0; 73_728]).unwrap();
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        put(&store, b"k", b"v");
        store.flush().unwrap();
        assert!(!fresh.exists());
        drop(store);
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    /// A data file that is not redb's (or was damaged) is refused with a
    /// typed error, never a panic or a fresh empty store over it.
    #[test]
    fn redb_store_refuses_a_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DATA_FILE), vec![0x5a; 64 << 10]).unwrap();
        assert!(matches!(RedbStore::open(dir.path(), 1 << 20), Err(StoreError::Redb(_))));
    }
}
