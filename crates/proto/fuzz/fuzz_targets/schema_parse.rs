//! `Schema::parse_either` on arbitrary text (a schema file from a developer,
//! or a schema sealed in a peer's control operation, which is read as JSON).
//! It must never panic; a schema that parses has a canonical JSON form that
//! parses back to the same schema, and planning it into a catalog must not
//! panic either.

#![no_main]

use basic_store::{Catalog, Schema};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(schema) = Schema::parse_either(text) else { return };
    let canonical = schema.to_json();
    let again = Schema::from_json_canonical(&canonical);
    assert_eq!(again.as_ref().map(Schema::to_json).ok(), Some(canonical));
    let _ = Catalog::from_schemas([schema]);
});
