//! The set of a database's control operations, and which are admitted.
//!
//! Implements `protocol-spec/control-log.md` §5.1–§5.2. An operation is
//! *admitted* when its parents are admitted, its stamp is above theirs,
//! and its author is the root or a device added in its own causal past.
//! That depends on the operation's past only, so an operation refused once
//! is refused on every node, and the admitted set does not depend on the
//! order of arrival. Operations whose parents are not known yet are held
//! (a bounded buffer, oldest dropped first: peers offer them again) and
//! admitted when the parents come; operations stamped too far ahead of the
//! local clock are not admitted yet (peers offer them again, too). The
//! authorisation state is then a pure function of the admitted set
//! ([`AuthState`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::hlc::{ClockAhead, check_not_ahead};
use crate::keys::{AuthorId, DatabaseId, PublicKey};

use super::op::{ControlOp, OpId, Payload};
use super::state::AuthState;

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
    /// The stamp is too far ahead of the local clock. Not a refusal: the
    /// operation is not remembered, and is admitted when offered again
    /// once the clock has caught up.
    #[error("control op stamped too far ahead: {0}")]
    Ahead(ClockAhead),
    /// The author may not issue operations here: not the root, and not a
    /// device added in the operation's causal past (apps, pinning peers
    /// and strangers issue nothing).
    #[error("{author:?} may not issue a {kind} operation here")]
    Unauthorised {
        /// The signer.
        author: AuthorId,
        /// The operation's kind.
        kind: &'static str,
    },
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

/// Why stored operations do not form a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// A stored operation names a parent that is not stored.
    #[error("stored control op {op} names parent {parent}, which is not stored")]
    MissingParent {
        /// The operation.
        op: OpId,
        /// The parent it lacks.
        parent: OpId,
    },
    /// A stored operation is refused by the admission rules.
    #[error("stored control op {op} is not admissible: {error}")]
    Refused {
        /// The operation.
        op: OpId,
        /// Why.
        error: InsertError,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    op: ControlOp,
    /// Devices added in the operation's past, or by the operation itself.
    /// Shared with the parent when the operation adds none.
    added: Arc<BTreeSet<PublicKey>>,
}

/// One database's control operations: admitted, held, and refused ids.
#[derive(Debug, Clone)]
pub struct ControlLog {
    database: DatabaseId,
    root: Option<PublicKey>,
    admitted: BTreeMap<OpId, Entry>,
    held: BTreeMap<OpId, (u64, ControlOp)>,
    /// Held operations by arrival, oldest first.
    arrivals: BTreeMap<u64, OpId>,
    held_bytes: usize,
    next_arrival: u64,
    refused: BTreeSet<OpId>,
}

