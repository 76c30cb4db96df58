//! The database end to end: schemas, SQL reads and writes turned into
//! commits, type errors, live queries, received commits and reopening.

use std::path::Path;
use std::time::Duration;

use basic_proto::Party;
use basic_proto::control::{ControlOp, OpBody, Payload, Rights, Rotation};
use basic_proto::{Changes, KeyPart, Name, RowKey, RowOp, ScopeId, ScopeKey, SecretKey, Value};
use basic_store::{
    Database, DbError, Executed, IngestError, LogWriter, Outcome, Rows, Schema, Store, WriteOutcome,
};

use crate::common::examples;

fn open(dir: &Path) -> Database {
    Database::open(dir).unwrap()
}

fn with_todo(dir: &Path) -> Database {
    let db = open(dir);
    db.apply_schema(Schema::from_file(examples().join("todo.toml")).unwrap()).unwrap();
    db
}

/// A database with the todo schema and an app (of `seed`) granted
/// read-write on it: the app's log writer and the scope key it was sealed.
fn with_app(dir: &Path, seed: u8) -> (Database, ScopeId, ScopeKey, LogWriter) {
    let db = with_todo(dir);
    let (todo, key, writer) = grant_app(&db, seed);
    (db, todo, key, writer)
}

/// An app (of `seed`) granted read-write on `db`'s todo scope: the scope,
/// the key sealed to the app, its log writer.
fn grant_app<S: Store>(db: &Database<S>, seed: u8) -> (ScopeId, ScopeKey, LogWriter) {
    let todo = scope(db, "todo");
    let app = SecretKey::from_seed([seed; 32]);
    db.grant(Party::of(&app), Name::new("todo").unwrap(), Rights::ReadWrite).unwrap();
    let key = db.auth_state().scope_keys(&app, &todo, 0).remove(0);
    (todo, key, LogWriter::new(app, db.id()))
}

/// The scope id of `namespace` in `db`.
fn scope<S: Store>(db: &Database<S>, namespace: &str) -> ScopeId {
    db.scope_id(&Name::new(namespace).unwrap()).unwrap()
}

fn write<S: Store>(db: &Database<S>, sql: &str) -> WriteOutcome {
    match db.execute(sql, &[], None) {
        Ok(Executed::Written(outcome)) => outcome,
        other => panic!("{sql}: {other:?}"),
    }
}

fn rows<S: Store>(db: &Database<S>, sql: &str) -> Vec<Vec<Value>> {
    db.query(sql, &[], None).unwrap_or_else(|e| panic!("{sql}: {e}")).rows
}

/// A `todo.lists` row of `key` named `name`, at generation 1.
fn list_row(key: KeyPart, name: &str) -> RowOp {
    RowOp::Upsert {
        table: Name::new("todo.lists").unwrap(),
        key: RowKey::single(key),
        generation: 1,
        cells: [(Name::new("name").unwrap(), text(name))].into_iter().collect(),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn seed<S: Store>(db: &Database<S>) {
    write(db, "INSERT INTO todo.lists (id, name) VALUES ('home', 'Home'), ('work', 'Work')");
    write(
        db,
        "INSERT INTO todo.items (id, list, title, done, priority, due, notes) VALUES
           ('a', 'home', 'Buy milk', false, 2, 1795824000000000, '{\"tags\":[\"shop\"]}'),
           ('b', 'home', 'Fix bike', true, 1, NULL, NULL),
           ('c', 'work', 'Write report', false, 3, NULL, NULL)",
    );
}

#[test]
fn typed_rows_and_relational_queries() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(dir.path());
    seed(&db);
    assert_eq!(
        rows(&db, "SELECT id, done, due, notes FROM todo.items WHERE id = 'a'"),
        [[
            text("a"),
            Value::Bool(false),
            Value::Timestamp(1795824000000000),
            Value::Json("{\"tags\":[\"shop\"]}".into())
        ]]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT i.title, l.name FROM todo.items i JOIN todo.lists l ON i.list = l.id WHERE NOT i.done ORDER BY i.priority DESC"
        ),
        [[text("Write report"), text("Work")], [text("Buy milk"), text("Home")]]
    );
    assert_eq!(
        rows(&db, "SELECT list, count(*) AS n FROM items GROUP BY list ORDER BY list"),
        [[text("home"), Value::Integer(2)], [text("work"), Value::Integer(1)]]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT id FROM items WHERE title LIKE '%i%' AND due IS NULL AND list IN ('home', 'work') ORDER BY id LIMIT 1 OFFSET 1"
        ),
        [[text("c")]]
    );
    write(&db, "INSERT INTO todo.lists (id, name) VALUES ('empty', 'Empty')");
    assert_eq!(
        rows(
            &db,
            "SELECT l.id, count(i.id) FROM lists l LEFT JOIN items i ON i.list = l.id GROUP BY l.id ORDER BY l.id"
        ),
        [
            [text("empty"), Value::Integer(0)],
            [text("home"), Value::Integer(2)],
            [text("work"), Value::Integer(1)]
        ]
    );
    assert_eq!(
        rows(
            &db,
            "WITH open AS (SELECT id FROM items WHERE NOT done) SELECT id, row_number() OVER (ORDER BY id DESC) FROM open ORDER BY id"
        ),
        [[text("a"), Value::Integer(2)], [text("c"), Value::Integer(1)]]
    );
    // Timestamps may be written as RFC 3339 text; they read back as timestamps.
    write(&db, "UPDATE items SET due = '2026-11-28T10:00:00.25+01:00' WHERE id = 'b'");
    assert_eq!(
        rows(&db, "SELECT due FROM items WHERE id = 'b'"),
        [[Value::Timestamp(1_795_856_400_250_000)]]
    );
    let error =
        db.execute("UPDATE items SET due = 'tomorrow' WHERE id = 'b'", &[], None).unwrap_err();
    assert!(error.to_string().contains("RFC 3339"), "{error}");
    // Parameters bind to placeholders.
    let found = db
        .query("SELECT title FROM items WHERE priority > ? ORDER BY id", &[Value::Integer(1)], None)
        .unwrap();
    assert_eq!(found.rows, [[text("Buy milk")], [text("Write report")]]);
}

