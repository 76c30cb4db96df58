//! Custodial apps (the ones that use a node's API): the node keeps their
//! key and signs their writes with it, so grants, revocation and
//! attribution work from signatures, on every replica.

use std::path::Path;

use basic_proto::control::Rights;
use basic_proto::{Name, Value};
use basic_store::sync::LocalLink;
use basic_store::{Database, DbError, Executed, Schema};

fn todo() -> Name {
    Name::new("todo").unwrap()
}

/// A device with the todo schema and a second device joined to it.
fn two_devices() -> (tempfile::TempDir, Database, tempfile::TempDir, Database) {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Database::open(a_dir.path()).unwrap();
    let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
    a.apply_schema(Schema::from_file(schema).unwrap()).unwrap();
    let invite = a.invite(vec![], 60_000).unwrap();
    let request = Database::prepare_join(b_dir.path(), &invite).unwrap();
    a.accept_join(&request).unwrap();
    let b = Database::finish_join(b_dir.path(), &a.control_ops().unwrap()).unwrap();
    (a_dir, a, b_dir, b)
}

fn titles(db: &Database) -> Vec<Value> {
    let rows = db.query("SELECT title FROM todo.items ORDER BY title", &[], None).unwrap();
    rows.rows.into_iter().map(|mut row| row.remove(0)).collect()
}

#[test]
fn a_custodial_apps_writes_are_its_own_and_stop_at_its_revocation() {
    let (_a_dir, a, _b_dir, b) = two_devices();
    let app = a.new_custodial_app().unwrap();
    a.grant(app, todo(), Rights::ReadWrite).unwrap();
    let ns = Some(todo());
    a.execute_as_app(&app.key, "INSERT INTO lists (id, name) VALUES ('l', 'L')", &[], ns.as_ref())
        .unwrap();
    let Executed::Written(outcome) = a
        .execute_as_app(
            &app.key,
            "INSERT INTO items (id, list, title) VALUES ('1', 'l', 'milk')",
            &[],
            ns.as_ref(),
        )
        .unwrap()
    else {
        panic!("a write")
    };
    assert_eq!(outcome.rows_affected, 1);
    // Signed by the app: the commit is in the app's log, not the device's.
    let written = a.written_by(&app.key).unwrap();
    assert_eq!(written.commits, 2);
    assert!(written.last_ms.is_some_and(|ms| ms > 0), "{written:?}");
    assert!(a.written_by(&a.device()).unwrap().last_ms.is_none());
    assert!(a.written_by(&a.device()).unwrap().commits == 0);
    let log = a.replica().log(&app.key).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log.last().map(|(seq, id)| (*seq, *id)), Some((2, outcome.commits[0])));

    // Another device takes the app's commits: the grant authorises them.
    LocalLink::new(&a, &b).unwrap().run(&a, &b, 0).unwrap();
    assert_eq!(titles(&b), [Value::Text("milk".into())]);
    assert_eq!(b.written_by(&app.key).unwrap(), written);
    // A holds its key; B, which only received its commits, does not.
    let custodial =
        |db: &Database| db.apps().unwrap().iter().find(|i| i.key == app.key).unwrap().custodial;
    assert!(custodial(&a) && !custodial(&b));

    // Out of its grant: refused.
    let read_only = a.new_custodial_app().unwrap();
    a.grant(read_only, todo(), Rights::Read).unwrap();
    let refused = a.execute_as_app(
        &read_only.key,
        "INSERT INTO items (id, list, title) VALUES ('2', 'l', 'eggs')",
        &[],
        ns.as_ref(),
    );
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(a.written_by(&read_only.key).unwrap().commits, 0);

    // Revoked: nothing more, and what it wrote stays.
    a.revoke(app.key, todo()).unwrap();
    let revoked = a.execute_as_app(
        &app.key,
        "INSERT INTO items (id, list, title) VALUES ('3', 'l', 'bread')",
        &[],
        ns.as_ref(),
    );
    assert!(matches!(revoked, Err(DbError::NoGrant)), "{revoked:?}");
    assert_eq!(titles(&a), [Value::Text("milk".into())]);

    // An app whose key the node does not hold cannot be written as.
    let stranger = basic_proto::Party::of(&basic_proto::SecretKey::from_seed([9; 32]));
    a.grant(stranger, todo(), Rights::ReadWrite).unwrap();
    let not_held = a.execute_as_app(
        &stranger.key,
        "INSERT INTO items (id, list, title) VALUES ('4', 'l', 'jam')",
        &[],
        ns.as_ref(),
    );
    assert!(matches!(not_held, Err(DbError::NotCustodial)), "{not_held:?}");
}