impl ControlLog {
    /// Most operations held while their parents are missing; beyond it the
    /// oldest held operation is dropped.
    pub const MAX_HELD: usize = 1024;
    /// Most bytes of operations held while their parents are missing.
    pub const MAX_HELD_BYTES: usize = 8 << 20;
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
            arrivals: BTreeMap::new(),
            held_bytes: 0,
            next_arrival: 0,
            refused: BTreeSet::new(),
        }
    }

    /// Rebuilds the log of operations admitted earlier (read back from
    /// disk): admitted parents first, whatever order they are given in,
    /// without holding anything and without the clock bound (they passed
    /// it when they arrived). Every operation must be admitted again.
    pub fn restore(
        database: DatabaseId,
        ops: impl IntoIterator<Item = ControlOp>,
    ) -> Result<Self, RestoreError> {
        let mut log = Self::new(database);
        let pending: BTreeMap<OpId, ControlOp> = ops.into_iter().map(|op| (op.id(), op)).collect();
        let mut waiting: BTreeMap<OpId, usize> = BTreeMap::new();
        let mut children: BTreeMap<OpId, Vec<OpId>> = BTreeMap::new();
        let mut ready = BTreeSet::new();
        for (id, op) in &pending {
            let parents = &op.body().parents;
            if let Some(parent) = parents.iter().find(|p| !pending.contains_key(p)) {
                return Err(RestoreError::MissingParent { op: *id, parent: *parent });
            }
            if parents.is_empty() {
                ready.insert(*id);
            }
            waiting.insert(*id, parents.len());
            for parent in parents {
                children.entry(*parent).or_default().push(*id);
            }
        }
        while let Some(id) = ready.pop_first() {
            if let Some(op) = pending.get(&id) {
                log.admit(op.clone(), None)
                    .map_err(|error| RestoreError::Refused { op: id, error })?;
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
        // Whatever was never ready lies on a cycle of parents, which ids
        // (hashes) make impossible; say so rather than drop it.
        if let Some((id, op)) = pending.iter().find(|(id, _)| !log.admitted.contains_key(id)) {
            let parent = op.body().parents.first().copied().unwrap_or(*id);
            return Err(RestoreError::MissingParent { op: *id, parent });
        }
        Ok(log)
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

    /// Adds a verified operation (see [`ControlOp::decode`]) received at
    /// local wall time `now_ms`. Idempotent: a replayed operation has the
    /// same id and changes nothing.
    pub fn insert(&mut self, op: ControlOp, now_ms: u64) -> Result<Inserted, InsertError> {
        let result = self.insert_one(op, now_ms);
        if matches!(result, Err(ref error) if !matches!(error, InsertError::Ahead(_))) {
            // Held operations depending on the refused one are refused too.
            self.settle(now_ms);
        }
        result
    }

    fn insert_one(&mut self, op: ControlOp, now_ms: u64) -> Result<Inserted, InsertError> {
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
        check_not_ahead(op.body().hlc, now_ms).map_err(InsertError::Ahead)?;
        let missing: Vec<OpId> =
            op.body().parents.iter().filter(|p| !self.admitted.contains_key(p)).copied().collect();
        if !missing.is_empty() {
            self.hold(op);
            return Ok(Inserted::Held(missing));
        }
        self.admit(op, Some(now_ms))?;
        let mut done = vec![id];
        done.extend(self.settle(now_ms));
        Ok(Inserted::Admitted(done))
    }

    /// Keeps `op` until its parents come, dropping the oldest held
    /// operations beyond the bounds: a peer offers them again, since they
    /// are not below this log's heads.
    fn hold(&mut self, op: ControlOp) {
        while !self.held.is_empty()
            && (self.held.len() >= Self::MAX_HELD
                || self.held_bytes + op.as_bytes().len() > Self::MAX_HELD_BYTES)
        {
            let Some((_, oldest)) = self.arrivals.pop_first() else { break };
            self.unhold(&oldest);
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.held_bytes += op.as_bytes().len();
        self.arrivals.insert(arrival, op.id());
        self.held.insert(op.id(), (arrival, op));
    }

    fn unhold(&mut self, id: &OpId) -> Option<ControlOp> {
        let (arrival, op) = self.held.remove(id)?;
        self.arrivals.remove(&arrival);
        self.held_bytes -= op.as_bytes().len();
        Some(op)
    }

    /// Admits held operations whose parents are now all admitted, and
    /// refuses those depending on a refused one, until nothing changes.
    /// Returns the ids admitted, in order.
    fn settle(&mut self, now_ms: u64) -> Vec<OpId> {
        let mut done = Vec::new();
        loop {
            let mut changed = false;
            let ids: Vec<OpId> = self.held.keys().copied().collect();
            for id in ids {
                let Some((_, op)) = self.held.get(&id) else { continue };
                let parents = &op.body().parents;
                if parents.iter().any(|p| self.refused.contains(p)) {
                    self.unhold(&id);
                    self.remember_refused(id);
                    changed = true;
                } else if parents.iter().all(|p| self.admitted.contains_key(p)) {
                    if let Some(op) = self.unhold(&id) {
                        // A held op refused now is remembered as refused;
                        // its error has no caller to go to.
                        if self.admit(op, Some(now_ms)).is_ok() {
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

    /// Checks and admits an op whose parents are all admitted; `now_ms`
    /// bounds its stamp (`None` for operations admitted before).
    fn admit(&mut self, op: ControlOp, now_ms: Option<u64>) -> Result<(), InsertError> {
        let id = op.id();
        let body = op.body();
        if let Some(now_ms) = now_ms {
            check_not_ahead(body.hlc, now_ms).map_err(InsertError::Ahead)?;
        }
        let mut added: Option<Arc<BTreeSet<PublicKey>>> = None;
        for parent in &body.parents {
            let Some(entry) = self.admitted.get(parent) else {
                // Unreachable: callers admit only ops whose parents are.
                return Err(self.refuse(id, InsertError::RefusedParent(*parent)));
            };
            if body.hlc <= entry.op.body().hlc {
                return Err(self.refuse(id, InsertError::StampNotAfterParents));
            }
            match &mut added {
                None => added = Some(entry.added.clone()),
                Some(set) if !Arc::ptr_eq(set, &entry.added) => {
                    Arc::make_mut(set).extend(entry.added.iter().copied());
                }
                Some(_) => {}
            }
        }
        let mut added = added.unwrap_or_default();
        let root = match (&body.payload, self.root) {
            (Payload::Genesis { .. }, _) => body.author,
            (_, Some(root)) => root,
            // Unreachable: a non-genesis op has parents, all admitted, and
            // every admitted op descends from the genesis.
            (_, None) => return Err(self.refuse(id, unauthorised(&op))),
        };
        if body.author != root && !added.contains(&body.author) {
            return Err(self.refuse(id, unauthorised(&op)));
        }
        match &body.payload {
            Payload::Genesis { device, .. } => {
                self.root = Some(body.author);
                Arc::make_mut(&mut added).insert(*device);
            }
            Payload::AddDevice { device, .. } if !added.contains(device) => {
                Arc::make_mut(&mut added).insert(*device);
            }
            _ => {}
        }
        self.admitted.insert(id, Entry { op, added });
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