#[test]
fn writes_become_commits_changing_exactly_the_matched_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(dir.path());
    seed(&db);
    let device = db.device();
    let before = db.replica().log(&device).unwrap().len();
    let outcome = write(
        &db,
        "UPDATE todo.items SET done = true, priority = priority + 10 WHERE list = 'home'",
    );
    assert_eq!(outcome.rows_affected, 2);
    assert_eq!(outcome.commits.len(), 1);
    assert_eq!(db.replica().log(&device).unwrap().len(), before + 1);
    assert_eq!(
        rows(&db, "SELECT id, done, priority FROM items ORDER BY id"),
        [
            [text("a"), Value::Bool(true), Value::Integer(12)],
            [text("b"), Value::Bool(true), Value::Integer(11)],
            [text("c"), Value::Bool(false), Value::Integer(3)],
        ]
    );
    let outcome = write(&db, "DELETE FROM items WHERE done");
    assert_eq!(outcome.rows_affected, 2);
    assert_eq!(rows(&db, "SELECT id FROM items"), [[text("c")]]);
    // Deleted rows stay in the merge state with their generation.
    let state = db
        .replica()
        .row(&Name::new("todo.items").unwrap(), &RowKey::single(KeyPart::Text("a".into())))
        .unwrap()
        .unwrap();
    assert_eq!(state.generation, 2);
    // Re-inserting a deleted key starts a new life with defaults.
    write(&db, "INSERT INTO items (id, list, title) VALUES ('a', 'home', 'Milk again')");
    assert_eq!(
        rows(&db, "SELECT done, priority FROM items WHERE id = 'a'"),
        [[Value::Bool(false), Value::Integer(0)]]
    );
    // A write that matches nothing makes no commit.
    let outcome = write(&db, "UPDATE items SET done = true WHERE id = 'nope'");
    assert_eq!(outcome, WriteOutcome { rows_affected: 0, commits: vec![] });
}

#[test]
fn bad_writes_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(dir.path());
    seed(&db);
    let commits = || db.replica().commits().count();
    let before = commits();
    let error = |sql: &str| db.execute(sql, &[], None).unwrap_err().to_string();
    assert_eq!(
        error("INSERT INTO items (id, list, title, priority) VALUES ('d', 'home', 'x', 'high')"),
        "todo.items.priority: expected integer, got text 'high'"
    );
    assert_eq!(
        error("INSERT INTO items (id, list, title, colour) VALUES ('d', 'home', 'x', 1)"),
        "todo.items has no column colour"
    );
    assert_eq!(
        error("INSERT INTO items (id, list) VALUES ('d', 'home')"),
        "todo.items.title is required: it is not nullable and has no default"
    );
    assert!(
        error("INSERT INTO items (id, list, title) VALUES ('a', 'home', 'dup')")
            .starts_with("todo.items already has a row with key ('a')")
    );
    assert!(error("UPDATE items SET id = 'z'").contains("part of the primary key"));
    assert_eq!(
        error("UPDATE items SET notes = '{bad'"),
        "todo.items.notes: expected json or NULL, got text that is not JSON (invalid JSON at byte 1: expected a member name)"
    );
    assert!(error("INSERT INTO nowhere VALUES (1)").contains("no table nowhere"));
    assert!(error("DROP TABLE todo.items").starts_with("DROP TABLE is not supported"));
    assert!(error("ATTACH DATABASE 'x' AS x").starts_with("ATTACH DATABASE is not supported"));
    assert!(error("PRAGMA user_version = 3").starts_with("PRAGMA user_version is not supported"));
    assert!(error("SELECT * FROM items WHERE nope = 1").contains("no such column"));
    // A multi-row statement with one bad row writes none of them.
    assert!(error("INSERT INTO items (id, list, title, done) VALUES ('x', 'home', 'ok', false), ('y', 'home', 'bad', 7)").contains("expected bool"));
    assert_eq!(commits(), before);
    assert_eq!(rows(&db, "SELECT count(*) FROM items"), [[Value::Integer(3)]]);
    // The database still works after refusals.
    write(
        &db,
        "INSERT OR IGNORE INTO items (id, list, title) VALUES ('a', 'home', 'ignored'), ('d', 'home', 'new')",
    );
    write(&db, "INSERT OR REPLACE INTO items (id, list, title) VALUES ('b', 'work', 'replaced')");
    assert_eq!(
        rows(&db, "SELECT id, list, title, done FROM items ORDER BY id"),
        [
            [text("a"), text("home"), text("Buy milk"), Value::Bool(false)],
            [text("b"), text("work"), text("replaced"), Value::Bool(false)],
            [text("c"), text("work"), text("Write report"), Value::Bool(false)],
            [text("d"), text("home"), text("new"), Value::Bool(false)],
        ]
    );
}

