//! The store on an LSM tree (`lsm-tree` 3, the tree under fjall, without
//! fjall's journal): the replica's engine on a device (D56; redb before
//! it and sled before that, see [`crate::storage::device`] for the move of
//! a replica they kept).
//!
//! One tree holds the replica's whole keyspace, each key behind a byte
//! (`ENTRY`) that keeps it apart from the store's own record of its last
//! apply (`APPLIED_KEY`). [`Store::apply`] inserts its batch into the
//! tree's memtable under one sequence number, with its apply's number,
//! and stages it as a record of the write-ahead log (the `wal` module,
//! D43, `basic.wal`); [`Store::flush`] writes the staged records and
//! `fdatasync`s the log, unless every apply before it is on disk already.
//! The log is the only journal: a memtable lives in memory until it is
//! written out as a table (synced, with the tree's version file).
//!
//! The writer seals the memtable between two batches once it passes
//! [`MEMTABLE_BYTES`], so a table holds whole batches, and a thread of
//! the store's own writes sealed memtables out and compacts the tables.
//! When a batch would take the log past its size, or is larger than a log
//! record, the next flush writes every memtable out itself and starts the
//! log over. On opening, the tree holds what its tables hold, the log's
//! records past the last apply they hold are applied again and written
//! out, and the log starts over: the store reopens as its last flush left
//! it, or later. A clean close writes the memtables out, so opening then
//! reads no log at all (fjall reads its whole journal, D55).
//!
//! Memory is bounded: a block cache of the size asked for, and at most
//! [`MAX_SEALED`] sealed memtables waiting to be written out (the writer
//! waits for the thread past that).
//!
//! Reads see the tree as of the last batch inserted whole (`Inner::seen`),
//! never part of one. The tree keeps each read's version of its tables
//! until no read can ask for it: the thread drops versions, and the
//! versions of keys that later ones hide, only below a watermark that no
//! read still running is under (`Inner::watermark`).
//!
//! An LSM tree keeps every version of a key in its memtable until the
//! memtable is written out, and a range read walks them all: the log heads
//! and sync summaries, which every commit rewrites, are also kept in
//! memory (`HOT`, D55) and read from there.
//!
//! [`Store::scan`] reads in chunks of [`SCAN_CHUNK`] entries, each from the
//! tree's state at its moment, like the engines before.
//!
//! A new tree's files are made one by one, so a store is made under
//! another name and renamed once whole (`LsmStore::create`): the name
//! `lsm/` only ever holds a store that opens.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use ::lsm_tree::{AbstractTree, AnyTree, Cache, Config, Guard, SeqNo, SequenceNumberCounter};

use super::kv::{Batch, Entry, Store, StoreError, sync_error, sync_file};
use super::wal::{self, Log};
use super::{layout, lsm_files};

/// The store's directory inside the replica's.
pub(super) const STORE_DIR: &str = "lsm";
/// Where a store is made before it takes the name [`STORE_DIR`].
pub(super) const MAKING_DIR: &str = "lsm.making";
/// The byte before every key of the replica's.
const ENTRY: u8 = 1;
/// The store's record of the last apply its tree holds (big-endian), a
/// key no entry's can equal.
const APPLIED_KEY: &[u8] = &[0];
/// Prefixes of the records that every commit rewrites (log heads, sync
/// summaries), read from memory.
const HOT: [u8; 2] = [layout::HEAD, layout::SUMMARY];
/// The write-ahead log, in the store's directory.
const LOG_FILE: &str = "basic.wal";
/// Entries a scan reads at a time.
pub const SCAN_CHUNK: usize = 512;
/// A memtable's size when the writer seals it: a new device's memory
/// during a 1M-row first sync stays under 256 MiB (D54).
pub const MEMTABLE_BYTES: u64 = 16 << 20;
/// Sealed memtables that may wait to be written out before the writer
/// waits for the thread that writes them.
pub const MAX_SEALED: usize = 3;

