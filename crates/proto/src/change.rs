//! Row operations: the plaintext inside a commit.
//!
//! Implements `protocol-spec/wire-format.md` §4 (Changes) and the row
//! generations of `protocol-spec/clocks-and-merge.md` §2.

use std::collections::{BTreeMap, BTreeSet};

use ciborium::Value as Cbor;

use crate::codec::{self, Cbor as CborCodec, DecodeError, Fields};
use crate::value::{Name, RowKey, Value};

/// Most row operations in one commit.
pub const MAX_OPS: usize = 10_000;
/// Most cells one upsert may write.
pub const MAX_CELLS: usize = 1_024;
/// Highest row generation: even, so a row at the highest live generation
/// can still be deleted.
pub const MAX_GENERATION: u32 = u32::MAX - 1;
/// Largest encoded change set, equal to the commit size limit.
pub const MAX_CHANGES_BYTES: usize = crate::commit::MAX_COMMIT_BYTES;

const UPSERT: u64 = 0;
const DELETE: u64 = 1;

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
        /// The cells written, by column.
        cells: BTreeMap<Name, Value>,
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

    fn to_cbor(&self) -> Cbor {
        let int = |n: u64| Cbor::Integer(n.into());
        match self {
            RowOp::Upsert { table, key, generation, cells } => {
                let mut entries: Vec<(&str, &Value)> =
                    cells.iter().map(|(name, value)| (name.as_str(), value)).collect();
                codec::sort_text_keys(&mut entries);
                Cbor::Array(vec![
                    int(UPSERT),
                    Cbor::Text(table.as_str().to_owned()),
                    key.to_cbor(),
                    int((*generation).into()),
                    Cbor::Map(
                        entries
                            .into_iter()
                            .map(|(name, value)| (Cbor::Text(name.to_owned()), value.to_cbor()))
                            .collect(),
                    ),
                ])
            }
            RowOp::Delete { table, key, generation } => Cbor::Array(vec![
                int(DELETE),
                Cbor::Text(table.as_str().to_owned()),
                key.to_cbor(),
                int((*generation).into()),
            ]),
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

    fn from_cbor(value: Cbor) -> Result<Self, DecodeError> {
        let mut fields = Fields::between(value, "op", 4, 5)?;
        let kind = fields.uint("op.kind")?;
        let table = Name::from_cbor(fields.next("op.table")?, "op.table")?;
        let key = RowKey::from_cbor(fields.next("op.key")?, "op.key")?;
        let generation = u32::try_from(fields.uint("op.generation")?).map_err(|_| {
            DecodeError::InvalidValue {
                field: "op.generation",
                reason: "over the highest generation".into(),
            }
        })?;
        let op = match (kind, fields.remaining()) {
            (UPSERT, 1) => {
                let entries = codec::as_map(fields.next("op.cells")?, "op.cells", 0, MAX_CELLS)?;
                let mut cells = BTreeMap::new();
                for (name, value) in entries {
                    let name = Name::from_cbor(name, "op.cells.column")?;
                    cells.insert(name, Value::from_cbor(value, "op.cells.value")?);
                }
                RowOp::Upsert { table, key, generation, cells }
            }
            (DELETE, 0) => RowOp::Delete { table, key, generation },
            (UPSERT, n) => {
                return Err(DecodeError::BadLength { field: "op", len: n + 4, min: 5, max: 5 });
            }
            (DELETE, n) => {
                return Err(DecodeError::BadLength { field: "op", len: n + 4, min: 4, max: 4 });
            }
            (kind, _) => {
                return Err(DecodeError::InvalidValue {
                    field: "op.kind",
                    reason: format!("unknown operation kind {kind}"),
                });
            }
        };
        match op.generation_error() {
            Some(reason) => {
                Err(DecodeError::InvalidValue { field: "op.generation", reason: reason.into() })
            }
            None => Ok(op),
        }
    }
}

/// The row operations of one commit: 1 to [`MAX_OPS`], at most one per row.
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
    /// Two operations on the same row.
    #[error("row {key:?} of {table} is changed twice in one commit")]
    DuplicateRow {
        /// The table.
        table: Name,
        /// The row.
        key: RowKey,
    },
}