#[test]
fn queries_reach_schema_tables_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(dir.path());
    seed(&db);
    let error = |sql: &str| db.execute(sql, &[], None).unwrap_err().to_string();
    assert!(error("SELECT * FROM _basic_meta").contains("no table _basic_meta"));
    assert!(error("SELECT * FROM sqlite_master").contains("no table sqlite_master"));
    assert!(
        error("SELECT * FROM pragma_table_info('todo.items')").contains("table-valued function")
    );
    assert!(error("SELECT load_extension('/nonexistent')").contains("not authorized"));
    assert!(error("UPDATE items SET title = (SELECT sql FROM sqlite_schema)").contains("no table"));
    // What the JSON table functions read is their argument: allowed.
    write(
        &db,
        "INSERT INTO lists (id, name) SELECT value, 'from json' FROM json_each('[\"x\", \"y\"]')",
    );
    assert_eq!(
        rows(&db, "SELECT count(*) FROM lists WHERE name = 'from json'"),
        [[Value::Integer(2)]]
    );
}

#[test]
fn schemas_are_additive_and_refusals_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(dir.path());
    seed(&db);
    let migration =
        db.apply_schema(Schema::from_file(examples().join("todo-v2.toml")).unwrap()).unwrap();
    assert!(!migration.is_empty());
    // Existing rows show the new columns' defaults (or NULL).
    let columns = db.query("SELECT * FROM todo.items WHERE id = 'a'", &[], None).unwrap().columns;
    assert!(columns.len() > 7, "{columns:?}");
    let changed = Schema::parse(
        "namespace = \"todo\"\n[tables.lists]\nprimary_key = [\"id\"]\n[tables.lists.columns]\nid = \"integer\"\nname = \"text\"\n",
        basic_store::Format::Toml,
    )
    .unwrap();
    let error = db.apply_schema(changed).unwrap_err();
    assert!(matches!(error, DbError::Schema(_)), "{error}");
    assert!(error.to_string().contains("todo"), "{error}");
}

#[test]
fn reopening_keeps_everything_and_rebuilds_a_lost_view() {
    let dir = tempfile::tempdir().unwrap();
    let (id, device) = {
        let db = with_todo(dir.path());
        seed(&db);
        (db.id(), db.device())
    };
    let expected = {
        let db = open(dir.path());
        assert_eq!((db.id(), db.device()), (id, device));
        rows(&db, "SELECT * FROM items ORDER BY id")
    };
    assert_eq!(expected.len(), 3);
    std::fs::remove_file(dir.path().join("view.sqlite")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("view.sqlite-wal"));
    let _ = std::fs::remove_file(dir.path().join("view.sqlite-shm"));
    let db = open(dir.path());
    assert_eq!(rows(&db, "SELECT * FROM items ORDER BY id"), expected);
    // The author's log continues where it stopped.
    write(&db, "UPDATE items SET done = true WHERE id = 'c'");
    let log = db.replica().log(&device).unwrap();
    let seqs: Vec<u64> = log.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(db.replica().forks().unwrap().is_empty());
}

/// A data directory written before commit ids changed (D49) keeps its
/// commits under ids of the whole encoding: opening it is refused with a
/// message that says so, rather than taking every commit it is sent again
/// for a fork of its own.
#[test]
fn a_directory_with_commits_under_the_old_ids_is_refused_clearly() {
    use basic_store::storage::layout;
    let dir = tempfile::tempdir().unwrap();
    {
        let db = with_todo(dir.path());
        seed(&db);
        // Every commit re-keyed by the hash of its whole encoding.
        let store = db.replica().store();
        let mut batch = basic_store::Batch::default();
        for id in db.replica().commit_ids().collect::<Result<Vec<_>, _>>().unwrap() {
            let bytes = store.get(&layout::commit(&id)).unwrap().unwrap();
            let old = blake3::derive_key(basic_proto::commit::COMMIT_ID_CONTEXT, &bytes);
            batch.delete(layout::commit(&id));
            batch.put(layout::commit(&basic_proto::CommitId(old)), bytes);
        }
        store.apply(batch).unwrap();
        store.flush().unwrap();
    }
    let refused = Database::open(dir.path()).map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("written before commit ids changed"), "{refused}");
    assert!(refused.to_string().contains("basic export"), "{refused}");
}