/// The store on an LSM tree (see the [module documentation](self)).
pub struct LsmStore {
    inner: Arc<Inner>,
    /// The thread writing sealed memtables out and compacting, and where
    /// it is told to.
    worker: Option<(Sender<()>, JoinHandle<()>)>,
}

/// What the store and its thread share.
struct Inner {
    tree: AnyTree,
    path: PathBuf,
    /// The tree's sequence numbers (batches, and the tree's versions).
    seqno: SequenceNumberCounter,
    /// One past the sequence number of the last batch inserted whole:
    /// what reads see.
    seen: AtomicU64,
    /// Held (shared) by every read from taking its sequence number to its
    /// end; taken alone by [`Inner::watermark`].
    readers: RwLock<()>,
    /// The number of the last apply (set under `log`'s lock).
    applied: AtomicU64,
    /// The write-ahead log; held by an apply from its start to its end,
    /// and by a flush while it syncs.
    log: Mutex<Logged>,
    /// Every record under a [`HOT`] prefix, as the tree holds it.
    hot: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The thread's last error, if writing out or compacting failed: the
    /// store then takes no more writes.
    background: Mutex<Option<String>>,
    /// Where the writer waits (on `background`) while too many memtables
    /// are sealed; told after each writing out, and of an error.
    written_out: Condvar,
}

/// Whether `key` (or a prefix) is under one of the [`HOT`] prefixes.
fn is_hot(key: &[u8]) -> bool {
    key.first().is_some_and(|first| HOT.contains(first))
}

/// The write-ahead log, and whether an apply since the last flush was
/// not logged (so the next flush writes every memtable out).
struct Logged {
    log: Log,
    unlogged: bool,
}

impl std::fmt::Debug for LsmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LsmStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// `key` behind [`ENTRY`].
fn entry_key(key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1);
    stored.push(ENTRY);
    stored.extend_from_slice(key);
    stored
}

impl LsmStore {
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
    /// written out, closed and renamed [`STORE_DIR`], and the rename
    /// synced. There must be no store there yet.
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
            store.close()
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

    /// Opens (or, in a directory that does not exist, makes) the tree in
    /// `dir`, and applies the log's records past what its tables hold.
    fn open_dir(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        lsm_files::check(dir)?;
        let seqno = SequenceNumberCounter::default();
        let tree = Config::new(dir, seqno.clone(), SequenceNumberCounter::default())
            .use_cache(Arc::new(Cache::with_capacity_bytes(cache_bytes)))
            .open()
            .map_err(engine)?;
        let next = tree.get_highest_persisted_seqno().map_or(0, |highest| highest + 1);
        seqno.set(next);
        let durable = match tree.get(APPLIED_KEY, SeqNo::MAX).map_err(engine)? {
            None => 0,
            Some(bytes) => {
                u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "LSM store",
                    reason: format!("its last apply is {} bytes, not 8", bytes.len()),
                })?)
            }
        };
        let (log, records) = Log::open(&dir.join(LOG_FILE), durable)?;
        let inner = Inner {
            tree,
            path: dir.to_path_buf(),
            seqno,
            seen: AtomicU64::new(next),
            readers: RwLock::default(),
            applied: AtomicU64::new(durable),
            log: Mutex::new(Logged { log, unlogged: false }),
            hot: RwLock::default(),
            background: Mutex::default(),
            written_out: Condvar::new(),
        };
        let mut applied = durable;
        for (seq, batch) in records {
            if seq != applied + 1 {
                return Err(StoreError::Corrupt {
                    what: "write-ahead log",
                    reason: format!(
                        "its record {seq} follows the tree's {applied}: the records between are missing"
                    ),
                });
            }
            inner.insert(batch, seq);
            applied = seq;
        }
        inner.applied.store(applied, Ordering::SeqCst);
        if applied > durable {
            // Written out before the log, which holds them, starts over.
            inner.write_out()?;
            let replayed = applied - durable;
            tracing::info!("applied {replayed} logged writes again to {}", dir.display());
        }
        lock(&inner.log).log.checkpointed(applied);
        let mut hot = BTreeMap::new();
        for prefix in HOT {
            for entry in inner.scan_tree(&[prefix], &[prefix]) {
                let (key, value) = entry?;
                hot.insert(key, value);
            }
        }
        *inner.hot.write().unwrap_or_else(PoisonError::into_inner) = hot;
        let inner = Arc::new(inner);
        let (sender, work) = channel();
        let worker = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("basic-lsm".into())
                .spawn(move || inner.background(work))
                .map_err(sync_error(dir))?
        };
        // Each opening after a crash, and each clean close, leaves a table
        // more: compacted now, or a device opened and closed often would
        // read through ever more of them.
        let _ = sender.send(());
        Ok(Self { inner, worker: Some((sender, worker)) })
    }

    /// Stops the thread and writes every memtable out, so that the next
    /// opening has no logged write to apply again.
    fn close(mut self) -> Result<(), StoreError> {
        self.finish()
    }

    /// What closing does; again after it, nothing is left to write.
    fn finish(&mut self) -> Result<(), StoreError> {
        self.stop_worker();
        let applied = self.inner.applied.load(Ordering::SeqCst);
        let mut log = lock(&self.inner.log);
        self.inner.write_out()?;
        log.log.checkpointed(applied);
        Ok(())
    }

    fn stop_worker(&mut self) {
        if let Some((sender, worker)) = self.worker.take() {
            drop(sender);
            if worker.join().is_err() {
                tracing::warn!("{}: the LSM store's thread panicked", self.inner.path.display());
            }
        }
    }
}

