//! The merge rules: how row operations combine into tables.
//!
//! Implements `protocol-spec/clocks-and-merge.md` §2–§3. A row's state is
//! its generation and, for that generation, each column's winning write.
//! States form a join-semilattice: the greater generation wins outright
//! (dropping every cell of older generations), and within one generation
//! each cell keeps the write with the greatest [`Stamp`], ties broken by
//! the greater encoded value. Applying operations is joining states, so
//! any set of operations, applied in any order, any number of times,
//! gives the same tables.
//!
//! Deletes: a delete moves a row to the next (even) generation, so it wins
//! over every update made concurrently to the life it ends, and a write
//! made after seeing the delete starts a new life with only its own cells.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use litemap::LiteMap;

use crate::change::{Changes, MAX_GENERATION, RowOp};
use crate::commit::CommitHeader;
use crate::hlc::Hlc;
use crate::keys::AuthorId;
use crate::value::{Name, RowKey, Value};

/// The last-writer-wins order of writes: clock stamp, then author key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// The commit's clock stamp.
    pub hlc: Hlc,
    /// The commit's author.
    pub author: AuthorId,
}

impl Stamp {
    /// The stamp of every write in the commit with this header.
    pub fn of(header: &CommitHeader) -> Stamp {
        Stamp { hlc: header.hlc, author: header.author.into() }
    }
}

/// One column's winning write.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Who wrote it, when.
    pub stamp: Stamp,
    /// What was written.
    pub value: Value,
}

impl Cell {
    /// Whether `self` beats `other`: greater stamp, or for equal stamps
    /// (possible only from a forked author) the greater encoded value.
    pub fn beats(&self, other: &Cell) -> bool {
        match self.stamp.cmp(&other.stamp) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.value.encode() > other.value.encode(),
        }
    }
}

/// A row's cells by column: a vector sorted by name, as a row has few
/// cells (D45); it iterates in name order, like a `BTreeMap`.
pub type Cells = LiteMap<Name, Cell>;

/// What is known of one row: its generation and that generation's cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowState {
    /// Odd while the row exists, even once deleted, 0 if never written.
    pub generation: u32,
    /// Winning writes of the current generation, by column.
    pub cells: Cells,
}

impl RowState {
    /// The state a single operation describes.
    pub fn of_op(op: &RowOp, stamp: Stamp) -> Self {
        match op {
            RowOp::Upsert { generation, cells, .. } => RowState {
                generation: *generation,
                cells: cells
                    .iter()
                    .map(|(name, value)| (name.clone(), Cell { stamp, value: value.clone() }))
                    .collect(),
            },
            RowOp::Delete { generation, .. } => {
                RowState { generation: *generation, cells: Cells::new_vec() }
            }
        }
    }

    /// Whether the row exists.
    pub fn is_live(&self) -> bool {
        self.generation % 2 == 1
    }

    /// The generation a writer gives an upsert of this row: the current one
    /// if the row is live, else the next (odd) one; `None` once a row
    /// deleted at [`MAX_GENERATION`] can live no more.
    pub fn upsert_generation(&self) -> Option<u32> {
        if self.is_live() {
            Some(self.generation)
        } else {
            self.generation.checked_add(1).filter(|g| *g < MAX_GENERATION)
        }
    }

    /// The generation a writer gives a delete of this row: the next (even)
    /// one; `None` if the row is not live.
    pub fn delete_generation(&self) -> Option<u32> {
        if self.is_live() { self.generation.checked_add(1) } else { None }
    }

    /// Joins `other` into `self`; returns whether `self` changed.
    pub fn merge(&mut self, other: RowState) -> bool {
        match other.generation.cmp(&self.generation) {
            Ordering::Greater => {
                *self = other;
                true
            }
            Ordering::Less => false,
            Ordering::Equal => {
                let mut changed = false;
                for (name, cell) in other.cells {
                    match self.cells.get_mut(&name) {
                        Some(current) if !cell.beats(current) => {}
                        Some(current) => {
                            *current = cell;
                            changed = true;
                        }
                        None => {
                            self.cells.insert(name, cell);
                            changed = true;
                        }
                    }
                }
                changed
            }
        }
    }

    /// Applies one operation written at `stamp`; returns whether `self` changed.
    pub fn apply(&mut self, op: &RowOp, stamp: Stamp) -> bool {
        self.merge(RowState::of_op(op, stamp))
    }
}