/// A database that an older build kept on `store` (sled before D41, redb
/// before D55) opens on the LSM store with everything it held: its identity, its
/// rows and its log, which goes on where it stopped.
fn a_database_kept_on(store: impl basic_store::Store, dir: &Path) {
    let (id, device, expected) = {
        let db = Database::with_store(store, &dir.join("view.sqlite")).unwrap();
        db.apply_schema(Schema::from_file(examples().join("todo.toml")).unwrap()).unwrap();
        seed(&db);
        (db.id(), db.device(), rows(&db, "SELECT * FROM items ORDER BY id"))
    };
    // The view is rebuilt from the replica, so only the replica can answer.
    std::fs::remove_file(dir.join("view.sqlite")).unwrap();
    let db = open(dir);
    let names: Vec<_> = std::fs::read_dir(dir.join("replica"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["lsm"], "the old engine's files are gone once moved");
    assert_eq!((db.id(), db.device()), (id, device));
    assert_eq!(rows(&db, "SELECT * FROM items ORDER BY id"), expected);
    write(&db, "UPDATE items SET done = true WHERE id = 'c'");
    let seqs: Vec<u64> = db.replica().log(&device).unwrap().iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() >= 3);
    drop(db);
    let db = open(dir);
    assert_eq!(rows(&db, "SELECT done FROM items WHERE id = 'c'"), [[Value::Bool(true)]]);
}

#[test]
fn a_database_sled_kept_opens_on_the_lsm_store_with_all_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = basic_store::SledStore::open(&dir.path().join("replica"), 1 << 24).unwrap();
    a_database_kept_on(store, dir.path());
}

#[test]
fn a_database_redb_kept_opens_on_the_lsm_store_with_all_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = basic_store::RedbStore::open(&dir.path().join("replica"), 1 << 24).unwrap();
    a_database_kept_on(store, dir.path());
}

#[test]
fn a_directory_opens_in_one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    match Database::open(dir.path()) {
        Err(DbError::InUse(path)) => assert_eq!(path, dir.path()),
        other => panic!("second open: {other:?}"),
    }
    drop(db);
    open(dir.path());
}

#[test]
fn received_commits_merge_and_wake_live_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, key, mut other) = with_app(dir.path(), 42);
    seed(&db);
    let live =
        db.subscribe("SELECT id, title FROM items WHERE NOT done ORDER BY id", &[], None).unwrap();
    let first = live.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(first.rows.len(), 2);

    // An app granted on another device writes; its commit arrives by sync.
    let cells = [
        ("list", text("home")),
        ("title", text("From the laptop")),
        ("done", Value::Bool(false)),
        ("priority", Value::Integer(0)),
    ];
    let op = RowOp::Upsert {
        table: Name::new("todo.items").unwrap(),
        key: RowKey::single(KeyPart::Text("z".into())),
        generation: 1,
        cells: cells.into_iter().map(|(c, v)| (Name::new(c).unwrap(), v)).collect(),
    };
    let commit = other
        .write(
            &todo,
            0,
            &key,
            &Changes::new(vec![op]).unwrap(),
            basic_store::now_ms(),
            &mut rand::rng(),
        )
        .unwrap();
    let results = db
        .ingest(&[commit.as_bytes().to_vec(), commit.as_bytes().to_vec(), vec![1, 2, 3]])
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().outcome, Outcome::Applied);
    assert_eq!(results[1].as_ref().unwrap().outcome, Outcome::Duplicate);
    assert!(results[2].is_err());
    let update: Rows =
        live.recv_timeout(Duration::from_secs(5)).expect("live query saw the received row");
    assert_eq!(update.rows.last().unwrap(), &vec![text("z"), text("From the laptop")]);
    // And a local write wakes it too.
    write(&db, "UPDATE items SET done = true WHERE id = 'z'");
    let update = live.recv_timeout(Duration::from_secs(5)).expect("live query saw the local write");
    assert_eq!(update.rows, first.rows);
}

/// A commit's id does not cover its signature (D49): a peer that alters
/// the signature bytes of a commit gets the same id. Sent before the real
/// commit, the copy is refused (it does not verify); sent after, it is a
/// duplicate and nothing of it is stored. The real commit is kept, whole.
#[test]
fn a_copy_with_another_signature_is_refused_or_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, key, mut app) = with_app(dir.path(), 42);
    let op = list_row(KeyPart::Text("l".into()), "L");
    let changes = Changes::new(vec![op]).unwrap();
    let commit =
        app.write(&todo, 0, &key, &changes, basic_store::now_ms(), &mut rand::rng()).unwrap();
    let mut forged = commit.as_bytes().to_vec();
    *forged.last_mut().unwrap() ^= 0x01;
    assert_eq!(basic_proto::Commit::id_of(&forged), Some(commit.id()));

    let results = db.ingest(&[forged.clone()]).unwrap();
    assert!(
        matches!(&results[0], Err(IngestError::Commit(basic_proto::CommitError::BadSignature))),
        "{results:?}"
    );
    assert_eq!(db.replica().commit(&commit.id()).unwrap(), None, "nothing of it is stored");
    assert!(rows(&db, "SELECT name FROM lists").is_empty());

    let results = db.ingest(&[commit.as_bytes().to_vec()]).unwrap();
    assert_eq!(results[0].as_ref().unwrap().outcome, Outcome::Applied);
    let results = db.ingest(&[forged]).unwrap();
    assert_eq!(results[0].as_ref().unwrap().outcome, Outcome::Duplicate);
    let stored = db.replica().commit(&commit.id()).unwrap().unwrap();
    assert_eq!(stored.as_bytes(), commit.as_bytes(), "the verified copy is kept");
    assert_eq!(rows(&db, "SELECT name FROM lists"), [[text("L")]]);
}

