//! A group whose flush has not returned is invisible to readers and
//! unanswered, even while the next group runs ahead of it on the writer.
//!
//! The store under the database lets each apply and each flush through
//! only when the test allows it, so a group can be held applied and not
//! durable while the next one is planned against it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use basic_proto::control::Rights;
use basic_proto::{Changes, KeyPart, Name, Party, RowKey, RowOp, SecretKey, Value};
use basic_store::{
    Batch, Database, DbError, Executed, IngestError, Inserted, LogWriter, MemStore, Outcome,
    Schema, Store, StoreError,
};

/// How many applies and flushes may still pass, and who flushed.
#[derive(Default)]
struct Permits {
    applies: usize,
    flushes: usize,
    /// The name of each thread that flushed, in order.
    flushed_on: Vec<String>,
    /// The next flush fails.
    fail_flush: bool,
    /// Keys whose reads wait until they are released.
    held_reads: Vec<Vec<u8>>,
}

/// A [`MemStore`] whose applies and flushes wait for permits.
#[derive(Clone)]
struct Gated {
    inner: Arc<MemStore>,
    permits: Arc<(Mutex<Permits>, Condvar)>,
    /// Calls waiting for a permit.
    waiting: Arc<AtomicUsize>,
}

impl Gated {
    fn new() -> Self {
        let permits = Permits { applies: usize::MAX, flushes: usize::MAX, ..Permits::default() };
        Self {
            inner: Arc::new(MemStore::new()),
            permits: Arc::new((Mutex::new(permits), Condvar::new())),
            waiting: Arc::default(),
        }
    }

    fn allow(&self, applies: usize, flushes: usize) {
        let (permits, changed) = &*self.permits;
        let mut permits = permits.lock().unwrap();
        (permits.applies, permits.flushes) = (applies, flushes);
        changed.notify_all();
    }

    /// Holds every read of each of `keys` until [`Gated::release_read`].
    fn hold_reads(&self, keys: &[Vec<u8>]) {
        self.permits.0.lock().unwrap().held_reads.extend_from_slice(keys);
    }

    fn release_read(&self, key: &[u8]) {
        let (permits, changed) = &*self.permits;
        permits.lock().unwrap().held_reads.retain(|held| held != key);
        changed.notify_all();
    }