impl Inner {
    /// Inserts `batch`, apply `seq`, into the memtable under one sequence
    /// number (not durably) and makes it seen, then writes its [`HOT`]
    /// records into memory. The caller holds `log`.
    fn insert(&self, batch: Batch, seq: u64) {
        let hot: Vec<(Vec<u8>, Option<Vec<u8>>)> = HOT
            .iter()
            .flat_map(|prefix| batch.scan_prefix(std::slice::from_ref(prefix)))
            .map(|(key, value)| (key.to_vec(), value.map(<[u8]>::to_vec)))
            .collect();
        let seqno = self.seqno.next();
        for (key, value) in batch.writes {
            let key = entry_key(&key);
            match value {
                Some(value) => self.tree.insert(key, value, seqno),
                None => self.tree.remove(key, seqno),
            };
        }
        self.tree.insert(APPLIED_KEY, seq.to_be_bytes(), seqno);
        self.seen.fetch_max(seqno + 1, Ordering::SeqCst);
        if !hot.is_empty() {
            let mut held = self.hot.write().unwrap_or_else(PoisonError::into_inner);
            for (key, value) in hot {
                match value {
                    Some(value) => held.insert(key, value),
                    None => held.remove(&key),
                };
            }
        }
    }

    /// A sequence number below which no read still running or yet to
    /// start reads: versions hidden below it may be dropped.
    fn watermark(&self) -> SeqNo {
        let watermark = self.seen.load(Ordering::SeqCst);
        // Every read that took its number before `watermark` was read has
        // ended once no read holds `readers`; every later one reads at
        // `watermark` or above.
        drop(self.readers.write().unwrap_or_else(PoisonError::into_inner));
        watermark
    }

    /// Seals the memtable and writes every sealed one out as tables
    /// (synced), now, on this thread. The caller holds `log`, so no batch
    /// is half in the memtable sealed.
    fn write_out(&self) -> Result<(), StoreError> {
        self.tree.rotate_memtable();
        let watermark = self.watermark();
        let flushing = self.tree.get_flush_lock();
        self.tree.flush(&flushing, watermark).map_err(engine)?;
        drop(flushing);
        self.written_out.notify_all();
        Ok(())
    }

