//! The scope keys this replica holds, by scope and epoch.
//!
//! Derived from the control log: every key sealed to this device that it
//! could open ([`crate::database::Database::auth_state`]).

use std::collections::BTreeMap;

use basic_proto::{ScopeId, ScopeKey};

use crate::replica::Keyring;

/// Every key epoch of every scope this replica can read. An epoch usually
/// has one key; concurrent rotations can give it several, in the order the
/// control log lists them (the first is the one writers use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeKeys {
    keys: BTreeMap<(ScopeId, u32), Vec<ScopeKey>>,
}

impl ScopeKeys {
    /// Adds a key of `scope` at `epoch` (after any it already has).
    pub fn insert(&mut self, scope: ScopeId, epoch: u32, key: ScopeKey) {
        let keys = self.keys.entry((scope, epoch)).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    /// The newest epoch of `scope` and its writing key: what new commits use.
    pub fn current(&self, scope: &ScopeId) -> Option<(u32, &ScopeKey)> {
        self.keys
            .range((*scope, 0)..=(*scope, u32::MAX))
            .rev()
            .find_map(|((_, epoch), keys)| keys.first().map(|key| (*epoch, key)))
    }

    /// Every key, by scope and epoch.
    pub fn iter(&self) -> impl Iterator<Item = (&ScopeId, u32, &ScopeKey)> {
        self.keys
            .iter()
            .flat_map(|((scope, epoch), keys)| keys.iter().map(move |key| (scope, *epoch, key)))
    }
}

impl Keyring for ScopeKeys {
    fn scope_keys(&self, scope: &ScopeId, epoch: u32) -> Vec<ScopeKey> {
        self.keys.get(&(*scope, epoch)).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_epoch_is_current() {
        let mut keys = ScopeKeys::default();
        let todo = ScopeId([1; 16]);
        keys.insert(todo, 0, ScopeKey::from_bytes([1; 32]));
        keys.insert(todo, 2, ScopeKey::from_bytes([2; 32]));
        keys.insert(ScopeId([2; 16]), 9, ScopeKey::from_bytes([3; 32]));
        assert_eq!(
            keys.current(&todo).map(|(e, k)| (e, k.clone())),
            Some((2, ScopeKey::from_bytes([2; 32])))
        );
        assert_eq!(keys.current(&ScopeId([3; 16])), None);
        // A second key of one epoch (concurrent rotations) is kept, after the first.
        keys.insert(todo, 2, ScopeKey::from_bytes([4; 32]));
        assert_eq!(keys.scope_keys(&todo, 2).len(), 2);
        assert_eq!(
            keys.current(&todo).map(|(_, k)| k.clone()),
            Some(ScopeKey::from_bytes([2; 32]))
        );
    }
}
