//! The replica's store on a device: redb ([`RedbStore`]) in the directory
//! `replica/`, and the one-time move of a replica that sled kept there
//! (protocol-spec/DECISIONS.md, D41).
//!
//! The move never leaves a replica half in one engine and half in the
//! other, whenever the process stops:
//!
//! 1. a sled directory at `replica/` is renamed `replica.sled/`;
//! 2. its entries are copied into a new redb store in `replica.moving/`,
//!    which is flushed;
//! 3. `replica.moving/` is renamed `replica/`;
//! 4. `replica.sled/` is removed.
//!
//! Opening again after a stop finishes what was left: with `replica.sled/`
//! and no `replica/` the copy starts over (from step 2), with both only the
//! removal is left. Each rename is made durable before the next step.

use std::path::{Path, PathBuf};

use super::kv::{Batch, SledStore, Store, StoreError, scan_prefix};
use super::redb::RedbStore;

/// The engine of a replica on a device.
pub type DeviceStore = RedbStore;

/// A file sled makes in its directory, and redb never does.
const SLED_MARKER: &str = "conf";
/// Bytes of keys and values copied per batch while moving.
const MOVE_BATCH_BYTES: usize = 8 << 20;

/// Opens (creating if needed) the replica's store in directory `replica`,
/// with a cache of `cache_bytes`, first moving a replica that sled kept
/// there into redb (see the [module documentation](self)).
pub fn open(replica: &Path, cache_bytes: u64) -> Result<DeviceStore, StoreError> {
    let old = sibling(replica, "sled");
    if replica.join(SLED_MARKER).exists() {
        rename(replica, &old)?;
    }
    if old.exists() {
        if !replica.exists() {
            let moving = sibling(replica, "moving");
            if moving.exists() {
                std::fs::remove_dir_all(&moving).map_err(io(&moving))?;
            }
            copy(&old, &moving, cache_bytes)?;
            rename(&moving, replica)?;
        }
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
        sync_parent(&old)?;
    }
    RedbStore::open(replica, cache_bytes)
}

/// Copies every entry of the sled store in `from` into a new redb store in
/// `to`, made private to its owner before anything is written, and flushes
/// it.
fn copy(from: &Path, to: &Path, cache_bytes: u64) -> Result<(), StoreError> {
    let source = SledStore::open(from, cache_bytes)?;
    std::fs::create_dir_all(to).map_err(io(to))?;
    crate::database::make_private(to).map_err(io(to))?;
    let target = RedbStore::open(to, cache_bytes)?;
    tracing::info!(from = %from.display(), "moving the replica from sled to redb (once)");
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
    }
    target.apply(batch)?;
    target.flush()?;
    tracing::info!(entries, "moved the replica to redb");
    Ok(())
}

/// `dir` with `.suffix` added to its name.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

/// Renames `from` to `to`, durably.
fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(io(from))?;
    sync_parent(to)
}

/// `fsync` of the directory holding `path`, so that a rename or removal
/// there survives a crash.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(io(parent))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Sync { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sled_replica(dir: &Path, entries: &[(&[u8], &[u8])]) {
        let store = SledStore::open(dir, 1 << 20).unwrap();
        let mut batch = Batch::default();
        for (key, value) in entries {
            batch.put(key.to_vec(), value.to_vec());
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
    }

    fn entries(store: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
        scan_prefix(store, b"").map(Result::unwrap).collect()
    }

    #[test]
    fn a_replica_sled_kept_is_moved_into_redb_whole() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..20_000u32)
            .map(|i| (format!("k/{i:08}").into_bytes(), vec![(i % 251) as u8; 700]))
            .collect();
        let borrowed: Vec<(&[u8], &[u8])> =
            many.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        sled_replica(&replica, &borrowed);

        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), many, "every entry, in order, with its value");
        assert!(replica.join("data.redb").exists());
        assert!(!replica.join(SLED_MARKER).exists());
        assert!(!sibling(&replica, "sled").exists(), "sled's copy is removed once moved");
        drop(store);
        // Opened again, it is redb's and holds the same.
        assert_eq!(entries(&open(&replica, 1 << 20).unwrap()), many);
    }

    /// Stopped while copying: the partial copy is dropped and the copy
    /// starts over from sled's directory.
    #[test]
    fn a_move_stopped_while_copying_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let old = sibling(&replica, "sled");
        sled_replica(&old, &[(b"a", b"1"), (b"b", b"2")]);
        {
            let partial = RedbStore::open(&sibling(&replica, "moving"), 1 << 20).unwrap();
            let mut batch = Batch::default();
            batch.put(b"a".to_vec(), b"half".to_vec());
            batch.put(b"z".to_vec(), b"stale".to_vec());
            partial.apply(batch).unwrap();
            partial.flush().unwrap();
        }
        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(
            entries(&store),
            [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]
        );
        assert!(!old.exists() && !sibling(&replica, "moving").exists());
    }

    /// Stopped after the copy took sled's place: only the removal of
    /// sled's directory is left, and the copy is what opens.
    #[test]
    fn a_move_stopped_before_removing_sled_keeps_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let old = sibling(&replica, "sled");
        sled_replica(&old, &[(b"a", b"old")]);
        {
            let copied = RedbStore::open(&replica, 1 << 20).unwrap();
            let mut batch = Batch::default();
            batch.put(b"a".to_vec(), b"copied".to_vec());
            copied.apply(batch).unwrap();
            copied.flush().unwrap();
        }
        let store = open(&replica, 1 << 20).unwrap();
        assert_eq!(entries(&store), [(b"a".to_vec(), b"copied".to_vec())]);
        assert!(!old.exists());
    }

    /// A damaged sled directory is refused with a typed error and left as
    /// it was: nothing is lost, and no empty store is made in its place.
    #[test]
    fn a_damaged_sled_replica_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        std::fs::create_dir_all(&replica).unwrap();
        std::fs::write(replica.join(SLED_MARKER), b"not sled's configuration").unwrap();
        std::fs::write(replica.join("db"), vec![0x5a; 4096]).unwrap();
        assert!(open(&replica, 1 << 20).is_err());
        let old = sibling(&replica, "sled");
        assert!(old.join("db").exists(), "sled's files are kept");
        assert!(!replica.exists(), "no empty store took the replica's place");
        // Opening again refuses again; it does not open an empty store.
        assert!(open(&replica, 1 << 20).is_err());
    }
}