#[test]
fn a_custodial_log_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = {
        let db = Database::open(dir.path()).unwrap();
        let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
        db.apply_schema(Schema::from_file(schema).unwrap()).unwrap();
        let app = db.new_custodial_app().unwrap();
        db.grant(app, todo(), Rights::ReadWrite).unwrap();
        db.execute_as_app(
            &app.key,
            "INSERT INTO todo.lists (id, name) VALUES ('l', 'L')",
            &[],
            None,
        )
        .unwrap();
        app
    };
    let db = Database::open(dir.path()).unwrap();
    db.execute_as_app(&app.key, "INSERT INTO todo.lists (id, name) VALUES ('m', 'M')", &[], None)
        .unwrap();
    let log = db.replica().log(&app.key).unwrap();
    assert_eq!(log.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [1, 2]);
    assert!(
        db.replica().forks().unwrap().is_empty(),
        "no fork: the log resumed after its last commit"
    );
}

/// The device and a custodial app write at once while another app is
/// granted and revoked over and over: groups mix commits of two authors,
/// signed on the writer's signing thread (D49), with control operations
/// that read the commits stored before them. Every commit is stored whole,
/// verifies, and chains to the one before it in its author's log.
#[test]
fn commits_signed_beside_the_writer_are_stored_whole_and_chained() {
    const WRITES: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
    db.apply_schema(Schema::from_file(schema).unwrap()).unwrap();
    let ns = Some(todo());
    db.execute("INSERT INTO lists (id, name) VALUES ('l', 'L')", &[], ns.as_ref()).unwrap();
    let app = db.new_custodial_app().unwrap();
    db.grant(app, todo(), Rights::ReadWrite).unwrap();
    let other = db.new_custodial_app().unwrap();
    let insert = |who: &str, i: usize| {
        format!("INSERT INTO items (id, list, title) VALUES ('{who}{i}', 'l', 't')")
    };
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let (db, ns) = (&db, ns.as_ref());
            scope.spawn(move || {
                for i in 0..WRITES {
                    db.execute(&insert(&format!("d{writer}-"), i), &[], ns).unwrap();
                }
            });
        }
        for writer in 0..4 {
            let (db, ns, app) = (&db, ns.as_ref(), &app);
            scope.spawn(move || {
                for i in 0..WRITES {
                    db.execute_as_app(&app.key, &insert(&format!("a{writer}-"), i), &[], ns)
                        .unwrap();
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..20 {
                db.grant(other, todo(), Rights::ReadWrite).unwrap();
                db.revoke(other.key, todo()).unwrap();
            }
        });
    });
    let count = db.query("SELECT count(*) FROM items", &[], ns.as_ref()).unwrap().rows;
    assert_eq!(count, [[Value::Integer((8 * WRITES) as i64)]]);
    for (author, commits) in [(db.device(), 4 * WRITES + 1), (app.key, 4 * WRITES)] {
        let log = db.replica().log(&author).unwrap();
        assert_eq!(log.len(), commits);
        let mut prev = None;
        for (seq, id) in log {
            let commit = db.replica().commit(&id).unwrap().expect("stored whole");
            let decoded = basic_proto::Commit::decode(commit.as_bytes()).expect("verifies");
            assert_eq!((decoded.id(), decoded.header().seq), (id, seq));
            assert_eq!(decoded.header().prev, prev, "seq {seq} chains to the one before");
            prev = Some(id);
        }
    }
}
