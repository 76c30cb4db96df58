//! Row operations and the change set: the plaintext inside a commit.
//!
//! Implements `protocol-spec/wire-format.md` §4 (Changes) and the row
//! generations of `protocol-spec/clocks-and-merge.md` §2.
//!
//! A change set is encoded by columns, not by rows: its operations are
//! grouped by table, and each table group holds its row keys, its row
//! generations and one column per written column name, each column a run
//! of cell tags and then the cells' payloads, delta- or front-coded against
//! the column's previous value (the `column` module). The encoding is then
//! padded ([`pad`]) so that a commit's size reveals only a coarse size, and
//! to at least one byte per *unit* ([`Changes::units`]: a row operation, a
//! written cell, or 64 bytes of a text, bytes or json value or key part), so
//! that what a change set costs a receiver, in work and in memory, is
//! proportional to its bytes.

mod column;
pub mod pad;
mod units;
mod wire;

pub use units::BYTES_PER_UNIT;

use std::collections::BTreeSet;

use litemap::LiteMap;

use crate::codec::DecodeError;
use crate::value::{KeyPart, MAX_KEY_PARTS, Name, RowKey, Value};

use column::{Cell, Kind, Runs};
use units::Units;
use wire::{Reader, WHAT, put_name, put_uint};

/// Most row operations in one commit.
pub const MAX_OPS: usize = 10_000;
/// Most cells one upsert may write.
pub const MAX_CELLS: usize = 1_024;
/// Highest row generation: even, so a row at the highest live generation
/// can still be deleted.
pub const MAX_GENERATION: u32 = u32::MAX - 1;
/// Most cells all the upserts of one change set may write together, a
/// writer's bound ([`Changes::new`]). A decodable change set always has
/// fewer: it is at least one byte per unit ([`Changes::units`]) and at most
/// [`MAX_CHANGES_BYTES`] long.
pub const MAX_CHANGE_CELLS: usize = 1 << 20;
/// Largest encoded change set, padding included, equal to the commit size limit.
pub const MAX_CHANGES_BYTES: usize = crate::commit::MAX_COMMIT_BYTES;

/// One change to one row.
///
/// A row's *generation* counts its lives: odd while it exists, even once
/// deleted (0: never written). An upsert carries the odd generation of the
/// row it writes; a delete carries the even generation it moves the row to.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    /// Write cells of a live row (creating it if the generation is new).
    Upsert {
        /// The table.
        table: Name,
        /// The row's primary key.
        key: RowKey,
        /// The row's generation: odd.
        generation: u32,
        /// The cells written, by column (a vector sorted by name: a row
        /// writes few cells).
        cells: LiteMap<Name, Value>,
    },
    /// Delete a row.
    Delete {
        /// The table.
        table: Name,
        /// The row's primary key.
        key: RowKey,
        /// The generation the row moves to: even, at least 2.
        generation: u32,
    },
}

impl RowOp {
    /// The table written.
    pub fn table(&self) -> &Name {
        match self {
            RowOp::Upsert { table, .. } | RowOp::Delete { table, .. } => table,
        }
    }

    /// The row written.
    pub fn key(&self) -> &RowKey {
        match self {
            RowOp::Upsert { key, .. } | RowOp::Delete { key, .. } => key,
        }
    }

    /// The generation the op writes.
    pub fn generation(&self) -> u32 {
        match self {
            RowOp::Upsert { generation, .. } | RowOp::Delete { generation, .. } => *generation,
        }
    }

    /// Number of cells the op changes (a delete counts as one).
    pub fn cell_count(&self) -> usize {
        match self {
            RowOp::Upsert { cells, .. } => cells.len(),
            RowOp::Delete { .. } => 1,
        }
    }

    /// Why the op's generation is not allowed, if it is not.
    pub fn generation_error(&self) -> Option<&'static str> {
        match self {
            RowOp::Upsert { generation, .. } if generation % 2 == 0 => {
                Some("an upsert's generation must be odd")
            }
            RowOp::Delete { generation, .. } if *generation == 0 || generation % 2 == 1 => {
                Some("a delete's generation must be even and at least 2")
            }
            _ if self.generation() > MAX_GENERATION => Some("over the highest generation"),
            _ => None,
        }
    }
}

/// The row operations of one commit: 1 to [`MAX_OPS`], at most one per row,
/// the keys of one table all of one length, in canonical order (by table
/// name, then by row key).
#[derive(Debug, Clone, PartialEq)]
pub struct Changes(Vec<RowOp>);

/// Why a change set cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangesError {
    /// No operations, or more than [`MAX_OPS`].
    #[error("a commit holds 1 to {MAX_OPS} row operations, not {0}")]
    Count(usize),
    /// An operation's generation breaks the rules.
    #[error("row {key:?} of {table}: {reason}")]
    BadGeneration {
        /// The table.
        table: Name,
        /// The row.
        key: RowKey,
        /// The rule broken.
        reason: &'static str,
    },
    /// An upsert writes more than [`MAX_CELLS`] cells.
    #[error("row {key:?} of {table} writes {count} cells, over the limit of {MAX_CELLS}")]
    TooManyCells {
        /// The table.
        table: Name,
        /// The row.
        key: RowKey,
        /// The cells it writes.
        count: usize,
    },
    /// The upserts write more than [`MAX_CHANGE_CELLS`] cells together.
    #[error("the operations write {0} cells, over the limit of {MAX_CHANGE_CELLS} a commit")]
    TotalCells(usize),
    /// Two operations on the same row.
    #[error("row {key:?} of {table} is changed twice in one commit")]
    DuplicateRow {
        /// The table.
        table: Name,
        /// The row.
        key: RowKey,
    },
    /// Two keys of one table with different numbers of parts.
    #[error("the keys of {table} have {first} and {second} parts: a table has one key shape")]
    KeyShape {
        /// The table.
        table: Name,
        /// Parts of one key.
        first: usize,
        /// Parts of another.
        second: usize,
    },
}

