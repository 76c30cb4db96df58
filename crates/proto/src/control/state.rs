//! The authorisation state: who may read and write what, under which keys.
//!
//! Implements `protocol-spec/control-log.md` §5.3–§6. The state is a pure
//! function of the set of admitted operations ([`super::log::ControlLog`]),
//! computed in one pass over them in their deterministic topological order.
//! Destructive operations (removing a device or pinning peer, revoking a
//! grant) take effect whenever admitted, and for good. Constructive ones
//! (adding, granting, rotating, schemas) take effect only if their author
//! still had authority by the rules of §5.3: in particular, a removed
//! device's operations that its remover had not seen are cut off.
//! [`AuthState::check_commit`] then decides whether a commit header is
//! authorised, without decrypting it.

use std::collections::{BTreeMap, BTreeSet};

use crate::aead::ScopeKey;
use crate::commit::{CommitHeader, CommitId};
use crate::hlc::{Hlc, MAX_AHEAD_MS};
use crate::keys::{AuthorId, DatabaseId, PublicKey, SealingKey, SecretKey};
use crate::scope::{NamingKey, ScopeId, naming_label};
use crate::seal::{Party, SealedKey};

use super::evaluate::{
    Dag, MAX_ROUNDS, Members, Target, rotations, seen_by_removals, unseen_by_removal,
};
use super::op::{ControlOp, Cutoff, OpId, Payload, Rights, Rotation, SealedSchema, seal_label};

/// A revoked grant's or removed device's end: the last commit that stays,
/// and the highest wall time a kept commit may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The last kept commit of the author's log.
    pub cutoff: Cutoff,
    /// Kept commits have `hlc.wall_ms` at most this: the ending
    /// operation's own wall time plus [`MAX_AHEAD_MS`].
    pub max_wall_ms: u64,
    /// The operation that ended it (the strictest, if several).
    pub by: OpId,
}

impl End {
    fn of(cutoff: Cutoff, op: &ControlOp) -> Self {
        Self {
            cutoff,
            max_wall_ms: op.body().hlc.wall_ms.saturating_add(MAX_AHEAD_MS),
            by: op.id(),
        }
    }

    /// Keeps the stricter of two ends: the lower cut-off (then the lower
    /// id), and the lower wall-time bound.
    fn meet(self, other: End) -> End {
        let first =
            if (other.cutoff.seq, other.by) < (self.cutoff.seq, self.by) { other } else { self };
        End { max_wall_ms: self.max_wall_ms.min(other.max_wall_ms), ..first }
    }

    /// Whether a commit at `seq` with id `id` and stamp `hlc` is kept.
    fn keeps(&self, seq: u64, id: CommitId, hlc: Hlc) -> Result<(), AuthError> {
        if seq > self.cutoff.seq {
            return Err(AuthError::AfterCutoff { seq, cutoff: self.cutoff.seq });
        }
        if seq == self.cutoff.seq && self.cutoff.last != Some(id) {
            return Err(AuthError::NotTheCutoffCommit { seq });
        }
        if hlc.wall_ms > self.max_wall_ms {
            return Err(AuthError::StampAfterEnd { wall_ms: hlc.wall_ms, max: self.max_wall_ms });
        }
        Ok(())
    }
}

/// One of the user's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its x25519 key, as published by the operation that added it.
    pub sealing: SealingKey,
    /// Set once it is removed (permanently).
    pub removed: Option<End>,
}

/// An app's standing on one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The highest rights any effective grant gave.
    pub rights: Rights,
    /// The epochs whose key was sealed to the app (by grants and rotations).
    pub epochs: BTreeSet<u32>,
    /// Set once revoked (permanently).
    pub revoked: Option<End>,
}

/// An app and its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Its x25519 key, from its (lowest-id) grant.
    pub sealing: SealingKey,
    /// Its grants, by scope. Revoked grants stay, marked.
    pub scopes: BTreeMap<ScopeId, Grant>,
}

/// One key of one epoch of a scope, as created by a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochKey {
    /// The operation that created it. Concurrent rotations to the same
    /// epoch number create several keys; see [`Scope::epochs`].
    pub op: OpId,
    /// Who sealed it (the operation's author).
    pub sender: PublicKey,
}

/// A scope's key epochs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Every epoch, with its keys in op-id order. Usually one key per
    /// epoch; concurrent rotations to the same number give several, and
    /// readers try each (the AEAD tag tells which one a commit used).
    pub epochs: BTreeMap<u32, Vec<EpochKey>>,
}

impl Scope {
    /// The newest epoch: what writers should use.
    pub fn current(&self) -> Option<u32> {
        self.epochs.keys().next_back().copied()
    }
}

/// A seal of a scope key to one recipient, with who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The operation carrying it.
    pub op: OpId,
    /// Its author, the seal's sender.
    pub sender: PublicKey,
    /// The sealed key.
    pub sealed: SealedKey,
}

/// The winning schema op of a scope: the highest (`hlc`, op id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaOp {
    /// Its stamp.
    pub hlc: Hlc,
    /// The op.
    pub op: OpId,
    /// The epoch whose key seals it.
    pub epoch: u32,
    /// The namespace and schema text, sealed.
    pub sealed: SealedSchema,
}

/// Why a commit is not authorised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The commit names another database.
    #[error("commit belongs to another database")]
    WrongDatabase,
    /// No key of this scope exists.
    #[error("scope {0} has no key")]
    UnknownScope(ScopeId),
    /// The scope has no key of this epoch.
    #[error("scope {scope} has no epoch {epoch}")]
    UnknownEpoch {
        /// The scope.
        scope: ScopeId,
        /// The epoch named.
        epoch: u32,
    },
    /// The author is no device and holds no grant on the scope (a pinning
    /// peer or a stranger).
    #[error("{0:?} holds no grant on this scope")]
    NoGrant(AuthorId),
    /// The author's grant is read-only.
    #[error("{0:?} may only read this scope")]
    ReadOnly(AuthorId),
    /// The app was never given the key of this epoch: a stale epoch from
    /// before its grant, or one rotated away from it.
    #[error("the author was never given epoch {epoch} of the scope")]
    EpochNotGiven {
        /// The epoch named.
        epoch: u32,
    },
    /// The commit lies after the author's cut-off.
    #[error("commit seq {seq} is after the author's cut-off at seq {cutoff}")]
    AfterCutoff {
        /// The commit's seq.
        seq: u64,
        /// The last kept seq.
        cutoff: u64,
    },
    /// At the cut-off's seq, but not the commit the cut-off names (a fork).
    #[error("commit at seq {seq} is not the cut-off commit")]
    NotTheCutoffCommit {
        /// The commit's seq.
        seq: u64,
    },
    /// Before the cut-off, but stamped after the revocation allows
    /// (a future-dated write planted before the cut-off).
    #[error("commit stamped at {wall_ms} ms, after the end's bound of {max} ms")]
    StampAfterEnd {
        /// The commit's wall time.
        wall_ms: u64,
        /// The bound.
        max: u64,
    },
}

/// Who may do what in one database: the outcome of its control log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthState {
    database: DatabaseId,
    root: Option<Party>,
    devices: BTreeMap<PublicKey, Device>,
    apps: BTreeMap<PublicKey, App>,
    pinners: BTreeMap<PublicKey, bool>,
    scopes: BTreeMap<ScopeId, Scope>,
    seals: BTreeMap<(PublicKey, ScopeId, u32), Vec<Seal>>,
    schemas: BTreeMap<ScopeId, SchemaOp>,
    naming: BTreeMap<PublicKey, Seal>,
    cut_off: BTreeSet<OpId>,
}

/// How an operation's author stands when it is evaluated.
#[derive(Debug, Clone, Copy)]
struct Standing {
    /// The author is the root.
    root: bool,
    /// The author is a device in effect in the operation's past.
    member: bool,
    /// A removal of the author in effect did not see the operation.
    unseen: bool,
}

impl Standing {
    /// Whether a constructive operation (or part) takes effect.
    fn constructive(self) -> bool {
        self.root || (self.member && !self.unseen)
    }
}

/// Ends of one target: by the root, and by anyone else.
#[derive(Debug, Clone, Copy, Default)]
struct Ends {
    root: Option<End>,
    others: Option<End>,
}

impl Ends {
    fn add(&mut self, end: End, by_root: bool) {
        let slot = if by_root { &mut self.root } else { &mut self.others };
        *slot = Some(slot.map_or(end, |e| e.meet(end)));
    }

    /// The root's end when it set one (so the root can always restore
    /// what a removed device's end took away), else the strictest.
    fn decided(self) -> Option<End> {
        self.root.or(self.others)
    }
}

impl AuthState {
    /// Computes the state from admitted operations in topological order
    /// (parents first; [`super::log::ControlLog::ordered`]).
    pub(crate) fn evaluate(database: DatabaseId, ordered: &[&ControlOp]) -> Self {
        let dag = Dag::new(ordered);
        let mut assumed: BTreeSet<usize> = (0..dag.len())
            .filter(|i| matches!(dag.ops[*i].body().payload, Payload::RemoveDevice { .. }))
            .collect();
        let mut round = 1;
        loop {
            let (state, in_effect) = Self::evaluate_with(database, &dag, &assumed);
            if in_effect == assumed || round == MAX_ROUNDS {
                return state;
            }
            assumed = in_effect;
            round += 1;
        }
    }

