//! Where a replica keeps its secrets: this device's key and, until the
//! user has written the recovery secret down, the root key.
//!
//! By default they are in the replica's identity record (a file readable
//! by its owner only). A program that can reach a platform keystore (the
//! Secret Service on Linux, the macOS Keychain, the Windows Credential
//! Manager) installs a [`SecretStore`] once, at start, with [`install`]:
//! from then on new secrets go there, the identity record names them
//! instead of holding them, and a record that still holds them is moved
//! there the next time the database is opened. A secret named by the record
//! but missing from the keystore is an error, never a new key.

use std::sync::{Arc, OnceLock};

/// Why the keystore failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("keystore: {0}")]
pub struct SecretError(pub String);

/// A keystore: 32-byte seeds by name.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// What it is, for people (`Secret Service`, `macOS Keychain`…).
    fn name(&self) -> &str;
    /// The seed stored under `name`, if any.
    fn get(&self, name: &str) -> Result<Option<[u8; 32]>, SecretError>;
    /// Stores `seed` under `name`, replacing any.
    fn put(&self, name: &str, seed: &[u8; 32]) -> Result<(), SecretError>;
    /// Removes what is stored under `name` (nothing stored is no error).
    fn delete(&self, name: &str) -> Result<(), SecretError>;
}

static INSTALLED: OnceLock<Arc<dyn SecretStore>> = OnceLock::new();

/// Makes `store` where this process keeps new secrets. Once per process;
/// a second call changes nothing and returns `false`.
pub fn install(store: Arc<dyn SecretStore>) -> bool {
    INSTALLED.set(store).is_ok()
}

/// The keystore installed, if any.
pub fn installed() -> Option<Arc<dyn SecretStore>> {
    INSTALLED.get().cloned()
}

/// What the identity record says of one secret, in place of its bytes.
pub(crate) const MARK: &str = "keystore:";

/// A keystore in memory, for tests.
#[derive(Debug, Default)]
pub struct MemSecrets {
    seeds: std::sync::Mutex<std::collections::BTreeMap<String, [u8; 32]>>,
}

impl MemSecrets {
    /// The names stored now.
    pub fn names(&self) -> Vec<String> {
        self.seeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }
}

impl SecretStore for MemSecrets {
    fn name(&self) -> &str {
        "memory"
    }

    fn get(&self, name: &str) -> Result<Option<[u8; 32]>, SecretError> {
        Ok(self.seeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).copied())
    }

    fn put(&self, name: &str, seed: &[u8; 32]) -> Result<(), SecretError> {
        self.seeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), *seed);
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.seeds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
        Ok(())
    }
}

/// The identity record's element for the secret `seed` called `name` (a
/// function: only asked for when a keystore is installed): where the
/// keystore keeps it, or the bytes themselves when no keystore is.
pub(crate) fn element(
    name: impl FnOnce() -> String,
    seed: &[u8; 32],
) -> Result<ciborium::Value, SecretError> {
    match installed() {
        Some(store) => {
            let name = name();
            store.put(&name, seed)?;
            Ok(ciborium::Value::Text(format!("{MARK}{name}")))
        }
        None => Ok(ciborium::Value::Bytes(seed.to_vec())),
    }
}

/// The keystore name an identity element stands for, if it is one.
pub(crate) fn named(value: &ciborium::Value) -> Option<&str> {
    match value {
        ciborium::Value::Text(text) => text.strip_prefix(MARK),
        _ => None,
    }
}

/// The seed an identity element holds, or names in the keystore.
pub(crate) fn seed(value: &ciborium::Value, what: &'static str) -> Result<[u8; 32], DbError> {
    if let Some(name) = named(value) {
        let Some(store) = installed() else {
            return Err(SecretError(format!(
                "this device's {what} is kept in a platform keystore as {name:?}, which this program cannot reach (run it in your desktop session, built with the `keystore` feature)"
            ))
            .into());
        };
        return store.get(name)?.ok_or_else(|| {
            SecretError(format!(
                "the {} no longer has this device's {what} ({name:?})",
                store.name()
            ))
            .into()
        });
    }
    basic_proto::codec::as_fixed(value.clone(), what)
        .map_err(|e| StoreError::Corrupt { what: "identity", reason: e.to_string() }.into())
}

use crate::database::DbError;
use crate::storage::kv::StoreError;