impl Changes {
    /// Checks `ops` and puts them in canonical order.
    ///
    /// Checks, in this order: the count; each operation in the order given,
    /// its generation then its cell count; the total cell count; then, in
    /// canonical order, each pair of neighbouring operations for the same
    /// row or for keys of different lengths in one table.
    pub fn new(mut ops: Vec<RowOp>) -> Result<Self, ChangesError> {
        if ops.is_empty() || ops.len() > MAX_OPS {
            return Err(ChangesError::Count(ops.len()));
        }
        let mut total = 0;
        for op in &ops {
            if let Some(reason) = op.generation_error() {
                return Err(ChangesError::BadGeneration {
                    table: op.table().clone(),
                    key: op.key().clone(),
                    reason,
                });
            }
            if let RowOp::Upsert { cells, .. } = op {
                if cells.len() > MAX_CELLS {
                    return Err(ChangesError::TooManyCells {
                        table: op.table().clone(),
                        key: op.key().clone(),
                        count: cells.len(),
                    });
                }
                total += cells.len();
            }
        }
        if total > MAX_CHANGE_CELLS {
            return Err(ChangesError::TotalCells(total));
        }
        ops.sort_by(|a, b| (a.table(), a.key()).cmp(&(b.table(), b.key())));
        for pair in ops.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.table() != b.table() {
                continue;
            }
            if a.key() == b.key() {
                return Err(ChangesError::DuplicateRow {
                    table: a.table().clone(),
                    key: a.key().clone(),
                });
            }
            let (first, second) = (a.key().parts().len(), b.key().parts().len());
            if first != second {
                return Err(ChangesError::KeyShape { table: a.table().clone(), first, second });
            }
        }
        Ok(Self(ops))
    }

    /// The operations, in canonical order: by table name (bytewise), then
    /// by row key.
    pub fn ops(&self) -> &[RowOp] {
        &self.0
    }

    /// The operations, in canonical order, taken out.
    pub fn into_ops(self) -> Vec<RowOp> {
        self.0
    }

    /// Total cells changed.
    pub fn cell_count(&self) -> usize {
        self.0.iter().map(RowOp::cell_count).sum()
    }

    /// The change set's *units*: its row operations, plus the cells its
    /// upserts write, plus one per [`BYTES_PER_UNIT`] bytes of each text,
    /// bytes or json value and text or bytes key part (rounded down). Its
    /// encoding is never shorter (wire-format §4.4): what a receiver
    /// decodes is bounded by bytes, whatever runs and front coding make
    /// cheap.
    pub fn units(&self) -> usize {
        self.0.iter().map(units::of_op).sum()
    }

    /// The encoding, padded to `pad(max(content, units))`: the plaintext a
    /// commit encrypts.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_content();
        out.resize(pad::padded_len(out.len().max(self.units())), 0);
        out
    }

    /// The encoding before its padding.
    fn encode_content(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let groups: Vec<&[RowOp]> = self.0.chunk_by(|a, b| a.table() == b.table()).collect();
        put_uint(&mut out, groups.len() as u64);
        for group in groups {
            encode_group(&mut out, group);
        }
        out
    }

    /// Decodes and checks a padded change set: the one encoding of a valid
    /// change set, and nothing more.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_CHANGES_BYTES {
            return Err(DecodeError::TooLarge {
                what: WHAT,
                len: bytes.len(),
                max: MAX_CHANGES_BYTES,
            });
        }
        let mut reader = Reader::new(bytes);
        let groups = reader.count("changes", 1, MAX_OPS)?;
        let mut ops = Vec::new();
        let mut units = Units::new(bytes.len());
        let mut previous: Option<Name> = None;
        for _ in 0..groups {
            let table = reader.name("op.table")?;
            if previous.as_ref().is_some_and(|previous| *previous >= table) {
                return Err(DecodeError::NonCanonical { what: WHAT });
            }
            decode_group(&mut reader, &table, &mut ops, &mut units)?;
            previous = Some(table);
        }
        let content = reader.position();
        let padded = pad::padded_len(content.max(units.count()));
        if bytes.len() != padded {
            return Err(DecodeError::BadLength {
                field: "changes.padding",
                len: bytes.len(),
                min: padded,
                max: padded,
            });
        }
        if bytes[content..].iter().any(|&b| b != 0) {
            return Err(DecodeError::InvalidValue {
                field: "changes.padding",
                reason: "padding bytes must be zero".into(),
            });
        }
        Ok(Self(ops))
    }
}

/// Appends one table group: operations on one table, in key order.
fn encode_group(out: &mut Vec<u8>, ops: &[RowOp]) {
    put_name(out, ops[0].table());
    put_uint(out, ops.len() as u64);
    let parts = ops[0].key().parts().len();
    put_uint(out, parts as u64);
    let mut cells = Vec::with_capacity(ops.len());
    for part in 0..parts {
        cells.clear();
        cells.extend(
            ops.iter().map(|op| op.key().parts().get(part).map_or(Cell::Absent, Cell::Key)),
        );
        column::encode(out, &cells);
    }
    for run in ops.chunk_by(|a, b| a.generation() == b.generation()) {
        put_uint(out, run[0].generation().into());
        put_uint(out, run.len() as u64);
    }
    let columns: BTreeSet<&Name> = ops
        .iter()
        .flat_map(|op| match op {
            RowOp::Upsert { cells, .. } => Some(cells.keys()),
            RowOp::Delete { .. } => None,
        })
        .flatten()
        .collect();
    put_uint(out, columns.len() as u64);
    for name in columns {
        put_name(out, name);
        cells.clear();
        cells.extend(ops.iter().map(|op| match op {
            RowOp::Upsert { cells, .. } => cells.get(name).map_or(Cell::Absent, Cell::Value),
            RowOp::Delete { .. } => Cell::Absent,
        }));
        column::encode(out, &cells);
    }
}

