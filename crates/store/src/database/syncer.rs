//! Makes the writer's groups durable on a thread of their own: while one
//! group's flush (the log's `fdatasync`) runs there, the writer runs the
//! next group: writes and batches of received commits (D50, D51).

use std::sync::mpsc;
use std::thread::Scope;

use super::DbError;
use crate::replica::Replica;
use crate::storage::kv::{Store, StoreError};

/// The writer's side of the flushing thread.
pub(super) struct Syncer {
    /// One message per flush to run.
    request: mpsc::Sender<()>,
    /// One result per flush run, in order.
    done: mpsc::Receiver<Result<(), StoreError>>,
    /// The last flush's result, taken early by [`Syncer::is_done`].
    ready: Option<Result<(), StoreError>>,
}

impl Syncer {
    /// Starts the thread, within `scope` (which joins it after the writer
    /// drops this); `None` if no thread could be started.
    pub(super) fn start<'scope, S: Store>(
        scope: &'scope Scope<'scope, '_>,
        replica: &'scope Replica<S>,
    ) -> Option<Self> {
        let (request, requests) = mpsc::channel::<()>();
        let (finished, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("basic-sync".into())
            .spawn_scoped(scope, move || {
                for () in requests {
                    if finished.send(replica.flush()).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Self { request, done, ready: None })
    }

    /// Starts a flush of every batch applied so far; `false` if the thread
    /// is gone (the caller flushes itself).
    pub(super) fn begin(&self) -> bool {
        self.request.send(()).is_ok()
    }

    /// The result of the flush begun last, once it is known.
    pub(super) fn wait(&mut self) -> Result<(), DbError> {
        match self.ready.take() {
            Some(result) => Ok(result?),
            None => Ok(self.done.recv().map_err(|_| DbError::SyncStopped)??),
        }
    }

    /// Whether the flush begun last has returned.
    pub(super) fn is_done(&mut self) -> bool {
        if self.ready.is_none() {
            self.ready = self.done.try_recv().ok();
        }
        self.ready.is_some()
    }
}
