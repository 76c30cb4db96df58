//! The storage trait: one ordered keyspace with atomic batches and an
//! explicit durability point, in memory (tests, simulator) and on sled
//! (the device's engine before D41, now read to move an older replica:
//! [`crate::storage::device`]); the device's engine is in
//! [`crate::storage::redb`].
//!
//! Everything the replica keeps — commits, log indexes, row states — sits
//! in this one keyspace under prefixes (see [`crate::storage::layout`]), so a batch
//! that appends to a log and updates the rows it touches is atomic.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A storage failure: the disk or the storage engine, never bad input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error("storage engine: {0}")]
    Sled(#[from] sled::Error),
    /// redb reported an error (boxed: redb's error is large).
    #[error("storage engine (redb): {0}")]
    Redb(Box<::redb::Error>),
    /// The LSM tree reported an error (boxed: its error is large).
    #[error("storage engine (lsm-tree): {0}")]
    Lsm(Box<::lsm_tree::Error>),
    /// Writing memtables out or compacting, beside the writer, failed; the
    /// store takes no more writes.
    #[error("storage engine (lsm-tree), writing out: {0}")]
    Background(String),
    /// Syncing a storage file or directory to the disk failed.
    #[error("syncing {path} to disk: {source}")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Stored bytes that should be ours do not decode: the data is corrupt.
    #[error("corrupt stored record {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A transaction's own commit was never given its signature, or a
    /// signature was given for a commit it did not stage: a bug in the
    /// caller. Nothing of the transaction is stored.
    #[error("own commit {0} staged and signed out of step; nothing was stored")]
    Unsigned(basic_proto::CommitId),
}

/// Writes applied together, all or nothing.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(super) writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Sets each key of `writes` to its value, or removes it (`None`): in
    /// key order, they are merged in one pass, not looked up one by one.
    pub fn write_in_order(&mut self, writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>) {
        let mut writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = writes.into_iter().collect();
        self.writes.append(&mut writes);
    }

    /// The value this batch gives `key`: `Some(None)` if it deletes it,
    /// `None` if the batch does not touch it.
    pub fn lookup(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|value| value.as_deref())
    }

    /// The batch's writes under `prefix`, in key order (`None`: a delete).
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        self.writes
            .range(prefix.to_vec()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.as_slice(), value.as_deref()))
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered key-value keyspace with atomic batches.
pub trait Store: Send + Sync + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Entries whose key starts with `prefix`, in key order, starting at
    /// the first key `>= from` (pass `prefix` to start at the beginning).
    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_>;

    /// Applies `batch` atomically (not yet durably).
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Makes every applied batch durable. Returns once it is on disk.
    fn flush(&self) -> Result<(), StoreError>;

    /// Bytes used on disk (0 in memory).
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// Entries under `prefix`, from its start.
pub fn scan_prefix<'a, S: Store + ?Sized>(
    store: &'a S,
    prefix: &[u8],
) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
    store.scan(prefix, prefix)
}

