//! The scope keys this replica holds, by scope and epoch.
//!
//! Until the control log distributes keys (sealed to each device and app),
//! a device creates epoch 0 of a scope's key when it first applies the
//! scope's schema. Keys are kept in the replica's metadata.

use std::collections::BTreeMap;

use basic_proto::codec::{self, Fields};
use basic_proto::{Name, ScopeKey};
use ciborium::Value as Cbor;

use crate::kv::StoreError;
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

    /// Encodes for storage: `[* [scope, epoch, key]]`.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(
            self.keys
                .iter()
                .map(|((scope, epoch), key)| {
                    Cbor::Array(vec![
                        Cbor::Text(scope.as_str().to_owned()),
                        Cbor::Integer((*epoch).into()),
                        Cbor::Bytes(key.as_bytes().to_vec()),
                    ])
                })
                .collect(),
        ))
    }

    /// Decodes what [`ScopeKeys::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |e: codec::DecodeError| StoreError::Corrupt {
            what: "scope keys",
            reason: e.to_string(),
        };
        let items = codec::as_array(
            codec::parse(bytes, "keys", usize::MAX).map_err(corrupt)?,
            "keys",
            0,
            usize::MAX,
        )
        .map_err(corrupt)?;
        let mut keys = ScopeKeys::default();
        for item in items {
            let mut fields = Fields::new(item, "key", 3).map_err(corrupt)?;
            let scope = fields.text("key.scope", 1, 64).map_err(corrupt)?;
            let scope = Name::new(scope)
                .map_err(|e| StoreError::Corrupt { what: "scope keys", reason: e.to_string() })?;
            let epoch =
                u32::try_from(fields.uint("key.epoch").map_err(corrupt)?).map_err(|_| {
                    StoreError::Corrupt { what: "scope keys", reason: "epoch over 2^32-1".into() }
                })?;
            keys.insert(
                scope,
                epoch,
                ScopeKey::from_bytes(fields.fixed("key.bytes").map_err(corrupt)?),
            );
        }
        Ok(keys)
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
    fn newest_epoch_is_current_and_encoding_round_trips() {
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
        assert_eq!(ScopeKeys::decode(&keys.encode()).unwrap(), keys);
    }
}