    /// Waits while reads of `key` are held (a `get`'s hook).
    fn wait_for_read(&self, key: &[u8]) {
        let (permits, changed) = &*self.permits;
        let mut permits = permits.lock().unwrap();
        if !permits.held_reads.iter().any(|held| held == key) {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while permits.held_reads.iter().any(|held| held == key) {
            permits = changed.wait(permits).unwrap();
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn fail_next_flush(&self) {
        self.permits.0.lock().unwrap().fail_flush = true;
    }

    fn flushed_on(&self) -> Vec<String> {
        self.permits.0.lock().unwrap().flushed_on.clone()
    }

    /// Waits until `calls` applies or flushes wait for a permit.
    fn until_waiting(&self, calls: usize) {
        for _ in 0..2_000 {
            if self.waiting.load(Ordering::SeqCst) >= calls {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{calls} calls never waited for a permit");
    }

    /// Takes one permit of the kind `pick` chooses, waiting for it.
    fn take(
        &self,
        pick: impl Fn(&mut Permits) -> &mut usize,
    ) -> std::sync::MutexGuard<'_, Permits> {
        let (permits, changed) = &*self.permits;
        let mut permits = permits.lock().unwrap();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while *pick(&mut permits) == 0 {
            permits = changed.wait(permits).unwrap();
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        *pick(&mut permits) -= 1;
        permits
    }
}

impl Store for Gated {
    crate::common::store_reads_from!(inner, before_get: wait_for_read);

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        drop(self.take(|p| &mut p.applies));
        self.inner.apply(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut permits = self.take(|p| &mut p.flushes);
        let name = std::thread::current().name().unwrap_or("unnamed").to_owned();
        permits.flushed_on.push(name);
        if std::mem::take(&mut permits.fail_flush) {
            let source = std::io::Error::other("the disk is gone");
            return Err(StoreError::Sync { path: "gated".into(), source });
        }
        self.inner.flush()
    }
}

/// A database with the todo schema and one list, on a gated store (all
/// permits given), in a directory kept while the first element lives.
fn gated_todo() -> (tempfile::TempDir, Gated, Arc<Database<Gated>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Gated::new();
    let db = todo(&store, dir.path());
    (dir, store, db)
}

fn todo(store: &Gated, dir: &Path) -> Arc<Database<Gated>> {
    let db = Database::with_store(store.clone(), &dir.join("view.sqlite")).unwrap();
    let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
    db.apply_schema(Schema::from_file(schema).unwrap()).unwrap();
    db.execute("INSERT INTO todo.lists (id, name) VALUES ('l', 'L')", &[], None).unwrap();
    Arc::new(db)
}

fn spawn_write(
    db: &Arc<Database<Gated>>,
    sql: &'static str,
) -> JoinHandle<Result<Executed, DbError>> {
    let db = Arc::clone(db);
    std::thread::spawn(move || db.execute(sql, &[], None))
}

fn titles(db: &Database<Gated>) -> Vec<Value> {
    let sql = "SELECT title FROM todo.items ORDER BY id";
    db.query(sql, &[], None).unwrap().rows.into_iter().flatten().collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// Waits long enough for a write handed to another thread to be queued
/// behind the one the writer holds (the test then checks it ran ahead).
fn let_it_queue() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Holds the group of `first` applied and not flushed, with the writes
/// `behind` queued after it and run ahead of its flush, which waits.
fn run_ahead<const N: usize>(
    db: &Arc<Database<Gated>>,
    store: &Gated,
    first: &'static str,
    behind: [&'static str; N],
) -> (Write, [Write; N]) {
    store.allow(0, 0);
    let first = spawn_write(db, first);
    store.until_waiting(1);
    let behind = behind.map(|sql| {
        let write = spawn_write(db, sql);
        let_it_queue();
        write
    });
    store.allow(1, 0);
    store.until_waiting(1);
    let_it_queue();
    (first, behind)
}

type Write = JoinHandle<Result<Executed, DbError>>;

#[test]
fn a_write_planned_ahead_of_a_flush_is_seen_by_nobody_until_its_own_flush() {
    let (_dir, store, db) = gated_todo();
    let first = "INSERT INTO todo.items (id, list, title) VALUES ('i', 'l', 'a')";
    let behind = [
        // Planned against the first write's row, before that row is durable.
        "UPDATE todo.items SET title = title || '+b' WHERE id = 'i'",
        // Planned on the second's row, which is then in the view already.
        "INSERT INTO todo.items (id, list, title) SELECT 'j', 'l', title || '+c' FROM todo.items WHERE id = 'i'",
    ];
    let (first, [second, third]) = run_ahead(&db, &store, first, behind);
    assert!(titles(&db).is_empty(), "a row before its flush returned");
    let answered = [&first, &second, &third].map(|w| w.is_finished());
    assert_eq!(answered, [false; 3], "answered before durable");

    store.allow(0, 1);
    assert!(matches!(first.join().unwrap(), Ok(Executed::Written(_))));
    assert_eq!(titles(&db), vec![text("a")], "only the first write is durable");
    assert!(!second.is_finished() && !third.is_finished());

    store.allow(1, 1);
    for write in [second, third] {
        assert!(matches!(write.join().unwrap(), Ok(Executed::Written(_))));
    }
    assert_eq!(titles(&db), vec![text("a+b"), text("a+b+c")]);
    let flushed = store.flushed_on();
    assert_eq!(flushed[flushed.len() - 2], "basic-sync", "the first flush ran beside the writer");
}

/// Commits of an app granted on `db`'s todo scope, one per `(id, title)`
/// item it writes.
fn received_commits(db: &Database<Gated>, items: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let app = SecretKey::from_seed([7; 32]);
    db.grant(Party::of(&app), Name::new("todo").unwrap(), Rights::ReadWrite).unwrap();
    let todo = db.scope_id(&Name::new("todo").unwrap()).unwrap();
    let key = db.auth_state().scope_keys(&app, &todo, 0).remove(0);
    let mut log = LogWriter::new(app, db.id());
    let item = |id: &str, title: &str| RowOp::Upsert {
        table: Name::new("todo.items").unwrap(),
        key: RowKey::single(KeyPart::Text(id.into())),
        generation: 1,
        cells: [("list", text("l")), ("title", text(title))]
            .into_iter()
            .map(|(c, v)| (Name::new(c).unwrap(), v))
            .collect(),
    };
    items
        .iter()
        .map(|&(id, title)| {
            let op = item(id, title);
            let changes = Changes::new(vec![op]).unwrap();
            // Stamped a second ahead (well within the clock skew taken):
            // after the write they race, which they then win.
            let now = basic_store::now_ms() + 1_000;
            let commit = log.write(&todo, 0, &key, &changes, now, &mut rand::rng()).unwrap();
            commit.as_bytes().to_vec()
        })
        .collect()
}

#[test]
fn received_commits_merged_ahead_of_a_flush_are_seen_by_nobody_until_their_own_flush() {
    let (_dir, store, db) = gated_todo();
    let received = received_commits(&db, &[("i", "a from the app"), ("j", "b from the app")]);
    let (first, ingest) = ingest_behind_a_write(&db, &store, received, &[]);
    store.until_waiting(1);
    let_it_queue();
    // The flush of the write's group waits; the batch was merged meanwhile.
    assert!(titles(&db).is_empty(), "a row before its flush returned");
    assert!(!first.is_finished() && !ingest.is_finished(), "answered before durable");

    store.allow(0, 1);
    assert!(matches!(first.join().unwrap(), Ok(Executed::Written(_))));
    assert_eq!(titles(&db), vec![text("a")], "only the write is durable");
    assert!(!ingest.is_finished());

    store.allow(1, 1);
    let results = ingest.join().unwrap().unwrap();
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|r| r.outcome == Outcome::Applied)));
    assert_eq!(titles(&db), vec![text("a from the app"), text("b from the app")]);
    let flushed = store.flushed_on();
    assert_eq!(flushed[flushed.len() - 2], "basic-sync", "the write's flush ran beside the writer");
}

type Ingest = JoinHandle<Result<Vec<Result<Inserted, IngestError>>, DbError>>;

/// Queues `received` behind a write of item `i` held at its apply, with
/// reads of `held` keys held, then lets the write's group apply: the
/// batch may then run ahead of its flush, which waits for a permit.
fn ingest_behind_a_write(
    db: &Arc<Database<Gated>>,
    store: &Gated,
    received: Vec<Vec<u8>>,
    held: &[Vec<u8>],
) -> (Write, Ingest) {
    store.allow(0, 0);
    let first = spawn_write(db, "INSERT INTO todo.items (id, list, title) VALUES ('i', 'l', 'a')");
    store.until_waiting(1);
    store.hold_reads(held);
    let ingest = {
        let db = Arc::clone(db);
        std::thread::spawn(move || db.ingest(&received))
    };
    let_it_queue();
    store.allow(1, 0);
    (first, ingest)
}

/// The storage key of todo item `id`'s row state.
fn item_key(id: &str) -> Vec<u8> {
    let table = Name::new("todo.items").unwrap();
    basic_store::storage::layout::row(&table, &RowKey::single(KeyPart::Text(id.into())))
}

#[test]
fn a_batch_running_ahead_settles_the_group_before_it_between_two_commits() {
    let (_dir, store, db) = gated_todo();
    let items = [("i", "a from the app"), ("j", "b"), ("k", "c")];
    let received = received_commits(&db, &items);
    // The batch's merge stops at its second commit, then at its third.
    let held = [item_key("j"), item_key("k")];
    let (first, ingest) = ingest_behind_a_write(&db, &store, received, &held);
    store.until_waiting(2);
    assert!(!first.is_finished(), "answered before its flush");

    store.allow(0, 1);
    let_it_queue();
    store.release_read(&item_key("j"));
    // Now held at the third commit: the write was answered meanwhile.
    for _ in 0..400 {
        if first.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(first.is_finished(), "the write waited for the whole batch's merge");
    assert!(matches!(first.join().unwrap(), Ok(Executed::Written(_))));
    assert_eq!(titles(&db), vec![text("a")], "only the write is durable");
    assert!(!ingest.is_finished());

    store.release_read(&item_key("k"));
    store.allow(1, 1);
    let results = ingest.join().unwrap().unwrap();
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|r| r.outcome == Outcome::Applied)));
    assert_eq!(titles(&db), vec![text("a from the app"), text("b"), text("c")]);
}

#[test]
fn a_failed_flush_fails_the_group_running_ahead_and_shows_neither() {
    let (_dir, store, db) = gated_todo();
    let first = "INSERT INTO todo.items (id, list, title) VALUES ('i', 'l', 'a')";
    let behind = ["INSERT INTO todo.items (id, list, title) VALUES ('j', 'l', 'b')"];
    let (first, [second]) = run_ahead(&db, &store, first, behind);
    store.fail_next_flush();
    store.allow(usize::MAX, usize::MAX);
    assert!(matches!(first.join().unwrap(), Err(DbError::Stopped(_))));
    assert!(matches!(second.join().unwrap(), Err(DbError::Stopped(_))));
    assert!(titles(&db).is_empty(), "nothing of a group whose flush failed is shown");
    let later =
        db.execute("INSERT INTO todo.items (id, list, title) VALUES ('k', 'l', 'c')", &[], None);
    assert!(matches!(later, Err(DbError::Stopped(_))), "the writer stopped: {later:?}");
}