/// Reads the rest of the group of `table` and appends its operations to
/// `ops`, counting its rows, the cells it writes and their payloads into
/// `units`.
fn decode_group(
    reader: &mut Reader<'_>,
    table: &Name,
    ops: &mut Vec<RowOp>,
    units: &mut Units,
) -> Result<(), DecodeError> {
    let rows = reader.count("table.rows", 1, MAX_OPS - ops.len())?;
    units.add(rows)?;
    let parts = reader.count("op.key", 1, MAX_KEY_PARTS)?;
    let mut keys: Vec<Vec<KeyPart>> = vec![Vec::with_capacity(parts); rows];
    for _ in 0..parts {
        Runs::read(reader, rows, Kind::Key)?.read_values(reader, units, |row, value| {
            let part = KeyPart::from_value(value).ok_or(DecodeError::WrongType {
                field: "op.key",
                expected: "integer, text or bytes key",
            })?;
            keys[row].push(part);
            Ok(())
        })?;
    }
    let keys: Vec<RowKey> = keys.into_iter().filter_map(RowKey::new).collect();
    for pair in keys.windows(2) {
        match pair[0].cmp(&pair[1]) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                return Err(DecodeError::InvalidValue {
                    field: "changes",
                    reason: format!("row {:?} of {table} is changed twice in one commit", pair[0]),
                });
            }
            std::cmp::Ordering::Greater => return Err(DecodeError::NonCanonical { what: WHAT }),
        }
    }
    let generations = read_generations(reader, rows)?;
    let columns = reader.count("table.columns", 0, MAX_CHANGE_CELLS)?;
    // Each row's cells in column order, which is name order: the maps are
    // built row by row at the end, from sorted input, with no search.
    let mut written: Vec<Vec<(Name, Value)>> = vec![Vec::new(); rows];
    let mut previous: Option<Name> = None;
    for _ in 0..columns {
        let name = reader.name("op.cells.column")?;
        if previous.as_ref().is_some_and(|previous| *previous >= name) {
            return Err(DecodeError::NonCanonical { what: WHAT });
        }
        let runs = Runs::read(reader, rows, Kind::Values)?;
        for row in runs.present().flatten() {
            if generations[row] % 2 == 0 {
                return Err(DecodeError::InvalidValue {
                    field: "op.cells",
                    reason: "a delete writes no cells".into(),
                });
            }
            // A column writes a row at most once: this is the row's cell
            // number `len() + 1`.
            if written[row].len() >= MAX_CELLS {
                return Err(DecodeError::BadLength {
                    field: "op.cells",
                    len: MAX_CELLS + 1,
                    min: 0,
                    max: MAX_CELLS,
                });
            }
            units.add(1)?;
        }
        runs.read_values(reader, units, |row, value| {
            written[row].push((name.clone(), value));
            Ok(())
        })?;
        previous = Some(name);
    }
    ops.reserve(rows);
    for ((key, generation), cells) in keys.into_iter().zip(generations).zip(written) {
        let table = table.clone();
        ops.push(if generation % 2 == 1 {
            // In strictly increasing name order (checked above).
            let cells = LiteMap::from_sorted_store_unchecked(cells);
            RowOp::Upsert { table, key, generation, cells }
        } else {
            RowOp::Delete { table, key, generation }
        });
    }
    Ok(())
}

