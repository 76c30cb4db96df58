//! Two replicas exchanging commits through the sync protocol, in one process.

use std::path::Path;

use basic_proto::control::Rights;
use basic_proto::sync::{SyncStore, View};
use basic_proto::{Changes, Commit, KeyPart, RowKey, RowOp, Value};
use basic_store::sync::{LocalLink, SyncReplica};
use basic_store::{Database, LogWriter, MemStore, Schema};

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

fn insert<S: basic_store::Store>(db: &Database<S>, id: &str) {
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

/// Hundreds of commits taken in one writer group reach the view, and stay
/// after the database is opened again.
#[test]
fn a_large_sync_reaches_the_view_and_stays_after_reopening() {
    let (_a_dir, a, b_dir, b) = two_devices();
    a.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", &[], None).unwrap();
    for i in 0..300 {
        insert(&a, &format!("a{i:03}"));
    }
    LocalLink::new(&a, &b).unwrap().run(&a, &b, 0).unwrap();
    assert_eq!(titles(&b).len(), 300);
    assert_eq!(titles(&a), titles(&b));
    drop(b);
    let b = Database::open(b_dir.path()).unwrap();
    assert_eq!(titles(&a), titles(&b));
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
        basic_store::Environment::system(),
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
    assert_eq!(Some(fresh.commits[0].scope), a.scope_id(&basic_proto::Name::new("todo").unwrap()));
    assert_eq!(fresh.commits[0].author, a.device());
    assert!(feed.poll(&a).unwrap().commits.is_empty());
    let pinner = basic_proto::SecretKey::from_seed([5; 32]);
    a.add_pinner(pinner.public()).unwrap();
    assert_eq!(feed.poll(&a).unwrap().ops.len(), 1);
}

/// A database with the todo schema and an app granted read-write on it:
/// the app's log writer and the scope key it was sealed.
fn with_app(
    dir: &Path,
    seed: u8,
) -> (Database, basic_proto::ScopeId, basic_proto::ScopeKey, LogWriter) {
    let db = Database::open(dir).unwrap();
    db.apply_schema(todo_schema()).unwrap();
    let name = basic_proto::Name::new("todo").unwrap();
    let todo = db.scope_id(&name).unwrap();
    let app = basic_proto::SecretKey::from_seed([seed; 32]);
    db.grant(basic_proto::Party::of(&app), name, Rights::ReadWrite).unwrap();
    let key = db.auth_state().scope_keys(&app, &todo, 0).remove(0);
    let writer = LogWriter::new(app, db.id());
    (db, todo, key, writer)
}

/// One commit of `writer` upserting list `id`.
fn list_commit(
    writer: &mut LogWriter,
    todo: &basic_proto::ScopeId,
    key: &basic_proto::ScopeKey,
    id: &str,
) -> Commit {
    let op = RowOp::Upsert {
        table: basic_proto::Name::new("todo.lists").unwrap(),
        key: RowKey::single(KeyPart::Text(id.into())),
        generation: 1,
        cells: [(basic_proto::Name::new("name").unwrap(), Value::Text(id.into()))]
            .into_iter()
            .collect(),
    };
    let now = basic_store::now_ms();
    writer.write(todo, 0, key, &Changes::new(vec![op]).unwrap(), now, &mut rand::rng()).unwrap()
}

fn list_ids(db: &Database) -> Vec<Vec<Value>> {
    db.query("SELECT id FROM todo.lists ORDER BY id", &[], None).unwrap().rows
}

fn bytes(commits: &[&Commit]) -> Vec<Vec<u8>> {
    commits.iter().map(|c| c.as_bytes().to_vec()).collect()
}

/// Issue 10 item 10: a commit at a huge seq, then a revocation that
/// rejects it, made every summary walk each seq below it (days at 2^40).
/// The walk now follows the stored log index.
#[test]
fn a_rejected_commit_at_a_huge_seq_costs_what_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let (db, todo, key, mut app) = with_app(dir.path(), 61);
    let first = list_commit(&mut app, &todo, &key, "one");
    let far = 1u64 << 40;
    let mut jump = LogWriter::resume(
        app.secret().clone(),
        db.id(),
        far - 1,
        Some(basic_proto::CommitId([9; 32])),
        first.header().hlc,
    );
    let huge = list_commit(&mut jump, &todo, &key, "far");
    assert_eq!(huge.header().seq, far);
    for result in db.ingest(&bytes(&[&first, &huge])).unwrap() {
        result.unwrap();
    }
    // The revocation keeps seq 1 (what the device holds without a gap).
    db.revoke(app.secret().public(), basic_proto::Name::new("todo").unwrap()).unwrap();
    let entries = SyncReplica::new(&db).entries(&View::All).unwrap();
    let theirs = entries.iter().find(|e| e.author == app.secret().public()).unwrap();
    assert_eq!((theirs.max, theirs.held.count), (1, 1));
}

