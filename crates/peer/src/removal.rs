//! Telling a principal that it was shut out (`control-log.md` §9.5): a
//! removed device, or an app whose every grant was revoked. Its peers
//! refuse it as a member, which tells it nothing (a stranger hears the
//! same), so a peer that holds the operations tells it.

use basic_proto::control::{AuthState, OpId};
use basic_proto::{PublicKey, sync::entitled_view};
use basic_store::{Database, Store};

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

/// What tells `key` that it was shut out: the operations that did it,
/// with their causal past — what they were made on, never an operation
/// made after them — encoded, in canonical order (parents first). Empty
/// if `key` was not shut out.
pub fn shut_out_notice<S: Store>(db: &Database<S>, key: &PublicKey) -> Vec<Vec<u8>> {
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
