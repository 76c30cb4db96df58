//! Telling a removed device that it was removed (`control-log.md` §9.5).

use basic_proto::PublicKey;
use basic_proto::control::AuthState;
use basic_store::{Database, Store};

/// Whether `key` is a device the control log removed.
pub fn is_removed_device(state: &AuthState, key: &PublicKey) -> bool {
    state.devices().get(key).is_some_and(|device| device.removed.is_some())
}

/// What tells a removed device that it was removed: the removal whose end
/// holds, with its causal past — what its remover had seen, never an
/// operation made after it — encoded, in canonical order (parents first).
/// Empty if `device` is not removed.
pub fn removal_notice<S: Store>(db: &Database<S>, device: &PublicKey) -> Vec<Vec<u8>> {
    // The state first: it is published before the log it comes from.
    let Some(end) = db.auth_state().devices().get(device).and_then(|d| d.removed) else {
        return Vec::new();
    };
    let log = db.control_log();
    let mut past = std::collections::BTreeSet::new();
    let mut next = vec![end.by];
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