/// Two devices and an app granted `todo` on both, with the app's first
/// three commits (`one`, `two`, `three`) held by the first device, and a
/// copy of the app's writer after its first commit.
struct Forked {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    a: Database,
    b: Database,
    app: basic_proto::SecretKey,
    chain: [Commit; 3],
    /// Commits at seq 1 and 2 that are not on the chain: a second log from
    /// scratch (`f1`, `f2`) and a branch after `one` (`g2`).
    forks: [Commit; 3],
}

fn forked() -> Forked {
    let (a_dir, a, b_dir, b) = two_devices();
    let name = basic_proto::Name::new("todo").unwrap();
    let todo = a.scope_id(&name).unwrap();
    let app = basic_proto::SecretKey::from_seed([62; 32]);
    a.grant(basic_proto::Party::of(&app), name, Rights::ReadWrite).unwrap();
    b.ingest_ops(&a.control_ops().unwrap()).unwrap();
    let key = a.auth_state().scope_keys(&app, &todo, 0).remove(0);
    let mut writer = LogWriter::new(app.clone(), a.id());
    let one = list_commit(&mut writer, &todo, &key, "one");
    let mut branch = writer.clone();
    let two = list_commit(&mut writer, &todo, &key, "two");
    let three = list_commit(&mut writer, &todo, &key, "three");
    let mut scratch = LogWriter::new(app.clone(), a.id());
    let f1 = list_commit(&mut scratch, &todo, &key, "fork1");
    let f2 = list_commit(&mut scratch, &todo, &key, "fork2");
    let g2 = list_commit(&mut branch, &todo, &key, "fork3");
    for result in a.ingest(&bytes(&[&one, &two, &three])).unwrap() {
        result.unwrap();
    }
    Forked { _dirs: (a_dir, b_dir), a, b, app, chain: [one, two, three], forks: [f1, f2, g2] }
}

fn app_entry(db: &Database, app: &basic_proto::SecretKey) -> Option<(u64, u64)> {
    let entries = SyncReplica::new(db).entries(&View::All).unwrap();
    entries.iter().find(|e| e.author == app.public()).map(|e| (e.max, e.held.count))
}

fn kept() -> Vec<Vec<Value>> {
    ["one", "three", "two"].iter().map(|id| vec![Value::Text((*id).into())]).collect()
}

/// Issue 10 item 6: after a cut-off at seq 3, a revoked app wrote new
/// commits at seq 1–2 (a fork of its own log) and they were applied.
#[test]
fn a_revoked_app_cannot_fork_its_log_below_the_cut_off() {
    let f = forked();
    f.a.revoke(f.app.public(), basic_proto::Name::new("todo").unwrap()).unwrap();
    let [f1, f2, g2] = &f.forks;
    for result in f.a.ingest(&bytes(&[f1, f2, g2])).unwrap() {
        assert!(
            matches!(result, Err(basic_store::IngestError::ForkBelowCutoff { .. })),
            "{result:?}"
        );
    }
    assert_eq!(list_ids(&f.a), kept());
    assert_eq!(app_entry(&f.a, &f.app), Some((3, 3)));
}

/// A replica that knows the end but not yet the chain down to a commit
/// refuses it for now; a batch holding the whole chain is taken at once.
#[test]
fn commits_below_a_cut_off_wait_for_the_chain() {
    let f = forked();
    f.a.revoke(f.app.public(), basic_proto::Name::new("todo").unwrap()).unwrap();
    f.b.ingest_ops(&f.a.control_ops().unwrap()).unwrap();
    let [one, two, three] = &f.chain;
    assert!(matches!(
        f.b.ingest(&bytes(&[one])).unwrap()[0],
        Err(basic_store::IngestError::ChainNotHeld { .. })
    ));
    for result in f.b.ingest(&bytes(&[one, two, three])).unwrap() {
        result.unwrap();
    }
    assert!(matches!(
        f.b.ingest(&bytes(&[&f.forks[0]])).unwrap()[0],
        Err(basic_store::IngestError::ForkBelowCutoff { .. })
    ));
    assert_eq!(list_ids(&f.b), kept());
}