    /// The thread: on each word, writes sealed memtables out, compacts the
    /// tables and drops versions no read needs; until the store closes,
    /// or until its work fails: the store then takes no more writes.
    fn background(&self, work: Receiver<()>) {
        let strategy: Arc<dyn ::lsm_tree::compaction::CompactionStrategy> =
            Arc::new(::lsm_tree::compaction::Leveled::default());
        while work.recv().is_ok() {
            // Words sent while this one ran are served by this run.
            while work.try_recv().is_ok() {}
            // A panic inside the tree ends this thread's work as an error
            // does: the writer, which may wait for this thread, hears of
            // it rather than waiting for ever.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let watermark = self.watermark();
                {
                    let flushing = self.tree.get_flush_lock();
                    self.tree.flush(&flushing, watermark)?;
                }
                self.written_out.notify_all();
                self.tree.compact(Arc::clone(&strategy), watermark)?;
                self.tree.get_version_history_lock().maintenance(&self.path, watermark)
            }));
            let failed = match done {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error.to_string(),
                Err(_) => "the tree panicked".to_owned(),
            };
            tracing::warn!("{}: writing out or compacting: {failed}", self.path.display());
            *lock(&self.background) = Some(failed);
            self.written_out.notify_all();
            return;
        }
    }

    /// Entries under `prefix` from `from`, read from the tree a chunk at a
    /// time.
    fn scan_tree(&self, prefix: &[u8], from: &[u8]) -> Scan<'_> {
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
        let from = entry_key(from);
        let start = match inclusive {
            true => Bound::Included(from.as_slice()),
            false => Bound::Excluded(from.as_slice()),
        };
        // Bounded at the prefix's end: past it, the tree's sources (each
        // table, the memtables) would each be read for nothing, and the
        // memtable's versions of the next key walked (D56).
        let end = prefix_end(&entry_key(prefix));
        let end = match &end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        let _reading = self.readers.read().unwrap_or_else(PoisonError::into_inner);
        let seqno = self.seen.load(Ordering::SeqCst);
        for guard in self.tree.range::<&[u8], _>((start, end), seqno, None) {
            let (key, value) = guard.into_inner().map_err(engine)?;
            let key = key.get(1..).unwrap_or_default();
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

/// The first key past every key that starts with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|byte| *byte != u8::MAX)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

impl Drop for LsmStore {
    /// Writes every memtable out (as `LsmStore::close` does), so that a
    /// clean close leaves the next opening no log to read.
    fn drop(&mut self) {
        if let Err(error) = self.finish() {
            tracing::warn!("{}: {error}", self.inner.path.display());
        }
    }
}

impl Store for LsmStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = &*self.inner;
        if is_hot(key) {
            return Ok(inner.hot.read().unwrap_or_else(PoisonError::into_inner).get(key).cloned());
        }
        let _reading = inner.readers.read().unwrap_or_else(PoisonError::into_inner);
        let seqno = inner.seen.load(Ordering::SeqCst);
        let value = inner.tree.get(entry_key(key), seqno).map_err(engine)?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_> {
        if is_hot(prefix) {
            let hot = self.inner.hot.read().unwrap_or_else(PoisonError::into_inner);
            let entries: Vec<Entry> = hot
                .range(from.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            return Box::new(entries.into_iter().map(Ok));
        }
        Box::new(self.inner.scan_tree(prefix, from))
    }

    /// Inserted into the memtable, and staged in the log unless it is over
    /// a record's limit or the log is full: then the next flush writes
    /// every memtable out instead. Seals the memtable once it is full, and
    /// waits while too many sealed ones wait to be written out.
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let mut log = lock(&inner.log);
        log.log.usable()?;
        if let Some(error) = lock(&inner.background).clone() {
            return Err(StoreError::Background(error));
        }
        let seq = inner.applied.load(Ordering::SeqCst) + 1;
        let encoded = wal::encoded_len(&batch);
        if encoded > wal::MAX_RECORD || log.log.is_full_with(encoded) {
            log.unlogged = true;
        } else {
            log.log.stage(seq, &batch);
        }
        inner.insert(batch, seq);
        inner.applied.store(seq, Ordering::SeqCst);
        if inner.tree.active_memtable().size() >= MEMTABLE_BYTES {
            inner.tree.rotate_memtable();
            if let Some((sender, _)) = &self.worker {
                let _ = sender.send(());
            }
            let mut background = lock(&inner.background);
            while background.is_none() && inner.tree.sealed_memtable_count() > MAX_SEALED {
                background =
                    inner.written_out.wait(background).unwrap_or_else(PoisonError::into_inner);
            }
        }
        Ok(())
    }

    /// Makes every apply before this call durable, unless it is already:
    /// by writing the staged records to the log and `fdatasync`ing it, or,
    /// if an apply since the last flush was not logged, by writing every
    /// memtable out and starting the log over.
    fn flush(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let needed = inner.applied.load(Ordering::SeqCst);
        let mut log = lock(&inner.log);
        if log.log.synced >= needed {
            return Ok(());
        }
        // Applies hold the log while they run: every one counted now is
        // in the memtable and, if logged, has its record staged.
        let applied = inner.applied.load(Ordering::SeqCst);
        if log.unlogged {
            inner.write_out()?;
            log.log.checkpointed(applied);
            log.unlogged = false;
            if let Some((sender, _)) = &self.worker {
                let _ = sender.send(());
            }
            return Ok(());
        }
        log.log.sync(applied)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.tree.disk_space() + lock(&self.inner.log).log.allocated())
    }
}

