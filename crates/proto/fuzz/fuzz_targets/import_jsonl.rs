//! `Database::import_jsonl` on arbitrary bytes (an export file from
//! anywhere). It must never panic. Imports check the whole file before they
//! write anything, so most inputs leave the database empty; after one that
//! left a schema or rows behind, the next input gets a fresh empty database.

#![no_main]

use std::io::Cursor;
use std::sync::Mutex;

use basic_store::{Database, MemStore};
use libfuzzer_sys::fuzz_target;

struct World {
    db: Database<MemStore>,
    _dir: tempfile::TempDir,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fn world() -> World {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = Database::with_store(MemStore::new(), &dir.path().join("view.sqlite"))
        .expect("an empty database opens");
    World { db, _dir: dir }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = WORLD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let db = &guard.get_or_insert_with(world).db;
    let imported = db.import_jsonl(Cursor::new(data), None).is_ok();
    if imported || db.catalog().schemas().next().is_some() {
        *guard = None;
    }
});
