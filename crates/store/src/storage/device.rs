//! The replica's store on a device: an LSM tree ([`LsmStore`]) in
//! `replica/lsm/` (D56), and the one-time move of a replica that an older
//! build kept in `replica/` itself: on redb (D41 to D55) or on sled (before
//! D41).
//!
//! The move never leaves a replica half in one engine and half in the
//! other, and never writes the old engine's files:
//!
//! 1. the old store's entries are copied into a new LSM store, made
//!    under another name and synced (`LsmStore::create`). redb's file
//!    is opened as the store it was (its write-ahead log applied again,
//!    D43); sled's files are read through a copy, `sled.moving/`, which
//!    sled opens in their place: sled writes while it opens a store, and a
//!    process killed then can leave files that sled refuses ("Read
//!    corrupted data");
//! 2. the new store takes the name `lsm/`, and the directory is synced:
//!    from then on it is the replica;
//! 3. the old engine's files are removed, sled's `conf` last, and the
//!    directory synced.
//!
//! Opening again after a stop finishes what was left: without `lsm/`
//! the copy starts over, with it only the removal is left.

use std::path::Path;

use super::kv::{Batch, SledStore, Store, StoreError, scan_prefix, sync_error, sync_file};
use super::lsm::{LsmStore, STORE_DIR};
use super::redb::{DATA_FILE, RedbStore, log_file};

/// The engine of a replica on a device.
pub type DeviceStore = LsmStore;

/// sled's configuration file: removed last, it marks sled's files as
/// present until none is left.
const SLED_CONF: &str = "conf";
/// sled's other files: its log, its directory of large values, and its
/// snapshots (`snap.<hex>`).
const SLED_FILES: [&str; 2] = ["db", "blobs"];
const SLED_SNAPSHOT_PREFIX: &str = "snap.";
/// The copy of sled's files that the move opens instead of them.
const SLED_READ_COPY: &str = "sled.moving";
/// What a move from sled into redb (D41) may have left besides redb's
/// file: the file it filled, and a new file's name while it is made.
const REDB_MOVING_FILE: &str = "data.redb.moving";
const REDB_NEW_FILE: &str = "data.redb.new";
/// Bytes of keys and values copied per batch while moving.
const MOVE_BATCH_BYTES: usize = 8 << 20;
/// Entries copied between two progress lines.
const PROGRESS_EVERY: u64 = 1_000_000;

/// Opens (creating if needed) the replica's store in directory `replica`,
/// with a cache of `cache_bytes`, first moving a replica that redb or sled
/// kept there into it (see the [module documentation](self)).
pub fn open(replica: &Path, cache_bytes: u64) -> Result<DeviceStore, StoreError> {
    if !replica.join(STORE_DIR).exists() {
        if replica.join(DATA_FILE).exists() {
            let redb = RedbStore::open(replica, cache_bytes)?;
            LsmStore::create(replica, cache_bytes, |target| copy(&redb, "redb", target))?;
        } else if replica.join(SLED_CONF).exists() {
            let read_copy = replica.join(SLED_READ_COPY);
            if read_copy.exists() {
                std::fs::remove_dir_all(&read_copy).map_err(sync_error(&read_copy))?;
            }
            let moved = copy_sled_files(replica, &read_copy).and_then(|()| {
                let sled = SledStore::open(&read_copy, cache_bytes)?;
                LsmStore::create(replica, cache_bytes, |target| copy(&sled, "sled", target))
            });
            // Done with, or given back after a failure such as a full disk
            // (best effort; the next open removes it anyway).
            let _ = std::fs::remove_dir_all(&read_copy);
            moved?;
        }
    }
    remove_old_files(replica)?;
    LsmStore::open(replica, cache_bytes)
}