/// A batch large enough to be checked on several threads, mixing copies
/// of held commits, commits that are refused, and new ones: every result
/// stands at the place of the commit it answers.
#[test]
fn a_batch_of_held_refused_and_new_commits_is_answered_in_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, key, mut app) = with_app(dir.path(), 43);
    let commits: Vec<_> = (0..150)
        .map(|i| {
            let op = list_row(KeyPart::Integer(i), &format!("list {i}"));
            let changes = Changes::new(vec![op]).unwrap();
            app.write(&todo, 0, &key, &changes, basic_store::now_ms(), &mut rand::rng()).unwrap()
        })
        .collect();
    let held = 60;
    let first: Vec<_> = commits[..held].iter().map(|c| c.as_bytes().to_vec()).collect();
    assert!(
        db.ingest(&first).unwrap().iter().all(|r| r.as_ref().unwrap().outcome == Outcome::Applied)
    );

    // Each commit in order; before every 4th a copy with another signature
    // (a duplicate if its commit is held, refused if not), after every 9th
    // bytes that are no commit at all.
    enum Expected {
        Applied(basic_proto::CommitId),
        Duplicate(basic_proto::CommitId),
        Refused,
    }
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for (i, commit) in commits.iter().enumerate() {
        if i % 4 == 0 {
            let mut forged = commit.as_bytes().to_vec();
            *forged.last_mut().unwrap() ^= 0x01;
            batch.push(forged);
            expected.push(match i < held {
                true => Expected::Duplicate(commit.id()),
                false => Expected::Refused,
            });
        }
        batch.push(commit.as_bytes().to_vec());
        expected.push(match i < held {
            true => Expected::Duplicate(commit.id()),
            false => Expected::Applied(commit.id()),
        });
        if i % 9 == 0 {
            batch.push(format!("not a commit {i}").into_bytes());
            expected.push(Expected::Refused);
        }
    }
    let results = db.ingest(&batch).unwrap();
    assert_eq!(results.len(), expected.len());
    for (at, (result, expected)) in results.iter().zip(&expected).enumerate() {
        match (result, expected) {
            (Ok(inserted), Expected::Applied(id)) => {
                assert_eq!(
                    (inserted.id, inserted.outcome.clone()),
                    (*id, Outcome::Applied),
                    "at {at}"
                )
            }
            (Ok(inserted), Expected::Duplicate(id)) => {
                assert_eq!(
                    (inserted.id, inserted.outcome.clone()),
                    (*id, Outcome::Duplicate),
                    "at {at}"
                )
            }
            (Err(_), Expected::Refused) => {}
            (result, _) => panic!("at {at}: {result:?}"),
        }
    }
    assert_eq!(rows(&db, "SELECT count(*) FROM lists"), [[Value::Integer(150)]]);
}