/// Reads runs of generations, `[generation, count]` each, covering `rows`.
fn read_generations(reader: &mut Reader<'_>, rows: usize) -> Result<Vec<u32>, DecodeError> {
    let mut generations = Vec::with_capacity(rows);
    while generations.len() < rows {
        let generation = reader.uint("op.generation")?;
        let generation = u32::try_from(generation)
            .ok()
            .filter(|g| (1..=MAX_GENERATION).contains(g))
            .ok_or_else(|| DecodeError::InvalidValue {
                field: "op.generation",
                reason: format!("generation {generation} is outside 1..={MAX_GENERATION}"),
            })?;
        let left = rows - generations.len();
        let run = usize::try_from(reader.uint("table.generations")?).unwrap_or(usize::MAX);
        if run == 0 || run > left {
            return Err(DecodeError::InvalidValue {
                field: "table.generations",
                reason: format!("a run of {run} generations where {left} rows are left"),
            });
        }
        if generations.last() == Some(&generation) {
            return Err(DecodeError::NonCanonical { what: WHAT });
        }
        generations.extend(std::iter::repeat_n(generation, run));
    }
    Ok(generations)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::column::Tag;
    use super::*;
    use crate::value::tests::any_value;
    use crate::value::{KeyPart, MAX_VALUE_LEN};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    pub(crate) fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// One op on one of a few rows: for merge tests, where rows must collide.
    pub(crate) fn any_op() -> impl Strategy<Value = RowOp> {
        let table = prop_oneof![Just(name("app.items")), Just(name("app.tags"))];
        let key = (0i64..6).prop_map(|k| RowKey::single(KeyPart::Integer(k)));
        let cells = proptest::collection::btree_map(
            prop_oneof![Just(name("a")), Just(name("b")), Just(name("title"))],
            any_value(),
            0..3,
        );
        prop_oneof![
            3 => (table.clone(), key.clone(), 0u32..3, cells).prop_map(|(table, key, g, cells)| {
                RowOp::Upsert { table, key, generation: 2 * g + 1, cells: cells.into_iter().collect() }
            }),
            1 => (table, key, 1u32..3).prop_map(|(table, key, g)| RowOp::Delete { table, key, generation: 2 * g }),
        ]
    }

    /// A key of `table`'s shape: one integer for `app.items`, a text and a
    /// bytes part for `app.tags`, one text for `app.notes`.
    fn any_key(table: usize) -> BoxedStrategy<RowKey> {
        match table {
            0 => (-300i64..300).prop_map(|k| RowKey::single(KeyPart::Integer(k))).boxed(),
            1 => ("[a-c]{0,3}", proptest::collection::vec(0u8..3, 0..3))
                .prop_map(|(t, b)| RowKey::new(vec![KeyPart::Text(t), KeyPart::Bytes(b)]).unwrap())
                .boxed(),
            // Now and then a key of 70 bytes or more, which counts units.
            _ => ("(row-)?[0-9]{0,4}", proptest::bool::weighted(0.2))
                .prop_map(|(t, long)| {
                    let t = if long { format!("{}{t}", "n".repeat(70)) } else { t };
                    RowKey::single(KeyPart::Text(t))
                })
                .boxed(),
        }
    }

    const TABLES: [&str; 3] = ["app.items", "app.tags", "app.notes"];

    /// What is written to one row: cells at an odd generation (`None`
    /// standing for the change set's long value), or a delete.
    fn any_body() -> impl Strategy<Value = (u32, Option<BTreeMap<Name, Option<Value>>>)> {
        let cells = proptest::collection::btree_map(
            prop_oneof![Just(name("a")), Just(name("b")), Just(name("title")), Just(name("z9"))],
            prop_oneof![6 => any_value().prop_map(Some), 1 => Just(None)],
            0..4,
        );
        prop_oneof![
            4 => (0u32..3, cells).prop_map(|(g, cells)| (2 * g + 1, Some(cells))),
            1 => (1u32..3).prop_map(|g| (2 * g, None)),
        ]
    }

    /// A text, bytes or json value of 64 to 300 bytes, which counts units
    /// (wire-format.md §4.0) and which a change set repeats on many rows,
    /// so that front coding makes it a few bytes a row.
    fn any_long_value() -> impl Strategy<Value = Value> {
        ("[a-z]{1,8}", 64usize..=300, 0..3).prop_map(|(seed, len, kind)| {
            let mut text = seed.repeat(len / seed.len() + 1);
            text.truncate(len);
            match kind {
                0 => Value::Text(text),
                1 => Value::Bytes(text.into_bytes()),
                _ => Value::Json(format!("\"{}\"", &text[2..])),
            }
        })
    }

    /// A valid change set of 1 to 200 ops on distinct rows, in a shuffled
    /// order, its cells now and then one long value repeated.
    fn any_changes() -> impl Strategy<Value = Vec<RowOp>> {
        let row = (0..TABLES.len()).prop_flat_map(|t| (Just(t), any_key(t)));
        (proptest::collection::btree_map(row, any_body(), 1..200), any_long_value())
            .prop_map(|(rows, long)| {
                rows.into_iter()
                    .map(|((t, key), (generation, cells))| {
                        let table = name(TABLES[t]);
                        match cells {
                            Some(cells) => {
                                let cells = cells
                                    .into_iter()
                                    .map(|(c, v)| (c, v.unwrap_or_else(|| long.clone())))
                                    .collect();
                                RowOp::Upsert { table, key, generation, cells }
                            }
                            None => RowOp::Delete { table, key, generation },
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .prop_shuffle()
    }

    /// A change set of more units than bytes: up to 3,000 rows of one table,
    /// keyed 0.., each writing the same null, bool or long (64 to 300
    /// bytes) cells, some deleted. Runs and front coding make it a few
    /// bytes a column, so the units rule pads it.
    fn any_compressible_changes() -> impl Strategy<Value = Vec<RowOp>> {
        let cells = proptest::collection::btree_map(
            prop_oneof![Just(name("a")), Just(name("b")), Just(name("done"))],
            prop_oneof![
                Just(Some(Value::Null)),
                any::<bool>().prop_map(|b| Some(Value::Bool(b))),
                Just(None),
            ],
            1..4,
        );
        let deleted = proptest::collection::btree_set(0i64..3_000, 0..20);
        (1i64..3_000, cells, any_long_value(), deleted).prop_map(|(rows, cells, long, deleted)| {
            let cells: LiteMap<Name, Value> =
                cells.into_iter().map(|(c, v)| (c, v.unwrap_or_else(|| long.clone()))).collect();
            (0..rows)
                .map(|k| {
                    let (table, key) = (name("app.items"), RowKey::single(KeyPart::Integer(k)));
                    if deleted.contains(&k) {
                        RowOp::Delete { table, key, generation: 2 }
                    } else {
                        RowOp::Upsert { table, key, generation: 1, cells: cells.clone() }
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn changes_round_trip(ops in prop_oneof![any_changes(), any_compressible_changes()]) {
            let count = ops.len();
            let changes = Changes::new(ops).unwrap();
            prop_assert_eq!(changes.ops().len(), count);
            prop_assert!(changes.ops().windows(2).all(|w| (w[0].table(), w[0].key()) < (w[1].table(), w[1].key())));
            let bytes = changes.encode();
            let content = changes.encode_content().len();
            prop_assert_eq!(bytes.len(), pad::padded_len(content.max(changes.units())));
            prop_assert!(bytes.len() >= changes.units());
            prop_assert_eq!(Changes::decode(&bytes).unwrap(), changes);
        }

        /// Padding short of the units rule is refused, however it is cut:
        /// to the content's own padded length (what an encoder without the
        /// rule writes), or to any length below the units.
        #[test]
        fn padding_below_the_units_is_refused(ops in any_compressible_changes(), cut in any::<prop::sample::Index>()) {
            let changes = Changes::new(ops).unwrap();
            let content = changes.encode_content();
            prop_assume!(content.len() < changes.units());
            let short = cut.index(changes.units() - content.len()) + content.len();
            for len in [pad::padded_len(content.len()), short] {
                if len >= changes.units() {
                    continue;
                }
                let mut bytes = content.clone();
                bytes.resize(len, 0);
                let refused = matches!(
                    Changes::decode(&bytes),
                    Err(DecodeError::BadLength { field: "changes.units", .. })
                );
                prop_assert!(refused, "{} bytes for {} units", len, changes.units());
            }
        }

        /// Mutations of valid encodings get past the first bytes; whatever
        /// decodes must be the one encoding of what it decodes to.
        #[test]
        fn mutated_encodings_decode_only_canonically(
            ops in prop_oneof![any_changes(), any_compressible_changes()],
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
        ) {
            let mut bytes = Changes::new(ops).unwrap().encode();
            for (at, byte, how) in edits {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes[at] = byte,
                    1 => bytes[at] ^= 1 << (byte % 8),
                    2 => { bytes.remove(at); }
                    _ => bytes.insert(at, byte),
                }
            }
            if let Ok(changes) = Changes::decode(&bytes) {
                prop_assert_eq!(changes.encode(), bytes);
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Changes::decode(&bytes);
        }
    }

    fn upsert(generation: u32) -> RowOp {
        RowOp::Upsert {
            table: name("t"),
            key: RowKey::single(KeyPart::Text("k".into())),
            generation,
            cells: LiteMap::from_iter([(name("c"), Value::Integer(1))]),
        }
    }

    fn delete(key: i64, generation: u32) -> RowOp {
        RowOp::Delete { table: name("t"), key: RowKey::single(KeyPart::Integer(key)), generation }
    }

    /// `content` padded as the encoder pads.
    fn padded(mut content: Vec<u8>) -> Vec<u8> {
        content.resize(pad::padded_len(content.len()), 0);
        content
    }

    #[test]
    fn example_encoding() {
        let changes = Changes::new(vec![RowOp::Upsert {
            table: name("todo.items"),
            key: RowKey::single(KeyPart::Text("milk".into())),
            generation: 1,
            cells: LiteMap::from_iter([(name("title"), Value::Text("Buy milk".into()))]),
        }])
        .unwrap();
        let mut content = vec![0x01, 0x0a];
        content.extend(b"todo.items");
        content.extend([0x01, 0x01, 0x16, 0x00, 0x04]);
        content.extend(b"milk");
        content.extend([0x01, 0x01, 0x01, 0x05]);
        content.extend(b"title");
        content.extend([0x16, 0x00, 0x08]);
        content.extend(b"Buy milk");
        let bytes = changes.encode();
        assert_eq!(bytes.len(), 64);
        assert_eq!(bytes, padded(content));
    }

    #[test]
    fn generations_are_checked() {
        assert!(matches!(Changes::new(vec![upsert(2)]), Err(ChangesError::BadGeneration { .. })));
        assert!(matches!(
            Changes::new(vec![upsert(u32::MAX)]),
            Err(ChangesError::BadGeneration { .. })
        ));
        assert!(matches!(
            Changes::new(vec![delete(1, 3)]),
            Err(ChangesError::BadGeneration { .. })
        ));
        // An even generation makes a delete: one that writes cells is refused.
        assert_eq!(
            Changes::decode(&Changes(vec![upsert(2)]).encode()),
            Err(DecodeError::InvalidValue {
                field: "op.cells",
                reason: "a delete writes no cells".into()
            })
        );
        for generation in [0, u32::MAX] {
            assert!(matches!(
                Changes::decode(&Changes(vec![delete(1, generation)]).encode()),
                Err(DecodeError::InvalidValue { field: "op.generation", .. })
            ));
        }
    }

    #[test]
    fn one_op_per_row_and_one_key_shape_per_table() {
        assert!(matches!(
            Changes::new(vec![upsert(1), upsert(3)]),
            Err(ChangesError::DuplicateRow { .. })
        ));
        assert_eq!(Changes::new(vec![]), Err(ChangesError::Count(0)));
        let bytes = Changes(vec![delete(1, 2), delete(1, 4)]).encode();
        assert!(matches!(
            Changes::decode(&bytes),
            Err(DecodeError::InvalidValue { field: "changes", .. })
        ));
        let pair = RowKey::new(vec![KeyPart::Integer(1), KeyPart::Integer(2)]).unwrap();
        let wide = RowOp::Delete { table: name("t"), key: pair, generation: 2 };
        assert!(matches!(
            Changes::new(vec![delete(1, 2), wide]),
            Err(ChangesError::KeyShape { first: 1, second: 2, .. })
        ));
    }

    #[test]
    fn order_is_canonical() {
        // Rows out of key order, and tables out of name order.
        let bytes = Changes(vec![delete(2, 2), delete(1, 2)]).encode();
        assert_eq!(Changes::decode(&bytes), Err(DecodeError::NonCanonical { what: WHAT }));
        let other = RowOp::Delete {
            table: name("s"),
            key: RowKey::single(KeyPart::Integer(1)),
            generation: 2,
        };
        let bytes = Changes(vec![delete(1, 2), other]).encode();
        assert_eq!(Changes::decode(&bytes), Err(DecodeError::NonCanonical { what: WHAT }));
        // Two generation runs of one generation.
        let mut content = vec![1, 1, b't', 2, 1, 0x24, 0, 2, 2, 1, 2, 1, 0];
        assert_eq!(
            Changes::decode(&padded(content.clone())),
            Err(DecodeError::NonCanonical { what: WHAT })
        );
        content[10] = 4;
        assert!(Changes::decode(&padded(content)).is_ok());
        // One table in two groups.
        let group = [1, b't', 1, 1, 0x14, 2, 2, 1, 0];
        assert!(Changes::decode(&padded([&[1][..], &group].concat())).is_ok());
        assert_eq!(
            Changes::decode(&padded([&[2][..], &group, &group].concat())),
            Err(DecodeError::NonCanonical { what: WHAT })
        );
    }

    #[test]
    fn padding_is_exact_and_zero() {
        let bytes = Changes::new(vec![delete(1, 2)]).unwrap().encode();
        assert_eq!(bytes.len(), pad::MIN_PADDED);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Changes::decode(&longer),
            Err(DecodeError::BadLength { field: "changes.padding", .. })
        ));
        assert!(matches!(
            Changes::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::BadLength { field: "changes.padding", .. })
        ));
        let mut dirty = bytes.clone();
        *dirty.last_mut().unwrap() = 1;
        assert!(matches!(
            Changes::decode(&dirty),
            Err(DecodeError::InvalidValue { field: "changes.padding", .. })
        ));
        assert!(matches!(
            Changes::decode(&vec![0; MAX_CHANGES_BYTES + 1]),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    /// One group of table `t` with `rows` rows keyed 0.., generation 1: its
    /// encoding up to the column count.
    fn group_head(rows: usize) -> Vec<u8> {
        let mut content = vec![1, 1, b't'];
        put_uint(&mut content, rows as u64);
        put_uint(&mut content, 1);
        put_uint(&mut content, ((rows as u64) << 4) | 4);
        content.push(0);
        content.extend(std::iter::repeat_n(2, rows - 1));
        content.push(1);
        put_uint(&mut content, rows as u64);
        content
    }

    /// A group of `rows` rows keyed 0.., generation 1, and `columns`
    /// columns in which every row is null: a few bytes a column, whatever
    /// the number of rows. Not padded.
    fn null_runs(rows: usize, columns: usize) -> Vec<u8> {
        let mut content = group_head(rows);
        put_uint(&mut content, columns as u64);
        for column in 0..columns {
            put_name(&mut content, &name(&format!("c{column:04}")));
            put_uint(&mut content, ((rows as u64) << 4) | 1);
        }
        content
    }

    /// A group of `rows` rows keyed 0.., generation 1, and one column `c`
    /// in which every row holds the same text of `len` bytes: in full on
    /// the first row, then front-coded as `len` shared bytes and nothing
    /// more, about 4 bytes a row. Not padded.
    fn repeated_text(rows: usize, len: usize) -> Vec<u8> {
        let mut content = group_head(rows);
        put_uint(&mut content, 1);
        put_name(&mut content, &name("c"));
        put_uint(&mut content, ((rows as u64) << 4) | Tag::Text as u64);
        put_uint(&mut content, 0);
        put_uint(&mut content, len as u64);
        content.extend(std::iter::repeat_n(b'a', len));
        for _ in 1..rows {
            put_uint(&mut content, len as u64);
            put_uint(&mut content, 0);
        }
        content
    }

    /// The ops [`repeated_text`] encodes.
    fn repeated_text_ops(rows: usize, len: usize) -> Vec<RowOp> {
        let text = Value::Text("a".repeat(len));
        (0..rows as i64)
            .map(|k| RowOp::Upsert {
                table: name("t"),
                key: RowKey::single(KeyPart::Integer(k)),
                generation: 1,
                cells: LiteMap::from_iter([(name("c"), text.clone())]),
            })
            .collect()
    }

    /// The key of row `row` of [`long_keys`].
    fn long_key(row: usize, len: usize) -> Vec<u8> {
        let mut key = vec![0; len - 2];
        key.extend((row as u16).to_be_bytes());
        key
    }

    /// A group of `rows` deletes (generation 2) keyed by bytes of `len`
    /// bytes, zeros then the row's number (2 bytes, big-endian): in full
    /// on the first row, then front-coded as `len` − 1 or `len` − 2 shared
    /// bytes and the rest, about 4 bytes a row. No column. Not padded.
    fn long_keys(rows: usize, len: usize) -> Vec<u8> {
        let mut content = vec![1, 1, b't'];
        put_uint(&mut content, rows as u64);
        put_uint(&mut content, 1);
        put_uint(&mut content, ((rows as u64) << 4) | Tag::Bytes as u64);
        put_uint(&mut content, 0);
        put_uint(&mut content, len as u64);
        content.extend(long_key(0, len));
        for row in 1..rows {
            // Keys differ in their last byte, or their last two.
            let number = (row as u16).to_be_bytes();
            let rest = if (row - 1) >> 8 == row >> 8 { &number[1..] } else { &number[..] };
            put_uint(&mut content, (len - rest.len()) as u64);
            put_uint(&mut content, rest.len() as u64);
            content.extend(rest);
        }
        put_uint(&mut content, 2);
        put_uint(&mut content, rows as u64);
        put_uint(&mut content, 0);
        content
    }

    /// The ops [`long_keys`] encodes.
    fn long_keys_ops(rows: usize, len: usize) -> Vec<RowOp> {
        (0..rows)
            .map(|row| RowOp::Delete {
                table: name("t"),
                key: RowKey::single(KeyPart::Bytes(long_key(row, len))),
                generation: 2,
            })
            .collect()
    }

    /// `content` followed by zero bytes up to `len`.
    fn zero_padded(mut content: Vec<u8>, len: usize) -> Vec<u8> {
        content.resize(len, 0);
        content
    }

    #[test]
    fn a_run_bomb_is_refused_at_its_first_column() {
        // 10,000 rows × 104 null columns: 11 KB that would be 1,040,000
        // cells. Padded as its content alone, it holds more units than
        // bytes: refused as soon as the count passes its length, in the
        // first column, before a cell is allocated.
        for columns in [104, 105] {
            let bomb = padded(null_runs(MAX_OPS, columns));
            assert!(bomb.len() < 12_000);
            assert_eq!(
                Changes::decode(&bomb),
                Err(DecodeError::BadLength {
                    field: "changes.units",
                    len: bomb.len() + 1,
                    min: 0,
                    max: bomb.len()
                })
            );
        }
        // With one column fewer and padded to its units, it is valid: a
        // megabyte, the most a change set may be.
        let units = MAX_OPS * 104;
        let honest = zero_padded(null_runs(MAX_OPS, 103), pad::padded_len(units));
        assert_eq!(honest.len(), 1_048_576);
        assert_eq!(Changes::decode(&honest).map(|c| c.units()), Ok(units));
        assert!(matches!(
            Changes::decode(&padded(null_runs(1, MAX_CELLS + 1))),
            Err(DecodeError::BadLength { field: "op.cells", .. })
        ));
        let wide = RowOp::Upsert {
            table: name("t"),
            key: RowKey::single(KeyPart::Integer(1)),
            generation: 1,
            cells: (0..=MAX_CELLS).map(|c| (name(&format!("c{c}")), Value::Null)).collect(),
        };
        assert!(matches!(Changes::new(vec![wide]), Err(ChangesError::TooManyCells { .. })));
    }

    #[test]
    fn a_change_set_one_unit_over_its_length_is_refused() {
        // 512 rows and 512 null cells: 1,024 units, a padded length.
        let content = null_runs(512, 1);
        assert_eq!(pad::padded_len(1024), 1024);
        let exact = zero_padded(content.clone(), 1024);
        assert_eq!(Changes::decode(&exact).map(|c| c.units()), Ok(1024));
        assert_eq!(
            Changes::decode(&exact[..1023]),
            Err(DecodeError::BadLength { field: "changes.units", len: 1024, min: 0, max: 1023 })
        );
        // Rows count as soon as the group gives their number.
        let rows_only = [&[1, 1, b't', 65][..], &[0; 60]].concat();
        assert_eq!(
            Changes::decode(&rows_only),
            Err(DecodeError::BadLength { field: "changes.units", len: 65, min: 0, max: 64 })
        );
    }

    #[test]
    fn one_value_on_many_rows_is_padded_to_its_units() {
        // done = null on 10,000 rows keyed 0..: 10 KB of content, 20,000
        // units (the example of wire-format.md §4.4).
        let ops = (0..MAX_OPS as i64)
            .map(|k| RowOp::Upsert {
                table: name("t"),
                key: RowKey::single(KeyPart::Integer(k)),
                generation: 1,
                cells: LiteMap::from_iter([(name("done"), Value::Null)]),
            })
            .collect();
        let changes = Changes::new(ops).unwrap();
        assert_eq!(changes.units(), 20_000);
        assert_eq!(changes.encode_content().len(), 10_021);
        let bytes = changes.encode();
        assert_eq!(bytes.len(), 20_480);
        assert_eq!(Changes::decode(&bytes).unwrap(), changes);
        // The content padded for itself alone is short of the units.
        assert!(matches!(
            Changes::decode(&padded(changes.encode_content())),
            Err(DecodeError::BadLength { field: "changes.units", .. })
        ));
        // Over the units but not their padded length.
        assert!(matches!(
            Changes::decode(&zero_padded(changes.encode_content(), 20_000)),
            Err(DecodeError::BadLength { field: "changes.padding", .. })
        ));
    }

    #[test]
    fn the_bomb_helpers_are_what_the_encoder_writes() {
        let changes = Changes::new(repeated_text_ops(3, 100)).unwrap();
        assert_eq!(changes.encode_content(), repeated_text(3, 100));
        // 300 rows: the keys' second-to-last byte changes at row 256.
        let changes = Changes::new(long_keys_ops(300, 100)).unwrap();
        assert_eq!(changes.encode_content(), long_keys(300, 100));
    }

    #[test]
    fn a_front_coding_bomb_is_refused_before_its_values_are_built() {
        // 10,000 rows of one 256 KiB text, front-coded: 312 KB that would
        // decode to 2.6 GB of values, or 10,000 keys of 256 KiB that share
        // all but their last bytes: 312 KB for 2.6 GB of keys. Each value
        // or key part is 4,096 units, counted as soon as its length is
        // read: the decoder refuses the first one that takes the count
        // past the input's length, so it has built at most 64 bytes of
        // values per input byte by then, however the bomb is padded.
        let per_value = MAX_VALUE_LEN / BYTES_PER_UNIT;
        let cases = [
            (repeated_text(MAX_OPS, MAX_VALUE_LEN), 2 * MAX_OPS),
            (long_keys(MAX_OPS, MAX_VALUE_LEN), MAX_OPS),
        ];
        for (content, before_payloads) in cases {
            assert!(content.len() < 320_000, "{} bytes", content.len());
            let decoded = MAX_OPS * MAX_VALUE_LEN;
            assert!(decoded / content.len() > 8_000, "{decoded} bytes decoded");
            for bomb in [padded(content.clone()), zero_padded(content, MAX_CHANGES_BYTES)] {
                // The value whose units first pass the length, counting from 1.
                let refused_at = (bomb.len() - before_payloads) / per_value + 1;
                assert_eq!(
                    Changes::decode(&bomb),
                    Err(DecodeError::BadLength {
                        field: "changes.units",
                        len: before_payloads + refused_at * per_value,
                        min: 0,
                        max: bomb.len(),
                    })
                );
                let built = (refused_at - 1) * MAX_VALUE_LEN;
                assert!(built <= BYTES_PER_UNIT * bomb.len(), "{built} bytes built");
            }
        }
    }

    #[test]
    fn long_values_are_padded_to_their_units() {
        // 256 rows of one 256-byte text: 256 rows, 256 cells and 4 units a
        // value are 1,536 units, a padded length, in 1,296 bytes of content.
        let changes = Changes::new(repeated_text_ops(256, 256)).unwrap();
        assert_eq!(changes.units(), 1_536);
        let content = changes.encode_content();
        assert_eq!(content, repeated_text(256, 256));
        assert_eq!(content.len(), 1_296);
        let exact = changes.encode();
        assert_eq!(exact.len(), 1_536);
        assert_eq!(Changes::decode(&exact), Ok(changes));
        // One unit short: refused by the last value's units.
        assert_eq!(
            Changes::decode(&exact[..1_535]),
            Err(DecodeError::BadLength { field: "changes.units", len: 1_536, min: 0, max: 1_535 })
        );
        // Padded as an encoder without the rule on values pads it: for its
        // content alone, which is more than its rows and cells (512).
        let short = padded(content);
        assert_eq!(short.len(), 1_344);
        assert!(matches!(
            Changes::decode(&short),
            Err(DecodeError::BadLength { field: "changes.units", .. })
        ));
    }

    #[test]
    fn a_long_value_on_many_rows_pays_a_64th_of_its_length_a_row() {
        // The example of wire-format.md §4.4: one 1 KiB text on 1,000 rows.
        let changes = Changes::new(repeated_text_ops(1_000, 1_024)).unwrap();
        assert_eq!(changes.units(), 18_000);
        assert_eq!(changes.encode_content().len(), 5_040);
        assert_eq!(pad::padded_len(5_040), 5_120);
        assert_eq!(changes.encode().len(), 18_432);
    }

    #[test]
    fn long_key_parts_are_padded_to_their_units() {
        // 300 deletes keyed by 640 bytes: 300 rows and 10 units a key.
        let changes = Changes::new(long_keys_ops(300, 640)).unwrap();
        assert_eq!(changes.units(), 3_300);
        let content = changes.encode_content();
        assert!(content.len() < 2_000, "{} bytes", content.len());
        let bytes = changes.encode();
        assert_eq!(bytes.len(), pad::padded_len(3_300));
        assert_eq!(Changes::decode(&bytes), Ok(changes));
        assert!(matches!(
            Changes::decode(&padded(content)),
            Err(DecodeError::BadLength { field: "changes.units", .. })
        ));
    }

    #[test]
    fn integer_keys_and_fixed_size_values_add_no_units() {
        let cells = LiteMap::from_iter([
            (name("a"), Value::Integer(i64::MAX)),
            (name("b"), Value::Real(1.5)),
            (name("c"), Value::Timestamp(-1)),
            (name("d"), Value::Text("t".repeat(63))),
            (name("e"), Value::Bytes(vec![0; 64])),
            (name("f"), Value::Json(format!("\"{}\"", "j".repeat(126)))),
        ]);
        let op = RowOp::Upsert {
            table: name("t"),
            key: RowKey::single(KeyPart::Integer(i64::MIN)),
            generation: 1,
            cells,
        };
        // The row, 6 cells, then 0 + 1 + 2 units for the 63, 64 and 128 bytes.
        assert_eq!(Changes::new(vec![op]).unwrap().units(), 10);
    }

    #[test]
    fn columns_must_be_sorted_and_not_empty() {
        let op = RowOp::Upsert {
            table: name("t"),
            key: RowKey::single(KeyPart::Integer(1)),
            generation: 1,
            cells: LiteMap::from_iter([(name("bb"), Value::Null), (name("c"), Value::Null)]),
        };
        let good = Changes(vec![op]).encode();
        let position =
            |needle: &[u8]| good.windows(needle.len()).position(|w| w == needle).unwrap();
        let (bb, c) = (position(&[2, b'b', b'b', 0x11]), position(&[1, b'c', 0x11]));
        assert!(bb < c);
        let mut swapped = good[..bb].to_vec();
        swapped.extend_from_slice(&[1, b'c', 0x11, 2, b'b', b'b', 0x11]);
        assert_eq!(
            Changes::decode(&padded(swapped)),
            Err(DecodeError::NonCanonical { what: WHAT })
        );
        // A column in which no row has a cell.
        let mut empty = good[..bb].to_vec();
        *empty.last_mut().unwrap() = 3;
        empty.extend_from_slice(&[2, b'b', b'b', 0x11, 1, b'c', 0x11, 1, b'd', 0x10]);
        assert_eq!(Changes::decode(&padded(empty)), Err(DecodeError::NonCanonical { what: WHAT }));
        // A column given twice.
        let mut twice = good[..bb].to_vec();
        *twice.last_mut().unwrap() = 3;
        twice.extend_from_slice(&[2, b'b', b'b', 0x11, 1, b'c', 0x11, 1, b'c', 0x11]);
        assert_eq!(Changes::decode(&padded(twice)), Err(DecodeError::NonCanonical { what: WHAT }));
    }
}