impl Changes {
    /// Checks and wraps `ops`.
    pub fn new(ops: Vec<RowOp>) -> Result<Self, ChangesError> {
        if ops.is_empty() || ops.len() > MAX_OPS {
            return Err(ChangesError::Count(ops.len()));
        }
        let mut rows = BTreeSet::new();
        for op in &ops {
            if let Some(reason) = op.generation_error() {
                return Err(ChangesError::BadGeneration {
                    table: op.table().clone(),
                    key: op.key().clone(),
                    reason,
                });
            }
            if !rows.insert((op.table(), op.key())) {
                return Err(ChangesError::DuplicateRow {
                    table: op.table().clone(),
                    key: op.key().clone(),
                });
            }
        }
        Ok(Self(ops))
    }

    /// The operations, in commit order.
    pub fn ops(&self) -> &[RowOp] {
        &self.0
    }

    /// Total cells changed.
    pub fn cell_count(&self) -> usize {
        self.0.iter().map(RowOp::cell_count).sum()
    }
}

impl CborCodec for Changes {
    const WHAT: &'static str = "changes";
    const MAX_BYTES: usize = MAX_CHANGES_BYTES;

    fn to_cbor(&self) -> Cbor {
        Cbor::Array(self.0.iter().map(RowOp::to_cbor).collect())
    }

    fn from_cbor(value: Cbor) -> Result<Self, DecodeError> {
        let items = codec::as_array(value, "changes", 1, MAX_OPS)?;
        let ops = items.into_iter().map(RowOp::from_cbor).collect::<Result<Vec<_>, _>>()?;
        Changes::new(ops)
            .map_err(|e| DecodeError::InvalidValue { field: "changes", reason: e.to_string() })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::value::KeyPart;
    use crate::value::tests::any_value;
    use proptest::prelude::*;

    pub(crate) fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

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
                RowOp::Upsert { table, key, generation: 2 * g + 1, cells }
            }),
            1 => (table, key, 1u32..3).prop_map(|(table, key, g)| RowOp::Delete { table, key, generation: 2 * g }),
        ]
    }

    proptest! {
        #[test]
        fn changes_round_trip(ops in proptest::collection::vec(any_op(), 1..10)) {
            if let Ok(changes) = Changes::new(ops) {
                let bytes = changes.encode();
                prop_assert_eq!(Changes::decode(&bytes).unwrap(), changes);
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
            cells: BTreeMap::from([(name("c"), Value::Integer(1))]),
        }
    }

    #[test]
    fn generations_are_checked() {
        assert!(matches!(Changes::new(vec![upsert(2)]), Err(ChangesError::BadGeneration { .. })));
        assert!(matches!(
            Changes::new(vec![upsert(u32::MAX)]),
            Err(ChangesError::BadGeneration { .. })
        ));
        let bytes = Changes(vec![upsert(2)]).encode();
        assert!(matches!(
            Changes::decode(&bytes),
            Err(DecodeError::InvalidValue { field: "op.generation", .. })
        ));
        let delete = RowOp::Delete {
            table: name("t"),
            key: RowKey::single(KeyPart::Integer(1)),
            generation: 3,
        };
        let bytes = Changes(vec![delete]).encode();
        assert!(matches!(
            Changes::decode(&bytes),
            Err(DecodeError::InvalidValue { field: "op.generation", .. })
        ));
    }

    #[test]
    fn one_op_per_row() {
        assert!(matches!(
            Changes::new(vec![upsert(1), upsert(3)]),
            Err(ChangesError::DuplicateRow { .. })
        ));
        assert_eq!(Changes::new(vec![]), Err(ChangesError::Count(0)));
    }

    #[test]
    fn cells_must_be_in_deterministic_order() {
        let op = RowOp::Upsert {
            table: name("t"),
            key: RowKey::single(KeyPart::Integer(1)),
            generation: 1,
            cells: BTreeMap::from([(name("bb"), Value::Null), (name("c"), Value::Null)]),
        };
        let good = Changes(vec![op]).encode();
        // The encoder puts "c" (shorter) before "bb"; swap them back.
        let position =
            |needle: &[u8]| good.windows(needle.len()).position(|w| w == needle).unwrap();
        let (c, bb) = (position(&[0x61, b'c', 0xf6]), position(&[0x62, b'b', b'b', 0xf6]));
        assert!(c < bb);
        let mut swapped = good[..c].to_vec();
        swapped.extend_from_slice(&[0x62, b'b', b'b', 0xf6, 0x61, b'c', 0xf6]);
        assert_eq!(Changes::decode(&swapped), Err(DecodeError::NonCanonical { what: "changes" }));
    }
}