/// Forks stored before the end arrived are rejected when it does, like
/// commits after the cut-off; sync neither counts nor serves them.
#[test]
fn stored_forks_are_rejected_when_the_end_arrives() {
    let f = forked();
    let [one, two, three] = &f.chain;
    let [f1, f2, g2] = &f.forks;
    for result in f.b.ingest(&bytes(&[one, two, three, f1, f2, g2])).unwrap() {
        result.unwrap();
    }
    assert_eq!(list_ids(&f.b).len(), 6);
    f.a.revoke(f.app.public(), basic_proto::Name::new("todo").unwrap()).unwrap();
    f.b.ingest_ops(&f.a.control_ops().unwrap()).unwrap();
    assert_eq!(list_ids(&f.b), kept());
    assert_eq!(app_entry(&f.b, &f.app), Some((3, 3)));
    LocalLink::new(&f.a, &f.b).unwrap().run(&f.a, &f.b, 0).unwrap();
    for fork in &f.forks {
        assert!(f.a.replica().commit(&fork.id()).unwrap().is_none(), "a fork was served");
    }
    assert_eq!(app_entry(&f.a, &f.app), app_entry(&f.b, &f.app));
}

/// A stored commit whose chain is not held when the end arrives is set
/// aside, and taken back once sync brings the chain.
#[test]
fn a_commit_set_aside_for_want_of_its_chain_comes_back_with_it() {
    let f = forked();
    let [one, _, three] = &f.chain;
    for result in f.b.ingest(&bytes(&[one, three])).unwrap() {
        result.unwrap();
    }
    f.a.revoke(f.app.public(), basic_proto::Name::new("todo").unwrap()).unwrap();
    f.b.ingest_ops(&f.a.control_ops().unwrap()).unwrap();
    assert_eq!(list_ids(&f.b), [[Value::Text("three".into())]]);
    LocalLink::new(&f.a, &f.b).unwrap().run(&f.a, &f.b, 0).unwrap();
    assert_eq!(list_ids(&f.b), kept());
    assert_eq!(app_entry(&f.b, &f.app), Some((3, 3)));
}

/// An app's own replica of `database` (as the simulator's apps hold one),
/// holding the control operations `ops`.
fn app_replica(
    view_dir: &tempfile::TempDir,
    database: basic_proto::DatabaseId,
    app: &basic_proto::SecretKey,
    ops: &[Vec<u8>],
) -> Database<MemStore> {
    Database::replicate_with_store(
        MemStore::new(),
        &view_dir.path().join("view.sqlite"),
        database,
        app,
        ops,
        basic_store::Environment::system(),
    )
    .unwrap()
}

/// An app's replica holds only its scopes, so a removed device's chain may
/// pass through commits it never holds: it keeps the device's commits below
/// the cut-off that it cannot show to be forks (its peers, which hold every
/// scope, made the full check before serving them).
#[test]
fn an_app_replica_keeps_what_it_cannot_check_below_a_cut_off() {
    let (_a_dir, a, _b_dir, b) = two_devices();
    let notes = "namespace = \"notes\"\n[tables.items]\nprimary_key = [\"id\"]\ncolumns = { id = \"text\" }\n";
    a.apply_schema(Schema::parse(notes, basic_store::Format::Toml).unwrap()).unwrap();
    b.ingest_ops(&a.control_ops().unwrap()).unwrap();
    b.execute("INSERT INTO todo.lists (id, name) VALUES ('one', 'One')", &[], None).unwrap();
    b.execute("INSERT INTO todo.lists (id, name) VALUES ('two', 'Two')", &[], None).unwrap();
    b.execute("INSERT INTO notes.items (id) VALUES ('three')", &[], None).unwrap();
    LocalLink::new(&a, &b).unwrap().run(&a, &b, 0).unwrap();
    // The removal keeps b's log up to its third commit, in `notes`.
    a.remove_device(b.device()).unwrap();
    let app = basic_proto::SecretKey::from_seed([63; 32]);
    let todo = basic_proto::Name::new("todo").unwrap();
    a.grant(basic_proto::Party::of(&app), todo.clone(), Rights::ReadWrite).unwrap();
    let view_dir = tempfile::tempdir().unwrap();
    let app_db = app_replica(&view_dir, a.id(), &app, &a.control_ops().unwrap());
    let mut todo_commits: Vec<Commit> = b
        .replica()
        .commits()
        .map(Result::unwrap)
        .filter(|c| c.header().author == b.device() && Some(c.header().scope) == b.scope_id(&todo))
        .collect();
    todo_commits.sort_by_key(|c| c.header().seq);
    assert_eq!(todo_commits.len(), 2);
    let refs: Vec<&Commit> = todo_commits.iter().collect();
    for result in app_db.ingest(&bytes(&refs)).unwrap() {
        result.unwrap();
    }
    // A device, holding every scope, waits for the chain instead.
    let (_c_dir, c) = {
        let dir = tempfile::tempdir().unwrap();
        let invite = a.invite(vec![], 60_000).unwrap();
        let request = Database::prepare_join(dir.path(), &invite).unwrap();
        a.accept_join(&request).unwrap();
        let c = Database::finish_join(dir.path(), &a.control_ops().unwrap()).unwrap();
        (dir, c)
    };
    assert!(matches!(
        c.ingest(&bytes(&refs[..1])).unwrap()[0],
        Err(basic_store::IngestError::ChainNotHeld { .. })
    ));
}