/// The store on sled: one tree, batches applied atomically, made durable
/// with `fdatasync` (see [`SledStore`]'s `flush`). A device's replica was
/// kept here until D41; [`crate::storage::device`] moves such a replica
/// into redb, and the benchmarks compare the two engines.
///
/// sled 0.34's own `flush` writes the log with `pwrite` and, on Linux,
/// `sync_file_range`: data pages only, with neither the drive's write cache
/// nor the file's metadata, and sled's `fsync` follows later on a
/// background thread. So `flush` here goes on: it `fdatasync`s the data
/// file `db`, every new file under `blobs/` (values too large for the log,
/// which sled writes without syncing), and the directories whenever their
/// listing changed (new blobs, a new snapshot, the files created at open).
/// Concurrent flushes share one sync: a flush waits for a sync started
/// after its own data reached the file, and runs one if none is under way
/// (protocol-spec/DECISIONS.md, D33).
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    /// What `flush` syncs.
    durability: Arc<Durability>,
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`, with a
    /// page cache of at most `cache_bytes` (a soft limit in sled).
    ///
    /// sled releases its file lock from a background thread after the
    /// previous handle in this process is dropped, so a lock held for a
    /// moment is waited for (up to two seconds) rather than reported.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
        let mut attempts = 0;
        loop {
            match config.open() {
                Ok(db) => {
                    let durability = Durability::open(path)?;
                    return Ok(Self { db, durability: Arc::new(durability) });
                }
                // sled reports a held lock as an error of kind `Other` whose
                // text says so.
                Err(sled::Error::Io(error))
                    if error.to_string().starts_with("could not acquire lock")
                        && attempts < 200 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key)?.map(|value| value.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_> {
        let prefix = prefix.to_vec();
        Box::new(
            self.db
                .range(from.to_vec()..)
                .take_while(move |entry| match entry {
                    Ok((key, _)) => key.starts_with(&prefix),
                    Err(_) => true,
                })
                .map(|entry| {
                    let (key, value) = entry?;
                    Ok((key.to_vec(), value.to_vec()))
                }),
        )
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.writes {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        Ok(self.db.apply_batch(sled_batch)?)
    }

    /// sled's flush (the log written out), then `fdatasync` of what it
    /// wrote: only then is the data on the disk.
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.durability.sync()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// The files of one sled directory, and which syncs have run.
#[derive(Debug)]
struct Durability {
    /// sled's directory.
    dir: PathBuf,
    /// Syncs started so far (the generation of the latest).
    started: AtomicU64,
    /// Held while a sync runs.
    synced: Mutex<Synced>,
}

/// What the last sync covered.
#[derive(Debug)]
struct Synced {
    /// sled's data file, `db`, kept open to be synced.
    data: File,
    /// The generation of the last sync that finished.
    completed: u64,
    /// The directory's entries as of its last sync.
    entries: BTreeSet<OsString>,
    /// The files under `blobs/` already synced (and `blobs/` with them).
    blobs: BTreeSet<OsString>,
}

/// sled's data file in its directory.
const DATA_FILE: &str = "db";
/// sled's directory of large values.
const BLOBS_DIR: &str = "blobs";

impl Durability {
    /// Syncs what sled created on opening `dir` (`conf`, which sled writes
    /// without syncing, `db`, `blobs/`, the directory and its parent).
    fn open(dir: &Path) -> Result<Self, StoreError> {
        let data = File::open(dir.join(DATA_FILE)).map_err(sync_error(&dir.join(DATA_FILE)))?;
        let mut synced =
            Synced { data, completed: 0, entries: BTreeSet::new(), blobs: BTreeSet::new() };
        for name in list(dir)? {
            let path = dir.join(&name);
            if path.is_file() {
                sync_file(&path)?;
            }
        }
        synced.sync(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_file(parent)?;
        }
        Ok(Self { dir: dir.to_path_buf(), started: AtomicU64::new(0), synced: Mutex::new(synced) })
    }

    /// Returns once a sync that started after this call began has finished
    /// (running one if none is under way): everything sled wrote before the
    /// call is then on the disk.
    fn sync(&self) -> Result<(), StoreError> {
        // Any sync of a later generation than this one starts after now.
        let needed = self.started.load(Ordering::SeqCst) + 1;
        // A panic while syncing leaves `Synced` as it was: at worst a later
        // sync repeats work.
        let mut synced = self.synced.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if synced.completed >= needed {
            return Ok(());
        }
        let generation = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        synced.sync(&self.dir)?;
        synced.completed = generation;
        Ok(())
    }
}

impl Synced {
    /// `fdatasync` of the data file and of new blobs; `fsync` of a
    /// directory whose entries changed.
    fn sync(&mut self, dir: &Path) -> Result<(), StoreError> {
        self.data.sync_data().map_err(sync_error(&dir.join(DATA_FILE)))?;
        let blobs_dir = dir.join(BLOBS_DIR);
        let blobs = list(&blobs_dir)?;
        if blobs != self.blobs {
            for name in blobs.difference(&self.blobs) {
                let path = blobs_dir.join(name);
                match File::open(&path) {
                    Ok(file) => file.sync_data().map_err(sync_error(&path))?,
                    // Removed by sled's clean-up since it was listed.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(sync_error(&path)(error)),
                }
            }
            sync_file(&blobs_dir)?;
            self.blobs = blobs;
        }
        let entries = list(dir)?;
        if entries != self.entries {
            sync_file(dir)?;
            self.entries = entries;
        }
        Ok(())
    }
}

/// The names in directory `dir` (none if it does not exist).
fn list(dir: &Path) -> Result<BTreeSet<OsString>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(error) => return Err(sync_error(dir)(error)),
    };
    entries.map(|entry| Ok(entry.map_err(sync_error(dir))?.file_name())).collect()
}

/// `fsync` of a file or directory, by path (of a directory: so that a
/// file made, renamed or removed in it stays so after a crash).
pub(super) fn sync_file(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|file| file.sync_all()).map_err(sync_error(path))
}

/// [`StoreError::Sync`] for an I/O error on `path`.
pub(super) fn sync_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Sync { path: path.to_path_buf(), source }
}

/// The store in memory. It keeps what was flushed apart from what was only
/// applied, so [`MemStore::crash`] can model losing power: the simulator
/// restarts nodes with exactly what they had flushed.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Previous values of keys changed since the last flush, oldest first.
    undo: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything applied since the last flush, as a crash would.
    pub fn crash(&self) {
        let mut state = self.lock();
        while let Some((key, previous)) = state.undo.pop() {
            match previous {
                Some(value) => state.data.insert(key, value),
                None => state.data.remove(&key),
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while holding the lock leaves the maps consistent: every
        // method changes them with single insert/remove calls.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().data.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_> {
        let entries: Vec<_> = self
            .lock()
            .data
            .range(from.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| Ok((key.clone(), value.clone())))
            .collect();
        Box::new(entries.into_iter())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut state = self.lock();
        for (key, value) in batch.writes {
            let previous = match value {
                Some(value) => state.data.insert(key.clone(), value),
                None => state.data.remove(&key),
            };
            state.undo.push((key, previous));
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.lock().undo.clear();
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Writes merged in order land as if put or deleted one by one after
    /// what the batch held.
    #[test]
    fn writes_in_order_merge_into_a_batch() {
        let mut batch = Batch::default();
        batch.put(b"a".to_vec(), b"1".to_vec());
        batch.delete(b"c".to_vec());
        batch.put(b"e".to_vec(), b"5".to_vec());
        batch.write_in_order([
            (b"a".to_vec(), Some(b"2".to_vec())),
            (b"b".to_vec(), None),
            (b"d".to_vec(), Some(b"4".to_vec())),
        ]);
        let expected: [(&[u8], Option<&[u8]>); 5] = [
            (b"a", Some(b"2")),
            (b"b", None),
            (b"c", None),
            (b"d", Some(b"4")),
            (b"e", Some(b"5")),
        ];
        assert_eq!(batch.scan_prefix(b"").collect::<Vec<_>>(), expected);
    }

    /// A scan longer than a chunk of `chunk` entries resumes where the
    /// previous chunk ended, stops at the prefix's end, and sees once a
    /// write made (and flushed) while it runs, past its current chunk.
    pub(in crate::storage) fn scans_in_chunks(store: &dyn Store, chunk: usize) {
        let count = 3 * chunk + 7;
        let mut batch = Batch::default();
        for i in 0..count {
            batch.put(format!("a/{i:06}").into_bytes(), vec![1]);
        }
        batch.put(b"b/0".to_vec(), vec![2]);
        store.apply(batch).unwrap();
        let mut scan = store.scan(b"a/", b"a/");
        assert_eq!(scan.next().unwrap().unwrap().0, b"a/000000");
        let mut late = Batch::default();
        late.put(format!("a/{:06}", count + 1).into_bytes(), vec![3]);
        store.apply(late).unwrap();
        store.flush().unwrap();
        let rest: Vec<Vec<u8>> = scan.map(|e| e.unwrap().0).collect();
        assert_eq!(rest.len(), count, "the write after the scan began is seen once");
        assert!(rest.windows(2).all(|w| w[0] < w[1]));
        assert!(rest.iter().all(|key| key.starts_with(b"a/")));
        let from = format!("a/{:06}", chunk * 2).into_bytes();
        assert_eq!(store.scan(b"a/", &from).count(), count - chunk * 2 + 1);
        assert_eq!(scan_prefix(store, b"").count(), count + 2, "every entry, and only those");
    }

    /// The behaviour every store must have.
    pub(in crate::storage) fn contract(store: &dyn Store) {
        let mut batch = Batch::default();
        batch.put(b"a/1".to_vec(), b"one".to_vec());
        batch.put(b"a/2".to_vec(), b"two".to_vec());
        batch.put(b"b/1".to_vec(), b"other".to_vec());
        store.apply(batch).unwrap();
        assert_eq!(store.get(b"a/1").unwrap(), Some(b"one".to_vec()));
        let keys: Vec<_> = scan_prefix(store, b"a/").map(|e| e.unwrap().0).collect();
        assert_eq!(keys, [b"a/1".to_vec(), b"a/2".to_vec()]);
        let from: Vec<_> = store.scan(b"a/", b"a/2").map(|e| e.unwrap().0).collect();
        assert_eq!(from, [b"a/2".to_vec()]);
        let mut batch = Batch::default();
        batch.delete(b"a/1".to_vec());
        batch.put(b"a/3".to_vec(), b"three".to_vec());
        store.apply(batch).unwrap();
        store.flush().unwrap();
        assert_eq!(store.get(b"a/1").unwrap(), None);
        assert_eq!(scan_prefix(store, b"a/").count(), 2);
        assert_eq!(scan_prefix(store, b"z").count(), 0);
    }

    #[test]
    fn mem_store_meets_the_contract() {
        contract(&MemStore::new());
    }

    #[test]
    fn sled_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&SledStore::open(dir.path(), 1 << 20).unwrap());
    }

    /// What a crash leaves is what `flush` wrote: the files of `store`
    /// (open in directory `live`) are copied while it is still open (no
    /// clean close, which would flush), and the copy opened with `reopen`.
    /// The write made after the last flush must be missing from the copy,
    /// which shows that the test tells a flush from none (were `flush` to
    /// write nothing, `k` would be missing too).
    pub(in crate::storage) fn keeps_only_flushed_writes_across_a_crash(
        store: &dyn Store,
        live: &Path,
        reopen: &dyn Fn(&Path) -> Box<dyn Store>,
    ) {
        let crashed = live.with_file_name("crashed");
        let put = |key: &[u8], value: &[u8]| {
            let mut batch = Batch::default();
            batch.put(key.to_vec(), value.to_vec());
            store.apply(batch).unwrap();
        };
        put(b"k", b"v");
        store.flush().unwrap();
        // One write only: sled writes a batch out when a later one comes.
        put(b"unflushed", b"x");
        basic_testkit::copy_dir_at_rest(live, &crashed);
        assert_eq!(store.get(b"unflushed").unwrap(), Some(b"x".to_vec()));
        let reopened = reopen(&crashed);
        assert_eq!(reopened.get(b"k").unwrap(), Some(b"v".to_vec()), "the flushed write is lost");
        assert_eq!(reopened.get(b"unflushed").unwrap(), None, "an unflushed write survived");
    }

    /// sled's background flusher is off, so that only `flush` writes the
    /// log out.
    #[test]
    fn sled_store_keeps_flushed_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let db = sled::Config::new().path(&live).flush_every_ms(None).open().unwrap();
        let store = SledStore { db, durability: Arc::new(Durability::open(&live).unwrap()) };
        keeps_only_flushed_writes_across_a_crash(&store, &live, &|path| {
            Box::new(SledStore::open(path, 1 << 20).unwrap())
        });
    }

    #[test]
    fn sled_store_syncs_a_value_stored_as_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        // Above sled's blob threshold (a quarter of its 512 KiB segment).
        let large = vec![7u8; 300 << 10];
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            let mut batch = Batch::default();
            batch.put(b"large".to_vec(), large.clone());
            store.apply(batch).unwrap();
            store.flush().unwrap();
            let synced = store.durability.synced.lock().unwrap();
            assert!(!synced.blobs.is_empty(), "sled wrote no blob: the test is void");
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.get(b"large").unwrap(), Some(large));
    }

    #[test]
    fn mem_store_crash_loses_only_unflushed_writes() {
        let store = MemStore::new();
        let mut batch = Batch::default();
        batch.put(b"kept".to_vec(), b"1".to_vec());
        batch.put(b"changed".to_vec(), b"old".to_vec());
        store.apply(batch).unwrap();
        store.flush().unwrap();
        let mut batch = Batch::default();
        batch.put(b"lost".to_vec(), b"2".to_vec());
        batch.put(b"changed".to_vec(), b"new".to_vec());
        batch.delete(b"kept".to_vec());
        store.apply(batch).unwrap();
        store.crash();
        assert_eq!(store.get(b"kept").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(b"changed").unwrap(), Some(b"old".to_vec()));
        assert_eq!(store.get(b"lost").unwrap(), None);
    }
}
