//! Telling a principal that it was shut out (`control-log.md` §9.5): a
//! removed device, or an app whose every grant was revoked. Its peers
//! refuse it as a member, which tells it nothing (a stranger hears the
//! same), so a peer that holds the operations tells it, in `push` frames
//! its driver sends on the session it answers us on (the node's, the
//! client's and the simulator's drivers alike).

use basic_proto::PublicKey;
use basic_proto::control::{AuthState, OpId};
use basic_proto::sync::entitled_view;
use basic_proto::sync::message::{MAX_BATCH_BYTES, Message};

use crate::database::Database;
use crate::storage::kv::Store;

/// The operations that shut `key` out: the removal of a device, or the
/// revocations of every grant of an app that holds none any more. Empty
/// if `key` is still a member, or never was.
fn shutting_out(state: &AuthState, key: &PublicKey) -> Vec<OpId> {
    if let Some(device) = state.devices().get(key) {
        return device.removed.iter().map(|end| end.by).collect();
    }
    if entitled_view(state, key).is_some() {
        return Vec::new();
    }
    state
        .apps()
        .get(key)
        .map(|app| {
            app.scopes.values().filter_map(|grant| grant.revoked.map(|end| end.by)).collect()
        })
        .unwrap_or_default()
}

/// Whether `key` is a device the control log removed, or an app it
/// revoked on every scope.
pub fn is_shut_out(state: &AuthState, key: &PublicKey) -> bool {
    !shutting_out(state, key).is_empty()
}

/// What tells `key` that it was shut out: `push` frames of at most
/// [`MAX_BATCH_BYTES`] of operations each, carrying the operations that
/// did it with their causal past — what they were made on, never an
/// operation made after them — in canonical order (parents first). None
/// if `key` was not shut out.
pub fn shut_out_notice<S: Store>(db: &Database<S>, key: &PublicKey) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    for op in shutting_out_ops(db, key) {
        if !batch.is_empty()
            && batch.iter().map(Vec::len).sum::<usize>() + op.len() > MAX_BATCH_BYTES
        {
            frames.push(std::mem::take(&mut batch));
        }
        batch.push(op);
    }
    frames.push(batch);
    frames
        .into_iter()
        .filter(|ops| !ops.is_empty())
        .map(|ops| Message::Push { ops, commits: Vec::new() }.encode())
        .collect()
}

/// The operations that shut `key` out, with their causal past, encoded.
fn shutting_out_ops<S: Store>(db: &Database<S>, key: &PublicKey) -> Vec<Vec<u8>> {
    // The state first: it is published before the log it comes from.
    let ends = shutting_out(&db.auth_state(), key);
    if ends.is_empty() {
        return Vec::new();
    }
    let log = db.control_log();
    let mut past = std::collections::BTreeSet::new();
    let mut next = ends;
    while let Some(id) = next.pop() {
        if past.insert(id)
            && let Some(op) = log.get(&id)
        {
            next.extend(op.body().parents.iter().copied());
        }
    }
    log.ordered()
        .into_iter()
        .filter(|op| past.contains(&op.id()))
        .map(|op| op.as_bytes().to_vec())
        .collect()
}