#[test]
fn commits_stamped_too_far_ahead_are_held_then_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, key, mut other) = with_app(dir.path(), 44);
    let op = list_row(KeyPart::Text("later".into()), "From the future");
    // 1.5 s past the 60 s bound: held, then applied by the writer's timer.
    let stamp = basic_store::now_ms() + basic_proto::hlc::MAX_AHEAD_MS + 1_500;
    let commit = other
        .write(&todo, 0, &key, &Changes::new(vec![op]).unwrap(), stamp, &mut rand::rng())
        .unwrap();
    let results = db.ingest(&[commit.as_bytes().to_vec()]).unwrap();
    assert!(matches!(results[0].as_ref().unwrap().outcome, Outcome::HeldBack { .. }));
    assert!(rows(&db, "SELECT id FROM lists").is_empty());
    assert_eq!(db.replica().held_count().unwrap(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rows(&db, "SELECT id FROM lists").is_empty() {
        assert!(std::time::Instant::now() < deadline, "held commit never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rows(&db, "SELECT name FROM lists"), [[text("From the future")]]);
    assert_eq!(db.replica().held_count().unwrap(), 0);
}

/// A commit held back for its far stamp is checked again when its time
/// comes: its author, revoked meanwhile, gets nothing in.
#[test]
fn a_held_commit_of_an_author_revoked_meanwhile_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, key, mut other) = with_app(dir.path(), 47);
    let op = list_row(KeyPart::Text("planted".into()), "Planted");
    let stamp = basic_store::now_ms() + basic_proto::hlc::MAX_AHEAD_MS + 1_000;
    let commit = other
        .write(&todo, 0, &key, &Changes::new(vec![op]).unwrap(), stamp, &mut rand::rng())
        .unwrap();
    let results = db.ingest(&[commit.as_bytes().to_vec()]).unwrap();
    assert!(matches!(results[0].as_ref().unwrap().outcome, Outcome::HeldBack { .. }));
    // Revoked before it is due: this device had seen none of its commits.
    db.revoke(other.secret().public(), Name::new("todo").unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.replica().held_count().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the held commit was never released");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Released, checked, refused: not applied and not in the log.
    write(&db, "INSERT INTO lists (id, name) VALUES ('after', 'After')");
    assert_eq!(rows(&db, "SELECT id FROM lists"), [[text("after")]]);
    assert!(db.replica().commit(&commit.id()).unwrap().is_none());
}

#[test]
fn commits_without_a_grant_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(dir.path());
    let todo = scope(&db, "todo");
    // A stranger who somehow has the key still holds no grant.
    let key = db.scope_keys().current(&todo).unwrap().1.clone();
    let mut stranger = LogWriter::new(SecretKey::from_seed([43; 32]), db.id());
    let op = list_row(KeyPart::Integer(1), "intruder");
    let commit = stranger
        .write(&todo, 0, &key, &Changes::new(vec![op]).unwrap(), 1_000, &mut rand::rng())
        .unwrap();
    let results = db.ingest(&[commit.as_bytes().to_vec()]).unwrap();
    assert!(matches!(results[0], Err(IngestError::Unauthorised(_))), "{:?}", results[0]);
    assert!(db.replica().commit(&commit.id()).unwrap().is_none());
}

#[test]
fn a_revoked_app_keeps_its_earlier_rows_and_writes_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, key, mut app) = with_app(dir.path(), 45);
    let list = |id: &str| list_row(KeyPart::Text(id.into()), id);
    let now = basic_store::now_ms();
    let before = app
        .write(&todo, 0, &key, &Changes::new(vec![list("kept")]).unwrap(), now, &mut rand::rng())
        .unwrap();
    assert!(db.ingest(&[before.as_bytes().to_vec()]).unwrap()[0].is_ok());

    let app_key = app.secret().public();
    db.revoke(app_key, Name::new("todo").unwrap()).unwrap();
    // The revoked app holds no key of the new epoch, and its later commits
    // (under the key it kept) are refused.
    assert!(db.auth_state().scope_keys(app.secret(), &todo, 1).is_empty());
    let after = app
        .write(&todo, 0, &key, &Changes::new(vec![list("late")]).unwrap(), now, &mut rand::rng())
        .unwrap();
    assert!(matches!(
        db.ingest(&[after.as_bytes().to_vec()]).unwrap()[0],
        Err(IngestError::Unauthorised(_))
    ));
    // Its earlier row stays, and the device writes on under the new epoch.
    assert_eq!(rows(&db, "SELECT id FROM lists"), [[text("kept")]]);
    write(&db, "INSERT INTO lists (id, name) VALUES ('mine', 'Mine')");
    assert_eq!(db.scope_keys().current(&todo).unwrap().0, 1);
    assert_eq!(rows(&db, "SELECT id FROM lists ORDER BY id"), [[text("kept")], [text("mine")]]);
}

/// Eight threads write at once through a store that records, for every
/// batch the writer applies, which commits it carries, and, for every
/// flush, which commits it made durable. Flushes are slowed down so that
/// writes queue up behind them. Group commit means: several statements'
/// commits in one atomic batch made durable by one flush — far fewer
/// flushes than writes — and no write acknowledged before the flush that
/// covers its commit.
mod recording {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use basic_store::DeviceStore;
    use basic_store::storage::layout;
    use basic_store::{Batch, Store, StoreError};

    /// What a [`Recording`] store saw applied and flushed.
    #[derive(Default)]
    pub(crate) struct Seen {
        /// Commits applied and not yet flushed.
        pub(crate) applied: BTreeSet<Vec<u8>>,
        /// Commits made durable by a flush.
        pub(crate) flushed: BTreeSet<Vec<u8>>,
        /// Commits per applied batch that carried any.
        pub(crate) batches: Vec<usize>,
        pub(crate) flushes: usize,
    }

    /// A device store that records the commits of each applied batch and what
    /// each flush covered.
    pub(crate) struct Recording {
        inner: DeviceStore,
        seen: Arc<Mutex<Seen>>,
    }

    impl Recording {
        /// A recording store in `dir`, and what it sees.
        pub(crate) fn open(dir: &std::path::Path) -> (Self, Arc<Mutex<Seen>>) {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let inner = DeviceStore::open(&dir.join("replica"), 1 << 24).unwrap();
            (Self { inner, seen: Arc::clone(&seen) }, seen)
        }
    }

    impl Store for Recording {
        crate::common::store_reads_from!(inner);

