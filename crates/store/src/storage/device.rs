//! The replica's store on a device: redb ([`RedbStore`]) in the directory
//! `replica/`, and the one-time move of a replica that sled kept there
//! (protocol-spec/DECISIONS.md, D41).
//!
//! The move happens inside `replica/`, which exists throughout (so a
//! process killed during the move leaves a directory that still holds a
//! database), and never leaves a replica half in one engine and half in
//! the other:
//!
//! 1. sled's files are copied into `sled.moving/`, which sled opens in
//!    their place: sled writes while it opens a store, and a process killed
//!    then can leave files that sled refuses ("Read corrupted data"), so it
//!    never opens the originals;
//! 2. sled's entries are copied from there into a new redb file,
//!    `data.redb.moving`, which is committed durably (a checkpoint, so its
//!    log is empty), and `sled.moving/` is removed;
//! 3. the redb file's log is removed, the file renamed `data.redb`, and
//!    the directory synced;
//! 4. sled's files are removed, its `conf` last, and the directory synced.
//!
//! Opening again after a stop finishes what was left: with sled's `conf`
//! and no `data.redb` the copy starts over, with both only the removal is
//! left.

use std::path::Path;

use super::kv::{Batch, SledStore, Store, StoreError, scan_prefix};
use super::redb::{DATA_FILE, RedbStore, log_file};

/// The engine of a replica on a device.
pub type DeviceStore = RedbStore;

/// sled's configuration file: removed last, it marks sled's files as
/// present until none is left.
const SLED_CONF: &str = "conf";
/// sled's other files: its log, its directory of large values, and its
/// snapshots (`snap.<hex>`).
const SLED_FILES: [&str; 2] = ["db", "blobs"];
const SLED_SNAPSHOT_PREFIX: &str = "snap.";
/// The redb file being filled while moving.
const MOVING_FILE: &str = "data.redb.moving";
/// The copy of sled's files that the move opens instead of them.
const SLED_READ_COPY: &str = "sled.moving";
/// Bytes of keys and values copied per batch while moving.
const MOVE_BATCH_BYTES: usize = 8 << 20;
/// Entries copied between two progress lines.
const PROGRESS_EVERY: u64 = 1_000_000;

/// Opens (creating if needed) the replica's store in directory `replica`,
/// with a cache of `cache_bytes`, first moving a replica that sled kept
/// there into redb (see the [module documentation](self)).
pub fn open(replica: &Path, cache_bytes: u64) -> Result<DeviceStore, StoreError> {
    if replica.join(SLED_CONF).exists() {
        if !replica.join(DATA_FILE).exists() {
            let moving = replica.join(MOVING_FILE);
            remove_moving_log(replica)?;
            if moving.exists() {
                std::fs::remove_file(&moving).map_err(io(&moving))?;
            }
            let read_copy = replica.join(SLED_READ_COPY);
            if read_copy.exists() {
                std::fs::remove_dir_all(&read_copy).map_err(io(&read_copy))?;
            }
            let copied = copy_sled_files(replica, &read_copy)
                .and_then(|()| copy(&read_copy, replica, cache_bytes));
            // Done with, or given back after a failure such as a full disk
            // (best effort; the next open removes it anyway).
            let _ = std::fs::remove_dir_all(&read_copy);
            if let Err(error) = copied {
                let _ = std::fs::remove_file(&moving);
                let _ = remove_moving_log(replica);
                return Err(error);
            }
            // Empty after the copy's checkpoint: the file alone holds it.
            remove_moving_log(replica)?;
            std::fs::rename(&moving, replica.join(DATA_FILE)).map_err(io(&moving))?;
            sync_dir(replica)?;
        }
        remove_sled_files(replica)?;
    }
    RedbStore::open(replica, cache_bytes)
}

