//! An empty database in memory, shared by the inputs of one fuzz target
//! until an input leaves something behind.

use std::sync::{Mutex, MutexGuard};

use basic_store::{Database, MemStore};

/// The database and the directory of its SQLite view.
pub struct World {
    pub db: Database<MemStore>,
    _dir: tempfile::TempDir,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

/// The current world (set it to `None` to start the next input afresh).
pub fn lock() -> MutexGuard<'static, Option<World>> {
    WORLD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh world: an empty database.
pub fn fresh() -> World {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Database::with_store(MemStore::new(), &dir.path().join("view.sqlite"))
        .expect("an empty database opens");
    World { db, _dir: dir }
}
