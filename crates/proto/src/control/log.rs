//! The set of a database's control operations, and which are admitted.
//!
//! Implements `protocol-spec/control-log.md` §5.1–§5.2. An operation is
//! *admitted* when its parents are admitted, its stamp is above theirs,
//! and its author was a member in its own causal past. That depends on the
//! operation's past only, so an operation refused once is refused on every
//! node, and the admitted set does not depend on the order of arrival.
//! Operations whose parents are not known yet are held (a bounded buffer)
//! and admitted when the parents come. The authorisation state is then a
//! pure function of the admitted set ([`AuthState`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::keys::{AuthorId, DatabaseId, PublicKey};

use super::op::{ControlOp, OpId, Payload};
use super::state::AuthState;

/// Devices added and removed in a causal past (removal is permanent).
/// Joining two pasts is the union of both sets, so the summary of an
/// operation's past is the join of its parents' summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) added: BTreeSet<PublicKey>,
    pub(crate) removed: BTreeSet<PublicKey>,
}

impl Membership {
    pub(crate) fn join(&mut self, other: &Membership) {
        self.added.extend(other.added.iter().copied());
        self.removed.extend(other.removed.iter().copied());
    }

    pub(crate) fn is_member(&self, key: &PublicKey) -> bool {
        self.added.contains(key) && !self.removed.contains(key)
    }
}

/// Why an operation was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The operation names another database.
    #[error("control op belongs to database {found}, not {expected}")]
    WrongDatabase {
        /// This log's database.
        expected: DatabaseId,
        /// The operation's.
        found: DatabaseId,
    },
    /// A genesis operation whose id is not this database's id.
    #[error("genesis operation {0} does not create this database")]
    ForeignGenesis(OpId),
    /// A parent is known and was refused, so this operation is too.
    #[error("control op depends on refused operation {0}")]
    RefusedParent(OpId),
    /// The stamp is not above every parent's: the author's clock did not
    /// observe its parents.
    #[error("control op stamp is not above its parents' stamps")]
    StampNotAfterParents,
    /// The author may not issue this operation: not the root, and not a
    /// device that is a member in the operation's causal past (apps and
    /// pinning peers issue nothing).
    #[error("{author:?} may not issue a {kind} operation here")]
    Unauthorised {
        /// The signer.
        author: AuthorId,
        /// The operation's kind.
        kind: &'static str,
    },
    /// Too many operations are waiting for their parents.
    #[error("{0} control ops already wait for their parents")]
    TooManyHeld(usize),
}

/// What inserting an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Admitted, together with these held operations it unblocked
    /// (in the order admitted; the first is the operation itself).
    Admitted(Vec<OpId>),
    /// Already admitted or held: nothing changed (a replay).
    Duplicate,
    /// Held until these parents are known.
    Held(Vec<OpId>),
}

#[derive(Debug, Clone)]
struct Entry {
    op: ControlOp,
    /// Membership in the operation's past and the operation itself.
    upto: Membership,
}

/// One database's control operations: admitted, held, and refused ids.
#[derive(Debug, Clone)]
pub struct ControlLog {
    database: DatabaseId,
    root: Option<PublicKey>,
    admitted: BTreeMap<OpId, Entry>,
    held: BTreeMap<OpId, ControlOp>,
    refused: BTreeSet<OpId>,
}

impl ControlLog {
    /// Most operations held while their parents are missing.
    pub const MAX_HELD: usize = 1024;
    /// Most refused ids remembered (then forgotten all at once; an op
    /// depending on a forgotten one is held instead of refused).
    pub const MAX_REFUSED: usize = 4096;

    /// An empty log for `database`: the database id is the id of its
    /// genesis operation, which can arrive at any time.
    pub fn new(database: DatabaseId) -> Self {
        Self {
            database,
            root: None,
            admitted: BTreeMap::new(),
            held: BTreeMap::new(),
            refused: BTreeSet::new(),
        }
    }

    /// The database.
    pub fn database(&self) -> DatabaseId {
        self.database
    }

    /// The admitted operation with this id.
    pub fn get(&self, id: &OpId) -> Option<&ControlOp> {
        self.admitted.get(id).map(|e| &e.op)
    }

    /// Number of admitted operations.
    pub fn len(&self) -> usize {
        self.admitted.len()
    }

