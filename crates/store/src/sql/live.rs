//! Live queries: a subscriber registers a `SELECT` and receives its result
//! each time it changes.
//!
//! After every group commit the writer sends the set of tables it changed;
//! the live thread re-runs each subscription that reads one of them and
//! sends the result if it differs from the last one sent. A subscriber that
//! falls behind sees only the newest result: results are never queued.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use basic_proto::{Name, Value};

use crate::database::DbError;
use crate::sql::query::{QueryError, Rows};
use crate::sql::view::Reach;

/// Why a live query ended on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// A re-run went past the statement budget: the query was ended so
    /// that it cannot hold the live thread again.
    #[error(
        "the live query ran past its budget of {0:?} when run again after a change, and was ended: narrow it (WHERE, LIMIT, an index)"
    )]
    Timeout(Duration),
}

/// What the subscriber has not taken yet.
#[derive(Debug, Default)]
struct Pending {
    newest: Option<Rows>,
    ended: Option<LiveError>,
}

/// The newest result not yet taken by the subscriber.
#[derive(Debug, Default)]
struct Slot {
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl Slot {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, rows: Rows) {
        self.pending().newest = Some(rows);
        self.ready.notify_all();
    }

    fn end(&self, error: LiveError) {
        self.pending().ended = Some(error);
        self.ready.notify_all();
    }
}

/// A live query's results: the first one at once, then the newest after
/// each change. Dropping it ends the subscription.
#[derive(Debug)]
pub struct Subscription {
    slot: Arc<Slot>,
}

impl Subscription {
    /// The next result, waiting at most `timeout`; `None` if nothing
    /// changed (or the query ended: see [`Subscription::ended`]).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Rows> {
        let guard = self.slot.pending();
        let (mut guard, _) = self
            .slot
            .ready
            .wait_timeout_while(guard, timeout, |p| p.newest.is_none() && p.ended.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.newest.take()
    }

    /// The next result if one is waiting.
    pub fn try_recv(&self) -> Option<Rows> {
        self.slot.pending().newest.take()
    }

    /// Why the query ended, if it did: it sends nothing more.
    pub fn ended(&self) -> Option<LiveError> {
        self.slot.pending().ended.clone()
    }
}

struct Entry {
    sql: String,
    params: Vec<Value>,
    tables: BTreeSet<Name>,
    reach: Arc<Reach>,
    last: Mutex<Rows>,
    slot: Weak<Slot>,
}

/// How the live thread runs a checked `SELECT` for a caller's reach.
pub(crate) type Runner = dyn Fn(&str, &[Value], &Arc<Reach>) -> Result<Rows, DbError> + Send;

/// The registry of live queries and the thread that refreshes them.
pub(crate) struct Live {
    entries: Arc<Mutex<Vec<Arc<Entry>>>>,
    changes: Option<Sender<BTreeSet<Name>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Starts the live thread; `run` runs a checked `SELECT` within a
    /// reach (and the statement budget). The thread ends when every
    /// [`Live::notifier`] and the `Live` itself are dropped.
    pub(crate) fn start(run: Box<Runner>) -> Self {
        let entries: Arc<Mutex<Vec<Arc<Entry>>>> = Arc::new(Mutex::new(Vec::new()));
        let (changes, incoming) = mpsc::channel::<BTreeSet<Name>>();
        let registry = Arc::clone(&entries);
        let thread = std::thread::Builder::new().name("basic-live".into()).spawn(move || {
            while let Ok(mut changed) = incoming.recv() {
                // Coalesce everything that arrived meanwhile.
                while let Ok(more) = incoming.try_recv() {
                    changed.extend(more);
                }
                refresh(&registry, &changed, &run);
            }
        });
        Self { entries, changes: Some(changes), thread: thread.ok() }
    }

    /// Where the writer sends the tables each group commit changed.
    pub(crate) fn notifier(&self) -> Option<Sender<BTreeSet<Name>>> {
        self.changes.clone()
    }

    /// Registers a live query whose current result is `first`; it runs
    /// again within `reach`.
    pub(crate) fn subscribe(
        &self,
        sql: String,
        params: Vec<Value>,
        tables: BTreeSet<Name>,
        reach: Arc<Reach>,
        first: Rows,
    ) -> Subscription {
        let slot = Arc::new(Slot::default());
        slot.put(first.clone());
        let entry = Entry {
            sql,
            params,
            tables,
            reach,
            last: Mutex::new(first),
            slot: Arc::downgrade(&slot),
        };
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::new(entry));
        Subscription { slot }
    }
}

impl Drop for Live {
    /// Waits for the live thread, which ends once every notifier is gone.
    fn drop(&mut self) {
        self.changes = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs again every live query that reads a `changed` table. The registry
/// is locked only to pick them, not while they run, so subscribing never
/// waits for a query.
fn refresh(entries: &Mutex<Vec<Arc<Entry>>>, changed: &BTreeSet<Name>, run: &Runner) {
    let due: Vec<Arc<Entry>> = {
        let mut entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|entry| entry.slot.strong_count() > 0);
        entries.iter().filter(|e| !e.tables.is_disjoint(changed)).cloned().collect()
    };
    let mut ended = Vec::new();
    for entry in due {
        let Some(slot) = entry.slot.upgrade() else { continue };
        match run(&entry.sql, &entry.params, &entry.reach) {
            Ok(rows) => {
                let mut last = entry.last.lock().unwrap_or_else(PoisonError::into_inner);
                if rows != *last {
                    *last = rows.clone();
                    slot.put(rows);
                }
            }
            Err(DbError::Query(QueryError::Timeout(budget))) => {
                slot.end(LiveError::Timeout(budget));
                ended.push(entry);
            }
            // A query that fails now (its table changed shape) keeps its last result.
            Err(_) => {}
        }
    }
    if !ended.is_empty() {
        let mut entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|entry| !ended.iter().any(|e| Arc::ptr_eq(e, entry)));
    }
}
