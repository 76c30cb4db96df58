//! The store on fjall 3 (an LSM tree): the replica's engine on a device
//! (D55; redb before it and sled before that, see
//! [`crate::storage::device`] for the move of a replica they kept).
//!
//! One fjall keyspace holds the replica's whole keyspace. [`Store::apply`]
//! commits its batch as one fjall write batch, atomic and seen by every
//! later read at once, and stages it as a record of the write-ahead log
//! beside fjall's files (the `wal` module, D43, `basic.wal`);
//! [`Store::flush`] writes the staged records and `fdatasync`s the log,
//! unless every apply before it is on disk already. fjall's journal gets
//! each batch too but is synced only when the log cannot serve: fjall
//! opens its journal again in append mode, so a sync of it after a restart
//! also writes the file's size, one more write to the disk on every small
//! flush, where the log, allocated ahead, writes data alone (D55 measured
//! it). A batch over [`LOGGED_BYTES`], or one for a full log (32 MiB),
//! is not logged: the next flush syncs fjall's journal, which holds every
//! apply, and starts the log over.
//!
//! Each fjall batch also records the sequence number of its apply (in a
//! keyspace of its own). On opening, fjall reads its journal back (a batch
//! torn by a crash is dropped whole), the log's records past fjall's last
//! apply are applied again, and fjall's journal is synced before the log
//! starts over: the store reopens as its last flush left it, or later.
//!
//! Memory is bounded (D55): a block cache of the size asked for, and
//! memtables sealed at [`MEMTABLE_BYTES`]. fjall makes writes wait while
//! four sealed memtables wait to be written out, so at most five are held.
//!
//! Reads go through a snapshot of the newest batch applied in full: fjall's
//! plain reads may see part of a batch while it is being applied.
//!
//! An LSM tree keeps every version of a key in its memtable until the
//! memtable is written out, and a range read walks them all: a scan of
//! the log heads or sync summaries, which every commit rewrites, took
//! 1.4 ms after 10,000 commits (D55). Those records ([`HOT`]) are also
//! kept in memory, written there after each batch is in fjall, and read
//! from there.
//!
//! [`Store::scan`] reads in chunks of [`SCAN_CHUNK`] entries, each from
//! fjall's newest state at its moment: an iterator kept open holds no
//! snapshot that would keep compaction from dropping old versions. Like
//! the engines before, a scan is not one snapshot: each chunk sees the
//! writes applied before it was read.
//!
//! fjall makes a new database's files one by one, and refuses a
//! directory that a kill left half made. So a store is made under another
//! name and renamed once whole ([`FjallStore::create`]): the name
//! [`STORE_DIR`] only ever holds a store that opens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::kv::{Batch, Entry, Store, StoreError, sync_error, sync_file};
use super::layout;
use super::wal::{self, Log};

/// The store's directory inside the replica's.
pub(super) const STORE_DIR: &str = "fjall";
/// Where a store is made before it takes the name [`STORE_DIR`].
pub(super) const MAKING_DIR: &str = "fjall.making";
/// fjall's files that say a database is there, and that locks it.
const VERSION_FILE: &str = "version";
const LOCK_FILE: &str = "lock";
/// The keyspace of the replica's entries.
const KEYSPACE: &str = "basic";
/// The keyspace holding the sequence number of the last apply, under
/// [`APPLIED_KEY`] (big-endian).
const APPLIED: &str = "applied";
const APPLIED_KEY: &[u8] = b"seq";
/// Prefixes of the records that every commit rewrites (log heads, sync
/// summaries), read from memory.
const HOT: [u8; 2] = [layout::HEAD, layout::SUMMARY];
/// The write-ahead log, in the store's directory.
const LOG_FILE: &str = "basic.wal";
/// Entries a scan reads at a time.
pub const SCAN_CHUNK: usize = 512;
/// A memtable's size when it is sealed (and queued to be written out).
/// fjall's default (64 MiB) takes a new device's memory during a 1M-row
/// first sync past 256 MiB (D54).
pub const MEMTABLE_BYTES: u64 = 16 << 20;