/// A device's commit that is applied but not yet on disk must not reach a
/// peer: if the device crashed then, it would sign a different commit at
/// the same seq after the restart, and the peer would hold a fork of its
/// log. The store below holds every flush open until the test releases it;
/// a sync read made meanwhile must either not see the new commit, or wait
/// until the flush has returned.
#[test]
fn sync_never_serves_a_commit_before_it_is_on_disk() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};

    use basic_store::DeviceStore;
    use basic_store::{Batch, Store, StoreError};

    struct HeldFlush {
        inner: DeviceStore,
        armed: Arc<AtomicBool>,
        entered: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
        flushed: Arc<AtomicBool>,
    }

    impl Store for HeldFlush {
        crate::common::store_reads_from!(inner);

        fn apply(&self, batch: Batch) -> Result<(), StoreError> {
            self.inner.apply(batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            if self.armed.swap(false, Ordering::SeqCst) {
                self.entered.lock().unwrap().send(()).unwrap();
                self.release.lock().unwrap().recv().unwrap();
                self.inner.flush()?;
                self.flushed.store(true, Ordering::SeqCst);
                return Ok(());
            }
            self.inner.flush()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let armed = Arc::new(AtomicBool::new(false));
    let flushed = Arc::new(AtomicBool::new(false));
    let store = HeldFlush {
        inner: DeviceStore::open(&dir.path().join("replica"), 1 << 24).unwrap(),
        armed: Arc::clone(&armed),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
        flushed: Arc::clone(&flushed),
    };
    let db = Database::with_store(store, &dir.path().join("view.sqlite")).unwrap();
    db.apply_schema(todo_schema()).unwrap();
    insert(&db, "before");
    let device = db.device();
    let max_seq = |entries: &[basic_proto::sync::Entry]| {
        entries.iter().find(|e| e.author == device).map_or(0, |e| e.max)
    };
    let before = max_seq(&SyncReplica::new(&db).entries(&View::All).unwrap());

    armed.store(true, Ordering::SeqCst);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| insert(&db, "unsettled"));
        // The new commit is applied, its flush is held open.
        entered.recv().unwrap();
        let reader = scope.spawn(|| {
            let replica = SyncReplica::new(&db);
            let entries = replica.entries(&View::All).unwrap();
            let mut served = Vec::new();
            replica
                .commits(&View::All, &device, before + 1, u64::MAX, usize::MAX, &mut served)
                .unwrap();
            (max_seq(&entries), served.len(), flushed.load(Ordering::SeqCst))
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        release.send(()).unwrap();
        let (seen, served, on_disk) = reader.join().unwrap();
        writer.join().unwrap();
        assert!(
            on_disk || (seen == before && served == 0),
            "sync saw seq {seen} (before: {before}) and served {served} commits while the \
             write was not yet on disk"
        );
    });
}

#[test]
fn a_pinning_peer_takes_an_apps_commits_from_the_app_itself() {
    let (_a_dir, a, _b_dir, b) = two_devices();
    a.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", &[], None).unwrap();
    let pinner_key = basic_proto::SecretKey::from_seed([78; 32]);
    a.add_pinner(pinner_key.public()).unwrap();
    let app_key = basic_proto::SecretKey::from_seed([79; 32]);
    a.grant(
        basic_proto::Party::of(&app_key),
        basic_proto::Name::new("todo").unwrap(),
        basic_proto::control::Rights::ReadWrite,
    )
    .unwrap();
    let (pinner_view, app_view) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pinner = app_replica(&pinner_view, a.id(), &pinner_key, &a.control_ops().unwrap());
    let app = app_replica(&app_view, a.id(), &app_key, &a.control_ops().unwrap());
    LocalLink::new(&app, &a).unwrap().run(&app, &a, 0).unwrap();
    LocalLink::new(&a, &pinner).unwrap().run(&a, &pinner, 0).unwrap();
    // The app writes; the pinning peer pulls it from the app, the other
    // device from the pinning peer.
    app.execute("INSERT INTO todo.items (id, list, title) VALUES ('e', 'home', 'eggs')", &[], None)
        .unwrap();
    let run = LocalLink::new(&pinner, &app).unwrap().run(&pinner, &app, 0).unwrap();
    assert!(run.received >= 1, "{run:?}");
    assert_eq!(
        pinner.replica().log(&app_key.public()).unwrap().len(),
        app.replica().log(&app_key.public()).unwrap().len(),
        "the pinning peer holds the app's log"
    );
    LocalLink::new(&b, &pinner).unwrap().run(&b, &pinner, 0).unwrap();
    assert!(titles(&b).iter().any(|row| row[1] == Value::Text("eggs".into())), "{:?}", titles(&b));
}