        fn apply(&self, batch: Batch) -> Result<(), StoreError> {
            let commits: Vec<Vec<u8>> =
                batch.scan_prefix(&[layout::COMMIT]).map(|(key, _)| key.to_vec()).collect();
            let mut seen = self.seen.lock().unwrap();
            if !commits.is_empty() {
                seen.batches.push(commits.len());
            }
            seen.applied.extend(commits);
            drop(seen);
            self.inner.apply(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            // What was applied before the flush began is what it covers.
            let covered = std::mem::take(&mut self.seen.lock().unwrap().applied);
            std::thread::sleep(Duration::from_millis(3));
            self.inner.flush()?;
            let mut seen = self.seen.lock().unwrap();
            seen.flushed.extend(covered);
            seen.flushes += 1;
            Ok(())
        }
    }
}

#[test]
fn concurrent_writers_are_group_committed() {
    const THREADS: usize = 8;
    const WRITES: usize = 25;
    use basic_store::storage::layout;

    let dir = tempfile::tempdir().unwrap();
    let (store, seen) = recording::Recording::open(dir.path());
    let db = Database::with_store(store, &dir.path().join("view.sqlite")).unwrap();
    db.apply_schema(Schema::from_file(examples().join("todo.toml")).unwrap()).unwrap();
    let exec = |sql: &str| match db.execute(sql, &[], None) {
        Ok(Executed::Written(outcome)) => outcome,
        other => panic!("{sql}: {other:?}"),
    };
    exec("INSERT INTO lists (id, name) VALUES ('l', 'L')");
    let before = {
        let mut seen = seen.lock().unwrap();
        seen.batches.clear();
        seen.flushes
    };
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (exec, seen) = (&exec, &seen);
            scope.spawn(move || {
                for i in 0..WRITES {
                    let outcome = exec(&format!(
                        "INSERT INTO items (id, list, title) VALUES ('{t}-{i}', 'l', 'x')"
                    ));
                    assert_eq!(outcome.commits.len(), 1, "one commit per statement");
                    let key = layout::commit(&outcome.commits[0]);
                    assert!(
                        seen.lock().unwrap().flushed.contains(&key),
                        "write {t}-{i} was acknowledged before a flush covered its commit"
                    );
                }
            });
        }
    });
    let writes = THREADS * WRITES;
    let seen = seen.lock().unwrap();
    let flushes = seen.flushes - before;
    assert_eq!(seen.batches.iter().sum::<usize>(), writes, "every commit applied once");
    let grouped = seen.batches.iter().filter(|&&n| n > 1).count();
    let largest = seen.batches.iter().max().copied().unwrap_or(0);
    assert!(
        flushes * 2 <= writes && grouped * 4 >= seen.batches.len(),
        "{writes} writes took {flushes} flushes and {} batches ({grouped} of several \
         commits, the largest {largest}): not group-committed",
        seen.batches.len()
    );
    let count = db.query("SELECT count(*) FROM items", &[], None).unwrap().rows;
    assert_eq!(count, [[Value::Integer(writes as i64)]]);
    let log = db.replica().log(&db.device()).unwrap();
    assert_eq!(log.len(), 201, "one commit per statement");
}

/// Issue 14: a sync reply of columnar commits can carry nearly 200,000
/// rows, and the writer holds the state of every row of its group until
/// the group is durable (a first sync of 1M rows peaked at 1.3 GiB). A
/// large received batch is applied in groups of about `MAX_GROUP_ROWS`
/// (16,384) rows, each flushed before the next, and the call returns once
/// all are durable.
/// `count` commits of 1,000 todo items each, written by `app` in `todo`.
fn thousand_row_commits(
    app: &mut LogWriter,
    todo: ScopeId,
    key: &ScopeKey,
    count: usize,
) -> Vec<Vec<u8>> {
    let row = |id: String| RowOp::Upsert {
        table: Name::new("todo.items").unwrap(),
        key: RowKey::single(KeyPart::Text(id)),
        generation: 1,
        cells: [("list", text("home")), ("title", text("t")), ("done", Value::Bool(false))]
            .into_iter()
            .map(|(c, v)| (Name::new(c).unwrap(), v))
            .collect(),
    };
    (0..count)
        .map(|c| {
            let changes = Changes::new((0..1000).map(|r| row(format!("{c}-{r}"))).collect());
            let now = basic_store::now_ms();
            let commit = app.write(&todo, 0, key, &changes.unwrap(), now, &mut rand::rng());
            commit.unwrap().as_bytes().to_vec()
        })
        .collect()
}

#[test]
fn a_large_received_batch_is_applied_in_bounded_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (store, seen) = recording::Recording::open(dir.path());
    let db = Database::with_store(store, &dir.path().join("view.sqlite")).unwrap();
    db.apply_schema(Schema::from_file(examples().join("todo.toml")).unwrap()).unwrap();
    let (todo, key, mut app) = grant_app(&db, 7);
    let commits = thousand_row_commits(&mut app, todo, &key, 40);
    let before = std::mem::take(&mut seen.lock().unwrap().batches);
    assert!(before.iter().all(|&n| n < 40));
    // Garbage among them: refused in its place, the rest applied in theirs.
    let mut batch = commits.clone();
    batch.insert(25, vec![1, 2, 3]);
    let results = db.ingest(&batch).unwrap();
    assert_eq!(results.len(), 41);
    assert!(results[25].is_err());
    for (i, result) in results.iter().enumerate().filter(|(i, _)| *i != 25) {
        let id = basic_proto::Commit::id_of(&batch[i]).unwrap();
        assert!(result.as_ref().is_ok_and(|r| r.outcome == Outcome::Applied && r.id == id), "{i}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.batches.iter().sum::<usize>(), 40, "{:?}", seen.batches);
    assert!(seen.batches.len() >= 3 && seen.batches.iter().all(|&n| n <= 17), "{:?}", seen.batches);
    let held =
        seen.flushed.iter().filter(|k| k.starts_with(&[basic_store::storage::layout::COMMIT]));
    assert!(held.count() >= 40, "every commit flushed before the call returned");
    assert_eq!(rows(&db, "SELECT count(*) FROM todo.items"), [[Value::Integer(40_000)]]);
}

/// A large batch holding an app's commits below its revocation's cut-off,
/// received by a device that has the revocation but none of the commits
/// (so none of the chain from the cut-off commit): the batch is one job, in
/// which the commits above complete the chain, so every commit is taken.
/// Split into bounded jobs like any large batch, the first jobs' commits
/// would be refused with `ChainNotHeld` and wait for another round.
#[test]
fn a_large_batch_below_a_cutoff_is_taken_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(&dir.path().join("first"));
    let (todo, key, mut app) = grant_app(&db, 9);
    let commits = thousand_row_commits(&mut app, todo, &key, 30);
    assert!(db.ingest(&commits).unwrap().iter().all(Result::is_ok));
    // The cut-off is the last commit this device holds: seq 30.
    db.revoke(app.secret().public(), Name::new("todo").unwrap()).unwrap();

    let second = SecretKey::from_seed([10; 32]);
    db.add_device(Party::of(&second)).unwrap();
    let other = dir.path().join("second");
    let store = basic_store::DeviceStore::open(&other.join("replica"), 1 << 24).unwrap();
    let db2 = Database::replicate_with_store(
        store,
        &other.join("view.sqlite"),
        db.id(),
        &second,
        &db.control_ops().unwrap(),
        basic_store::Environment::system(),
    )
    .unwrap();
    // 30,000 rows: split, they would make two jobs of about 16,384.
    let results = db2.ingest(&commits).unwrap();
    for (i, result) in results.iter().enumerate() {
        assert!(result.as_ref().is_ok_and(|r| r.outcome == Outcome::Applied), "{i}: {result:?}");
    }
    assert_eq!(rows(&db2, "SELECT count(*) FROM todo.items"), [[Value::Integer(30_000)]]);
}