    /// One round: the state if exactly the removals `assumed` are in
    /// effect, and the removals that are in effect in that state.
    fn evaluate_with(
        database: DatabaseId,
        dag: &Dag<'_>,
        assumed: &BTreeSet<usize>,
    ) -> (Self, BTreeSet<usize>) {
        let mut state = AuthState {
            database,
            root: None,
            devices: BTreeMap::new(),
            apps: BTreeMap::new(),
            pinners: BTreeMap::new(),
            scopes: BTreeMap::new(),
            seals: BTreeMap::new(),
            schemas: BTreeMap::new(),
            naming: BTreeMap::new(),
            cut_off: BTreeSet::new(),
        };
        let seen = seen_by_removals(dag, assumed);
        let mut in_effect = BTreeSet::new();
        let mut device_ends: BTreeMap<PublicKey, Ends> = BTreeMap::new();
        let mut grant_ends: BTreeMap<(PublicKey, ScopeId), Ends> = BTreeMap::new();
        let mut removed_pinners = BTreeSet::new();
        let mut views: Vec<Members> = Vec::with_capacity(dag.len());
        for (i, op) in dag.ops.iter().enumerate() {
            let body = op.body();
            let mut view = Members::join(dag.parents(i).iter().map(|p| &views[*p]));
            let root = matches!(body.payload, Payload::Genesis { .. })
                || state.root.is_some_and(|r| r.key == body.author);
            let standing = Standing {
                root,
                member: view.is_member(&body.author),
                unseen: unseen_by_removal(&seen, &body.author, i),
            };
            // Key epochs and the seals of rotations are structural.
            for rotation in rotations(op) {
                if dag.created[i].iter().any(|(s, e)| *s == rotation.scope && *e == rotation.epoch)
                {
                    state.rotate(op, rotation);
                }
            }
            let effective = match Target::ended_by(op) {
                // A destructive operation holds if its author is in effect
                // in its past. A removed device that claims not to have
                // seen its removal reaches only what its own past holds.
                Some(target) => {
                    let holds = standing.root
                        || (standing.member
                            && (!standing.unseen || dag.introduced_before(&target, i)));
                    if holds {
                        let end = |cutoff: &Cutoff| End::of(*cutoff, op);
                        match &body.payload {
                            Payload::RemoveDevice { device, cutoff, .. } => {
                                in_effect.insert(i);
                                view.remove(*device);
                                device_ends.entry(*device).or_default().add(end(cutoff), root);
                            }
                            Payload::Revoke { app, cutoff, rotation } => {
                                grant_ends
                                    .entry((*app, rotation.scope))
                                    .or_default()
                                    .add(end(cutoff), root);
                            }
                            Payload::RemovePinner { pinner } => {
                                removed_pinners.insert(*pinner);
                            }
                            _ => {}
                        }
                    }
                    holds
                }
                None if matches!(body.payload, Payload::RotateKey(_)) => true,
                None => {
                    let holds = standing.constructive();
                    if holds {
                        state.apply(dag, i, &mut view);
                    }
                    holds
                }
            };
            if !effective {
                state.cut_off.insert(op.id());
            }
            views.push(view);
        }
        for (key, ends) in device_ends {
            if let (Some(device), Some(end)) = (state.devices.get_mut(&key), ends.decided()) {
                device.removed = Some(end);
            }
        }
        for ((app, scope), ends) in grant_ends {
            if let Some(grant) = state.apps.get_mut(&app).and_then(|a| a.scopes.get_mut(&scope)) {
                grant.revoked = ends.decided();
            }
        }
        for pinner in removed_pinners {
            state.pinners.insert(pinner, false);
        }
        // The epochs each app was sealed, by grants and rotations.
        for (recipient, scope, epoch) in state.seals.keys() {
            if let Some(grant) = state.apps.get_mut(recipient).and_then(|a| a.scopes.get_mut(scope))
            {
                grant.epochs.insert(*epoch);
            }
        }
        (state, in_effect)
    }

    /// Applies a constructive operation in effect.
    fn apply(&mut self, dag: &Dag<'_>, i: usize, view: &mut Members) {
        let op = dag.ops[i];
        let body = op.body();
        match &body.payload {
            Payload::Genesis { root_sealing, device, device_sealing, naming } => {
                self.root = Some(Party { key: body.author, sealing: *root_sealing });
                self.add_device(*device, *device_sealing, view);
                self.naming.insert(
                    *device,
                    Seal { op: op.id(), sender: body.author, sealed: naming.clone() },
                );
            }
            Payload::AddDevice { device, sealing, naming, keys } => {
                self.add_device(*device, *sealing, view);
                self.naming.entry(*device).or_insert(Seal {
                    op: op.id(),
                    sender: body.author,
                    sealed: naming.clone(),
                });
                for ((scope, epoch), sealed) in keys {
                    self.add_seal(op, *device, scope, *epoch, sealed);
                }
            }
            Payload::Grant { app, sealing, scope, rights, epoch, key } => {
                // The key handed over must be of an epoch in the granter's
                // past. A revoked (app, scope) still records its grants:
                // the revocation marks them at the end, and its cut-off
                // keeps the commits made before it.
                if dag.epoch_before(i, scope).is_none_or(|current| *epoch > current) {
                    return;
                }
                let entry = self
                    .apps
                    .entry(*app)
                    .or_insert(App { sealing: *sealing, scopes: BTreeMap::new() });
                let grant = entry.scopes.entry(*scope).or_insert(Grant {
                    rights: *rights,
                    epochs: BTreeSet::new(),
                    revoked: None,
                });
                grant.rights = grant.rights.max(*rights);
                self.add_seal(op, *app, scope, *epoch, key);
            }
            Payload::AddPinner { pinner } => {
                self.pinners.entry(*pinner).or_insert(true);
            }
            Payload::Schema { scope, epoch, sealed } => {
                let candidate =
                    SchemaOp { hlc: body.hlc, op: op.id(), epoch: *epoch, sealed: sealed.clone() };
                let current = self.schemas.entry(*scope).or_insert(candidate.clone());
                if (candidate.hlc, candidate.op) > (current.hlc, current.op) {
                    *current = candidate;
                }
            }
            Payload::RemoveDevice { .. }
            | Payload::Revoke { .. }
            | Payload::RotateKey(_)
            | Payload::RemovePinner { .. } => {}
        }
    }

    fn add_device(&mut self, device: PublicKey, sealing: SealingKey, view: &mut Members) {
        view.add(device);
        self.devices.entry(device).or_insert(Device { sealing, removed: None });
    }

    /// A new key of (`scope`, `epoch`) created by `op`, with its seals.
    fn rotate(&mut self, op: &ControlOp, rotation: &Rotation) {
        let keys = self
            .scopes
            .entry(rotation.scope)
            .or_default()
            .epochs
            .entry(rotation.epoch)
            .or_default();
        keys.push(EpochKey { op: op.id(), sender: op.body().author });
        keys.sort_by_key(|k| k.op);
        for (recipient, sealed) in &rotation.seals {
            self.add_seal(op, *recipient, &rotation.scope, rotation.epoch, sealed);
        }
    }

    fn add_seal(
        &mut self,
        op: &ControlOp,
        recipient: PublicKey,
        scope: &ScopeId,
        epoch: u32,
        sealed: &SealedKey,
    ) {
        let seals = self.seals.entry((recipient, *scope, epoch)).or_default();
        seals.push(Seal { op: op.id(), sender: op.body().author, sealed: sealed.clone() });
        seals.sort_by_key(|s| s.op);
    }

    /// Whether `key` reads `scope` now: the root, a device not removed, or
    /// an app whose grant on the scope is not revoked.
    pub fn is_reader(&self, key: &PublicKey, scope: &ScopeId) -> bool {
        self.root.is_some_and(|r| r.key == *key)
            || self.is_device(key)
            || self
                .apps
                .get(key)
                .and_then(|a| a.scopes.get(scope))
                .is_some_and(|grant| grant.revoked.is_none())
    }

    /// Scopes whose newest epoch is known to someone who no longer reads
    /// the scope: a key of it was made by, or sealed to, a removed device,
    /// a revoked app or a stranger (concurrent revocations, a removed
    /// device's rotation, a removal whose author was removed too). Writers
    /// must rotate such a scope before writing to it (§5.5).
    pub fn compromised(&self) -> Vec<ScopeId> {
        let mut out = Vec::new();
        for (scope, keys) in &self.scopes {
            let Some((epoch, made)) = keys.epochs.iter().next_back() else { continue };
            let senders_read = made.iter().all(|k| self.is_reader(&k.sender, scope));
            let recipients_read = self
                .seals
                .iter()
                .filter(|((_, s, e), _)| s == scope && e == epoch)
                .all(|((recipient, _, _), _)| self.is_reader(recipient, scope));
            if !(senders_read && recipients_read) {
                out.push(*scope);
            }
        }
        out
    }

    /// The database.
    pub fn database(&self) -> DatabaseId {
        self.database
    }

    /// The root identity, once the genesis is known.
    pub fn root(&self) -> Option<Party> {
        self.root
    }

    /// Every device ever added, removed ones marked.
    pub fn devices(&self) -> &BTreeMap<PublicKey, Device> {
        &self.devices
    }

    /// Whether `key` is a device that is not removed.
    pub fn is_device(&self, key: &PublicKey) -> bool {
        self.devices.get(key).is_some_and(|d| d.removed.is_none())
    }

    /// Every app with a grant, revoked grants marked.
    pub fn apps(&self) -> &BTreeMap<PublicKey, App> {
        &self.apps
    }

    /// Pinning peers: `true` if authorised, `false` if removed for good.
    pub fn pinners(&self) -> &BTreeMap<PublicKey, bool> {
        &self.pinners
    }

    /// Whether `key` may store, verify and serve this database's ciphertext.
    pub fn is_pinner(&self, key: &PublicKey) -> bool {
        self.pinners.get(key).copied().unwrap_or(false)
    }

    /// The scopes and their key epochs.
    pub fn scopes(&self) -> &BTreeMap<ScopeId, Scope> {
        &self.scopes
    }

    /// The winning schema text of each namespace, with the operation.
    pub fn schemas(&self) -> impl Iterator<Item = (&ScopeId, &SchemaOp)> {
        self.schemas.iter()
    }

    /// Admitted operations that had no effect beyond a destructive one:
    /// their author had no authority left (cut off by a removal, or added
    /// by a cut-off operation).
    pub fn cut_off(&self) -> &BTreeSet<OpId> {
        &self.cut_off
    }

    /// The x25519 key the control log publishes for `key` (root, device or app).
    pub fn sealing_key(&self, key: &PublicKey) -> Option<SealingKey> {
        if let Some(root) = self.root.filter(|r| r.key == *key) {
            return Some(root.sealing);
        }
        self.devices.get(key).map(|d| d.sealing).or_else(|| self.apps.get(key).map(|a| a.sealing))
    }

