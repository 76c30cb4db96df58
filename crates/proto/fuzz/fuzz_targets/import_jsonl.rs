//! `Database::import_jsonl` on arbitrary bytes (an export file from
//! anywhere). It must never panic. Imports check the whole file before they
//! write anything, so most inputs leave the database empty; after one that
//! left a schema or rows behind, the next input gets a fresh empty database.

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

#[path = "shared/world.rs"]
mod world;

fuzz_target!(|data: &[u8]| {
    let mut guard = world::lock();
    let db = &guard.get_or_insert_with(world::fresh).db;
    let imported = db.import_jsonl(Cursor::new(data), None).is_ok();
    if imported || db.catalog().schemas().next().is_some() {
        *guard = None;
    }
});
