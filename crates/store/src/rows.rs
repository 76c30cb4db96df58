//! Stored row states: a row's generation and each cell's winning write.
//!
//! Encoding (deterministic CBOR): `[generation, [* [column, value, wall_ms,
//! counter, author]]]`, columns in name order.

use std::collections::BTreeMap;

use basic_proto::codec::{self, Fields};
use basic_proto::{AuthorId, Cell, Hlc, Name, RowState, Stamp, Value};
use ciborium::Value as Cbor;

use crate::kv::StoreError;

/// Encodes a row state for storage.
pub fn encode(state: &RowState) -> Vec<u8> {
    let int = |n: u64| Cbor::Integer(n.into());
    let cells = state
        .cells
        .iter()
        .map(|(column, cell)| {
            Cbor::Array(vec![
                Cbor::Text(column.as_str().to_owned()),
                cell.value.to_cbor(),
                int(cell.stamp.hlc.wall_ms),
                int(cell.stamp.hlc.counter.into()),
                Cbor::Bytes(cell.stamp.author.as_bytes().to_vec()),
            ])
        })
        .collect();
    codec::encode_value(&Cbor::Array(vec![int(state.generation.into()), Cbor::Array(cells)]))
}

/// Decodes a stored row state.
pub fn decode(bytes: &[u8]) -> Result<RowState, StoreError> {
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "row state", reason: e.to_string() };
    let value = codec::parse(bytes, "row state", usize::MAX).map_err(corrupt)?;
    let mut fields = Fields::new(value, "row", 2).map_err(corrupt)?;
    let generation = fields.uint("row.generation").map_err(corrupt)?;
    let generation = u32::try_from(generation).map_err(|_| StoreError::Corrupt {
        what: "row state",
        reason: format!("generation {generation} over 2^32-1"),
    })?;
    let items =
        codec::as_array(fields.next("row.cells").map_err(corrupt)?, "row.cells", 0, usize::MAX)
            .map_err(corrupt)?;
    let mut cells = BTreeMap::new();
    for item in items {
        let mut cell = Fields::new(item, "cell", 5).map_err(corrupt)?;
        let column = cell.text("cell.column", 1, 64).map_err(corrupt)?;
        let column = Name::new(column)
            .map_err(|e| StoreError::Corrupt { what: "row state", reason: e.to_string() })?;
        let value = Value::from_cbor(cell.next("cell.value").map_err(corrupt)?, "cell.value")
            .map_err(corrupt)?;
        let wall_ms = cell.uint("cell.wall_ms").map_err(corrupt)?;
        let counter = u32::try_from(cell.uint("cell.counter").map_err(corrupt)?).map_err(|_| {
            StoreError::Corrupt { what: "row state", reason: "counter over 2^32-1".into() }
        })?;
        let author = AuthorId(cell.fixed("cell.author").map_err(corrupt)?);
        let stamp = Stamp { hlc: Hlc { wall_ms, counter }, author };
        cells.insert(column, Cell { stamp, value });
    }
    Ok(RowState { generation, cells })
}

#[cfg(test)]
mod tests {
    use super::*;
    use basic_proto::SecretKey;

    #[test]
    fn round_trip() {
        let author = SecretKey::from_seed([1; 32]).public().into();
        let stamp = Stamp { hlc: Hlc { wall_ms: 5, counter: 2 }, author };
        let state = RowState {
            generation: 3,
            cells: BTreeMap::from([
                (Name::new("a").unwrap(), Cell { stamp, value: Value::Text("x".into()) }),
                (Name::new("b").unwrap(), Cell { stamp, value: Value::Null }),
            ]),
        };
        assert_eq!(decode(&encode(&state)).unwrap(), state);
        assert!(matches!(decode(b"\x01"), Err(StoreError::Corrupt { .. })));
    }
}
