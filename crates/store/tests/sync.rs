//! Two replicas exchanging commits through the sync protocol, in one process.

use std::path::Path;

use basic_proto::Value;
use basic_proto::sync::SyncStore;
use basic_store::sync::{LocalLink, SyncReplica};
use basic_store::{Database, MemStore, Schema};

fn todo_schema() -> Schema {
    Schema::from_file(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml")))
        .unwrap()
}

fn titles(db: &Database) -> Vec<Vec<Value>> {
    db.query("SELECT id, title FROM todo.items ORDER BY id", &[], None).unwrap().rows
}

/// A database with a second device joined to it (control ops only).
fn two_devices() -> (tempfile::TempDir, Database, tempfile::TempDir, Database) {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Database::open(a_dir.path()).unwrap();
    a.apply_schema(todo_schema()).unwrap();
    let invite = a.invite(vec![], 60_000).unwrap();
    let request = Database::prepare_join(b_dir.path(), &invite).unwrap();
    a.accept_join(&request).unwrap();
    let b = Database::finish_join(b_dir.path(), &a.control_ops().unwrap()).unwrap();
    (a_dir, a, b_dir, b)
}

fn insert(db: &Database, id: &str) {
    db.execute(
        "INSERT INTO todo.items (id, list, title) VALUES (?, 'home', ?)",
        &[Value::Text(id.into()), Value::Text(format!("title {id}"))],
        None,
    )
    .unwrap();
}

#[test]
fn devices_converge_and_then_cost_one_round_trip() {
    let (_a_dir, a, _b_dir, b) = two_devices();
    a.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", &[], None).unwrap();
    for i in 0..20 {
        insert(&a, &format!("a{i:02}"));
    }
    let mut link = LocalLink::new(&a, &b).unwrap();
    let first = link.run(&a, &b, 0).unwrap();
    assert!(first.received >= 21, "{first:?}");
    assert_eq!(titles(&a), titles(&b));

    // Both write while apart, then meet again.
    for i in 0..5 {
        insert(&a, &format!("a{}", 50 + i));
        insert(&b, &format!("b{i}"));
    }
    link.run(&a, &b, 1).unwrap();
    assert_eq!(titles(&a).len(), 30);
    assert_eq!(titles(&a), titles(&b));

    let steady = link.run(&a, &b, 2).unwrap();
    assert_eq!(steady.exchanges, 2, "one exchange each way: {steady:?}");
    assert!(steady.bytes < 700, "{steady:?}");
}

#[test]
fn a_pinning_peer_holds_ciphertext_only_and_serves_it() {
    let (_a_dir, a, _b_dir, b) = two_devices();
    a.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", &[], None).unwrap();
    insert(&a, "x");
    let pinner_key = basic_proto::SecretKey::from_seed([77; 32]);
    a.add_pinner(pinner_key.public()).unwrap();
    let view_dir = tempfile::tempdir().unwrap();
    let pinner = Database::replicate_with_store(
        MemStore::new(),
        &view_dir.path().join("view.sqlite"),
        a.id(),
        &pinner_key,
        &a.control_ops().unwrap(),
    )
    .unwrap();
    LocalLink::new(&a, &pinner).unwrap().run(&a, &pinner, 0).unwrap();
    assert_eq!(pinner.scope_keys().iter().count(), 0, "a pinning peer holds no key");
    assert_eq!(pinner.replica().commits().count(), a.replica().commits().count());
    assert_eq!(pinner.replica().row_states().count(), 0, "and no plaintext row");

    // The second device gets everything from the pinning peer alone.
    LocalLink::new(&b, &pinner).unwrap().run(&b, &pinner, 0).unwrap();
    assert_eq!(titles(&b), titles(&a));
    let entries =
        |db: &Database| SyncReplica::new(db).entries(&basic_proto::sync::View::All).unwrap();
    assert_eq!(entries(&b), entries(&a));
}

#[test]
fn the_change_feed_returns_what_is_new_once() {
    let (_a_dir, a, _b_dir, _b) = two_devices();
    let changes = a.watch_changes();
    let mut feed = basic_store::sync::ChangeFeed::new(&a).unwrap();
    assert!(feed.poll(&a).unwrap().commits.is_empty());
    a.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", &[], None).unwrap();
    changes.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    let fresh = feed.poll(&a).unwrap();
    assert_eq!(fresh.commits.len(), 1);
    assert_eq!(fresh.commits[0].scope.as_str(), "todo");
    assert_eq!(fresh.commits[0].author, a.device());
    assert!(feed.poll(&a).unwrap().commits.is_empty());
    let pinner = basic_proto::SecretKey::from_seed([5; 32]);
    a.add_pinner(pinner.public()).unwrap();
    assert_eq!(feed.poll(&a).unwrap().ops.len(), 1);
}