    /// Whether no operation is admitted (not even the genesis).
    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty()
    }

    /// Operations waiting for parents.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The admitted operations no other admitted operation names as a
    /// parent: what a new local operation takes as its parents.
    pub fn heads(&self) -> Vec<OpId> {
        let named: BTreeSet<OpId> =
            self.admitted.values().flat_map(|e| e.op.body().parents.iter().copied()).collect();
        self.admitted.keys().filter(|id| !named.contains(id)).copied().collect()
    }

    /// Adds a verified operation (see [`ControlOp::decode`]). Idempotent:
    /// a replayed operation has the same id and changes nothing.
    pub fn insert(&mut self, op: ControlOp) -> Result<Inserted, InsertError> {
        let result = self.insert_one(op);
        if result.is_err() {
            // Held operations depending on the refused one are refused too.
            self.settle();
        }
        result
    }

    fn insert_one(&mut self, op: ControlOp) -> Result<Inserted, InsertError> {
        let id = op.id();
        if self.admitted.contains_key(&id) || self.held.contains_key(&id) {
            return Ok(Inserted::Duplicate);
        }
        if op.database() != self.database {
            return Err(self.refuse(
                id,
                match op.body().payload {
                    Payload::Genesis { .. } => InsertError::ForeignGenesis(id),
                    _ => {
                        InsertError::WrongDatabase { expected: self.database, found: op.database() }
                    }
                },
            ));
        }
        if let Some(parent) = op.body().parents.iter().find(|p| self.refused.contains(p)) {
            return Err(self.refuse(id, InsertError::RefusedParent(*parent)));
        }
        let missing: Vec<OpId> =
            op.body().parents.iter().filter(|p| !self.admitted.contains_key(p)).copied().collect();
        if !missing.is_empty() {
            if self.held.len() >= Self::MAX_HELD {
                return Err(InsertError::TooManyHeld(self.held.len()));
            }
            self.held.insert(id, op);
            return Ok(Inserted::Held(missing));
        }
        self.admit(op)?;
        let mut done = vec![id];
        done.extend(self.settle());
        Ok(Inserted::Admitted(done))
    }

    /// Admits held operations whose parents are now all admitted, and
    /// refuses those depending on a refused one, until nothing changes.
    /// Returns the ids admitted, in order.
    fn settle(&mut self) -> Vec<OpId> {
        let mut done = Vec::new();
        loop {
            let mut changed = false;
            let ids: Vec<OpId> = self.held.keys().copied().collect();
            for id in ids {
                let Some(op) = self.held.get(&id) else { continue };
                let parents = &op.body().parents;
                if parents.iter().any(|p| self.refused.contains(p)) {
                    self.held.remove(&id);
                    self.remember_refused(id);
                    changed = true;
                } else if parents.iter().all(|p| self.admitted.contains_key(p)) {
                    if let Some(op) = self.held.remove(&id) {
                        // A held op refused now is remembered as refused;
                        // its error has no caller to go to.
                        if self.admit(op).is_ok() {
                            done.push(id);
                        }
                    }
                    changed = true;
                }
            }
            if !changed {
                return done;
            }
        }
    }

    /// Checks and admits an op whose parents are all admitted.
    fn admit(&mut self, op: ControlOp) -> Result<(), InsertError> {
        let id = op.id();
        let body = op.body();
        let mut past = Membership::default();
        for parent in &body.parents {
            if let Some(entry) = self.admitted.get(parent) {
                past.join(&entry.upto);
                if body.hlc <= entry.op.body().hlc {
                    return Err(self.refuse(id, InsertError::StampNotAfterParents));
                }
            }
        }
        let root = match (&body.payload, self.root) {
            (Payload::Genesis { .. }, _) => body.author,
            (_, Some(root)) => root,
            // Unreachable: a non-genesis op has parents, all admitted, and
            // every admitted op descends from the genesis.
            (_, None) => return Err(self.refuse(id, unauthorised(&op))),
        };
        if body.author != root && !past.is_member(&body.author) {
            return Err(self.refuse(id, unauthorised(&op)));
        }
        let mut upto = past;
        match &body.payload {
            Payload::Genesis { device, .. } => {
                self.root = Some(body.author);
                upto.added.insert(*device);
            }
            Payload::AddDevice { device, .. } => {
                upto.added.insert(*device);
            }
            Payload::RemoveDevice { device, .. } => {
                upto.removed.insert(*device);
            }
            _ => {}
        }
        self.admitted.insert(id, Entry { op, upto });
        Ok(())
    }

    fn refuse(&mut self, id: OpId, error: InsertError) -> InsertError {
        self.remember_refused(id);
        error
    }

    fn remember_refused(&mut self, id: OpId) {
        if self.refused.len() >= Self::MAX_REFUSED {
            self.refused.clear();
        }
        self.refused.insert(id);
    }

    /// The admitted operations not in the causal past of those of `heads`
    /// that are admitted here, in [`ControlLog::ordered`] order: what a
    /// peer whose heads are `heads` may lack.
    pub fn since(&self, heads: &[OpId]) -> Vec<&ControlOp> {
        let mut past = BTreeSet::new();
        let mut stack: Vec<OpId> =
            heads.iter().filter(|h| self.admitted.contains_key(h)).copied().collect();
        while let Some(id) = stack.pop() {
            if past.insert(id) {
                stack.extend(self.get(&id).into_iter().flat_map(|op| op.body().parents.clone()));
            }
        }
        self.ordered().into_iter().filter(|op| !past.contains(&op.id())).collect()
    }

    /// The admitted operations in the deterministic topological order:
    /// parents first, and among operations whose parents are all placed,
    /// the lowest id first.
    pub fn ordered(&self) -> Vec<&ControlOp> {
        let mut waiting: BTreeMap<OpId, usize> = BTreeMap::new();
        let mut children: BTreeMap<OpId, Vec<OpId>> = BTreeMap::new();
        let mut ready = BTreeSet::new();
        for (id, entry) in &self.admitted {
            let parents = &entry.op.body().parents;
            if parents.is_empty() {
                ready.insert(*id);
            }
            waiting.insert(*id, parents.len());
            for parent in parents {
                children.entry(*parent).or_default().push(*id);
            }
        }
        let mut out = Vec::with_capacity(self.admitted.len());
        while let Some(id) = ready.pop_first() {
            if let Some(entry) = self.admitted.get(&id) {
                out.push(&entry.op);
            }
            for child in children.get(&id).into_iter().flatten() {
                if let Some(n) = waiting.get_mut(child) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(*child);
                    }
                }
            }
        }
        out
    }

    /// The authorisation state of the admitted operations.
    pub fn state(&self) -> AuthState {
        AuthState::evaluate(self.database, &self.ordered())
    }
}

fn unauthorised(op: &ControlOp) -> InsertError {
    InsertError::Unauthorised {
        author: op.body().author.into(),
        kind: op.body().payload.kind_name(),
    }
}