/// Issue 10 item 3: a restart rebuilt the control log by inserting stored
/// ops in id order into a bounded hold buffer, dropping most of a long log
/// — revocations included. The root signs 1,500 ops in one chain (their
/// ids in random order), then the app is revoked; after a reopen every op
/// is there and the app is still revoked.
#[test]
fn a_long_control_log_survives_a_restart_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, _, app) = with_app(dir.path(), 46);
    let root = basic_store::recovery::decode(&db.recovery_secret().unwrap().unwrap()).unwrap();
    let log = db.control_log();
    let mut parents = log.heads();
    let mut hlc = log.ordered().iter().map(|op| op.body().hlc).max().unwrap();
    let mut ops = Vec::new();
    for i in 0..1500u32 {
        hlc = hlc.successor();
        let pinner = SecretKey::from_seed([(i % 250) as u8 + 1; 32]);
        let op = ControlOp::create(
            &root,
            OpBody {
                database: db.id(),
                author: root.public(),
                parents,
                hlc,
                payload: Payload::AddPinner { pinner: pinner.public() },
            },
        )
        .unwrap();
        parents = vec![op.id()];
        ops.push(op.as_bytes().to_vec());
    }
    // One batch: the state is evaluated once, not once per op.
    assert!(db.ingest_ops(&ops).unwrap().iter().all(Result::is_ok));
    let app_key = app.secret().public();
    db.revoke(app_key, Name::new("todo").unwrap()).unwrap();
    let before = db.control_log().len();
    drop(db);
    let db = open(dir.path());
    assert_eq!(db.control_log().len(), before);
    assert!(db.auth_state().apps()[&app_key].scopes[&todo].revoked.is_some());
}

/// Issue 10 items 7 and 9: a scope whose newest key was sealed to someone
/// who does not read it (here: a stranger), or that this device holds no
/// key of, is rotated by the device at once, sealed to its readers only.
#[test]
fn a_compromised_scope_is_rotated_away_from_whoever_should_not_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = with_todo(dir.path());
    let todo = scope(&db, "todo");
    let root = basic_store::recovery::decode(&db.recovery_secret().unwrap().unwrap()).unwrap();
    let stranger = SecretKey::from_seed([66; 32]);
    let sign = |payload: Payload| {
        let log = db.control_log();
        let hlc = log.ordered().iter().map(|op| op.body().hlc).max().unwrap().successor();
        let body =
            OpBody { database: db.id(), author: root.public(), parents: log.heads(), hlc, payload };
        ControlOp::create(&root, body).unwrap().as_bytes().to_vec()
    };
    // The root rotates `todo` to epoch 1, sealed to itself and a stranger
    // but not to this device.
    let key = ScopeKey::from_bytes([9; 32]);
    let parties = [Party::of(&root), Party::of(&stranger)];
    let rotation =
        Rotation::seal(&root, db.id(), todo, 1, &key, &parties, &mut rand::rng()).unwrap();
    assert!(db.ingest_ops(&[sign(Payload::RotateKey(rotation))]).unwrap()[0].is_ok());
    // The device rotated to epoch 2 right away; the stranger holds no key of it.
    let state = db.auth_state();
    assert!(state.compromised().is_empty());
    assert_eq!(state.scopes()[&todo].current(), Some(2));
    assert!(state.scope_keys(&stranger, &todo, 2).is_empty());
    assert_eq!(db.scope_keys().current(&todo).unwrap().0, 2);
    write(&db, "INSERT INTO lists (id, name) VALUES ('x', 'X')");
}