impl RowOp {
    /// The operation's table and row, and the state it describes written
    /// at `stamp` ([`RowState::of_op`]), its values moved rather than copied.
    pub fn into_state(self, stamp: Stamp) -> (Name, RowKey, RowState) {
        match self {
            RowOp::Upsert { table, key, generation, cells } => {
                let cells = cells.into_iter().map(|(name, value)| (name, Cell { stamp, value }));
                (table, key, RowState { generation, cells: cells.collect() })
            }
            RowOp::Delete { table, key, generation } => {
                (table, key, RowState { generation, cells: Cells::new_vec() })
            }
        }
    }
}

/// Row states of many tables, by table and key: the merge rules over whole
/// change sets, as used by tests, test vectors and the simulator's checks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tables {
    rows: BTreeMap<(Name, RowKey), RowState>,
}

impl Tables {
    /// Applies every operation of a commit written at `stamp`.
    pub fn apply(&mut self, stamp: Stamp, changes: &Changes) {
        for op in changes.ops() {
            self.rows.entry((op.table().clone(), op.key().clone())).or_default().apply(op, stamp);
        }
    }

    /// Every row state ever written, deleted ones included, in key order.
    pub fn states(&self) -> impl Iterator<Item = (&Name, &RowKey, &RowState)> {
        self.rows.iter().map(|((table, key), state)| (table, key, state))
    }

    /// The live rows, in key order.
    pub fn live_rows(&self) -> impl Iterator<Item = (&Name, &RowKey, &RowState)> {
        self.states().filter(|(_, _, state)| state.is_live())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::tests::{any_op, name};
    use crate::keys::SecretKey;
    use crate::value::KeyPart;
    use proptest::prelude::*;

    fn author(n: u8) -> AuthorId {
        SecretKey::from_seed([n; 32]).public().into()
    }

    fn stamp(wall_ms: u64, n: u8) -> Stamp {
        Stamp { hlc: Hlc { wall_ms, counter: 0 }, author: author(n) }
    }

    fn key() -> RowKey {
        RowKey::single(KeyPart::Integer(1))
    }

    fn upsert(generation: u32, cells: &[(&str, Value)]) -> RowOp {
        RowOp::Upsert {
            table: name("t"),
            key: key(),
            generation,
            cells: cells.iter().map(|(c, v)| (name(c), v.clone())).collect(),
        }
    }

    fn delete(generation: u32) -> RowOp {
        RowOp::Delete { table: name("t"), key: key(), generation }
    }

    fn value_of(state: &RowState, column: &str) -> Option<Value> {
        state.cells.get(&name(column)).map(|cell| cell.value.clone())
    }

    #[test]
    fn later_write_wins_per_cell() {
        let mut row = RowState::default();
        row.apply(&upsert(1, &[("a", Value::Integer(1)), ("b", Value::Integer(1))]), stamp(10, 1));
        row.apply(&upsert(1, &[("a", Value::Integer(2))]), stamp(20, 2));
        row.apply(&upsert(1, &[("a", Value::Integer(3)), ("b", Value::Integer(3))]), stamp(15, 3));
        assert_eq!(value_of(&row, "a"), Some(Value::Integer(2)));
        assert_eq!(value_of(&row, "b"), Some(Value::Integer(3)));
    }

    #[test]
    fn equal_stamps_tie_break_on_author_then_value() {
        let mut row = RowState::default();
        row.apply(&upsert(1, &[("a", Value::Integer(1))]), stamp(10, 2));
        let mut other_order = RowState::default();
        other_order.apply(&upsert(1, &[("a", Value::Integer(9))]), stamp(10, 1));
        other_order.apply(&upsert(1, &[("a", Value::Integer(1))]), stamp(10, 2));
        row.apply(&upsert(1, &[("a", Value::Integer(9))]), stamp(10, 1));
        assert_eq!(row, other_order);
        // Same stamp, different values (a forked author): greater encoding wins.
        let mut forked = RowState::default();
        forked.apply(&upsert(1, &[("a", Value::Integer(5))]), stamp(10, 1));
        forked.apply(&upsert(1, &[("a", Value::Integer(4))]), stamp(10, 1));
        assert_eq!(value_of(&forked, "a"), Some(Value::Integer(5)));
    }

    #[test]
    fn delete_wins_over_concurrent_update_even_with_a_later_clock() {
        let mut row = RowState::default();
        row.apply(&upsert(1, &[("a", Value::Integer(1))]), stamp(10, 1));
        row.apply(&delete(2), stamp(20, 1));
        row.apply(&upsert(1, &[("a", Value::Integer(2))]), stamp(99, 2));
        assert!(!row.is_live());
        assert!(row.cells.is_empty());
    }

    #[test]
    fn writers_pick_generations_from_the_row_state() {
        let mut row = RowState::default();
        assert_eq!((row.upsert_generation(), row.delete_generation()), (Some(1), None));
        row.apply(&upsert(1, &[("a", Value::Integer(1))]), stamp(10, 1));
        assert_eq!((row.upsert_generation(), row.delete_generation()), (Some(1), Some(2)));
        row.apply(&delete(2), stamp(20, 1));
        assert_eq!((row.upsert_generation(), row.delete_generation()), (Some(3), None));
        let last_life = RowState { generation: MAX_GENERATION - 1, cells: Cells::new_vec() };
        assert_eq!(last_life.delete_generation(), Some(MAX_GENERATION));
        let dead = RowState { generation: MAX_GENERATION, cells: Cells::new_vec() };
        assert_eq!((dead.upsert_generation(), dead.delete_generation()), (None, None));
    }

    #[test]
    fn reinsert_after_delete_starts_a_fresh_row() {
        let mut row = RowState::default();
        row.apply(&upsert(1, &[("a", Value::Integer(1)), ("b", Value::Integer(1))]), stamp(10, 1));
        row.apply(&delete(2), stamp(20, 1));
        row.apply(&upsert(3, &[("a", Value::Integer(7))]), stamp(30, 2));
        assert!(row.is_live());
        assert_eq!(value_of(&row, "a"), Some(Value::Integer(7)));
        assert_eq!(value_of(&row, "b"), None);
    }

    fn stamped_ops() -> impl Strategy<Value = Vec<(Stamp, Changes)>> {
        proptest::collection::vec((any_op(), 0u64..5, 1u8..4), 1..25).prop_map(|ops| {
            ops.into_iter()
                .map(|(op, wall, who)| (stamp(wall, who), Changes::new(vec![op]).unwrap()))
                .collect()
        })
    }

    fn apply_all<'a>(commits: impl IntoIterator<Item = &'a (Stamp, Changes)>) -> Tables {
        let mut tables = Tables::default();
        for (stamp, changes) in commits {
            tables.apply(*stamp, changes);
        }
        tables
    }