/// Copies sled's files in `replica` into the new directory `to`.
fn copy_sled_files(replica: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::create_dir(to).map_err(io(to))?;
    for entry in std::fs::read_dir(replica).map_err(io(replica))? {
        let entry = entry.map_err(io(replica))?;
        if is_sled_file(&entry.file_name().to_string_lossy()) || entry.file_name() == SLED_CONF {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Copies file or directory `from` to `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    if !std::fs::metadata(from).map_err(io(from))?.is_dir() {
        return std::fs::copy(from, to).map(drop).map_err(io(from));
    }
    std::fs::create_dir(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Copies every entry of the sled store in directory `sled` into a new
/// redb store in `replica`'s [`MOVING_FILE`], and flushes it. Logs (at
/// `info`) when it starts, every [`PROGRESS_EVERY`] entries and when it is
/// done.
fn copy(sled: &Path, replica: &Path, cache_bytes: u64) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let source = SledStore::open(sled, cache_bytes)?;
    let target = RedbStore::open_file(replica, MOVING_FILE, cache_bytes)?;
    let mib = source.size_on_disk()? >> 20;
    let shown = replica.parent().unwrap_or(replica).display();
    tracing::info!("moving the replica in {shown} into redb, once ({mib} MiB on sled)");
    let (mut batch, mut bytes, mut entries) = (Batch::default(), 0, 0u64);
    for entry in scan_prefix(&source, b"") {
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
    target.checkpoint()?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!("moved the replica into redb: {entries} entries in {seconds:.1} s");
    Ok(())
}

/// Removes the log of the redb file being moved into, if there is one.
fn remove_moving_log(replica: &Path) -> Result<(), StoreError> {
    let log = replica.join(log_file(MOVING_FILE));
    match std::fs::remove_file(&log) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(&log)(error)),
        _ => Ok(()),
    }
}

/// Removes sled's files from `dir`, its `conf` last, durably.
fn remove_sled_files(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        if !(is_sled_file(&name.to_string_lossy()) || name == SLED_READ_COPY) {
            continue;
        }
        let path = entry.path();
        match entry.file_type().map_err(io(&path))?.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        }
        .map_err(io(&path))?;
    }
    sync_dir(dir)?;
    let conf = dir.join(SLED_CONF);
    std::fs::remove_file(&conf).map_err(io(&conf))?;
    sync_dir(dir)
}

/// Whether `name` is one of sled's files other than its `conf`.
fn is_sled_file(name: &str) -> bool {
    SLED_FILES.contains(&name) || name.starts_with(SLED_SNAPSHOT_PREFIX)
}

/// `fsync` of directory `dir`, so that a rename or removal in it survives
/// a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir).and_then(|file| file.sync_all()).map_err(io(dir))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Sync { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
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

    /// A redb file `name` in `dir` holding `entries`, flushed.
    fn redb_file(dir: &Path, name: &str, entries: &[(Vec<u8>, Vec<u8>)]) {
        let store = RedbStore::open_file(dir, name, 1 << 20).unwrap();
        let mut batch = Batch::default();
        for (key, value) in entries {
            batch.put(key.clone(), value.clone());
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
    }

    #[test]
    fn a_replica_sled_kept_is_moved_into_redb_whole() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        // Values large enough that sled keeps some under blobs/.
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..20_000u32)
            .map(|i| (format!("k/{i:08}").into_bytes(), vec![(i % 251) as u8; 700]))
            .chain(std::iter::once((b"z/large".to_vec(), vec![7; 200_000])))
            .collect();
        sled_replica(&replica, &many);

        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), many, "every entry, in order, with its value");
        assert_eq!(
            names(&replica),
            [DATA_FILE, &log_file(DATA_FILE)],
            "only redb's files are left"
        );
        drop(store);
        // Opened again, it is redb's and holds the same.
        assert_eq!(entries(&open(&replica, 1 << 20).unwrap()), many);
    }

    /// Every file of `dir` and its subdirectories, with its bytes.
    fn contents(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
        let mut files = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(contents(&path));
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
        files
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
        basic_testkit::copy_dir(&live, &replica);
        drop(store);
        let before = contents(&replica);
        let read_copy = replica.join(SLED_READ_COPY);
        copy_sled_files(&replica, &read_copy).unwrap();
        copy(&read_copy, &replica, 1 << 20).unwrap();
        let mut after = contents(&replica);
        let moving_log = replica.join(log_file(MOVING_FILE));
        after.retain(|path, _| {
            !path.starts_with(&read_copy) && !path.ends_with(MOVING_FILE) && *path != moving_log
        });
        assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
        assert!(after == before, "the move changed sled's files");
    }

    /// Stopped while copying: the partial copy is dropped and the copy
    /// starts over from sled's files.
    #[test]
    fn a_move_stopped_while_copying_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let kept = [pair("a", "1"), pair("b", "2")];
        sled_replica(&replica, &kept);
        redb_file(&replica, MOVING_FILE, &[pair("a", "half"), pair("z", "stale")]);
        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), kept);
        assert_eq!(names(&replica), [DATA_FILE, &log_file(DATA_FILE)]);
    }

    /// Stopped after the copy took its name, while sled's files were
    /// being removed: only their removal is left, and the copy is what
    /// opens.
    #[test]
    fn a_move_stopped_while_removing_sled_keeps_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        sled_replica(&replica, &[pair("a", "old")]);
        redb_file(&replica, DATA_FILE, &[pair("a", "copied")]);
        std::fs::remove_file(replica.join("db")).unwrap();
        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), [pair("a", "copied")]);
        assert_eq!(names(&replica), [DATA_FILE, &log_file(DATA_FILE)]);
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
        assert!(!replica.join(DATA_FILE).exists(), "no store took the replica's place");
        // Opening again refuses again; it does not open an empty store.
        assert!(open(&replica, 1 << 20).is_err());
        assert!(!replica.join(DATA_FILE).exists());
    }
}
