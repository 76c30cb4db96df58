//! Losing every device but keeping the recovery secret: a new device gets
//! the database back.

use std::path::Path;

use basic_proto::Value;
use basic_store::{Database, DbError, IngestError, Schema};

fn todo_db(dir: &Path) -> Database {
    let db = Database::open(dir).unwrap();
    let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
    db.apply_schema(Schema::from_file(schema).unwrap()).unwrap();
    db
}

fn commits(db: &Database) -> Vec<Vec<u8>> {
    db.replica().commits().map(|c| c.unwrap().as_bytes().to_vec()).collect()
}

#[test]
fn the_recovery_secret_brings_the_database_back_on_a_new_device() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = todo_db(old_dir.path());
    old.execute(
        "INSERT INTO todo.lists (id, name) VALUES ('home', 'Home'), ('work', 'Work')",
        &[],
        None,
    )
    .unwrap();
    let secret = old.recovery_secret().unwrap().expect("shown until forgotten");
    old.forget_recovery_secret().unwrap();
    assert_eq!(old.recovery_secret().unwrap(), None);

    // Every device is lost but the ciphertext survives (a pinning peer, a
    // backup): a new device recovers from the secret and the operations.
    let new = Database::recover(new_dir.path(), &secret, &old.control_ops().unwrap()).unwrap();
    assert_eq!(new.id(), old.id());
    assert_ne!(new.device(), old.device());
    for result in new.ingest(&commits(&old)).unwrap() {
        result.unwrap();
    }
    let rows = new.query("SELECT name FROM todo.lists ORDER BY id", &[], None).unwrap().rows;
    assert_eq!(rows, [[Value::Text("Home".into())], [Value::Text("Work".into())]]);

    // The new device removes the lost one: what it writes later is refused.
    new.remove_device(old.device()).unwrap();
    old.execute("INSERT INTO todo.lists (id, name) VALUES ('thief', 'Thief')", &[], None).unwrap();
    let results = new.ingest(&commits(&old)).unwrap();
    assert!(results.iter().any(|r| matches!(r, Err(IngestError::Unauthorised(_)))));
    let rows = new.query("SELECT count(*) FROM todo.lists", &[], None).unwrap().rows;
    assert_eq!(rows, [[Value::Integer(2)]]);
    // And the new device writes on, under the rotated key.
    new.execute("INSERT INTO todo.lists (id, name) VALUES ('new', 'New')", &[], None).unwrap();
}

#[test]
fn a_wrong_secret_or_another_database_is_refused() {
    let (a_dir, b_dir, target) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = todo_db(a_dir.path());
    let b = todo_db(b_dir.path());
    let secret_a = a.recovery_secret().unwrap().unwrap();
    let error =
        Database::recover(target.path(), "basic-recovery-aaaa-bbbb", &a.control_ops().unwrap())
            .unwrap_err();
    assert!(matches!(error, DbError::Recovery(_)), "{error}");
    let error = Database::recover(target.path(), &secret_a, &b.control_ops().unwrap()).unwrap_err();
    assert!(error.to_string().contains("not of the database"), "{error}");
    let error = Database::recover(a_dir.path(), &secret_a, &a.control_ops().unwrap()).unwrap_err();
    assert!(matches!(error, DbError::InUse(_)), "{error}");
}
