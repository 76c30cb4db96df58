//! `basic schema types`: row types from a schema file, with no database.

use basic_testkit::{Data, example};

/// The binary under test.
const BASIC: &str = env!("CARGO_BIN_EXE_basic");

#[test]
fn row_types_come_from_the_file_alone() {
    // An empty data directory: no database is needed, none is made.
    let data = Data::new(BASIC);
    let todo = example("todo.toml");
    let ts = data.basic(&["schema", "types", &todo, "--lang", "ts"]).ok();
    assert!(ts.contains("export interface TodoItems {\n  id: string;"), "{ts}");
    let rust = data.basic(&["schema", "types", &todo, "--lang", "rust"]).ok();
    assert!(rust.contains("pub struct TodoItems {\n    pub id: String,"), "{rust}");
    assert!(!data.path().join("owner-token").exists());

    let contacts = example("contacts.json");
    let ts = data.basic(&["schema", "types", &contacts, "--lang", "ts"]).ok();
    assert!(ts.contains("export interface ContactsPeople {"), "{ts}");

    let wrong = data.basic(&["schema", "types", &todo, "--lang", "go"]);
    assert!(wrong.stderr.contains("possible values: ts, rust"), "{}", wrong.stderr);
    assert!(!wrong.status.success());
    let missing = data.path().join("nope.toml");
    let error =
        data.basic(&["schema", "types", missing.to_str().unwrap(), "--lang", "ts"]).failed();
    assert!(error.contains("nope.toml"), "{error}");
}
