//! The store on fjall 3 (an LSM tree): the replica's engine on a device
//! (D55; redb before it and sled before that, see
//! [`crate::storage::device`] for the move of a replica they kept).
//!
//! One fjall keyspace holds the replica's whole keyspace. [`Store::apply`]
//! commits its batch as one fjall write batch: atomic, seen by every later
//! read at once, and added to the journal's buffer in memory (a batch
//! larger than the buffer goes on to the file, without a sync).
//! [`Store::flush`] writes that buffer to the journal file and
//! `fdatasync`s it (`PersistMode::SyncData`): every batch applied before it
//! is then on the disk, and a batch torn by a crash is dropped whole when the journal is
//! read again on opening. fjall writes the memtables it seals into sorted
//! tables in the background and syncs those (and their directory) before
//! it lets go of the journals that held them.
//!
//! Memory is bounded (D55): a block cache of the size asked for, and
//! memtables sealed at [`MEMTABLE_BYTES`]. fjall makes writes wait while
//! four sealed memtables wait to be written out, so at most five are held.
//!
//! Reads go through a snapshot of the newest batch applied in full: fjall's
//! plain reads may see part of a batch while it is being applied.
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

use std::path::{Path, PathBuf};

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::kv::{Batch, Entry, Store, StoreError, sync_error, sync_file};

/// The store's directory inside the replica's.
pub(super) const STORE_DIR: &str = "fjall";
/// Where a store is made before it takes the name [`STORE_DIR`].
pub(super) const MAKING_DIR: &str = "fjall.making";
/// fjall's files that say a database is there, and that locks it.
const VERSION_FILE: &str = "version";
const LOCK_FILE: &str = "lock";
/// The one keyspace.
const KEYSPACE: &str = "basic";
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
    path: PathBuf,
}

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
        let lock = dir.join(LOCK_FILE);
        if dir.join(VERSION_FILE).exists() && !lock.exists() {
            std::fs::File::create(&lock).map_err(sync_error(&lock))?;
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
        Ok(Self { db, keyspace, path: dir.to_path_buf() })
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
    /// A clean close keeps every apply: the journal is written and synced.
    fn drop(&mut self) {
        if let Err(error) = self.db.persist(PersistMode::SyncAll) {
            tracing::warn!("{}: {error}", self.path.display());
        }
    }
}

impl Store for FjallStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.db.snapshot().get(&self.keyspace, key).map_err(engine)?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_> {
        Box::new(Scan {
            store: self,
            prefix: prefix.to_vec(),
            next: Some((from.to_vec(), true)),
            entries: Vec::new().into_iter(),
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut writes = self.db.batch();
        for (key, value) in batch.writes {
            match value {
                Some(value) => writes.insert(&self.keyspace, key, value),
                None => writes.remove(&self.keyspace, key),
            }
        }
        writes.commit().map_err(engine)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncData).map_err(engine)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.disk_space().map_err(engine)
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

    /// A batch is all or nothing after a crash that cuts the journal at
    /// any byte: the batches flushed before it are kept whole, and of the
    /// cut one either every write or none.
    #[test]
    fn a_batch_cut_short_by_a_crash_is_dropped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = FjallStore::open(&live, 1 << 20).unwrap();
        put(&store, b"before", b"kept");
        store.flush().unwrap();
        let journal = journals(&live);
        assert_eq!(journal.len(), 1, "{journal:?}");
        let kept = std::fs::metadata(&journal[0]).unwrap().len();
        let mut batch = Batch::default();
        for i in 0..50u32 {
            batch.put(format!("cut/{i:03}").into_bytes(), vec![(i % 256) as u8; 97]);
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
        let whole = std::fs::metadata(&journal[0]).unwrap().len();
        assert!(whole > kept + 50 * 97 / 4, "the batch went to the journal");
        let crashed = dir.path().join("crashed");
        for cut in (kept..=whole).step_by(37).chain([whole - 1, whole]) {
            let _ = std::fs::remove_dir_all(&crashed);
            basic_testkit::copy_dir(&live, &crashed);
            let copy = crashed.join(journal[0].strip_prefix(&live).unwrap());
            std::fs::OpenOptions::new().write(true).open(&copy).unwrap().set_len(cut).unwrap();
            let reopened = FjallStore::open(&crashed, 1 << 20).unwrap();
            assert_eq!(reopened.get(b"before").unwrap(), Some(b"kept".to_vec()), "cut at {cut}");
            let written = scan_prefix(&reopened, b"cut/").count();
            assert!(
                written == 0 || written == 50,
                "cut at {cut}: {written} of the batch's 50 writes"
            );
            assert_eq!(written == 50, cut == whole, "cut at {cut}");
        }
    }
}
