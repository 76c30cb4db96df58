//! Computing the authorisation state from the admitted operations
//! (`protocol-spec/control-log.md` §5.3–§5.5).
//!
//! Three facts are structural, decided by an operation's causal past
//! alone: which key epochs exist (a rotation to the next epoch number
//! creates one, whoever signed it), who was sealed which key by a rotation,
//! and which introductions (of a device, a grant, a pinning peer) an
//! operation has in its past. Effect is not: whether an operation by a
//! device counts depends on removals of that device that did not see it,
//! which may come concurrently or later. The state is therefore computed
//! for a set of removals assumed to be in effect, and recomputed with the
//! removals that turned out to be in effect, until the two agree (at most
//! [`MAX_ROUNDS`] times; the last round decides). Every step is a function
//! of the set of operations, so every node holding the same set computes
//! the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::keys::PublicKey;
use crate::scope::ScopeId;

use super::op::{ControlOp, Payload, Rotation};

/// Rounds of the removal fixpoint before the last one decides.
pub(crate) const MAX_ROUNDS: usize = 8;

/// What a destructive operation ends, or an introduction introduces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    Device(PublicKey),
    Grant(PublicKey, ScopeId),
    Pinner(PublicKey),
}

impl Target {
    /// What `op` introduces, if it is an introduction.
    fn introduced_by(op: &ControlOp) -> Option<Target> {
        match &op.body().payload {
            Payload::Genesis { device, .. } | Payload::AddDevice { device, .. } => {
                Some(Target::Device(*device))
            }
            Payload::Grant { app, scope, .. } => Some(Target::Grant(*app, *scope)),
            Payload::AddPinner { pinner } => Some(Target::Pinner(*pinner)),
            _ => None,
        }
    }

    /// What `op` ends, if it is destructive.
    pub(crate) fn ended_by(op: &ControlOp) -> Option<Target> {
        match &op.body().payload {
            Payload::RemoveDevice { device, .. } => Some(Target::Device(*device)),
            Payload::Revoke { app, rotation, .. } => Some(Target::Grant(*app, rotation.scope)),
            Payload::RemovePinner { pinner } => Some(Target::Pinner(*pinner)),
            _ => None,
        }
    }
}

/// A set of operations, by position in canonical order.
#[derive(Debug, Clone)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// The admitted operations in canonical order, with their parents and
/// children by position.
#[derive(Debug)]
pub(crate) struct Dag<'a> {
    pub(crate) ops: &'a [&'a ControlOp],
    parents: Vec<Vec<usize>>,
    /// The epochs a rotation of each operation creates: `(scope, epoch)`.
    pub(crate) created: Vec<Vec<(ScopeId, u32)>>,
    /// The highest epoch of each scope in each operation's past,
    /// including what the operation itself creates.
    pub(crate) epochs: Vec<Arc<BTreeMap<ScopeId, u32>>>,
    /// Operations whose past holds an introduction of a target, by target,
    /// computed when first asked for.
    introduced: std::cell::RefCell<BTreeMap<Target, Arc<Bits>>>,
}

impl<'a> Dag<'a> {
    /// `ordered` must be in canonical order (parents first).
    pub(crate) fn new(ordered: &'a [&'a ControlOp]) -> Self {
        let position: BTreeMap<_, usize> =
            ordered.iter().enumerate().map(|(i, op)| (op.id(), i)).collect();
        let parents: Vec<Vec<usize>> = ordered
            .iter()
            .map(|op| op.body().parents.iter().filter_map(|p| position.get(p).copied()).collect())
            .collect();
        let mut created = Vec::with_capacity(ordered.len());
        let mut epochs: Vec<Arc<BTreeMap<ScopeId, u32>>> = Vec::with_capacity(ordered.len());
        for (i, op) in ordered.iter().enumerate() {
            let mut past = join_maps(parents[i].iter().map(|p| &epochs[*p]));
            let mut made = Vec::new();
            for rotation in rotations(op) {
                let next = past.get(&rotation.scope).map_or(Some(0), |e| e.checked_add(1));
                if next == Some(rotation.epoch) {
                    Arc::make_mut(&mut past).insert(rotation.scope, rotation.epoch);
                    made.push((rotation.scope, rotation.epoch));
                }
            }
            created.push(made);
            epochs.push(past);
        }
        Dag { ops: ordered, parents, created, epochs, introduced: Default::default() }
    }

    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn parents(&self, i: usize) -> &[usize] {
        &self.parents[i]
    }

    /// The highest epoch of `scope` in the past of operation `i`, itself
    /// excluded.
    pub(crate) fn epoch_before(&self, i: usize, scope: &ScopeId) -> Option<u32> {
        self.parents[i].iter().filter_map(|p| self.epochs[*p].get(scope).copied()).max()
    }

    /// Every operation in the past of one of `from` (them included).
    fn ancestors_of(&self, from: impl IntoIterator<Item = usize>) -> Bits {
        let mut bits = Bits::new(self.len());
        for i in from {
            bits.set(i);
        }
        for i in (0..self.len()).rev() {
            if bits.get(i) {
                for p in &self.parents[i] {
                    bits.set(*p);
                }
            }
        }
        bits
    }

    /// Whether an introduction of `target` is in the past of operation `i`
    /// (itself included).
    pub(crate) fn introduced_before(&self, target: &Target, i: usize) -> bool {
        if let Some(bits) = self.introduced.borrow().get(target) {
            return bits.get(i);
        }
        let mut bits = Bits::new(self.len());
        for j in 0..self.len() {
            if Target::introduced_by(self.ops[j]).as_ref() == Some(target)
                || self.parents[j].iter().any(|p| bits.get(*p))
            {
                bits.set(j);
            }
        }
        let answer = bits.get(i);
        self.introduced.borrow_mut().insert(target.clone(), Arc::new(bits));
        answer
    }
}