/// Copies sled's files in `replica` into the new directory `to`.
fn copy_sled_files(replica: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::create_dir(to).map_err(sync_error(to))?;
    for entry in std::fs::read_dir(replica).map_err(sync_error(replica))? {
        let entry = entry.map_err(sync_error(replica))?;
        if is_sled_file(&entry.file_name().to_string_lossy()) || entry.file_name() == SLED_CONF {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Copies file or directory `from` to `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    if !std::fs::metadata(from).map_err(sync_error(from))?.is_dir() {
        return std::fs::copy(from, to).map(drop).map_err(sync_error(from));
    }
    std::fs::create_dir(to).map_err(sync_error(to))?;
    for entry in std::fs::read_dir(from).map_err(sync_error(from))? {
        let entry = entry.map_err(sync_error(from))?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Copies every entry of `source`, the replica on `engine`, into `target`.
/// Logs (at `info`) when it starts, every [`PROGRESS_EVERY`] entries and
/// when it is done.
fn copy(source: &dyn Store, engine: &str, target: &LsmStore) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mib = source.size_on_disk()? >> 20;
    tracing::info!(
        "moving the replica from {engine} into the LSM store, once ({mib} MiB on {engine})"
    );
    let (mut batch, mut bytes, mut entries) = (Batch::default(), 0, 0u64);
    for entry in scan_prefix(source, b"") {
        let (key, value) = entry?;
        bytes += key.len() + value.len();
        entries += 1;
        batch.put(key, value);
        if bytes >= MOVE_BATCH_BYTES {
            target.apply(std::mem::take(&mut batch))?;
            bytes = 0;
        }
        if entries % PROGRESS_EVERY == 0 {
            tracing::info!("moving the replica: {entries} entries so far");
        }
    }
    target.apply(batch)?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!("moved the replica into the LSM store: {entries} entries in {seconds:.1} s");
    Ok(())
}

/// Removes, durably, the files an older engine kept in `replica`: redb's
/// and those of a move into it, then sled's, its `conf` last.
fn remove_old_files(replica: &Path) -> Result<(), StoreError> {
    let Ok(entries) = std::fs::read_dir(replica) else { return Ok(()) };
    let redb = [
        DATA_FILE,
        &log_file(DATA_FILE),
        REDB_MOVING_FILE,
        &log_file(REDB_MOVING_FILE),
        REDB_NEW_FILE,
    ]
    .map(str::to_owned);
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(sync_error(replica))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(redb.contains(&name) || is_sled_file(&name) || name == SLED_READ_COPY) {
            continue;
        }
        let path = entry.path();
        match entry.file_type().map_err(sync_error(&path))?.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        }
        .map_err(sync_error(&path))?;
        removed = true;
    }
    if removed {
        sync_file(replica)?;
    }
    let conf = replica.join(SLED_CONF);
    if conf.exists() {
        std::fs::remove_file(&conf).map_err(sync_error(&conf))?;
        sync_file(replica)?;
    }
    Ok(())
}

/// Whether `name` is one of sled's files other than its `conf`.
fn is_sled_file(name: &str) -> bool {
    SLED_FILES.contains(&name) || name.starts_with(SLED_SNAPSHOT_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::super::lsm::MAKING_DIR;
    use super::*;

    fn sled_replica(dir: &Path, entries: &[(Vec<u8>, Vec<u8>)]) {
        let store = SledStore::open(dir, 1 << 20).unwrap();
        let mut batch = Batch::default();
        for (key, value) in entries {
            batch.put(key.clone(), value.clone());
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
    }

    fn entries(store: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_prefix(store, b"").map(Result::unwrap).collect()
    }

    fn pair(key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        (key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A redb file `name` in `dir` holding `entries`, flushed (through its
    /// write-ahead log: redb's own file does not hold them yet).
    fn redb_file(dir: &Path, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) -> RedbStore {
        let store = RedbStore::open_file(dir, name, 1 << 20).unwrap();
        let mut batch = Batch::default();
        for (key, value) in entries {
            batch.put(key.clone(), value.clone());
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
        store
    }

    /// Many entries, with values large enough that sled keeps some under
    /// `blobs/`.
    fn many() -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..20_000u32)
            .map(|i| (format!("k/{i:08}").into_bytes(), vec![(i % 251) as u8; 700]))
            .chain(std::iter::once((b"z/large".to_vec(), vec![7; 200_000])))
            .collect()
    }

    #[test]
    fn a_replica_sled_kept_is_moved_into_the_lsm_store_whole() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let many = many();
        sled_replica(&replica, &many);

        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), many, "every entry, in order, with its value");
        assert_eq!(names(&replica), [STORE_DIR], "only the LSM store's directory is left");
        drop(store);
        // Opened again, it is the LSM store's and holds the same.
        assert_eq!(entries(&open(&replica, 1 << 20).unwrap()), many);
    }

    /// A redb replica is moved with what only its write-ahead log held
    /// when its process was killed (acknowledged writes redb's file did
    /// not have yet).
    #[test]
    fn a_replica_redb_kept_is_moved_into_the_lsm_store_whole_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let (live, replica) = (dir.path().join("live"), dir.path().join("replica"));
        let many = many();
        let store = redb_file(&live, DATA_FILE, &many[..10_000]);
        let mut rest = Batch::default();
        for (key, value) in &many[10_000..] {
            rest.put(key.clone(), value.clone());
        }
        store.apply(rest).unwrap();
        store.flush().unwrap();
        // As a kill -9 leaves it: copied while open, not closed.
        basic_testkit::copy_dir_at_rest(&live, &replica);
        drop(store);

        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), many, "every entry, in order, with its value");
        assert_eq!(names(&replica), [STORE_DIR], "only the LSM store's directory is left");
        drop(store);
        assert_eq!(entries(&open(&replica, 1 << 20).unwrap()), many);
    }

    /// The move reads sled's files through a copy: sled, which writes
    /// while it opens a store that was not closed, never writes the
    /// originals, so a kill during the move cannot damage them.
    #[test]
    fn the_move_never_writes_sleds_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let (live, replica) = (dir.path().join("live"), dir.path().join("replica"));
        // A replica as a killed process leaves it: copied while open.
        let store = SledStore::open(&live, 1 << 20).unwrap();
        let mut batch = Batch::default();
        for i in 0..2_000u32 {
            batch.put(format!("k/{i:06}").into_bytes(), vec![(i % 7) as u8; 300]);
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
        basic_testkit::copy_dir_at_rest(&live, &replica);
        drop(store);
        let before = basic_testkit::files_under(&replica);
        let read_copy = replica.join(SLED_READ_COPY);
        copy_sled_files(&replica, &read_copy).unwrap();
        let sled = SledStore::open(&read_copy, 1 << 20).unwrap();
        LsmStore::create(&replica, 1 << 20, |target| copy(&sled, "sled", target)).unwrap();
        drop(sled);
        let mut after = basic_testkit::files_under(&replica);
        after.retain(|path, _| {
            !path.starts_with(&read_copy) && !path.starts_with(replica.join(STORE_DIR))
        });
        assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
        assert!(after == before, "the move changed sled's files");
    }

    /// Stopped while copying: the partial copy is dropped and the copy
    /// starts over from the old engine's files.
    #[test]
    fn a_move_stopped_while_copying_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let kept = [pair("a", "1"), pair("b", "2")];
        sled_replica(&replica, &kept);
        // What a move into redb (D41) or into the LSM tree left when stopped.
        drop(redb_file(&replica, REDB_MOVING_FILE, &[pair("a", "half"), pair("z", "stale")]));
        let half = super::super::lsm::tests::half_made(&replica.join(MAKING_DIR));
        drop(half);

        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), kept);
        assert_eq!(names(&replica), [STORE_DIR]);
    }

    /// Stopped after the copy took its name, while the old files were
    /// being removed: only their removal is left, and the copy is what
    /// opens.
    #[test]
    fn a_move_stopped_while_removing_the_old_files_keeps_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        sled_replica(&replica, &[pair("a", "sled")]);
        drop(redb_file(&replica, DATA_FILE, &[pair("a", "redb")]));
        LsmStore::create(&replica, 1 << 20, |target| {
            let mut batch = Batch::default();
            batch.put(b"a".to_vec(), b"copied".to_vec());
            target.apply(batch)
        })
        .unwrap();
        std::fs::remove_file(replica.join("db")).unwrap();
        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), [pair("a", "copied")]);
        assert_eq!(names(&replica), [STORE_DIR]);
    }

    /// A store whose making was stopped half way (a kill while a new
    /// database was made) is made again: the name it would take is free.
    #[test]
    fn a_store_half_made_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let making = replica.join(MAKING_DIR);
        std::fs::create_dir_all(&making).unwrap();
        std::fs::write(making.join("version"), b"half").unwrap();
        let store = open(&replica, 1 << 20).unwrap();
        assert!(entries(&store).is_empty());
        assert_eq!(names(&replica), [STORE_DIR]);
    }

    /// A damaged sled replica is refused with a typed error and left as it
    /// was: nothing is lost, and no empty store is made beside it.
    #[test]
    fn a_damaged_sled_replica_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        std::fs::create_dir_all(&replica).unwrap();
        std::fs::write(replica.join(SLED_CONF), b"not sled's configuration").unwrap();
        std::fs::write(replica.join("db"), vec![0x5a; 4096]).unwrap();
        assert!(open(&replica, 1 << 20).is_err());
        assert!(replica.join("db").exists() && replica.join(SLED_CONF).exists(), "kept");
        assert!(!replica.join(STORE_DIR).exists(), "no store took the replica's place");
        // Opening again refuses again; it does not open an empty store.
        assert!(open(&replica, 1 << 20).is_err());
        assert!(!replica.join(STORE_DIR).exists());
    }

    /// The same for a damaged redb replica.
    #[test]
    fn a_damaged_redb_replica_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        drop(redb_file(&replica, DATA_FILE, &[pair("a", "1")]));
        let damaged: Vec<u8> =
            std::fs::read(replica.join(DATA_FILE)).unwrap().iter().map(|b| !b).collect();
        std::fs::write(replica.join(DATA_FILE), &damaged).unwrap();
        for _ in 0..2 {
            assert!(open(&replica, 1 << 20).is_err());
            assert_eq!(std::fs::read(replica.join(DATA_FILE)).unwrap(), damaged, "kept");
            assert!(!replica.join(STORE_DIR).exists(), "no store took the replica's place");
        }
    }
}
