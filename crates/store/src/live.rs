//! Live queries: a subscriber registers a `SELECT` and receives its result
//! each time it changes.
//!
//! After every group commit the writer sends the set of tables it changed;
//! the live thread re-runs each subscription that reads one of them and
//! sends the result if it differs from the last one sent. A subscriber that
//! falls behind sees only the newest result: results are never queued.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

use basic_proto::{Name, Value};

use crate::query::Rows;

/// The newest result not yet taken by the subscriber.
#[derive(Debug, Default)]
struct Slot {
    newest: Mutex<Option<Rows>>,
    ready: Condvar,
}

impl Slot {
    fn put(&self, rows: Rows) {
        *self.newest.lock().unwrap_or_else(PoisonError::into_inner) = Some(rows);
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
    /// The next result, waiting at most `timeout`; `None` if nothing changed.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Rows> {
        let guard = self.slot.newest.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut guard, _) = self
            .slot
            .ready
            .wait_timeout_while(guard, timeout, |newest| newest.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.take()
    }

    /// The next result if one is waiting.
    pub fn try_recv(&self) -> Option<Rows> {
        self.slot.newest.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

struct Entry {
    sql: String,
    params: Vec<Value>,
    tables: BTreeSet<Name>,
    last: Rows,
    slot: Weak<Slot>,
}

/// The registry of live queries and the thread that refreshes them.
pub struct Live {
    entries: Arc<Mutex<Vec<Entry>>>,
    changes: Option<Sender<BTreeSet<Name>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Starts the live thread; `run` runs a checked `SELECT` (`None` if it
    /// fails). The thread ends when every [`Live::notifier`] and the `Live`
    /// itself are dropped.
    pub fn start(run: impl Fn(&str, &[Value]) -> Option<Rows> + Send + 'static) -> Self {
        let entries: Arc<Mutex<Vec<Entry>>> = Arc::new(Mutex::new(Vec::new()));
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
    pub fn notifier(&self) -> Option<Sender<BTreeSet<Name>>> {
        self.changes.clone()
    }

    /// Registers a live query whose current result is `first`.
    pub fn subscribe(
        &self,
        sql: String,
        params: Vec<Value>,
        tables: BTreeSet<Name>,
        first: Rows,
    ) -> Subscription {
        let slot = Arc::new(Slot::default());
        slot.put(first.clone());
        let entry = Entry { sql, params, tables, last: first, slot: Arc::downgrade(&slot) };
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).push(entry);
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

fn refresh(
    entries: &Mutex<Vec<Entry>>,
    changed: &BTreeSet<Name>,
    run: &impl Fn(&str, &[Value]) -> Option<Rows>,
) {
    let mut entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
    entries.retain_mut(|entry| {
        let Some(slot) = entry.slot.upgrade() else { return false };
        if entry.tables.is_disjoint(changed) {
            return true;
        }
        // A query that fails now (its table changed shape) keeps its last result.
        if let Some(rows) = run(&entry.sql, &entry.params)
            && rows != entry.last
        {
            entry.last = rows.clone();
            slot.put(rows);
        }
        true
    });
}
