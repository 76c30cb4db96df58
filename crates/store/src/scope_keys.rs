//! The scope keys this replica holds, by scope and epoch.
//!
//! Derived from the control log: every key sealed to this device that it
//! could open ([`crate::database::Database::auth_state`]).

use std::collections::BTreeMap;

use basic_proto::{Name, ScopeKey};

use crate::replica::Keyring;

/// Every key epoch of every scope this replica can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeKeys {
    keys: BTreeMap<(Name, u32), ScopeKey>,
}

impl ScopeKeys {
    /// Adds a key.
    pub fn insert(&mut self, scope: Name, epoch: u32, key: ScopeKey) {
        self.keys.insert((scope, epoch), key);
    }

    /// The newest epoch of `scope` and its key: what new commits use.
    pub fn current(&self, scope: &Name) -> Option<(u32, &ScopeKey)> {
        self.keys
            .range((scope.clone(), 0)..=(scope.clone(), u32::MAX))
            .next_back()
            .map(|((_, epoch), key)| (*epoch, key))
    }

    /// Every key, by scope and epoch.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, u32, &ScopeKey)> {
        self.keys.iter().map(|((scope, epoch), key)| (scope, *epoch, key))
    }
}

impl Keyring for ScopeKeys {
    fn scope_key(&self, scope: &Name, epoch: u32) -> Option<ScopeKey> {
        self.keys.get(&(scope.clone(), epoch)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_epoch_is_current() {
        let mut keys = ScopeKeys::default();
        let todo = Name::new("todo").unwrap();
        keys.insert(todo.clone(), 0, ScopeKey::from_bytes([1; 32]));
        keys.insert(todo.clone(), 2, ScopeKey::from_bytes([2; 32]));
        keys.insert(Name::new("todos").unwrap(), 9, ScopeKey::from_bytes([3; 32]));
        assert_eq!(
            keys.current(&todo).map(|(e, k)| (e, k.clone())),
            Some((2, ScopeKey::from_bytes([2; 32])))
        );
        assert_eq!(keys.current(&Name::new("none").unwrap()), None);
    }
}