/// The store on fjall (see the [module documentation](self)).
pub struct FjallStore {
    db: Database,
    keyspace: Keyspace,
    applied_keyspace: Keyspace,
    path: PathBuf,
    /// The sequence number of the last apply (set under `log`'s lock).
    applied: AtomicU64,
    /// The write-ahead log; held by an apply from its start to its end,
    /// and by a flush while it syncs.
    log: Mutex<Logged>,
    /// Every record under a [`HOT`] prefix, as fjall holds it.
    hot: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

/// Whether `key` (or a prefix) is under one of the [`HOT`] prefixes.
fn is_hot(key: &[u8]) -> bool {
    key.first().is_some_and(|first| HOT.contains(first))
}

/// The write-ahead log, and whether an apply since the last flush was
/// not logged (so the next flush syncs fjall's journal).
struct Logged {
    log: Log,
    unlogged: bool,
}

/// The largest batch (as logged) made durable through the log; a larger
/// one is made durable by a sync of fjall's journal, where the one more
/// write of the file's size costs little beside the batch's own (a first
/// sync's groups: one write of their bytes, not two).
const LOGGED_BYTES: usize = 256 << 10;

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens the store in directory `replica`, with a block cache of
    /// `cache_bytes`, first making an empty one if there is none.
    pub fn open(replica: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        if !replica.join(STORE_DIR).exists() {
            Self::create(replica, cache_bytes, |_| Ok(()))?;
        }
        Self::open_dir(&replica.join(STORE_DIR), cache_bytes)
    }

    /// Makes a new store in directory `replica` (created if needed) and
    /// gives it what `fill` writes, under [`MAKING_DIR`] (whatever a
    /// stopped attempt left there is removed first). Once filled it is
    /// synced, closed and renamed [`STORE_DIR`], and the rename synced.
    /// There must be no store there yet.
    pub(super) fn create(
        replica: &Path,
        cache_bytes: u64,
        fill: impl FnOnce(&Self) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let created = !replica.exists();
        std::fs::create_dir_all(replica).map_err(sync_error(replica))?;
        if created && let Some(parent) = replica.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_file(parent)?;
        }
        let making = replica.join(MAKING_DIR);
        if making.exists() {
            std::fs::remove_dir_all(&making).map_err(sync_error(&making))?;
        }
        let filled = Self::open_dir(&making, cache_bytes).and_then(|store| {
            fill(&store)?;
            store.db.persist(PersistMode::SyncAll).map_err(engine)
        });
        if let Err(error) = filled {
            // Given back (best effort; the next attempt removes it anyway).
            let _ = std::fs::remove_dir_all(&making);
            return Err(error);
        }
        sync_tree(&making)?;
        let path = replica.join(STORE_DIR);
        std::fs::rename(&making, &path).map_err(sync_error(&making))?;
        sync_file(replica)
    }

    /// Opens (or, in a directory that does not exist, makes) the fjall
    /// database in `dir`.
    fn open_dir(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        // fjall's lock file holds nothing, but fjall does not open a store
        // without it: a copy made without lock files (as some backup tools
        // make them) would not open.
        let lock_file = dir.join(LOCK_FILE);
        if dir.join(VERSION_FILE).exists() && !lock_file.exists() {
            std::fs::File::create(&lock_file).map_err(sync_error(&lock_file))?;
        }
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            // Batches stay in the journal's buffer until `flush`.
            .manual_journal_persist(true)
            .open()
            .map_err(engine)?;
        let keyspace = db
            .keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(engine)?;
        let applied_keyspace =
            db.keyspace(APPLIED, KeyspaceCreateOptions::default).map_err(engine)?;
        let durable = match applied_keyspace.get(APPLIED_KEY).map_err(engine)? {
            None => 0,
            Some(bytes) => {
                u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "fjall store",
                    reason: format!("its last apply is {} bytes, not 8", bytes.len()),
                })?)
            }
        };
        let (log, records) = Log::open(&dir.join(LOG_FILE), durable)?;
        let store = Self {
            db,
            keyspace,
            applied_keyspace,
            path: dir.to_path_buf(),
            applied: AtomicU64::new(durable),
            log: Mutex::new(Logged { log, unlogged: false }),
            hot: RwLock::default(),
        };
        let mut applied = durable;
        for (seq, batch) in records {
            if seq != applied + 1 {
                return Err(StoreError::Corrupt {
                    what: "write-ahead log",
                    reason: format!(
                        "its record {seq} follows fjall's {applied}: the records between are missing"
                    ),
                });
            }
            store.commit(batch, seq)?;
            applied = seq;
        }
        // What fjall read back may have been in the system's cache only
        // (after a kill): synced before the log, which may hold it, starts
        // over.
        store.db.persist(PersistMode::SyncAll).map_err(engine)?;
        if applied > durable {
            let replayed = applied - durable;
            tracing::info!("applied {replayed} logged writes again to {}", dir.display());
        }
        lock(&store.log).log.checkpointed(applied);
        store.applied.store(applied, Ordering::SeqCst);
        let mut hot = BTreeMap::new();
        for prefix in HOT {
            for entry in store.scan_fjall(&[prefix], &[prefix]) {
                let (key, value) = entry?;
                hot.insert(key, value);
            }
        }
        *store.hot.write().unwrap_or_else(PoisonError::into_inner) = hot;
        Ok(store)
    }

    /// Commits `batch`, apply `seq`, to fjall (not durably), then writes
    /// its [`HOT`] records into memory.
    fn commit(&self, batch: Batch, seq: u64) -> Result<(), StoreError> {
        let hot: Vec<(Vec<u8>, Option<Vec<u8>>)> = HOT
            .iter()
            .flat_map(|prefix| batch.scan_prefix(std::slice::from_ref(prefix)))
            .map(|(key, value)| (key.to_vec(), value.map(<[u8]>::to_vec)))
            .collect();
        let mut writes = self.db.batch();
        for (key, value) in batch.writes {
            match value {
                Some(value) => writes.insert(&self.keyspace, key, value),
                None => writes.remove(&self.keyspace, key),
            }
        }
        writes.insert(&self.applied_keyspace, APPLIED_KEY, seq.to_be_bytes());
        writes.commit().map_err(engine)?;
        if !hot.is_empty() {
            let mut held = self.hot.write().unwrap_or_else(PoisonError::into_inner);
            for (key, value) in hot {
                match value {
                    Some(value) => held.insert(key, value),
                    None => held.remove(&key),
                };
            }
        }
        Ok(())
    }

    /// Entries under `prefix` from `from`, read from fjall a chunk at a
    /// time.
    fn scan_fjall(&self, prefix: &[u8], from: &[u8]) -> Scan<'_> {
        Scan {
            store: self,
            prefix: prefix.to_vec(),
            next: Some((from.to_vec(), true)),
            entries: Vec::new().into_iter(),
        }
    }

    /// Up to [`SCAN_CHUNK`] entries under `prefix` from `from` (inclusive
    /// if `inclusive`), and whether more may follow.
    fn chunk(
        &self,
        prefix: &[u8],
        from: &[u8],
        inclusive: bool,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        use std::ops::Bound;
        let start = match inclusive {
            true => Bound::Included(from),
            false => Bound::Excluded(from),
        };
        let mut entries = Vec::new();
        let snapshot = self.db.snapshot();
        for guard in snapshot.range::<&[u8], _>(&self.keyspace, (start, Bound::Unbounded)) {
            let (key, value) = guard.into_inner().map_err(engine)?;
            if !key.starts_with(prefix) {
                return Ok((entries, false));
            }
            entries.push((key.to_vec(), value.to_vec()));
            if entries.len() == SCAN_CHUNK {
                return Ok((entries, true));
            }
        }
        Ok((entries, false))
    }
}

