//! Scope ids: how the wire names a scope without saying what it is.
//!
//! Implements `protocol-spec/crypto.md` §8. Commit headers, control
//! operations and sync frames name a scope by a 16-byte **scope id**, never
//! by its namespace name, so a pinning peer or any other party without the
//! scope's key learns nothing of what the user stores ("health", "dating").
//! A scope id is a keyed hash of the namespace name under the database's
//! **naming key**: every device computes the same id for the same name (two
//! devices creating one namespace offline agree on its scope), and without
//! the naming key an id reveals nothing. The root derives the naming key
//! from its own seed; the control log seals it to each device (never to
//! apps or pinning peers, which learn the names of their scopes from the
//! sealed schemas).

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::aead::ScopeKey;
use crate::keys::{PublicKey, SecretKey};
use crate::value::Name;

/// Length of a scope id, in bytes.
pub const SCOPE_ID_LEN: usize = 16;
/// BLAKE3 context deriving the naming key from the root's seed.
pub const NAMING_KEY_CONTEXT: &str = "basic/v0 naming key";
/// Prefix (before its `0x00`) of what a scope id hashes.
pub const SCOPE_ID_PREFIX: &str = "basic/v0 scope id";
/// Prefix (before its `0x00`) of the label the naming key is sealed under.
pub const NAMING_LABEL_PREFIX: &str = "basic/v0 naming key seal";

/// A scope as the wire names it: opaque without the naming key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(pub [u8; SCOPE_ID_LEN]);

impl fmt::Display for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeId({self})")
    }
}

/// The key that turns namespace names into scope ids. Devices and the root
/// hold it; apps and pinning peers never do.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct NamingKey([u8; 32]);

impl NamingKey {
    /// The naming key of the database whose root is `root`.
    pub fn of_root(root: &SecretKey) -> Self {
        Self(blake3::derive_key(NAMING_KEY_CONTEXT, root.seed()))
    }

    /// The key with these bytes (as opened from a seal).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes. Keep them secret.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as a sealable payload ([`crate::SealedKey`] seals 32 bytes).
    pub fn as_payload(&self) -> ScopeKey {
        ScopeKey::from_bytes(self.0)
    }

    /// The scope id of `namespace`:
    /// `BLAKE3-keyed(naming key, "basic/v0 scope id" || 0x00 || name)`, its
    /// first 16 bytes.
    pub fn scope_id(&self, namespace: &Name) -> ScopeId {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(SCOPE_ID_PREFIX.as_bytes());
        hasher.update(&[0]);
        hasher.update(namespace.as_str().as_bytes());
        let mut id = [0; SCOPE_ID_LEN];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..SCOPE_ID_LEN]);
        ScopeId(id)
    }
}

impl fmt::Debug for NamingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NamingKey(…)")
    }
}

/// The label the naming key of the database rooted at `root` is sealed
/// under for `recipient`:
/// `"basic/v0 naming key seal" || 0x00 || root || recipient`. The root key
/// stands for the database (the genesis cannot name its own id).
pub fn naming_label(root: &PublicKey, recipient: &PublicKey) -> Vec<u8> {
    let mut label = Vec::with_capacity(NAMING_LABEL_PREFIX.len() + 1 + 64);
    label.extend_from_slice(NAMING_LABEL_PREFIX.as_bytes());
    label.push(0);
    label.extend_from_slice(root.as_bytes());
    label.extend_from_slice(recipient.as_bytes());
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_name_and_the_key_only() {
        let root = SecretKey::from_seed([1; 32]);
        let other = SecretKey::from_seed([2; 32]);
        let (a, b) = (NamingKey::of_root(&root), NamingKey::of_root(&other));
        let todo = Name::new("todo").unwrap();
        let health = Name::new("health").unwrap();
        assert_eq!(a.scope_id(&todo), NamingKey::of_root(&root).scope_id(&todo));
        assert_ne!(a.scope_id(&todo), a.scope_id(&health));
        assert_ne!(a.scope_id(&todo), b.scope_id(&todo));
        assert!(!a.scope_id(&health).to_string().contains("health"));
    }
}