/// A scan of an [`LsmStore`], read a chunk at a time.
struct Scan<'a> {
    store: &'a Inner,
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

fn engine(error: ::lsm_tree::Error) -> StoreError {
    StoreError::Lsm(Box::new(error))
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
pub(super) mod tests {
    use super::*;
    use crate::storage::kv::scan_prefix;
    use crate::storage::kv::tests::{
        contract, keeps_only_flushed_writes_across_a_crash, scans_in_chunks,
    };

    fn put(store: &LsmStore, key: &[u8], value: &[u8]) {
        let mut batch = Batch::default();
        batch.put(key.to_vec(), value.to_vec());
        store.apply(batch).unwrap();
    }

    /// A batch of `count` writes under `prefix`, of `size` bytes each.
    fn batch_of(prefix: &str, count: u32, size: usize) -> Batch {
        let mut batch = Batch::default();
        for i in 0..count {
            batch.put(format!("{prefix}/{i:06}").into_bytes(), vec![(i % 256) as u8; size]);
        }
        batch
    }

    /// A tree in `dir` holding an entry and not written out: what a kill
    /// leaves of a store being made.
    pub(in crate::storage) fn half_made(dir: &Path) -> AnyTree {
        let tree =
            Config::new(dir, SequenceNumberCounter::default(), Default::default()).open().unwrap();
        tree.insert(entry_key(b"a"), b"half".to_vec(), 0);
        tree.flush_active_memtable(0).unwrap();
        tree
    }

    #[test]
    fn a_prefix_ends_at_the_next_key_past_it() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    fn log_len(store: &LsmStore) -> u64 {
        lock(&store.inner.log).log.len()
    }

    #[test]
    fn lsm_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&LsmStore::open(dir.path(), 1 << 20).unwrap());
    }

    /// A clean close writes every memtable out: the store reopens with
    /// its writes and no log to read.
    #[test]
    fn a_clean_close_leaves_no_log_to_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LsmStore::open(dir.path(), 1 << 20).unwrap();
            put(&store, b"k", b"v");
            store.flush().unwrap();
            assert!(log_len(&store) > 0, "the write was logged");
        }
        let store = LsmStore::open(dir.path(), 1 << 20).unwrap();
        assert!(store.inner.tree.active_memtable().is_empty(), "a logged write applied again");
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert!(store.size_on_disk().unwrap() > 0);
    }

    #[test]
    fn lsm_store_keeps_only_flushed_writes_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = LsmStore::open(&live, 1 << 20).unwrap();
        keeps_only_flushed_writes_across_a_crash(&store, &live, &|path| {
            Box::new(LsmStore::open(path, 1 << 20).unwrap())
        });
    }

    /// Memtables sealed and written out beside the writer, and compacted,
    /// lose nothing: read back before and after a crash (a copy of the
    /// files, the log applied again) and after a clean close.
    #[test]
    fn memtables_written_out_beside_the_writer_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = LsmStore::open(&live, 1 << 20).unwrap();
        // 60 batches of 400 KiB: memtables sealed and written out.
        for round in 0..60u32 {
            store.apply(batch_of(&format!("r{round:02}"), 100, 4096)).unwrap();
            store.flush().unwrap();
        }
        put(&store, b"r00/000000", b"rewritten");
        store.flush().unwrap();
        assert!(store.inner.tree.sealed_memtable_count() > 0 || store.inner.tree.table_count() > 0);
        let waited = std::time::Instant::now();
        while store.inner.tree.table_count() == 0 {
            assert!(waited.elapsed().as_secs() < 10, "the thread wrote no memtable out");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let check = |store: &LsmStore, when: &str| {
            assert_eq!(scan_prefix(store, b"r").count(), 6000, "{when}");
            assert_eq!(store.get(b"r00/000000").unwrap(), Some(b"rewritten".to_vec()), "{when}");
            assert_eq!(store.get(b"r59/000099").unwrap(), Some(vec![99; 4096]), "{when}");
        };
        check(&store, "live");
        let crashed = dir.path().join("crashed");
        basic_testkit::copy_dir_at_rest(&live, &crashed);
        check(&LsmStore::open(&crashed, 1 << 20).unwrap(), "after a crash");
        drop(store);
        check(&LsmStore::open(&live, 1 << 20).unwrap(), "after a clean close");
    }

    /// When the thread cannot write a memtable out (here: the tables'
    /// directory is gone), the applies after it are refused with its error.
    #[test]
    fn a_failed_writing_out_refuses_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LsmStore::open(dir.path(), 1 << 20).unwrap();
        std::fs::remove_dir_all(dir.path().join(STORE_DIR).join("tables")).unwrap();
        let mut refused = None;
        for round in 0..200u32 {
            // 400 KiB a batch: a memtable sealed every 40 or so.
            if let Err(error) = store.apply(batch_of(&format!("r{round:03}"), 100, 4096)) {
                refused = Some(error);
                break;
            }
        }
        let refused = refused.expect("an apply was refused once writing out failed");
        assert!(matches!(refused, StoreError::Background(_)), "{refused}");
        assert!(store.apply(batch_of("after", 1, 1)).is_err(), "and every apply after it");
    }

    /// Each clean close writes a table: opening compacts them, so a store
    /// opened and closed often does not read through ever more of them.
    #[test]
    fn opening_compacts_the_tables_each_close_left() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..12u32 {
            let store = LsmStore::open(dir.path(), 1 << 20).unwrap();
            store.apply(batch_of(&format!("r{round:02}"), 10, 97)).unwrap();
            store.flush().unwrap();
        }
        let store = LsmStore::open(dir.path(), 1 << 20).unwrap();
        let waited = std::time::Instant::now();
        while store.inner.tree.level_table_count(0).unwrap_or(0) >= 4 {
            assert!(waited.elapsed().as_secs() < 10, "the tables of 12 closes were not compacted");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(scan_prefix(&store, b"r").count(), 120);
    }

    /// A byte damaged in any of the store's files is refused with an
    /// error, at the opening or at the read that meets it: never read as
    /// other data, never a panic, never an abort (a damaged count in a
    /// version file or a table's contents made lsm-tree allocate 60 GB).
    /// Every byte of the small files is tried, and of the large ones a
    /// spread and their ends.
    #[test]
    fn a_damaged_byte_is_refused_never_misread() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole");
        let value = |i: u32| vec![(i % 251) as u8; 40];
        {
            let store = LsmStore::open(&whole, 1 << 20).unwrap();
            let mut batch = Batch::default();
            (0..3000u32).for_each(|i| batch.put(format!("k/{i:06}").into_bytes(), value(i)));
            store.apply(batch).unwrap();
            store.flush().unwrap();
        }
        let expected: Vec<Entry> =
            (0..3000u32).map(|i| (format!("k/{i:06}").into_bytes(), value(i))).collect();
        let (mut read_whole, mut refused) = (0, 0);
        for (file, bytes) in basic_testkit::files_under(&whole) {
            // Every byte of a small file; of a large one, 64 spread out, and
            // of a table also every byte of its end (trailer and contents).
            let tail =
                if file.parent().is_some_and(|dir| dir.ends_with("tables")) { 512 } else { 0 };
            let (len, end) = (bytes.len(), bytes.len().saturating_sub(tail));
            let step = if len <= 4096 { 1 } else { len / 64 };
            for at in (0..end).step_by(step).chain(end..len) {
                let copy = dir.path().join("copy");
                basic_testkit::copy_dir(&whole, &copy);
                let mut damaged = bytes.clone();
                damaged[at] ^= 0x5A;
                std::fs::write(copy.join(file.strip_prefix(&whole).unwrap()), damaged).unwrap();
                let read = std::panic::catch_unwind(|| -> Result<Vec<Entry>, StoreError> {
                    scan_prefix(&LsmStore::open(&copy, 1 << 20)?, b"k/").collect()
                });
                let place = format!("{} at byte {at}", file.display());
                match read.unwrap_or_else(|_| panic!("{place}: a panic")) {
                    Ok(entries) => {
                        assert!(entries == expected, "{place}: read as other data");
                        read_whole += 1;
                    }
                    Err(_) => refused += 1,
                }
                std::fs::remove_dir_all(&copy).unwrap();
            }
        }
        assert!(read_whole > 0 && refused > 100, "{read_whole} read whole, {refused} refused");
    }

    /// A table or the version file gone from the disk is refused, named.
    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join(STORE_DIR);
        {
            let store = LsmStore::open(dir.path(), 1 << 20).unwrap();
            store.apply(batch_of("k", 10, 97)).unwrap();
            store.flush().unwrap();
        }
        let files: Vec<_> = basic_testkit::files_under(&store_dir).into_keys().collect();
        let table = files.iter().find(|f| f.parent().is_some_and(|d| d.ends_with("tables")));
        std::fs::remove_file(table.unwrap()).unwrap();
        let error = LsmStore::open(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(error.contains("table") && error.contains("is missing"), "{error}");
        let versions =
            files.iter().filter(|f| f.file_name().is_some_and(|n| n.as_encoded_bytes()[0] == b'v'));
        versions.for_each(|version| std::fs::remove_file(version).unwrap());
        let error = LsmStore::open(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(error.contains("version file") && error.contains("is missing"), "{error}");
    }

    /// Chunks, and the store's own record of its last apply is no entry.
    #[test]
    fn lsm_scan_reads_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        scans_in_chunks(&LsmStore::open(dir.path(), 1 << 20).unwrap(), SCAN_CHUNK);
    }

    /// A read never sees part of a batch, even while it is being applied,
    /// sealed and written out.
    #[test]
    fn reads_see_a_batch_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LsmStore::open(dir.path(), 1 << 20).unwrap());
        let keys = 200u32;
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for version in 0..300u32 {
                    let mut batch = Batch::default();
                    for key in 0..keys {
                        batch.put(format!("k/{key:04}").into_bytes(), {
                            let mut value = version.to_be_bytes().to_vec();
                            value.resize(1024, 0);
                            value
                        });
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
        assert!(store.inner.tree.table_count() > 0, "memtables were written out meanwhile");
    }

    /// The records every commit rewrites are read from memory, and hold
    /// what the tree holds: after puts and deletes, and after reopening.
    #[test]
    fn hot_records_are_read_from_memory_as_the_tree_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = LsmStore::open(dir.path(), 1 << 20).unwrap();
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
        let from_tree = |store: &LsmStore, prefix: u8| -> Vec<Entry> {
            store.inner.scan_tree(&[prefix], &[prefix]).map(Result::unwrap).collect()
        };
        for prefix in HOT {
            let served: Vec<Entry> = scan_prefix(&store, &[prefix]).map(Result::unwrap).collect();
            assert_eq!(served, from_tree(&store, prefix));
            assert!(!served.is_empty());
        }
        assert_eq!(store.get(&key(layout::HEAD, 2)).unwrap(), Some(vec![2, 2]));
        assert_eq!(store.get(&key(layout::SUMMARY, 3)).unwrap(), None);
        let from: Vec<Entry> =
            store.scan(&[layout::HEAD], &key(layout::HEAD, 2)).map(Result::unwrap).collect();
        assert_eq!(from.len(), 2);
        store.flush().unwrap();
        drop(store);
        let reopened = LsmStore::open(dir.path(), 1 << 20).unwrap();
        for prefix in HOT {
            let served: Vec<Entry> =
                scan_prefix(&reopened, &[prefix]).map(Result::unwrap).collect();
            assert_eq!(served, from_tree(&reopened, prefix), "after reopening");
        }
        assert_eq!(scan_prefix(&reopened, &[layout::SUMMARY]).count(), 3);
    }

    /// A batch over a log record's limit is not logged: the flush after it
    /// writes every memtable out, which covers the logged applies before
    /// it too, and starts the log over; small batches are logged again.
    #[test]
    fn a_batch_too_large_to_log_is_written_out_and_starts_the_log_over() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = LsmStore::open(&live, 1 << 20).unwrap();
        store.apply(batch_of("small", 3, 97)).unwrap();
        let mut large = Batch::default();
        large.put(b"large".to_vec(), vec![7; wal::MAX_RECORD]);
        store.apply(large).unwrap();
        assert!(lock(&store.inner.log).unlogged);
        store.flush().unwrap();
        {
            let log = lock(&store.inner.log);
            assert!(!log.unlogged && log.log.len() == 0 && log.log.synced == 2, "started over");
        }
        store.apply(batch_of("after", 3, 97)).unwrap();
        store.flush().unwrap();
        assert!(log_len(&store) > 0, "a small batch is logged again");
        let crashed = dir.path().join("crashed");
        basic_testkit::copy_dir_at_rest(&live, &crashed);
        let reopened = LsmStore::open(&crashed, 1 << 20).unwrap();
        assert_eq!(reopened.get(b"large").unwrap().map(|v| v.len()), Some(wal::MAX_RECORD));
        assert_eq!(scan_prefix(&reopened, b"small/").count(), 3);
        assert_eq!(scan_prefix(&reopened, b"after/").count(), 3);
    }

    /// What the log holds past the tables is applied again on opening, in
    /// order, and written out; a gap in it is refused rather than skipped.
    #[test]
    fn the_log_is_applied_again_and_a_gap_in_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = LsmStore::open(&live, 1 << 20).unwrap();
        for i in 0..5u32 {
            store.apply(batch_of(&format!("b{i}"), 3, 97)).unwrap();
        }
        store.flush().unwrap();
        // A crash: the memtable is lost, the log holds all five.
        let crashed = dir.path().join("crashed");
        basic_testkit::copy_dir_at_rest(&live, &crashed);
        {
            let reopened = LsmStore::open(&crashed, 1 << 20).unwrap();
            assert_eq!(
                scan_prefix(&reopened, b"b").count(),
                15,
                "every logged batch applied again"
            );
            assert_eq!(reopened.inner.applied.load(Ordering::SeqCst), 5);
            assert_eq!(log_len(&reopened), 0, "written out, the log started over");
        }
        // Crashed again at once: the tables hold them.
        let again = dir.path().join("again");
        basic_testkit::copy_dir_at_rest(&crashed, &again);
        assert_eq!(scan_prefix(&LsmStore::open(&again, 1 << 20).unwrap(), b"b").count(), 15);
        // A log whose records skip one of the tree's applies is corrupt.
        let gap = dir.path().join("gap");
        basic_testkit::copy_dir_at_rest(&live, &gap);
        drop(store);
        let (mut log, _) = Log::open(&gap.join(STORE_DIR).join(LOG_FILE), 0).unwrap();
        log.stage(9, &batch_of("late", 1, 97));
        log.sync(9).unwrap();
        drop(log);
        let refused = LsmStore::open(&gap, 1 << 20).unwrap_err();
        assert!(refused.to_string().contains("missing"), "{refused}");
    }
}
