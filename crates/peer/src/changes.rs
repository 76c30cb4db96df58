//! The database's change signal, for async sessions: a thread waits on
//! [`Database::watch_changes`] and bumps a [`watch`] counter that every
//! session follows.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use basic_store::{Database, Store};
use tokio::sync::watch;

/// How often the thread checks whether anyone still follows.
const POLL: Duration = Duration::from_millis(500);

/// A counter bumped after every durable change to `db`. The thread ends
/// once every receiver is gone.
pub(super) fn watch<S: Store>(db: &Database<S>) -> std::io::Result<watch::Receiver<u64>> {
    let signals = db.watch_changes();
    let (counter, receiver) = watch::channel(0u64);
    std::thread::Builder::new().name("basic-changes".into()).spawn(move || {
        loop {
            match signals.recv_timeout(POLL) {
                Ok(()) => counter.send_modify(|n| *n = n.wrapping_add(1)),
                Err(RecvTimeoutError::Timeout) if counter.is_closed() => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    })?;
    Ok(receiver)
}