impl Drop for FjallStore {
    /// Syncs fjall's journal, so that a clean close keeps every apply and
    /// the next opening has no logged write to apply again.
    fn drop(&mut self) {
        if let Err(error) = self.db.persist(PersistMode::SyncAll) {
            tracing::warn!("{}: {error}", self.path.display());
        }
    }
}

impl Store for FjallStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if is_hot(key) {
            return Ok(self.hot.read().unwrap_or_else(PoisonError::into_inner).get(key).cloned());
        }
        let value = self.db.snapshot().get(&self.keyspace, key).map_err(engine)?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_> {
        if is_hot(prefix) {
            let hot = self.hot.read().unwrap_or_else(PoisonError::into_inner);
            let entries: Vec<Entry> = hot
                .range(from.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            return Box::new(entries.into_iter().map(Ok));
        }
        Box::new(self.scan_fjall(prefix, from))
    }

    /// Committed to fjall, and staged in the log unless it is over
    /// [`LOGGED_BYTES`] or the log is full: then the next flush syncs
    /// fjall's journal instead.
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut log = lock(&self.log);
        log.log.usable()?;
        let seq = self.applied.load(Ordering::SeqCst) + 1;
        let encoded = wal::encoded_len(&batch);
        if encoded > LOGGED_BYTES || log.log.is_full_with(encoded) {
            log.unlogged = true;
        } else {
            log.log.stage(seq, &batch);
        }
        self.commit(batch, seq)?;
        self.applied.store(seq, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every apply before this call durable, unless it is already:
    /// by writing the staged records to the log and `fdatasync`ing it, or,
    /// if an apply since the last flush was not logged, by syncing fjall's
    /// journal, which holds them all, and starting the log over.
    fn flush(&self) -> Result<(), StoreError> {
        let needed = self.applied.load(Ordering::SeqCst);
        let mut log = lock(&self.log);
        if log.log.synced >= needed {
            return Ok(());
        }
        // Applies hold the log while they run: every one counted now is
        // in fjall and, if logged, has its record staged.
        let applied = self.applied.load(Ordering::SeqCst);
        if log.unlogged {
            self.db.persist(PersistMode::SyncData).map_err(engine)?;
            log.log.checkpointed(applied);
            log.unlogged = false;
            return Ok(());
        }
        log.log.sync(applied)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.disk_space().map_err(engine)? + lock(&self.log).log.allocated())
    }
}

