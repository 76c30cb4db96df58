//! An independent reference model of the merge, written from
//! `protocol-spec/clocks-and-merge.md` §2–§3 and not from
//! [`basic_proto::merge`]: the tables are what merging every authorised
//! commit from scratch gives. The final check compares every replica with
//! it, so a bug shared by all replicas (they run the same merge function)
//! cannot pass as convergence.
//!
//! A row is `(generation, cells)`; a cell is `(stamp, encoded value)` with
//! the stamp `(hlc wall, hlc counter, author bytes)`. Applying an operation
//! joins the row with the operation's state: the greater generation wins
//! whole; equal generations join cell by cell, the greater stamp winning
//! and, for equal stamps, the greater encoded value.

use std::collections::BTreeMap;

use basic_proto::{Changes, CommitHeader, Name, RowOp, RowState};

/// A stamp: HLC wall time, HLC counter, author key; ordered as written.
type Stamp = (u64, u32, [u8; 32]);

/// One row: its generation and, by column name, the winning stamp and
/// encoded value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Row {
    generation: u32,
    cells: BTreeMap<String, (Stamp, Vec<u8>)>,
}

impl Row {
    /// The model's form of a replica's row state.
    fn of(state: &RowState) -> Self {
        let cells = state
            .cells
            .iter()
            .map(|(column, cell)| {
                let stamp = (cell.stamp.hlc.wall_ms, cell.stamp.hlc.counter, cell.stamp.author.0);
                (column.to_string(), (stamp, cell.value.encode()))
            })
            .collect();
        Row { generation: state.generation, cells }
    }

    fn join(&mut self, other: Row) {
        if other.generation > self.generation {
            *self = other;
        } else if other.generation == self.generation {
            for (column, cell) in other.cells {
                let slot = self.cells.entry(column).or_insert_with(|| cell.clone());
                if cell > *slot {
                    *slot = cell;
                }
            }
        }
    }
}

/// The tables: (table, encoded row key) to row.
#[derive(Debug, Default)]
pub struct Model {
    rows: BTreeMap<(Name, Vec<u8>), Row>,
}

impl Model {
    /// Applies one commit's operations with the commit's stamp.
    pub fn apply(&mut self, header: &CommitHeader, changes: &Changes) {
        let stamp = (header.hlc.wall_ms, header.hlc.counter, *header.author.as_bytes());
        for op in changes.ops() {
            let (table, key, state) = match op {
                RowOp::Upsert { table, key, generation, cells } => {
                    let cells = cells
                        .iter()
                        .map(|(column, value)| (column.to_string(), (stamp, value.encode())))
                        .collect();
                    (table, key, Row { generation: *generation, cells })
                }
                RowOp::Delete { table, key, generation } => {
                    (table, key, Row { generation: *generation, cells: BTreeMap::new() })
                }
            };
            self.rows.entry((table.clone(), key.encode())).or_default().join(state);
        }
    }

    /// Whether `states` (a replica's row states) are exactly the model's
    /// rows of the tables `in_scope` accepts; the first difference if not.
    pub fn compare(
        &self,
        states: &[(Name, Vec<u8>, RowState)],
        in_scope: impl Fn(&Name) -> bool,
    ) -> Result<(), String> {
        let theirs: BTreeMap<(Name, Vec<u8>), Row> = states
            .iter()
            .filter(|(table, _, _)| in_scope(table))
            .map(|(table, key, state)| ((table.clone(), key.clone()), Row::of(state)))
            .collect();
        let ours = self.rows.iter().filter(|((table, _), _)| in_scope(table));
        for ((table, key), row) in ours {
            match theirs.get(&(table.clone(), key.clone())) {
                Some(found) if found == row => {}
                found => {
                    return Err(format!(
                        "{table} row {}: the model has generation {} with {} cells, the \
                         replica {}",
                        short(key),
                        row.generation,
                        row.cells.len(),
                        found.map_or("nothing".to_owned(), |r| format!(
                            "generation {} with {} cells",
                            r.generation,
                            r.cells.len()
                        )),
                    ));
                }
            }
        }
        let extra = theirs.keys().find(|at| !self.rows.contains_key(*at));
        if let Some((table, key)) = extra {
            return Err(format!("{table} row {} is on the replica only", short(key)));
        }
        Ok(())
    }
}

/// The first bytes of an encoded row key, in hex, for messages.
fn short(key: &[u8]) -> String {
    key.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(wall: u64) -> Stamp {
        (wall, 0, [1; 32])
    }

    #[test]
    fn a_greater_generation_wins_whole_and_equal_ones_join_by_cell() {
        let cell = |wall, v: u8| (stamp(wall), vec![v]);
        let mut row = Row { generation: 1, cells: [("a".into(), cell(5, 1))].into() };
        row.join(Row {
            generation: 1,
            cells: [("a".into(), cell(4, 9)), ("b".into(), cell(1, 2))].into(),
        });
        assert_eq!(row.cells, [("a".into(), cell(5, 1)), ("b".into(), cell(1, 2))].into());
        row.join(Row { generation: 2, cells: BTreeMap::new() });
        assert_eq!(row, Row { generation: 2, cells: BTreeMap::new() });
        row.join(Row { generation: 1, cells: [("a".into(), cell(9, 3))].into() });
        assert_eq!(row.generation, 2, "a late update of an ended life stays dead");
        // Equal stamps (a forked author): the greater encoded value.
        let mut tie = Row { generation: 3, cells: [("a".into(), cell(7, 1))].into() };
        tie.join(Row { generation: 3, cells: [("a".into(), cell(7, 2))].into() });
        assert_eq!(tie.cells["a"], cell(7, 2));
    }
}