/// The rotations an operation carries.
pub(crate) fn rotations(op: &ControlOp) -> Vec<&Rotation> {
    match &op.body().payload {
        Payload::RotateKey(rotation) | Payload::Revoke { rotation, .. } => vec![rotation],
        Payload::RemoveDevice { rotations, .. } => rotations.values().collect(),
        _ => Vec::new(),
    }
}

fn join_maps<'m>(
    mut maps: impl Iterator<Item = &'m Arc<BTreeMap<ScopeId, u32>>>,
) -> Arc<BTreeMap<ScopeId, u32>> {
    let Some(first) = maps.next() else { return Arc::default() };
    let mut joined = first.clone();
    for map in maps {
        if Arc::ptr_eq(&joined, map) {
            continue;
        }
        for (scope, epoch) in map.iter() {
            let current = joined.get(scope).copied();
            if current.is_none_or(|c| c < *epoch) {
                Arc::make_mut(&mut joined).insert(*scope, *epoch);
            }
        }
    }
    joined
}

/// Devices added and removed in an operation's past by operations in
/// effect. Shared with a parent while unchanged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Members {
    added: Arc<BTreeSet<PublicKey>>,
    removed: Arc<BTreeSet<PublicKey>>,
}

impl Members {
    pub(crate) fn join<'m>(mut all: impl Iterator<Item = &'m Members>) -> Members {
        let Some(first) = all.next() else { return Members::default() };
        let mut joined = first.clone();
        for other in all {
            for (mine, theirs) in
                [(&mut joined.added, &other.added), (&mut joined.removed, &other.removed)]
            {
                if !Arc::ptr_eq(mine, theirs) && !theirs.is_subset(mine) {
                    Arc::make_mut(mine).extend(theirs.iter().copied());
                }
            }
        }
        joined
    }

    pub(crate) fn is_member(&self, key: &PublicKey) -> bool {
        self.added.contains(key) && !self.removed.contains(key)
    }

    pub(crate) fn add(&mut self, key: PublicKey) {
        if !self.added.contains(&key) {
            Arc::make_mut(&mut self.added).insert(key);
        }
    }

    pub(crate) fn remove(&mut self, key: PublicKey) {
        if !self.removed.contains(&key) {
            Arc::make_mut(&mut self.removed).insert(key);
        }
    }
}

/// For each device named by a removal in `removals`: the operations its
/// removals had seen (their causal pasts, them included).
pub(crate) fn seen_by_removals(
    dag: &Dag<'_>,
    removals: &BTreeSet<usize>,
) -> BTreeMap<PublicKey, Bits> {
    let mut by_device: BTreeMap<PublicKey, Vec<usize>> = BTreeMap::new();
    for i in removals {
        if let Payload::RemoveDevice { device, .. } = &dag.ops[*i].body().payload {
            by_device.entry(*device).or_default().push(*i);
        }
    }
    by_device.into_iter().map(|(device, ops)| (device, dag.ancestors_of(ops))).collect()
}

/// Whether `seen` (from [`seen_by_removals`]) says operation `i` by
/// `author` was not seen by some removal of its author in effect.
pub(crate) fn unseen_by_removal(
    seen: &BTreeMap<PublicKey, Bits>,
    author: &PublicKey,
    i: usize,
) -> bool {
    seen.get(author).is_some_and(|bits| !bits.get(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_hold_what_is_set() {
        let mut bits = Bits::new(130);
        for i in [0, 63, 64, 129] {
            bits.set(i);
        }
        assert!((0..130).all(|i| bits.get(i) == [0, 63, 64, 129].contains(&i)));
    }
}