/// A scan of a [`FjallStore`], read a chunk at a time.
struct Scan<'a> {
    store: &'a FjallStore,
    prefix: Vec<u8>,
    /// Where the next chunk starts, and whether that key is included;
    /// `None` once the last chunk was read.
    next: Option<(Vec<u8>, bool)>,
    entries: std::vec::IntoIter<Entry>,
}

impl Iterator for Scan<'_> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.entries.next() {
                return Some(Ok(entry));
            }
            let (from, inclusive) = self.next.take()?;
            match self.store.chunk(&self.prefix, &from, inclusive) {
                Ok((entries, more)) => {
                    if more {
                        self.next = entries.last().map(|(key, _)| (key.clone(), false));
                    }
                    self.entries = entries.into_iter();
                }
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn engine(error: ::fjall::Error) -> StoreError {
    StoreError::Fjall(Box::new(error))
}

/// `fsync` of every file and directory under `dir`, and of `dir`.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(sync_error(dir))? {
        let path = entry.map_err(sync_error(dir))?.path();
        match path.is_dir() {
            true => sync_tree(&path)?,
            false => sync_file(&path)?,
        }
    }
    sync_file(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::kv::scan_prefix;
    use crate::storage::kv::tests::{contract, keeps_only_flushed_writes_across_a_crash};

    fn put(store: &FjallStore, key: &[u8], value: &[u8]) {
        let mut batch = Batch::default();
        batch.put(key.to_vec(), value.to_vec());
        store.apply(batch).unwrap();
    }

    #[test]
    fn fjall_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&FjallStore::open(dir.path(), 1 << 20).unwrap());
    }

    #[test]
    fn fjall_store_keeps_flushed_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica");
        {
            let store = FjallStore::open(&path, 1 << 20).unwrap();
            put(&store, b"k", b"v");
            store.flush().unwrap();
            assert!(store.size_on_disk().unwrap() > 0);
        }
        let store = FjallStore::open(&path, 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn fjall_store_keeps_only_flushed_writes_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = FjallStore::open(&live, 1 << 20).unwrap();
        keeps_only_flushed_writes_across_a_crash(&store, &live, &|path| {
            Box::new(FjallStore::open(path, 1 << 20).unwrap())
        });
    }

    /// A scan longer than a chunk resumes where the previous chunk ended,
    /// stops at the prefix's end, and sees writes made while it runs.
    #[test]
    fn fjall_scan_reads_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), 1 << 20).unwrap();
        let count = 3 * SCAN_CHUNK + 7;
        let mut batch = Batch::default();
        for i in 0..count {
            batch.put(format!("a/{i:06}").into_bytes(), vec![1]);
        }
        batch.put(b"b/0".to_vec(), vec![2]);
        store.apply(batch).unwrap();
        let mut scan = store.scan(b"a/", b"a/");
        assert_eq!(scan.next().unwrap().unwrap().0, b"a/000000");
        // Written while the scan is open, past its current chunk.
        put(&store, format!("a/{:06}", count + 1).as_bytes(), &[3]);
        let rest: Vec<Vec<u8>> = scan.map(|e| e.unwrap().0).collect();
        assert_eq!(rest.len(), count, "the write after the scan began is seen once");
        assert!(rest.windows(2).all(|w| w[0] < w[1]));
        assert!(rest.iter().all(|key| key.starts_with(b"a/")));
        let from: Vec<Vec<u8>> = store
            .scan(b"a/", format!("a/{:06}", SCAN_CHUNK).as_bytes())
            .map(|e| e.unwrap().0)
            .collect();
        assert_eq!(from.len(), count + 1 - SCAN_CHUNK);
    }

    /// A copy of a store made without its (empty) lock file opens.
    #[test]
    fn a_store_copied_without_its_lock_file_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path(), 1 << 20).unwrap();
            put(&store, b"k", b"v");
            store.flush().unwrap();
        }
        std::fs::remove_file(dir.path().join(STORE_DIR).join(LOCK_FILE)).unwrap();
        let store = FjallStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    /// A read never sees part of a batch, even while it is being applied.
    #[test]
    fn reads_see_a_batch_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FjallStore::open(dir.path(), 1 << 20).unwrap());
        let keys = 200u32;
        let writer = {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                for version in 0..300u32 {
                    let mut batch = Batch::default();
                    for key in 0..keys {
                        batch.put(
                            format!("k/{key:04}").into_bytes(),
                            version.to_be_bytes().to_vec(),
                        );
                    }
                    store.apply(batch).unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            let values: Vec<Vec<u8>> = scan_prefix(&*store, b"k/").map(|e| e.unwrap().1).collect();
            assert!(values.is_empty() || values.len() == keys as usize, "{} keys", values.len());
            assert!(values.windows(2).all(|w| w[0] == w[1]), "a scan saw two batches mixed");
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 10, "the reads ran alongside the writes ({reads})");
    }

    /// The journal's files: where a crash cuts a write short.
    fn journals(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(journals(&path));
            } else if path.extension().is_some_and(|e| e == "jnl") {
                files.push(path);
            }
        }
        files
    }

    /// A batch of `count` writes under `prefix`.
    fn batch_of(prefix: &str, count: u32) -> Batch {
        let mut batch = Batch::default();
        for i in 0..count {
            batch.put(format!("{prefix}/{i:03}").into_bytes(), vec![(i % 256) as u8; 97]);
        }
        batch
    }

    /// fjall's journal is synced only at checkpoints: a crash may cut it
    /// at any byte past what the last one synced. The store reopens with
    /// every flushed batch (from the log), and with the batch that was not
    /// flushed whole or not at all.
    #[test]
    fn any_cut_of_fjalls_journal_keeps_flushed_batches_and_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = FjallStore::open(&live, 1 << 20).unwrap();
        let journal = journals(&live);
        assert_eq!(journal.len(), 1, "{journal:?}");
        let synced = std::fs::metadata(&journal[0]).unwrap().len();
        put(&store, b"before", b"kept");
        store.apply(batch_of("flushed", 50)).unwrap();
        store.flush().unwrap();
        store.apply(batch_of("cut", 50)).unwrap();
        // Out of fjall's buffer into its file, unsynced, as a kill finds it.
        store.db.persist(PersistMode::Buffer).unwrap();
        let whole = std::fs::metadata(&journal[0]).unwrap().len();
        assert!(whole > synced + 100 * 97 / 4, "the batches went to the journal");
        let crashed = dir.path().join("crashed");
        let (mut none, mut all) = (0, 0);
        for cut in (synced..=whole).step_by(61).chain([whole - 1, whole]) {
            let _ = std::fs::remove_dir_all(&crashed);
            basic_testkit::copy_dir(&live, &crashed);
            let copy = crashed.join(journal[0].strip_prefix(&live).unwrap());
            std::fs::OpenOptions::new().write(true).open(&copy).unwrap().set_len(cut).unwrap();
            let reopened = FjallStore::open(&crashed, 1 << 20).unwrap();
            assert_eq!(reopened.get(b"before").unwrap(), Some(b"kept".to_vec()), "cut at {cut}");
            assert_eq!(scan_prefix(&reopened, b"flushed/").count(), 50, "cut at {cut}");
            match scan_prefix(&reopened, b"cut/").count() {
                0 => none += 1,
                50 => all += 1,
                written => panic!("cut at {cut}: {written} of the unflushed batch's 50 writes"),
            }
        }
        assert!(none > 0 && all > 0, "the cuts fell before and after the batch: {none} / {all}");
    }

    /// The records every commit rewrites are read from memory, and hold
    /// what fjall holds: after puts and deletes, and after reopening.
    #[test]
    fn hot_records_are_read_from_memory_as_fjall_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), 1 << 20).unwrap();
        let key = |prefix: u8, i: u8| vec![prefix, i];
        for round in 0..3u8 {
            let mut batch = Batch::default();
            for i in 0..4 {
                batch.put(key(layout::HEAD, i), vec![round, i]);
                batch.put(key(layout::SUMMARY, i), vec![round]);
            }
            batch.delete(key(layout::SUMMARY, 3));
            batch.put(key(layout::COMMIT, round), vec![round]);
            store.apply(batch).unwrap();
        }
        let from_fjall = |store: &FjallStore, prefix: u8| -> Vec<Entry> {
            store.scan_fjall(&[prefix], &[prefix]).map(Result::unwrap).collect()
        };
        for prefix in HOT {
            let served: Vec<Entry> = scan_prefix(&store, &[prefix]).map(Result::unwrap).collect();
            assert_eq!(served, from_fjall(&store, prefix));
            assert!(!served.is_empty());
        }
        assert_eq!(store.get(&key(layout::HEAD, 2)).unwrap(), Some(vec![2, 2]));
        assert_eq!(store.get(&key(layout::SUMMARY, 3)).unwrap(), None);
        let from: Vec<Entry> =
            store.scan(&[layout::HEAD], &key(layout::HEAD, 2)).map(Result::unwrap).collect();
        assert_eq!(from.len(), 2);
        store.flush().unwrap();
        drop(store);
        let reopened = FjallStore::open(dir.path(), 1 << 20).unwrap();
        for prefix in HOT {
            let served: Vec<Entry> =
                scan_prefix(&reopened, &[prefix]).map(Result::unwrap).collect();
            assert_eq!(served, from_fjall(&reopened, prefix), "after reopening");
        }
        assert_eq!(scan_prefix(&reopened, &[layout::SUMMARY]).count(), 3);
    }

    /// A batch over [`LOGGED_BYTES`] is not logged: the flush after it
    /// syncs fjall's journal, which covers the logged applies before it
    /// too, and starts the log over; small batches are logged again after.
    #[test]
    fn a_large_batch_is_made_durable_by_fjalls_journal_and_starts_the_log_over() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = FjallStore::open(&live, 1 << 20).unwrap();
        store.apply(batch_of("small", 3)).unwrap();
        let mut large = Batch::default();
        large.put(b"large".to_vec(), vec![7; LOGGED_BYTES]);
        store.apply(large).unwrap();
        assert!(lock(&store.log).unlogged);
        store.flush().unwrap();
        {
            let log = lock(&store.log);
            assert!(!log.unlogged && log.log.len() == 0 && log.log.synced == 2, "started over");
        }
        store.apply(batch_of("after", 3)).unwrap();
        store.flush().unwrap();
        assert!(lock(&store.log).log.len() > 0, "a small batch is logged again");
        let crashed = dir.path().join("crashed");
        basic_testkit::copy_dir(&live, &crashed);
        let reopened = FjallStore::open(&crashed, 1 << 20).unwrap();
        assert_eq!(reopened.get(b"large").unwrap().map(|v| v.len()), Some(LOGGED_BYTES));
        assert_eq!(scan_prefix(&reopened, b"small/").count(), 3);
        assert_eq!(scan_prefix(&reopened, b"after/").count(), 3);
    }

    /// What the log holds is applied again on opening, in order, and a
    /// gap in it is refused rather than skipped.
    #[test]
    fn the_log_is_applied_again_and_a_gap_in_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = FjallStore::open(&live, 1 << 20).unwrap();
        for i in 0..5u32 {
            store.apply(batch_of(&format!("b{i}"), 3)).unwrap();
        }
        store.flush().unwrap();
        // fjall's journal loses everything past what opening synced.
        let crashed = dir.path().join("crashed");
        basic_testkit::copy_dir(&live, &crashed);
        let journal = journals(&crashed);
        std::fs::OpenOptions::new().write(true).open(&journal[0]).unwrap().set_len(0).unwrap();
        let reopened = FjallStore::open(&crashed, 1 << 20).unwrap();
        assert_eq!(scan_prefix(&reopened, b"b").count(), 15, "every logged batch applied again");
        assert_eq!(reopened.applied.load(Ordering::SeqCst), 5);
        drop(reopened);
        // A log whose records skip one of fjall's applies is corrupt.
        drop(store);
        let gap = dir.path().join("gap");
        basic_testkit::copy_dir(&live, &gap);
        let (mut log, _) = Log::open(&gap.join(STORE_DIR).join(LOG_FILE), 0).unwrap();
        log.stage(9, &batch_of("late", 1));
        log.sync(9).unwrap();
        drop(log);
        let refused = FjallStore::open(&gap, 1 << 20).unwrap_err();
        assert!(refused.to_string().contains("missing"), "{refused}");
    }
}
