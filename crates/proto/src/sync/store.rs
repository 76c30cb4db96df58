//! What the sync state machine needs from a replica: a synchronous trait
//! the node implements over sled, the simulator over memory, and the tests
//! over a map.

use std::sync::Arc;

use super::summary::{Entry, Fingerprint, View};
use crate::control::{AuthState, ControlLog, ControlOp, Inserted, OpId};
use crate::keys::{DatabaseId, KeyCache, PublicKey};

/// The replica could not be read or written (a local fault, never the
/// peer's): the store's own error, kept whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("replica failed: {0}")]
pub struct StoreFailure(Arc<dyn std::error::Error + Send + Sync>);

impl StoreFailure {
    /// A failure caused by the store's error `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// The store's error (downcast it to the store's type to match on it).
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// What ingesting a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// Items stored that were not held before.
    pub new: u64,
    /// Items that failed verification (forged, tampered, malformed): the
    /// sender broke the protocol.
    pub invalid: u64,
    /// Well-formed items this replica does not accept now (not authorised
    /// by its control log, another database's); dropped, offered again by
    /// the next summary if they become acceptable.
    pub refused: u64,
}

impl Stored {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: Stored) {
        self.new += other.new;
        self.invalid += other.invalid;
        self.refused += other.refused;
    }
}

/// A replica as sync sees it. Reads describe durable state; writes return
/// once what they stored is durable (a peer is acknowledged only then).
pub trait SyncStore {
    /// The database.
    fn database(&self) -> DatabaseId;

    /// The replica's cache of validated author keys, shared by every
    /// session over it (a key is checked once, not once per session).
    fn keys(&self) -> &KeyCache;

    /// The current authorisation state (from the control log).
    fn auth(&self) -> Arc<AuthState>;

    /// The control heads.
    fn control_heads(&self) -> Result<Vec<OpId>, StoreFailure>;

    /// Whether the control operation `id` is admitted here.
    fn has_op(&self, id: &OpId) -> Result<bool, StoreFailure>;

    /// Every admitted operation not in the causal past of those of `heads`
    /// that are admitted here, in causal order, encoded.
    fn ops_since(&self, heads: &[OpId]) -> Result<Vec<Vec<u8>>, StoreFailure>;

    /// Verifies and admits control operations.
    fn ingest_ops(&mut self, ops: &[Vec<u8>]) -> Result<Stored, StoreFailure>;

    /// One entry per author with at least one commit in `view`, sorted by
    /// author key bytes.
    fn entries(&self, view: &View) -> Result<Vec<Entry>, StoreFailure>;

    /// What is held of `author`'s log in `lo..=hi`, in `view`.
    fn fingerprint(
        &self,
        view: &View,
        author: &PublicKey,
        lo: u64,
        hi: u64,
    ) -> Result<Fingerprint, StoreFailure>;

    /// Appends to `out` the encoded commits of `author` in `lo..=hi` and in
    /// `view`, in seq order, while fewer than `budget` bytes were appended
    /// (the commit that crosses it is still appended). Returns whether the
    /// whole range was appended.
    fn commits(
        &self,
        view: &View,
        author: &PublicKey,
        lo: u64,
        hi: u64,
        budget: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<bool, StoreFailure>;

    /// Verifies, checks against the control log and stores commits.
    fn ingest_commits(&mut self, commits: &[Vec<u8>]) -> Result<Stored, StoreFailure>;
}

/// Verifies encoded operations and admits them into `log` at local wall
/// time `now_ms`: the [`SyncStore::ingest_ops`] of a replica that keeps its
/// log in memory.
pub fn admit_ops(log: &mut ControlLog, ops: &[Vec<u8>], now_ms: u64) -> Stored {
    let mut stored = Stored::default();
    for bytes in ops {
        match ControlOp::decode(bytes) {
            Err(_) => stored.invalid += 1,
            Ok(op) => match log.insert(op, now_ms) {
                Ok(Inserted::Admitted(ids)) => stored.new += ids.len() as u64,
                Ok(_) => {}
                Err(_) => stored.refused += 1,
            },
        }
    }
    stored
}

/// The view a principal is entitled to in `auth`, or `None` when it is not a
/// member: the root, devices and pinning peers see every scope; an app sees
/// the scopes of its grants that are not revoked.
pub fn entitled_view(auth: &AuthState, key: &PublicKey) -> Option<View> {
    let root = auth.root().is_some_and(|root| root.key == *key);
    let device = auth.devices().get(key).is_some_and(|d| d.removed.is_none());
    let pinner = auth.pinners().get(key).copied().unwrap_or(false);
    if root || device || pinner {
        return Some(View::All);
    }
    let scopes: std::collections::BTreeSet<_> = auth
        .apps()
        .get(key)?
        .scopes
        .iter()
        .filter(|(_, grant)| grant.revoked.is_none())
        .map(|(scope, _)| *scope)
        .collect();
    (!scopes.is_empty()).then_some(View::Scopes(scopes))
}