    proptest! {
        /// An operation taken apart describes the state `of_op` does.
        #[test]
        fn an_owned_operation_describes_the_state_a_borrowed_one_does(
            op in any_op(),
            wall_ms in any::<u64>(),
            n in any::<u8>(),
        ) {
            let at = stamp(wall_ms, n);
            let expected = (op.table().clone(), op.key().clone(), RowState::of_op(&op, at));
            prop_assert_eq!(op.into_state(at), expected);
        }

        /// Any order, with any duplicates, gives the same tables.
        #[test]
        fn merge_is_order_and_duplicate_independent(
            commits in stamped_ops(),
            order in any::<proptest::sample::Index>(),
            duplicates in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
            seed in any::<u64>(),
        ) {
            let expected = apply_all(&commits);
            let mut shuffled = commits.clone();
            for d in &duplicates {
                shuffled.push(commits[d.index(commits.len())].clone());
            }
            // Deterministic shuffle driven by the generated seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let pivot = order.index(shuffled.len());
            shuffled.rotate_left(pivot);
            prop_assert_eq!(apply_all(&shuffled), expected);
        }

        /// Joining states is commutative, associative and idempotent.
        #[test]
        fn row_states_form_a_semilattice(commits in stamped_ops()) {
            let states: Vec<RowState> = commits
                .iter()
                .flat_map(|(s, c)| c.ops().iter().map(move |op| RowState::of_op(op, *s)))
                .collect();
            let join = |a: &RowState, b: &RowState| { let mut j = a.clone(); j.merge(b.clone()); j };
            for a in &states {
                prop_assert_eq!(join(a, a), a.clone());
                for b in &states {
                    prop_assert_eq!(join(a, b), join(b, a));
                    for c in &states {
                        prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)));
                    }
                }
            }
        }
    }
}