    /// The seals of (`scope`, `epoch`) addressed to `recipient`.
    pub fn seals_for(&self, recipient: &PublicKey, scope: &ScopeId, epoch: u32) -> &[Seal] {
        self.seals.get(&(*recipient, *scope, epoch)).map_or(&[], Vec::as_slice)
    }

    /// Opens every key of (`scope`, `epoch`) sealed to `recipient`; seals
    /// that do not open (tampered, or a sender without a published key)
    /// are skipped.
    pub fn scope_keys(&self, recipient: &SecretKey, scope: &ScopeId, epoch: u32) -> Vec<ScopeKey> {
        let me = recipient.public();
        let label = seal_label(self.database, scope, epoch, &me);
        self.seals_for(&me, scope, epoch)
            .iter()
            .filter_map(|seal| {
                let sealing = self.sealing_key(&seal.sender)?;
                let sender = Party { key: seal.sender, sealing };
                seal.sealed.open(recipient, &sender, &label).ok()
            })
            .collect()
    }

    /// The naming key, for `me`: derived from the root's seed, or opened
    /// from the seal an op in effect addressed to `me` (a device). Apps and
    /// pinning peers have none.
    pub fn naming_key(&self, me: &SecretKey) -> Option<NamingKey> {
        let root = self.root?;
        if root.key == me.public() {
            return Some(NamingKey::of_root(me));
        }
        let seal = self.naming.get(&me.public())?;
        let sender = Party { key: seal.sender, sealing: self.sealing_key(&seal.sender)? };
        let label = naming_label(&root.key, &me.public());
        let key = seal.sealed.open(me, &sender, &label).ok()?;
        Some(NamingKey::from_bytes(*key.as_bytes()))
    }

