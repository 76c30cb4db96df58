//! What a peer holds, in a few bytes: per-author fingerprints, the digest
//! over them, and the view they are taken in (`protocol-spec/sync.md` §4).

use std::collections::BTreeSet;

use ciborium::Value as Cbor;

use crate::codec::{self, DecodeError, Fields};
use crate::commit::CommitId;
use crate::keys::{KeyCache, PublicKey};
use crate::scope::ScopeId;

/// BLAKE3 context of a summary digest.
pub const DIGEST_CONTEXT: &str = "basic/v0 sync digest";
/// Length of a summary digest.
pub const DIGEST_LEN: usize = 16;
/// Most scopes a view names.
pub const MAX_VIEW_SCOPES: usize = 256;

/// The commits a set holds in one range of one author's log: how many, and
/// the wrapping sum of their ids' first 16 bytes (little-endian). Two sets
/// with equal fingerprints are taken to be equal; the sum is a set hash, so
/// it can be kept up to date one commit at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// Commits counted (both sides of a fork count).
    pub count: u64,
    /// Wrapping sum of the ids' first 16 bytes.
    pub sum: u128,
}

impl Fingerprint {
    /// Adds one commit.
    pub fn add(&mut self, id: &CommitId) {
        let mut low = [0u8; 16];
        low.copy_from_slice(&id.0[..16]);
        self.count += 1;
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(low));
    }

    /// Takes out one commit that [`Fingerprint::add`] counted.
    pub fn remove(&mut self, id: &CommitId) {
        let mut low = [0u8; 16];
        low.copy_from_slice(&id.0[..16]);
        self.count = self.count.saturating_sub(1);
        self.sum = self.sum.wrapping_sub(u128::from_le_bytes(low));
    }

    /// Adds another fingerprint of a disjoint set.
    pub fn merge(&mut self, other: Fingerprint) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    pub(crate) fn sum_bytes(&self) -> [u8; 16] {
        self.sum.to_le_bytes()
    }
}

/// One author's log as a peer holds it in a view: the highest seq held and
/// the fingerprint of every commit held (all seqs from 1 to `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The author.
    pub author: PublicKey,
    /// Highest seq held in the view.
    pub max: u64,
    /// Every commit held in the view.
    pub held: Fingerprint,
}

impl Entry {
    pub(crate) fn to_cbor(self) -> Cbor {
        Cbor::Array(vec![
            Cbor::Bytes(self.author.as_bytes().to_vec()),
            Cbor::Integer(self.max.into()),
            Cbor::Integer(self.held.count.into()),
            Cbor::Bytes(self.held.sum_bytes().to_vec()),
        ])
    }

    pub(crate) fn from_cbor(value: Cbor, keys: &KeyCache) -> Result<Self, DecodeError> {
        let mut f = Fields::new(value, "entry", 4)?;
        let author = keys
            .get(f.fixed("entry.author")?)
            .map_err(|error| DecodeError::BadKey { field: "entry.author", error })?;
        let max = f.uint("entry.max")?;
        let count = f.uint("entry.count")?;
        let sum = u128::from_le_bytes(f.fixed("entry.sum")?);
        if count == 0 || max == 0 {
            return Err(invalid("entry", "lists an empty log"));
        }
        Ok(Entry { author, max, held: Fingerprint { count, sum } })
    }
}

/// The digest of a sorted list of entries: equal digests, equal holdings.
pub fn digest(entries: &[Entry]) -> [u8; DIGEST_LEN] {
    let mut hasher = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
    hasher
        .update(&codec::encode_value(&Cbor::Array(entries.iter().map(|e| e.to_cbor()).collect())));
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..DIGEST_LEN]);
    out
}

/// Which commits a session is about: all scopes, or some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Every scope: devices and pinning peers.
    All,
    /// These scopes only: apps, which hold their granted scopes.
    Scopes(BTreeSet<ScopeId>),
}

impl View {
    /// Whether commits of `scope` are in the view.
    pub fn contains(&self, scope: &ScopeId) -> bool {
        match self {
            View::All => true,
            View::Scopes(scopes) => scopes.contains(scope),
        }
    }

    /// The part of `self` that `other` also covers.
    pub fn intersect(&self, other: &View) -> View {
        match (self, other) {
            (View::All, view) | (view, View::All) => view.clone(),
            (View::Scopes(a), View::Scopes(b)) => {
                View::Scopes(a.intersection(b).cloned().collect())
            }
        }
    }

    pub(crate) fn to_cbor(&self) -> Cbor {
        match self {
            View::All => Cbor::Null,
            View::Scopes(scopes) => {
                Cbor::Array(scopes.iter().map(|s| Cbor::Bytes(s.0.to_vec())).collect())
            }
        }
    }

    pub(crate) fn from_cbor(value: Cbor) -> Result<Self, DecodeError> {
        if value.is_null() {
            return Ok(View::All);
        }
        let items = codec::as_array(value, "view", 0, MAX_VIEW_SCOPES)?;
        // Strictly ascending, so a view has one encoding.
        let mut scopes = BTreeSet::new();
        for item in items {
            let scope = ScopeId(codec::as_fixed(item, "view.scope")?);
            if scopes.last().is_some_and(|last| *last >= scope) {
                return Err(invalid("view", "scopes not in strictly ascending order"));
            }
            scopes.insert(scope);
        }
        Ok(View::Scopes(scopes))
    }
}

pub(crate) fn invalid(field: &'static str, reason: &str) -> DecodeError {
    DecodeError::InvalidValue { field, reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_add_in_any_order() {
        let ids: Vec<CommitId> = (0u8..5).map(|i| CommitId::of(&[i], &[])).collect();
        let mut forward = Fingerprint::default();
        ids.iter().for_each(|id| forward.add(id));
        let mut backward = Fingerprint::default();
        ids.iter().rev().for_each(|id| backward.add(id));
        assert_eq!(forward, backward);
        let (mut left, mut right) = (Fingerprint::default(), Fingerprint::default());
        ids[..2].iter().for_each(|id| left.add(id));
        ids[2..].iter().for_each(|id| right.add(id));
        left.merge(right);
        assert_eq!(left, forward);
    }

    #[test]
    fn views_intersect() {
        let todo = ScopeId([1; 16]);
        let mail = ScopeId([2; 16]);
        let app = View::Scopes([todo].into());
        assert_eq!(View::All.intersect(&app), app);
        let both = View::Scopes([todo, mail].into());
        assert_eq!(both.intersect(&app), app);
        assert!(app.contains(&todo) && !app.contains(&mail));
    }
}