    /// Whether the commit with this header and id is authorised: its
    /// author may write `header.scope` under `header.epoch` at its position
    /// in its log. Needs no key, so pinning peers run it on ciphertext.
    ///
    /// A commit below a cut-off is accepted here; that it is an ancestor
    /// of the cut-off commit (and not a fork of it) is checked with the
    /// author's chain (control-log.md §6).
    pub fn check_commit(&self, header: &CommitHeader, id: CommitId) -> Result<(), AuthError> {
        if header.database != self.database {
            return Err(AuthError::WrongDatabase);
        }
        let scope = self.scopes.get(&header.scope).ok_or(AuthError::UnknownScope(header.scope))?;
        if !scope.epochs.contains_key(&header.epoch) {
            return Err(AuthError::UnknownEpoch { scope: header.scope, epoch: header.epoch });
        }
        let author = header.author;
        if self.root.is_some_and(|r| r.key == author) {
            return Ok(());
        }
        if let Some(device) = self.devices.get(&author) {
            return match device.removed {
                Some(end) => end.keeps(header.seq, id, header.hlc),
                None => Ok(()),
            };
        }
        let grant = self
            .apps
            .get(&author)
            .and_then(|a| a.scopes.get(&header.scope))
            .ok_or(AuthError::NoGrant(author.into()))?;
        if grant.rights != Rights::ReadWrite {
            return Err(AuthError::ReadOnly(author.into()));
        }
        if !grant.epochs.contains(&header.epoch) {
            return Err(AuthError::EpochNotGiven { epoch: header.epoch });
        }
        match grant.revoked {
            Some(end) => end.keeps(header.seq, id, header.hlc),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::log::{ControlLog, InsertError, Inserted};
    use super::super::op::{ControlOp, Cutoff, Payload, Rights};
    use super::super::testkit::{NOW, T0, World, cutoff_at, id, key, scope};
    use super::*;
    use crate::commit::Commit;
    use crate::seal::SealError;

    /// `laptop` creates scope `todo` at epoch 0 sealed to itself.
    fn with_todo() -> (World, ScopeKey) {
        let mut w = World::new();
        let k0 = ScopeKey::from_bytes([10; 32]);
        let laptop = w.laptop.clone();
        let rotation = w.rotation(&laptop, "todo", 0, &k0, &[&laptop]);
        w.issue(&laptop, Payload::RotateKey(rotation));
        (w, k0)
    }

    #[test]
    fn the_genesis_device_reads_and_writes_every_scope() {
        let (mut w, k0) = with_todo();
        let laptop = w.laptop.clone();
        let state = w.log.state();
        assert_eq!(state.root().unwrap().key, w.root.public());
        assert_eq!(state.scope_keys(&laptop, &scope("todo"), 0), vec![k0.clone()]);
        let c = w.commit(&laptop, None, T0, "todo", 0, &k0);
        assert_eq!(state.check_commit(c.header(), c.id()), Ok(()));
        let other = w.commit(&laptop, None, T0, "other", 0, &k0);
        assert_eq!(
            state.check_commit(other.header(), other.id()),
            Err(AuthError::UnknownScope(scope("other")))
        );
        let stale = w.commit(&laptop, None, T0, "todo", 7, &k0);
        assert_eq!(
            state.check_commit(stale.header(), stale.id()),
            Err(AuthError::UnknownEpoch { scope: scope("todo"), epoch: 7 })
        );
    }

    #[test]
    fn an_op_not_signed_by_an_authorised_device_is_refused() {
        let (mut w, k0) = with_todo();
        let stranger = key(66);
        let app = key(20);
        let grant = w.grant(&stranger, &app, "todo", Rights::ReadWrite, 0, &k0);
        let heads = w.log.heads();
        let op = w.op_on(&stranger, heads, grant);
        assert_eq!(
            w.log.insert(op.clone(), NOW),
            Err(InsertError::Unauthorised { author: stranger.public().into(), kind: "grant" })
        );
        // Refused for good, and so is anything built on it.
        let laptop = w.laptop.clone();
        let child =
            w.op_on(&laptop, vec![op.id()], Payload::AddPinner { pinner: key(30).public() });
        assert_eq!(w.log.insert(child, NOW), Err(InsertError::RefusedParent(op.id())));
        assert!(w.log.state().apps().is_empty());
    }

    #[test]
    fn apps_and_pinners_can_add_and_grant_nothing() {
        let (mut w, k0) = with_todo();
        let (laptop, app, pinner, phone) = (w.laptop.clone(), key(20), key(30), key(3));
        let grant = w.grant(&laptop, &app, "todo", Rights::ReadWrite, 0, &k0);
        w.issue(&laptop, grant);
        w.issue(&laptop, Payload::AddPinner { pinner: pinner.public() });
        for author in [&app, &pinner] {
            let add = w.add_device(author, &phone, &[]);
            let grant = w.grant(author, &phone, "todo", Rights::ReadWrite, 0, &k0);
            for payload in [add, grant, Payload::AddPinner { pinner: phone.public() }] {
                let heads = w.log.heads();
                let op = w.op_on(author, heads, payload);
                assert!(matches!(w.log.insert(op, NOW), Err(InsertError::Unauthorised { .. })));
            }
        }
        let state = w.log.state();
        assert!(!state.is_device(&phone.public()));
        assert!(state.is_pinner(&pinner.public()));
        assert_eq!(state.apps().len(), 1);
    }

    #[test]
    fn a_commit_by_a_key_without_write_grant_is_rejected() {
        let (mut w, k0) = with_todo();
        let (laptop, reader, pinner, stranger) = (w.laptop.clone(), key(21), key(30), key(66));
        let grant = w.grant(&laptop, &reader, "todo", Rights::Read, 0, &k0);
        w.issue(&laptop, grant);
        w.issue(&laptop, Payload::AddPinner { pinner: pinner.public() });
        let state = w.log.state();
        for (author, error) in [
            (&stranger, AuthError::NoGrant(stranger.public().into())),
            (&pinner, AuthError::NoGrant(pinner.public().into())),
            (&reader, AuthError::ReadOnly(reader.public().into())),
        ] {
            let c = w.commit(author, None, T0, "todo", 0, &k0);
            assert_eq!(state.check_commit(c.header(), c.id()), Err(error));
        }
        // The reader opens the key it was granted.
        assert_eq!(state.scope_keys(&reader, &scope("todo"), 0), vec![k0]);
    }

    /// Revoking app B rotates `todo` to epoch 1, sealed to the laptop and to app A.
    fn revocation() -> (World, ScopeKey, ScopeKey, SecretKey, SecretKey, Vec<Commit>) {
        let (mut w, k0) = with_todo();
        let (laptop, a, b) = (w.laptop.clone(), key(20), key(21));
        for app in [&a, &b] {
            let grant = w.grant(&laptop, app, "todo", Rights::ReadWrite, 0, &k0);
            w.issue(&laptop, grant);
        }
        // B writes three commits; the laptop has seen two when it revokes.
        let c1 = w.commit(&b, None, T0 + 1, "todo", 0, &k0);
        let c2 = w.commit(&b, Some(&c1), T0 + 2, "todo", 0, &k0);
        let c3 = w.commit(&b, Some(&c2), T0 + 3, "todo", 0, &k0);
        let k1 = ScopeKey::from_bytes([11; 32]);
        let rotation = w.rotation(&laptop, "todo", 1, &k1, &[&laptop, &a]);
        let state = w.log.state();
        assert_eq!(state.check_commit(c3.header(), id(&c3)), Ok(()));
        w.issue(
            &laptop,
            Payload::Revoke { app: b.public(), cutoff: cutoff_at(Some(&c2)), rotation },
        );
        (w, k0, k1, a, b, vec![c1, c2, c3])
    }

    #[test]
    fn a_revoked_app_keeps_its_commits_up_to_the_cutoff_and_no_more() {
        let (mut w, k0, k1, a, b, chain) = revocation();
        let state = w.log.state();
        assert!(state.apps()[&b.public()].scopes[&scope("todo")].revoked.is_some());
        assert_eq!(state.check_commit(chain[0].header(), id(&chain[0])), Ok(()));
        assert_eq!(state.check_commit(chain[1].header(), id(&chain[1])), Ok(()));
        // c3 arrived before the revocation and was accepted then; now it is not.
        assert_eq!(
            state.check_commit(chain[2].header(), id(&chain[2])),
            Err(AuthError::AfterCutoff { seq: 3, cutoff: 2 })
        );
        // A fork at the cut-off's seq is not the cut-off commit.
        let fork = w.commit(&b, Some(&chain[0]), T0 + 5, "todo", 0, &k0);
        assert_eq!(
            state.check_commit(fork.header(), fork.id()),
            Err(AuthError::NotTheCutoffCommit { seq: 2 })
        );
        // B was never given epoch 1, and cannot open it; A can, and writes under it.
        let new = w.commit(&b, Some(&chain[2]), T0 + 6, "todo", 1, &k1);
        assert_eq!(
            state.check_commit(new.header(), new.id()),
            Err(AuthError::EpochNotGiven { epoch: 1 })
        );
        assert!(state.scope_keys(&b, &scope("todo"), 1).is_empty());
        assert_eq!(state.scope_keys(&a, &scope("todo"), 1), vec![k1.clone()]);
        let by_a = w.commit(&a, None, T0 + 7, "todo", 1, &k1);
        assert_eq!(state.check_commit(by_a.header(), by_a.id()), Ok(()));
        // A still writes under epoch 0 too: it may not have seen the rotation yet.
        let old = w.commit(&a, Some(&by_a), T0 + 8, "todo", 0, &k0);
        assert_eq!(state.check_commit(old.header(), old.id()), Ok(()));
    }

    #[test]
    fn a_commit_under_an_epoch_the_author_was_never_given_is_rejected() {
        let (mut w, _k0, k1, _a, _b, _) = revocation();
        // App C, granted after the rotation, holds epoch 1 only.
        let (laptop, c) = (w.laptop.clone(), key(22));
        let grant = w.grant(&laptop, &c, "todo", Rights::ReadWrite, 1, &k1);
        w.issue(&laptop, grant);
        let state = w.log.state();
        let k0 = ScopeKey::from_bytes([10; 32]);
        let stale = w.commit(&c, None, T0, "todo", 0, &k0);
        assert_eq!(
            state.check_commit(stale.header(), stale.id()),
            Err(AuthError::EpochNotGiven { epoch: 0 })
        );
        let fresh = w.commit(&c, None, T0, "todo", 1, &k1);
        assert_eq!(state.check_commit(fresh.header(), fresh.id()), Ok(()));
    }

    #[test]
    fn a_backdated_or_future_dated_commit_cannot_slip_under_the_cutoff() {
        let (mut w, k0) = with_todo();
        let (laptop, b) = (w.laptop.clone(), key(21));
        let grant = w.grant(&laptop, &b, "todo", Rights::ReadWrite, 0, &k0);
        w.issue(&laptop, grant);
        // Before it is revoked, B plants a commit stamped a year ahead.
        let c1 = w.commit(&b, None, T0, "todo", 0, &k0);
        let planted = w.commit(&b, Some(&c1), T0 + 365 * 86_400_000, "todo", 0, &k0);
        let rotation = w.rotation(&laptop, "todo", 1, &ScopeKey::from_bytes([11; 32]), &[&laptop]);
        let revoke = w.issue(
            &laptop,
            Payload::Revoke { app: b.public(), cutoff: cutoff_at(Some(&planted)), rotation },
        );
        let state = w.log.state();
        assert_eq!(state.check_commit(c1.header(), c1.id()), Ok(()));
        let max = revoke.body().hlc.wall_ms + crate::hlc::MAX_AHEAD_MS;
        assert_eq!(
            state.check_commit(planted.header(), planted.id()),
            Err(AuthError::StampAfterEnd { wall_ms: planted.header().hlc.wall_ms, max })
        );
        // Backdating the stamp after the cut-off does not help: seq decides.
        let late = w.commit(&b, Some(&planted), T0 - 1_000_000, "todo", 0, &k0);
        assert_eq!(
            state.check_commit(late.header(), late.id()),
            Err(AuthError::AfterCutoff { seq: 3, cutoff: 2 })
        );
    }

    #[test]
    fn revocation_beats_concurrent_and_later_grants() {
        let (mut w, k0) = with_todo();
        let (laptop, phone, b) = (w.laptop.clone(), key(3), key(21));
        let add = w.add_device(&laptop, &phone, &[("todo", 0, &k0)]);
        w.issue(&laptop, add);
        let base = w.log.heads();
        let rotation = w.rotation(&laptop, "todo", 1, &ScopeKey::from_bytes([11; 32]), &[&laptop]);
        let revoke = w.op_on(
            &laptop,
            base.clone(),
            Payload::Revoke { app: b.public(), cutoff: Cutoff::NONE, rotation },
        );
        let grant = w.grant(&phone, &b, "todo", Rights::ReadWrite, 0, &k0);
        let concurrent = w.op_on(&phone, base, grant);
        let regrant = w.grant(&laptop, &b, "todo", Rights::ReadWrite, 0, &k0);
        let later = w.op_on(&laptop, vec![revoke.id(), concurrent.id()], regrant);
        let c = w.commit(&b, None, T0, "todo", 0, &k0);
        for order in [
            [&revoke, &concurrent, &later],
            [&concurrent, &revoke, &later],
            [&later, &concurrent, &revoke],
        ] {
            let mut log = ControlLog::new(w.db);
            for op in w.log.ordered() {
                log.insert(op.clone(), NOW).unwrap();
            }
            for op in order {
                log.insert(op.clone(), NOW).unwrap();
            }
            let state = log.state();
            assert!(state.apps()[&b.public()].scopes[&scope("todo")].revoked.is_some());
            assert_eq!(
                state.check_commit(c.header(), c.id()),
                Err(AuthError::AfterCutoff { seq: 1, cutoff: 0 })
            );
        }
    }

    #[test]
    fn a_replayed_op_is_a_no_op() {
        let (mut w, k0) = with_todo();
        let (laptop, a) = (w.laptop.clone(), key(20));
        let grant = w.grant(&laptop, &a, "todo", Rights::ReadWrite, 0, &k0);
        let op = w.issue(&laptop, grant);
        let before = w.log.state();
        let replay = ControlOp::decode(op.as_bytes()).unwrap();
        assert_eq!(w.log.insert(replay, NOW), Ok(Inserted::Duplicate));
        assert_eq!(w.log.insert(w.genesis.clone(), NOW), Ok(Inserted::Duplicate));
        assert_eq!(w.log.state(), before);
    }

    #[test]
    fn a_seal_replayed_to_another_recipient_or_forged_does_not_open() {
        let (mut w, k0) = with_todo();
        let (laptop, a, b, stranger) = (w.laptop.clone(), key(20), key(21), key(66));
        let grant = w.grant(&laptop, &a, "todo", Rights::ReadWrite, 0, &k0);
        let Payload::Grant { key: sealed_for_a, .. } = &grant else { unreachable!() };
        let sealed_for_a = sealed_for_a.clone();
        w.issue(&laptop, grant);
        // The same sealed key, granted to B: B cannot open it, under B's
        // label or A's, because the seal is bound to A's keys.
        w.issue(
            &laptop,
            Payload::Grant {
                app: b.public(),
                sealing: b.sealing_key(),
                scope: scope("todo"),
                rights: Rights::ReadWrite,
                epoch: 0,
                key: sealed_for_a.clone(),
            },
        );
        let state = w.log.state();
        assert_eq!(state.scope_keys(&a, &scope("todo"), 0), vec![k0.clone()]);
        assert!(state.scope_keys(&b, &scope("todo"), 0).is_empty());
        let label_a = seal_label(w.db, &scope("todo"), 0, &a.public());
        assert_eq!(
            sealed_for_a.open(&b, &Party::of(&laptop), &label_a),
            Err(SealError::DoesNotOpen)
        );
        // A seal forged by a stranger, carried in the laptop's op: it does
        // not open as the laptop's, so A gets no key from it.
        let forged = SealedKey::seal(
            &ScopeKey::from_bytes([99; 32]),
            &stranger,
            &Party::of(&a),
            &seal_label(w.db, &scope("todo"), 1, &a.public()),
            &mut w.rng,
        )
        .unwrap();
        let mut rotation =
            w.rotation(&laptop, "todo", 1, &ScopeKey::from_bytes([11; 32]), &[&laptop]);
        rotation.seals.insert(a.public(), forged);
        w.issue(&laptop, Payload::RotateKey(rotation));
        let state = w.log.state();
        assert_eq!(state.seals_for(&a.public(), &scope("todo"), 1).len(), 1);
        assert!(state.scope_keys(&a, &scope("todo"), 1).is_empty());
        // A seal moved to another epoch's label does not open either.
        assert!(state.scope_keys(&a, &scope("todo"), 0).len() == 1);
    }

    #[test]
    fn concurrent_rotations_to_one_epoch_keep_both_keys() {
        let (mut w, k0) = with_todo();
        let (laptop, phone) = (w.laptop.clone(), key(3));
        let add = w.add_device(&laptop, &phone, &[("todo", 0, &k0)]);
        w.issue(&laptop, add);
        let base = w.log.heads();
        let (ka, kb) = (ScopeKey::from_bytes([12; 32]), ScopeKey::from_bytes([13; 32]));
        let ra = w.rotation(&laptop, "todo", 1, &ka, &[&laptop, &phone]);
        let rb = w.rotation(&phone, "todo", 1, &kb, &[&laptop, &phone]);
        let a = w.op_on(&laptop, base.clone(), Payload::RotateKey(ra));
        let b = w.op_on(&phone, base, Payload::RotateKey(rb));
        w.log.insert(b.clone(), NOW).unwrap();
        w.log.insert(a.clone(), NOW).unwrap();
        let state = w.log.state();
        let keys = &state.scopes()[&scope("todo")].epochs[&1];
        assert_eq!(keys.len(), 2);
        assert!(keys[0].op < keys[1].op);
        let mut opened = state.scope_keys(&phone, &scope("todo"), 1);
        opened.sort_by_key(|k| *k.as_bytes());
        assert_eq!(opened, vec![ka, kb]);
        // A rotation that does not go past what its author had seen is ignored.
        let stale = w.rotation(&laptop, "todo", 1, &ScopeKey::from_bytes([14; 32]), &[&laptop]);
        w.issue(&laptop, Payload::RotateKey(stale));
        assert_eq!(w.log.state().scopes()[&scope("todo")].epochs[&1].len(), 2);
    }

    #[test]
    fn a_removed_device_is_cut_off_where_its_remover_stood() {
        let (mut w, k0) = with_todo();
        let (laptop, phone, thief_device, pinner) = (w.laptop.clone(), key(3), key(4), key(30));
        let add = w.add_device(&laptop, &phone, &[("todo", 0, &k0)]);
        w.issue(&laptop, add);
        // The phone writes, then is stolen. The laptop removes it, having
        // seen one of its commits.
        let p1 = w.commit(&phone, None, T0, "todo", 0, &k0);
        let p2 = w.commit(&phone, Some(&p1), T0 + 1, "todo", 0, &k0);
        let base = w.log.heads();
        let k1 = ScopeKey::from_bytes([11; 32]);
        let rotation = w.rotation(&laptop, "todo", 1, &k1, &[&laptop]);
        let remove = w.op_on(
            &laptop,
            base.clone(),
            Payload::RemoveDevice {
                device: phone.public(),
                cutoff: cutoff_at(Some(&p1)),
                rotations: BTreeMap::from([(scope("todo"), rotation)]),
            },
        );
        // The thief, pretending not to have seen the removal, adds a device
        // of its own, which adds a pinning peer.
        let add = w.add_device(&phone, &thief_device, &[]);
        let sneak = w.op_on(&phone, base, add);
        let via = w.op_on(
            &thief_device,
            vec![sneak.id()],
            Payload::AddPinner { pinner: pinner.public() },
        );
        for op in [&via, &sneak, &remove] {
            w.log.insert(op.clone(), NOW).unwrap();
        }
        let state = w.log.state();
        assert!(!state.is_device(&phone.public()));
        assert!(!state.is_device(&thief_device.public()));
        assert!(!state.is_pinner(&pinner.public()));
        assert!(state.cut_off().contains(&sneak.id()) && state.cut_off().contains(&via.id()));
        assert_eq!(state.check_commit(p1.header(), p1.id()), Ok(()));
        assert_eq!(
            state.check_commit(p2.header(), p2.id()),
            Err(AuthError::AfterCutoff { seq: 2, cutoff: 1 })
        );
        // The rotation left the phone out.
        assert!(state.scope_keys(&phone, &scope("todo"), 1).is_empty());
        assert_eq!(state.scope_keys(&laptop, &scope("todo"), 1), vec![k1]);
    }

    #[test]
    fn a_removed_device_cannot_reach_what_was_added_after_its_removal() {
        let (mut w, k0) = with_todo();
        let (laptop, phone, tablet, app) = (w.laptop.clone(), key(3), key(6), key(20));
        let add = w.add_device(&laptop, &phone, &[]);
        w.issue(&laptop, add);
        let before_removal = w.log.heads();
        w.issue(
            &laptop,
            Payload::RemoveDevice {
                device: phone.public(),
                cutoff: Cutoff::NONE,
                rotations: BTreeMap::new(),
            },
        );
        // After the phone's removal the laptop adds a tablet and grants an app.
        let add = w.add_device(&laptop, &tablet, &[]);
        w.issue(&laptop, add);
        let grant = w.grant(&laptop, &app, "todo", Rights::ReadWrite, 0, &k0);
        w.issue(&laptop, grant);
        // The thief, claiming not to have seen its removal, tries to remove
        // the tablet and revoke the app: neither is in its ops' past.
        let kick = w.op_on(
            &phone,
            before_removal.clone(),
            Payload::RemoveDevice {
                device: tablet.public(),
                cutoff: Cutoff::NONE,
                rotations: BTreeMap::new(),
            },
        );
        let rotation = w.rotation(&phone, "todo", 7, &ScopeKey::from_bytes([7; 32]), &[]);
        let revoke = w.op_on(
            &phone,
            before_removal,
            Payload::Revoke { app: app.public(), cutoff: Cutoff::NONE, rotation },
        );
        w.log.insert(kick.clone(), NOW).unwrap();
        w.log.insert(revoke.clone(), NOW).unwrap();
        let state = w.log.state();
        assert!(state.is_device(&tablet.public()));
        assert!(state.apps()[&app.public()].scopes[&scope("todo")].revoked.is_none());
        assert!(state.cut_off().contains(&kick.id()) && state.cut_off().contains(&revoke.id()));
    }

    #[test]
    fn mutual_removal_removes_both_and_the_root_can_recover() {
        let (mut w, k0) = with_todo();
        let (laptop, phone, fresh, root) = (w.laptop.clone(), key(3), key(5), w.root.clone());
        let add = w.add_device(&laptop, &phone, &[]);
        w.issue(&laptop, add);
        let base = w.log.heads();
        let remove = |device: &SecretKey| Payload::RemoveDevice {
            device: device.public(),
            cutoff: Cutoff::NONE,
            rotations: BTreeMap::new(),
        };
        let x = w.op_on(&laptop, base.clone(), remove(&phone));
        let y = w.op_on(&phone, base, remove(&laptop));
        w.log.insert(x, NOW).unwrap();
        w.log.insert(y, NOW).unwrap();
        let state = w.log.state();
        assert!(!state.is_device(&laptop.public()) && !state.is_device(&phone.public()));
        // No device is left; the root adds a new one and rotates.
        let add = w.add_device(&root, &fresh, &[]);
        w.issue(&root, add);
        let k1 = ScopeKey::from_bytes([11; 32]);
        let rotation = w.rotation(&root, "todo", 1, &k1, &[&fresh]);
        w.issue(&root, Payload::RotateKey(rotation));
        let state = w.log.state();
        assert!(state.is_device(&fresh.public()));
        assert_eq!(state.scope_keys(&fresh, &scope("todo"), 1), vec![k1]);
        let _ = k0;
    }

    #[test]
    fn pinning_peers_are_added_and_removed_for_good() {
        let (mut w, _) = with_todo();
        let (laptop, pinner) = (w.laptop.clone(), key(30));
        let base = w.log.heads();
        let add = w.op_on(&laptop, base.clone(), Payload::AddPinner { pinner: pinner.public() });
        let remove = w.op_on(&laptop, base, Payload::RemovePinner { pinner: pinner.public() });
        w.log.insert(add.clone(), NOW).unwrap();
        assert!(w.log.state().is_pinner(&pinner.public()));
        w.log.insert(remove, NOW).unwrap();
        assert!(!w.log.state().is_pinner(&pinner.public()));
        w.issue(&laptop, Payload::AddPinner { pinner: pinner.public() });
        assert!(!w.log.state().is_pinner(&pinner.public()));
    }

    #[test]
    fn stamps_must_follow_parents_and_missing_parents_hold() {
        let (mut w, _) = with_todo();
        let laptop = w.laptop.clone();
        let heads = w.log.heads();
        let mut body =
            w.op_on(&laptop, heads, Payload::AddPinner { pinner: key(30).public() }).body().clone();
        body.hlc = Hlc { wall_ms: T0, counter: 0 };
        let early = ControlOp::create(&laptop, body).unwrap();
        assert_eq!(w.log.insert(early, NOW), Err(InsertError::StampNotAfterParents));
        // A child arriving before its parent waits for it.
        let heads = w.log.heads();
        let parent = w.op_on(&laptop, heads, Payload::AddPinner { pinner: key(31).public() });
        let child =
            w.op_on(&laptop, vec![parent.id()], Payload::AddPinner { pinner: key(32).public() });
        assert_eq!(w.log.insert(child.clone(), NOW), Ok(Inserted::Held(vec![parent.id()])));
        assert_eq!(w.log.held(), 1);
        assert_eq!(
            w.log.insert(parent.clone(), NOW),
            Ok(Inserted::Admitted(vec![parent.id(), child.id()]))
        );
        assert_eq!(w.log.held(), 0);
        assert!(w.log.state().is_pinner(&key(32).public()));
        // An op of another database is refused.
        let other = World::new();
        let mut foreign = ControlLog::new(DatabaseId([3; 32]));
        assert!(matches!(foreign.insert(other.genesis, NOW), Err(InsertError::ForeignGenesis(_))));
    }

    #[test]
    fn schemas_resolve_to_the_latest_stamp() {
        let (mut w, _) = with_todo();
        let laptop = w.laptop.clone();
        let k0 = ScopeKey::from_bytes([10; 32]);
        let db = w.db;
        let mut rng = w.rng.clone();
        let todo = crate::Name::new("todo").unwrap();
        let mut schema = |t: &str| Payload::Schema {
            scope: scope("todo"),
            epoch: 0,
            sealed: SealedSchema::seal(&k0, db, &scope("todo"), 0, &todo, t, &mut rng),
        };
        let v1 = schema("v1");
        w.issue(&laptop, v1);
        let v2 = schema("v2");
        let second = w.issue(&laptop, v2);
        let state = w.log.state();
        let (id, winner) = state.schemas().next().unwrap();
        assert_eq!((*id, winner.op), (scope("todo"), second.id()));
        let (namespace, text) = winner.sealed.open(&k0, db, id, 0).unwrap();
        assert_eq!((namespace.as_str(), text.as_str()), ("todo", "v2"));
        // Without the key, neither the namespace nor the text shows.
        let other = ScopeKey::from_bytes([11; 32]);
        assert!(winner.sealed.open(&other, db, id, 0).is_err());
        assert!(winner.sealed.open(&k0, db, id, 1).is_err());
    }

    /// Laptop, phone and tablet are devices and `todo` has epoch 0; the
    /// phone is then stolen: `stolen` are the heads the thief holds.
    fn stolen_phone() -> (World, ScopeKey, SecretKey, SecretKey, Vec<OpId>) {
        let (mut w, k0) = with_todo();
        let (laptop, phone, tablet) = (w.laptop.clone(), key(3), key(6));
        for device in [&phone, &tablet] {
            let add = w.add_device(&laptop, device, &[("todo", 0, &k0)]);
            w.issue(&laptop, add);
        }
        let stolen = w.log.heads();
        (w, k0, phone, tablet, stolen)
    }

    fn remove(device: &SecretKey, cutoff: Cutoff, rotations: Vec<Rotation>) -> Payload {
        Payload::RemoveDevice {
            device: device.public(),
            cutoff,
            rotations: rotations.into_iter().map(|r| (r.scope, r)).collect(),
        }
    }

    #[test]
    fn a_removed_device_gets_no_power_through_a_puppet_it_adds() {
        let (mut w, _, phone, _, stolen) = stolen_phone();
        let laptop = w.laptop.clone();
        w.issue(&laptop, remove(&phone, Cutoff::NONE, vec![]));
        let late = key(7);
        let add = w.add_device(&laptop, &late, &[]);
        w.issue(&laptop, add);
        // The thief signs add-device(puppet) on its old heads; the puppet,
        // which has seen everything, removes the device added after the theft.
        let puppet = key(8);
        let add = w.add_device(&phone, &puppet, &[]);
        let sneak = w.op_on(&phone, stolen, add);
        w.log.insert(sneak.clone(), NOW).unwrap();
        let heads = w.log.heads();
        let kick = w.op_on(&puppet, heads, remove(&late, Cutoff::NONE, vec![]));
        assert!(matches!(w.log.insert(kick.clone(), NOW), Ok(Inserted::Admitted(_))));
        let state = w.log.state();
        assert!(state.is_device(&late.public()), "the puppet removed a device");
        assert!(!state.is_device(&puppet.public()));
        assert!(state.cut_off().contains(&sneak.id()) && state.cut_off().contains(&kick.id()));
    }

    #[test]
    fn a_removal_without_effect_does_not_block_its_target() {
        let (mut w, _, phone, _, stolen) = stolen_phone();
        let laptop = w.laptop.clone();
        w.issue(&laptop, remove(&phone, Cutoff::NONE, vec![]));
        let late = key(7);
        let add = w.add_device(&laptop, &late, &[]);
        w.issue(&laptop, add);
        // The thief's removal of the late device cannot reach it …
        let kick = w.op_on(&phone, stolen, remove(&late, Cutoff::NONE, vec![]));
        w.log.insert(kick.clone(), NOW).unwrap();
        // … and once the late device has seen it, its own ops still count.
        let heads = w.log.heads();
        let pin = w.op_on(&late, heads, Payload::AddPinner { pinner: key(30).public() });
        assert!(matches!(w.log.insert(pin, NOW), Ok(Inserted::Admitted(_))));
        let state = w.log.state();
        assert!(state.is_device(&late.public()));
        assert!(state.is_pinner(&key(30).public()));
    }

    #[test]
    fn an_op_stamped_far_ahead_waits_and_freezes_nothing() {
        let (mut w, _) = with_todo();
        let laptop = w.laptop.clone();
        let now = w.now() + 1000;
        let heads = w.log.heads();
        let mut body =
            w.op_on(&laptop, heads, Payload::AddPinner { pinner: key(30).public() }).body().clone();
        body.hlc = Hlc { wall_ms: u64::MAX, counter: u32::MAX };
        let frozen = ControlOp::create(&laptop, body).unwrap();
        assert!(matches!(w.log.insert(frozen.clone(), now), Err(InsertError::Ahead(_))));
        // Not remembered as refused, not admitted: the log goes on.
        assert!(matches!(w.log.insert(frozen, now), Err(InsertError::Ahead(_))));
        let heads = w.log.heads();
        let next = w.op_on(&laptop, heads, Payload::AddPinner { pinner: key(31).public() });
        assert!(matches!(w.log.insert(next, now + 1000), Ok(Inserted::Admitted(_))));
        assert_eq!(w.log.held(), 0);
    }

    #[test]
    fn a_thief_that_removes_its_remover_wins_nothing() {
        let (mut w, k0, phone, tablet, stolen) = stolen_phone();
        let (laptop, root) = (w.laptop.clone(), w.root.clone());
        // The laptop writes, then removes the stolen phone, rotating `todo`
        // away from it; concurrently the thief removes the laptop with
        // cut-off 0 and a rotation of its own.
        let l1 = w.commit(&laptop, None, T0 + 1, "todo", 0, &k0);
        let l2 = w.commit(&laptop, Some(&l1), T0 + 2, "todo", 0, &k0);
        let k1 = ScopeKey::from_bytes([11; 32]);
        let honest = w.rotation(&laptop, "todo", 1, &k1, &[&root, &laptop, &tablet]);
        let r1 = w.op_on(&laptop, stolen.clone(), remove(&phone, Cutoff::NONE, vec![honest]));
        let kt = ScopeKey::from_bytes([66; 32]);
        let theirs = w.rotation(&phone, "todo", 1, &kt, &[&root, &phone, &tablet]);
        let r2 = w.op_on(&phone, stolen, remove(&laptop, Cutoff::NONE, vec![theirs]));
        w.log.insert(r1.clone(), NOW).unwrap();
        w.log.insert(r2.clone(), NOW).unwrap();
        let state = w.log.state();
        // Both are removed (neither removal can be told from the other) …
        assert!(!state.is_device(&phone.public()) && !state.is_device(&laptop.public()));
        // … both rotations stand, so commits under either epoch stay valid …
        assert_eq!(state.scopes()[&scope("todo")].epochs[&1].len(), 2);
        let t1 = w.commit(&tablet, None, T0 + 3, "todo", 1, &k1);
        assert_eq!(state.check_commit(t1.header(), t1.id()), Ok(()));
        // … and the scope is compromised: the thief made one of its keys.
        assert_eq!(state.compromised(), vec![scope("todo")]);
        // The remaining device rotates before it writes: the thief holds
        // no key of the new epoch.
        let k2 = ScopeKey::from_bytes([12; 32]);
        let heal = w.rotation(&tablet, "todo", 2, &k2, &[&root, &tablet]);
        w.issue(&tablet, Payload::RotateKey(heal));
        let state = w.log.state();
        assert!(state.compromised().is_empty());
        assert!(state.scope_keys(&phone, &scope("todo"), 2).is_empty());
        assert_eq!(state.scope_keys(&tablet, &scope("todo"), 2), vec![k2]);
        // The thief's cut-off 0 dropped the laptop's commits; the root,
        // recovering, sets the laptop's end where the data stands.
        assert!(state.check_commit(l2.header(), l2.id()).is_err());
        w.issue(&root, remove(&laptop, cutoff_at(Some(&l2)), vec![]));
        let state = w.log.state();
        assert_eq!(state.check_commit(l1.header(), l1.id()), Ok(()));
        assert_eq!(state.check_commit(l2.header(), l2.id()), Ok(()));
        // The thief's own end is the laptop's, untouched by the root's.
        let p1 = w.commit(&phone, None, T0 + 4, "todo", 0, &k0);
        assert!(state.check_commit(p1.header(), p1.id()).is_err());
    }

    #[test]
    fn concurrent_revocations_leave_the_scope_compromised_until_a_rotation() {
        let (mut w, k0, phone, _, _) = stolen_phone();
        let (laptop, root, a, b) = (w.laptop.clone(), w.root.clone(), key(20), key(21));
        for app in [&a, &b] {
            let grant = w.grant(&laptop, app, "todo", Rights::ReadWrite, 0, &k0);
            w.issue(&laptop, grant);
        }
        let base = w.log.heads();
        // The laptop revokes A and seals epoch 1 to B; the phone revokes B
        // and seals its epoch 1 to A.
        let ka = ScopeKey::from_bytes([12; 32]);
        let kb = ScopeKey::from_bytes([13; 32]);
        let ra = w.rotation(&laptop, "todo", 1, &ka, &[&root, &laptop, &phone, &b]);
        let rb = w.rotation(&phone, "todo", 1, &kb, &[&root, &laptop, &phone, &a]);
        let x = w.op_on(
            &laptop,
            base.clone(),
            Payload::Revoke { app: a.public(), cutoff: Cutoff::NONE, rotation: ra },
        );
        let y = w.op_on(
            &phone,
            base,
            Payload::Revoke { app: b.public(), cutoff: Cutoff::NONE, rotation: rb },
        );
        w.log.insert(x, NOW).unwrap();
        w.log.insert(y, NOW).unwrap();
        let state = w.log.state();
        assert_eq!(state.compromised(), vec![scope("todo")]);
        let k2 = ScopeKey::from_bytes([14; 32]);
        let heal = w.rotation(&laptop, "todo", 2, &k2, &[&root, &laptop, &phone]);
        w.issue(&laptop, Payload::RotateKey(heal));
        let state = w.log.state();
        assert!(state.compromised().is_empty());
        for app in [&a, &b] {
            assert!(state.scope_keys(app, &scope("todo"), 2).is_empty());
        }
    }

    #[test]
    fn a_removed_devices_flood_costs_little_to_evaluate() {
        let (mut w, k0, phone, _, stolen) = stolen_phone();
        let laptop = w.laptop.clone();
        w.issue(&laptop, remove(&phone, Cutoff::NONE, vec![]));
        // The thief chains thousands of ops on its old heads: devices,
        // grants and removals, all claiming not to have seen its removal.
        let mut parents = stolen;
        for i in 0..3000u32 {
            let target = SecretKey::from_seed([(i % 200) as u8 + 40; 32]);
            let payload = match i % 3 {
                0 => w.add_device(&phone, &target, &[]),
                1 => w.grant(&phone, &target, "todo", Rights::ReadWrite, 0, &k0),
                _ => remove(&target, Cutoff::NONE, vec![]),
            };
            let op = w.op_on(&phone, parents, payload);
            parents = vec![op.id()];
            w.log.insert(op, NOW).unwrap();
        }
        let state = w.log.state();
        assert!(state.is_device(&laptop.public()));
        assert!(state.apps().is_empty());
        assert_eq!(state.devices().len(), 3);
    }

    #[test]
    fn junk_waiting_for_parents_cannot_lock_out_honest_ops() {
        let (mut w, _) = with_todo();
        let laptop = w.laptop.clone();
        let stranger = key(66);
        for i in 0..(ControlLog::MAX_HELD + 100) {
            let parent = OpId([(i % 250) as u8 + 1; 32]);
            let junk =
                w.op_on(&stranger, vec![parent], Payload::AddPinner { pinner: key(30).public() });
            assert!(matches!(w.log.insert(junk, NOW), Ok(Inserted::Held(_))));
        }
        assert_eq!(w.log.held(), ControlLog::MAX_HELD);
        // An honest op arriving before its parent still waits for it.
        let heads = w.log.heads();
        let parent = w.op_on(&laptop, heads, Payload::AddPinner { pinner: key(31).public() });
        let child =
            w.op_on(&laptop, vec![parent.id()], Payload::AddPinner { pinner: key(32).public() });
        assert!(matches!(w.log.insert(child.clone(), NOW), Ok(Inserted::Held(_))));
        assert_eq!(
            w.log.insert(parent.clone(), NOW),
            Ok(Inserted::Admitted(vec![parent.id(), child.id()]))
        );
    }

    #[test]
    fn a_log_restores_from_its_operations_in_any_order() {
        let (mut w, k0) = with_todo();
        let laptop = w.laptop.clone();
        let app = key(20);
        // Many ops on one branch with high ids, a revocation among them.
        let grant = w.grant(&laptop, &app, "todo", Rights::ReadWrite, 0, &k0);
        w.issue(&laptop, grant);
        for i in 0..1500u32 {
            w.issue(
                &laptop,
                Payload::AddPinner { pinner: SecretKey::from_seed([(i % 200) as u8; 32]).public() },
            );
        }
        let rotation = w.rotation(&laptop, "todo", 1, &ScopeKey::from_bytes([11; 32]), &[&laptop]);
        w.issue(&laptop, Payload::Revoke { app: app.public(), cutoff: Cutoff::NONE, rotation });
        let mut ops: Vec<ControlOp> = w.log.ordered().into_iter().cloned().collect();
        ops.reverse();
        let restored = ControlLog::restore(w.db, ops.clone()).unwrap();
        assert_eq!(restored.len(), w.log.len());
        assert_eq!(restored.state(), w.log.state());
        assert!(restored.state().apps()[&app.public()].scopes[&scope("todo")].revoked.is_some());
        // A stored op whose parent is gone is reported, not dropped.
        ops.retain(|op| op.id() != w.genesis.id());
        assert!(matches!(
            ControlLog::restore(w.db, ops),
            Err(super::super::log::RestoreError::MissingParent { .. })
        ));
    }

    #[test]
    fn the_naming_key_reaches_devices_only() {
        let (mut w, k0) = with_todo();
        let (laptop, phone, app, pinner) = (w.laptop.clone(), key(3), key(20), key(30));
        let add = w.add_device(&laptop, &phone, &[("todo", 0, &k0)]);
        w.issue(&laptop, add);
        let grant = w.grant(&laptop, &app, "todo", Rights::Read, 0, &k0);
        w.issue(&laptop, grant);
        w.issue(&laptop, Payload::AddPinner { pinner: pinner.public() });
        let state = w.log.state();
        let naming = NamingKey::of_root(&w.root);
        for device in [&laptop, &phone, &w.root] {
            assert_eq!(state.naming_key(device).as_ref(), Some(&naming));
        }
        assert!(state.naming_key(&app).is_none() && state.naming_key(&pinner).is_none());
        // Scope ids are those of the tests' `scope()`: computed from it.
        assert_eq!(naming.scope_id(&crate::Name::new("todo").unwrap()), scope("todo"));
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        /// One step of a random history: who acts, on which earlier ops, doing what.
        #[derive(Debug, Clone)]
        enum Act {
            AddDevice(u8),
            RemoveDevice(u8, u64),
            Grant(u8, u8, bool, u32),
            Revoke(u8, u8, u64, u32),
            Rotate(u8, u32),
            AddPinner(u8),
            RemovePinner(u8),
            Schema(u8),
        }

        fn act() -> impl Strategy<Value = Act> {
            prop_oneof![
                (0u8..4).prop_map(Act::AddDevice),
                (0u8..4, 0u64..3).prop_map(|(d, c)| Act::RemoveDevice(d, c)),
                (0u8..2, 0u8..2, any::<bool>(), 0u32..3)
                    .prop_map(|(a, s, w, e)| Act::Grant(a, s, w, e)),
                (0u8..2, 0u8..2, 0u64..3, 0u32..4).prop_map(|(a, s, c, e)| Act::Revoke(a, s, c, e)),
                (0u8..2, 0u32..4).prop_map(|(s, e)| Act::Rotate(s, e)),
                (0u8..2).prop_map(Act::AddPinner),
                (0u8..2).prop_map(Act::RemovePinner),
                (0u8..2).prop_map(Act::Schema),
            ]
        }

        fn device(i: u8) -> SecretKey {
            key(2 + i) // device 0 is the laptop, the genesis device
        }

        /// Builds the ops of a random history; many are refused or cut off.
        fn history(steps: &[(u8, Vec<prop::sample::Index>, Act)]) -> (World, Vec<ControlOp>) {
            let mut w = World::new();
            let dummy = w.grant(
                &w.laptop.clone(),
                &key(20),
                "s0",
                Rights::Read,
                0,
                &ScopeKey::from_bytes([1; 32]),
            );
            let Payload::Grant { key: sealed, .. } = dummy else { unreachable!() };
            let mut ops = vec![w.genesis.clone()];
            for (who, picks, act) in steps {
                let author = match who {
                    0 => w.root.clone(),
                    1..=4 => device(who - 1),
                    _ => key(20 + who % 2),
                };
                let scope = |s: &u8| scope(&format!("s{s}"));
                let cutoff = |c: &u64| match c {
                    0 => Cutoff::NONE,
                    n => Cutoff { seq: *n, last: Some(CommitId([*n as u8; 32])) },
                };
                let rotation = |s: &u8, e: &u32| Rotation {
                    scope: scope(s),
                    epoch: *e,
                    seals: BTreeMap::new(),
                };
                let payload = match act {
                    Act::AddDevice(d) => Payload::AddDevice {
                        device: device(*d).public(),
                        sealing: device(*d).sealing_key(),
                        naming: sealed.clone(),
                        keys: BTreeMap::new(),
                    },
                    Act::RemoveDevice(d, c) => Payload::RemoveDevice {
                        device: device(*d).public(),
                        cutoff: cutoff(c),
                        rotations: BTreeMap::new(),
                    },
                    Act::Grant(a, s, write, e) => Payload::Grant {
                        app: key(20 + a).public(),
                        sealing: key(20 + a).sealing_key(),
                        scope: scope(s),
                        rights: if *write { Rights::ReadWrite } else { Rights::Read },
                        epoch: *e,
                        key: sealed.clone(),
                    },
                    Act::Revoke(a, s, c, e) => Payload::Revoke {
                        app: key(20 + a).public(),
                        cutoff: cutoff(c),
                        rotation: rotation(s, e),
                    },
                    Act::Rotate(s, e) => Payload::RotateKey(rotation(s, e)),
                    Act::AddPinner(p) => Payload::AddPinner { pinner: key(30 + p).public() },
                    Act::RemovePinner(p) => Payload::RemovePinner { pinner: key(30 + p).public() },
                    Act::Schema(s) => Payload::Schema {
                        scope: scope(s),
                        epoch: 0,
                        sealed: SealedSchema {
                            nonce: [ops.len() as u8; 24],
                            ciphertext: vec![0; 17],
                        },
                    },
                };
                let parents: Vec<OpId> =
                    picks.iter().map(|i| ops[i.index(ops.len())].id()).collect();
                ops.push(w.op_on(&author, parents, payload));
            }
            (w, ops)
        }

        fn steps() -> impl Strategy<Value = Vec<(u8, Vec<prop::sample::Index>, Act)>> {
            proptest::collection::vec(
                (0u8..7, proptest::collection::vec(any::<prop::sample::Index>(), 1..3), act()),
                1..24,
            )
        }

        fn replay(db: DatabaseId, ops: &[ControlOp]) -> ControlLog {
            let mut log = ControlLog::new(db);
            for op in ops {
                let _ = log.insert(op.clone(), NOW);
            }
            log
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            #[test]
            fn any_arrival_order_gives_the_same_state(
                steps in steps(),
                order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
            ) {
                let (w, ops) = history(&steps);
                let reference = replay(w.db, &ops);
                prop_assert_eq!(reference.held(), 0);
                // Shuffle, and deliver some ops twice.
                let mut shuffled: Vec<ControlOp> = ops.clone();
                let mut x = order | 1;
                for i in (1..shuffled.len()).rev() {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    shuffled.swap(i, (x % (i as u64 + 1)) as usize);
                }
                let again: Vec<ControlOp> = shuffled.iter().step_by(3).cloned().collect();
                shuffled.extend(again);
                let other = replay(w.db, &shuffled);
                prop_assert_eq!(other.held(), 0);
                prop_assert_eq!(
                    other.ordered().iter().map(|o| o.id()).collect::<Vec<_>>(),
                    reference.ordered().iter().map(|o| o.id()).collect::<Vec<_>>()
                );
                prop_assert_eq!(other.state(), reference.state());
            }

            #[test]
            fn removal_and_revocation_are_permanent(steps in steps()) {
                let (w, ops) = history(&steps);
                let log = replay(w.db, &ops);
                let state = log.state();
                // Every removal and revocation in effect holds, whatever
                // else was concurrent or later.
                for op in log.ordered().into_iter().filter(|op| !state.cut_off().contains(&op.id())) {
                    match &op.body().payload {
                        Payload::RemoveDevice { device, .. } => prop_assert!(!state.is_device(device)),
                        Payload::RemovePinner { pinner } => prop_assert!(!state.is_pinner(pinner)),
                        Payload::Revoke { app, rotation, .. } => {
                            if let Some(grant) = state.apps().get(app).and_then(|a| a.scopes.get(&rotation.scope)) {
                                prop_assert!(grant.revoked.is_some());
                            }
                        }
                        _ => {}
                    }
                }
                // Only the root and devices added in their op's past get in.
                for op in log.ordered() {
                    let author = op.body().author;
                    prop_assert!(
                        author == w.root.public()
                            || (2..=5).any(|i| key(i).public() == author),
                        "an app or stranger's op was admitted"
                    );
                }
            }
        }
    }

    /// Issue 4: random interleavings of control operations and data commits
    /// around the revocation of one app.
    mod interleavings {
        use super::*;
        use crate::change::Changes;
        use crate::merge::{Stamp, Tables};
        use crate::value::RowKey;
        use proptest::prelude::*;

        /// Writer 0: app A, revoked at most once (writers 1 and 2 are app B
        /// and the laptop).
        const A: u8 = 0;

        #[derive(Debug, Clone)]
        enum Step {
            /// A writer commits one new row; if `stale`, under the epoch
            /// below the newest it holds (a writer offline since a rotation).
            Write(u8, bool),
            /// The laptop rotates `todo`, sealed to itself and every app not revoked.
            Rotate,
            /// The laptop revokes A, having seen all but A's last `lag` commits.
            Revoke(usize),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                5 => (0u8..3, any::<bool>()).prop_map(|(w, s)| Step::Write(w, s)),
                2 => Just(Step::Rotate),
                2 => (0usize..3).prop_map(Step::Revoke),
            ]
        }

        /// The key of epoch `epoch` ≥ 1 (epoch 0's is `with_todo`'s).
        fn epoch_key(epoch: u32) -> ScopeKey {
            ScopeKey::from_bytes([100 + epoch as u8; 32])
        }

        fn shuffle<T>(items: &mut [T], seed: u64) {
            let mut x = seed | 1;
            for i in (1..items.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                items.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }

        /// Every key `who` can open of every epoch of `todo`, by epoch.
        fn held(state: &AuthState, who: &SecretKey) -> BTreeMap<u32, Vec<ScopeKey>> {
            let todo = scope("todo");
            state.scopes()[&todo]
                .epochs
                .keys()
                .map(|e| (*e, state.scope_keys(who, &todo, *e)))
                .filter(|(_, keys)| !keys.is_empty())
                .collect()
        }

        fn opens(commit: &Commit, keys: &[ScopeKey]) -> Option<Changes> {
            keys.iter().find_map(|k| commit.open(k).ok())
        }

        /// The outcome of a run: the world, and every commit with its writer.
        struct Run {
            w: World,
            who: [SecretKey; 3],
            commits: Vec<(u8, Commit)>,
            /// If A was revoked: how many of its commits the cut-off keeps,
            /// and the first epoch created by the revocation.
            revoked: Option<(u64, u32)>,
        }

        fn run(steps: &[Step], tail: usize) -> Run {
            let (mut w, k0) = with_todo();
            let laptop = w.laptop.clone();
            let (a, b) = (key(20), key(21));
            for app in [&a, &b] {
                let grant = w.grant(&laptop, app, "todo", Rights::ReadWrite, 0, &k0);
                w.issue(&laptop, grant);
            }
            let who = [a.clone(), b.clone(), laptop.clone()];
            let mut chains: [Vec<Commit>; 3] = Default::default();
            let mut commits = Vec::new();
            let mut revoked = None;
            let mut epoch = 0u32;
            let mut count = 0u64;
            let mut write = |w: &mut World, writer: u8, stale: bool, commits: &mut Vec<_>| {
                let author = &who[writer as usize];
                let state = w.log.state();
                let todo = scope("todo");
                // The epochs sealed to it: every one for the laptop.
                let sealed: Vec<u32> = match state.apps().get(&author.public()) {
                    Some(app) => app.scopes[&todo].epochs.iter().copied().collect(),
                    None => state.scopes()[&todo].epochs.keys().copied().collect(),
                };
                let mut epochs = sealed.iter().rev();
                let newest = *epochs.next().expect("every writer holds a key");
                let epoch = if stale { epochs.next().copied().unwrap_or(newest) } else { newest };
                let key = state.scope_keys(author, &todo, epoch).pop().expect("its seal opens");
                count += 1;
                let wall_ms = w.now() + count;
                let chain = &mut chains[writer as usize];
                let c = w.commit(author, chain.last(), wall_ms, "todo", epoch, &key);
                chain.push(c.clone());
                commits.push((writer, c));
            };
            for step in steps {
                match step {
                    Step::Write(writer, stale) => write(&mut w, *writer, *stale, &mut commits),
                    Step::Rotate => {
                        epoch += 1;
                        let readers: &[&SecretKey] =
                            if revoked.is_some() { &[&laptop, &b] } else { &[&laptop, &a, &b] };
                        let rotation =
                            w.rotation(&laptop, "todo", epoch, &epoch_key(epoch), readers);
                        w.issue(&laptop, Payload::RotateKey(rotation));
                    }
                    Step::Revoke(lag) if revoked.is_none() => {
                        let seen = commits.iter().filter(|(by, _)| *by == A).count();
                        let kept = seen.saturating_sub(*lag);
                        let last = kept
                            .checked_sub(1)
                            .map(|i| &commits.iter().filter(|(by, _)| *by == A).nth(i).unwrap().1);
                        let cutoff = cutoff_at(last);
                        epoch += 1;
                        let rotation =
                            w.rotation(&laptop, "todo", epoch, &epoch_key(epoch), &[&laptop, &b]);
                        w.issue(&laptop, Payload::Revoke { app: a.public(), cutoff, rotation });
                        revoked = Some((kept as u64, epoch));
                    }
                    Step::Revoke(_) => {}
                }
            }
            // A keeps writing, with the newest key it holds.
            for _ in 0..tail {
                write(&mut w, A, false, &mut commits);
            }
            Run { w, who, commits, revoked }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn revocation_across_random_interleavings(
                steps in proptest::collection::vec(step(), 1..=12),
                tail in 0usize..3,
                seeds in proptest::collection::vec(any::<u64>(), 2),
            ) {
                let Run { w, who, commits, revoked } = run(&steps, tail);
                let [a, b, laptop] = &who;
                let todo = scope("todo");
                let state = w.log.state();
                let accepted =
                    |s: &AuthState, c: &Commit| s.check_commit(c.header(), c.id()).is_ok();

                // 1. Every node, receiving the ops in any order, reaches the
                // same state and so accepts the same commits.
                let ops: Vec<ControlOp> = w.log.ordered().into_iter().cloned().collect();
                for seed in &seeds {
                    let mut shuffled = ops.clone();
                    shuffle(&mut shuffled, *seed);
                    let mut log = ControlLog::new(w.db);
                    for op in shuffled {
                        prop_assert!(log.insert(op, NOW).is_ok());
                    }
                    prop_assert_eq!(log.held(), 0);
                    let other = log.state();
                    prop_assert_eq!(&other, &state);
                    for (_, c) in &commits {
                        prop_assert_eq!(accepted(&other, c), accepted(&state, c));
                    }
                }

                // 2. A's commits up to the cut-off stay, those after it are
                // rejected (all of them stay if A is not revoked).
                let grant_a = &state.apps()[&a.public()].scopes[&todo];
                prop_assert_eq!(grant_a.revoked.is_some(), revoked.is_some());
                for (_, c) in commits.iter().filter(|(by, _)| *by == A) {
                    let seq = c.header().seq;
                    match revoked {
                        Some((kept, _)) if seq > kept => prop_assert_eq!(
                            state.check_commit(c.header(), c.id()),
                            Err(AuthError::AfterCutoff { seq, cutoff: kept })
                        ),
                        _ => prop_assert_eq!(state.check_commit(c.header(), c.id()), Ok(())),
                    }
                }

                // 3. A holds no key of an epoch created by or after its
                // revocation, and no key it holds opens a commit under one.
                if let Some((_, first)) = revoked {
                    let keys_a = held(&state, a);
                    prop_assert!(keys_a.keys().all(|e| *e < first));
                    prop_assert!(grant_a.epochs.iter().all(|e| *e < first));
                    let all_a: Vec<ScopeKey> = keys_a.into_values().flatten().collect();
                    for (_, c) in commits.iter().filter(|(_, c)| c.header().epoch >= first) {
                        prop_assert!(opens(c, &all_a).is_none());
                    }
                }

                // 4. B and the laptop hold every epoch (B was a reader of all
                // of them) and read every commit, and B's and the laptop's
                // commits are accepted.
                let (keys_b, keys_laptop) = (held(&state, b), held(&state, laptop));
                let epochs = state.scopes()[&todo].epochs.len();
                prop_assert_eq!((keys_b.len(), keys_laptop.len()), (epochs, epochs));
                for (by, c) in &commits {
                    let epoch = c.header().epoch;
                    prop_assert!(opens(c, &keys_b[&epoch]).is_some());
                    prop_assert!(opens(c, &keys_laptop[&epoch]).is_some());
                    if *by != A {
                        prop_assert_eq!(state.check_commit(c.header(), c.id()), Ok(()));
                    }
                }

                // 5. Merging the accepted commits loses no row of B, of the
                // laptop, or of A up to its cut-off, and keeps none of A after it.
                let mut tables = Tables::default();
                for (_, c) in commits.iter().filter(|(_, c)| accepted(&state, c)) {
                    let changes = opens(c, &keys_laptop[&c.header().epoch]);
                    tables.apply(Stamp::of(c.header()), &changes.unwrap());
                }
                let live: BTreeSet<(crate::Name, RowKey)> =
                    tables.live_rows().map(|(t, k, _)| (t.clone(), k.clone())).collect();
                for (by, c) in &commits {
                    let changes = opens(c, &keys_laptop[&c.header().epoch]).unwrap();
                    let row = (changes.ops()[0].table().clone(), changes.ops()[0].key().clone());
                    let kept = *by != A || revoked.is_none_or(|(kept, _)| c.header().seq <= kept);
                    prop_assert_eq!(live.contains(&row), kept, "row of writer {}", by);
                }
            }
        }
    }
}
