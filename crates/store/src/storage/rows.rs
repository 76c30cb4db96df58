//! Stored row states: a row's generation and each cell's winning write.
//!
//! A row state is read and rewritten for every operation merged, so it is
//! kept in a plain binary form that is written and read without building
//! an intermediate tree (D36):
//!
//! ```text
//! state  = 0x01 generation:varint count:varint cell*      (cells in column-name order)
//! cell   = name-len:u8 name wall_ms:varint counter:varint author:32 value
//! value  = 0x00                              null
//!        | 0x01 i64:8 (big-endian)           integer
//!        | 0x02 f64:8 (big-endian bits)      real, never NaN
//!        | 0x03 | 0x04                       false | true
//!        | 0x05 len:varint utf-8             text
//!        | 0x06 len:varint bytes             bytes
//!        | 0x07 i64:8                        timestamp
//!        | 0x08 len:varint utf-8             json
//! varint = LEB128, at most 10 bytes
//! ```
//!
//! The leading byte is the format: a state written by an older version
//! (CBOR, starting 0x82) is reported as corrupt, not read (pre-1.0 data
//! directories are not migrated).

use std::collections::BTreeMap;

use basic_proto::{AuthorId, Cell, Hlc, Name, RowState, Stamp, Value};

use crate::storage::kv::StoreError;

/// The format byte that starts every stored row state.
const FORMAT: u8 = 0x01;

const NULL: u8 = 0x00;
const INTEGER: u8 = 0x01;
const REAL: u8 = 0x02;
const FALSE: u8 = 0x03;
const TRUE: u8 = 0x04;
const TEXT: u8 = 0x05;
const BYTES: u8 = 0x06;
const TIMESTAMP: u8 = 0x07;
const JSON: u8 = 0x08;

/// Encodes a row state for storage.
pub fn encode(state: &RowState) -> Vec<u8> {
    let size: usize = state
        .cells
        .iter()
        .map(|(column, cell)| 1 + column.as_str().len() + 15 + 32 + 11 + value_len(&cell.value))
        .sum();
    let mut out = Vec::with_capacity(1 + 5 + 10 + size);
    out.push(FORMAT);
    varint(&mut out, state.generation.into());
    varint(&mut out, state.cells.len() as u64);
    for (column, cell) in &state.cells {
        // Names are at most 64 bytes (basic_proto::value::MAX_NAME_LEN).
        out.push(column.as_str().len() as u8);
        out.extend_from_slice(column.as_str().as_bytes());
        varint(&mut out, cell.stamp.hlc.wall_ms);
        varint(&mut out, cell.stamp.hlc.counter.into());
        out.extend_from_slice(cell.stamp.author.as_bytes());
        value(&mut out, &cell.value);
    }
    out
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Text(text) | Value::Json(text) => text.len(),
        Value::Bytes(bytes) => bytes.len(),
        _ => 8,
    }
}

fn value(out: &mut Vec<u8>, value: &Value) {
    let blob = |out: &mut Vec<u8>, tag: u8, bytes: &[u8]| {
        out.push(tag);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    };
    match value {
        Value::Null => out.push(NULL),
        Value::Integer(i) => {
            out.push(INTEGER);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Value::Real(r) => {
            out.push(REAL);
            out.extend_from_slice(&r.to_bits().to_be_bytes());
        }
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Text(text) => blob(out, TEXT, text.as_bytes()),
        Value::Bytes(bytes) => blob(out, BYTES, bytes),
        Value::Timestamp(t) => {
            out.push(TIMESTAMP);
            out.extend_from_slice(&t.to_be_bytes());
        }
        Value::Json(json) => blob(out, JSON, json.as_bytes()),
    }
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Decodes a stored row state.
pub fn decode(bytes: &[u8]) -> Result<RowState, StoreError> {
    let mut input = Reader { bytes };
    match input.byte()? {
        FORMAT => {}
        other => {
            return Err(corrupt(format!(
                "format byte {other:#04x} (a state written by an older version: data \
                 directories from before this format are not migrated)"
            )));
        }
    }
    let generation =
        u32::try_from(input.varint()?).map_err(|_| corrupt("generation over 2^32-1".into()))?;
    let count = input.varint()?;
    let mut cells = BTreeMap::new();
    let mut last: Option<Name> = None;
    for _ in 0..count {
        let len = usize::from(input.byte()?);
        let column = std::str::from_utf8(input.take(len)?)
            .map_err(|_| corrupt("column name is not UTF-8".into()))?;
        let column = Name::new(column).map_err(|error| corrupt(error.to_string()))?;
        if last.as_ref().is_some_and(|last| *last >= column) {
            return Err(corrupt("columns out of order".into()));
        }
        let wall_ms = input.varint()?;
        let counter =
            u32::try_from(input.varint()?).map_err(|_| corrupt("counter over 2^32-1".into()))?;
        let author = AuthorId(input.array()?);
        let value = input.value()?;
        let stamp = Stamp { hlc: Hlc { wall_ms, counter }, author };
        last = Some(column.clone());
        cells.insert(column, Cell { stamp, value });
    }
    if !input.bytes.is_empty() {
        return Err(corrupt(format!("{} bytes after the last cell", input.bytes.len())));
    }
    Ok(RowState { generation, cells })
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt { what: "row state", reason }
}

/// The unread rest of a stored row state.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < len {
            return Err(corrupt("truncated".into()));
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        self.take(N)?.try_into().map_err(|_| corrupt("truncated".into()))
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            n |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(corrupt("varint over 64 bits".into()))
    }

    fn text(&mut self) -> Result<String, StoreError> {
        let bytes = self.blob()?;
        String::from_utf8(bytes).map_err(|_| corrupt("text is not UTF-8".into()))
    }

    fn blob(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = usize::try_from(self.varint()?).map_err(|_| corrupt("length".into()))?;
        Ok(self.take(len)?.to_vec())
    }

    fn value(&mut self) -> Result<Value, StoreError> {
        Ok(match self.byte()? {
            NULL => Value::Null,
            INTEGER => Value::Integer(i64::from_be_bytes(self.array()?)),
            REAL => {
                let real = f64::from_bits(u64::from_be_bytes(self.array()?));
                if real.is_nan() {
                    return Err(corrupt("NaN is not a value".into()));
                }
                Value::Real(real)
            }
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            TEXT => Value::Text(self.text()?),
            BYTES => Value::Bytes(self.blob()?),
            TIMESTAMP => Value::Timestamp(i64::from_be_bytes(self.array()?)),
            JSON => Value::Json(self.text()?),
            other => return Err(corrupt(format!("value tag {other:#04x}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basic_proto::SecretKey;

    fn state(values: Vec<Value>) -> RowState {
        let author = SecretKey::from_seed([1; 32]).public().into();
        let stamp = Stamp { hlc: Hlc { wall_ms: u64::MAX, counter: u32::MAX }, author };
        let cells = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| (Name::new(format!("c{i:02}")).unwrap(), Cell { stamp, value }))
            .collect();
        RowState { generation: 3, cells }
    }

    #[test]
    fn round_trip() {
        let state = state(vec![
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(-0.5),
            Value::Bool(false),
            Value::Bool(true),
            Value::Text("é x".into()),
            Value::Bytes(vec![0, 255]),
            Value::Timestamp(-1),
            Value::Json("{\"a\":1}".into()),
            Value::Text("x".repeat(300)),
        ]);
        let bytes = encode(&state);
        assert_eq!(decode(&bytes).unwrap(), state);
        assert_eq!(decode(&encode(&RowState::default())).unwrap(), RowState::default());
    }

    #[test]
    fn damaged_states_are_corrupt_never_a_panic() {
        let bytes = encode(&state(vec![Value::Text("abc".into()), Value::Real(1.0)]));
        // Every truncation, every byte changed, and bytes appended.
        for len in 0..bytes.len() {
            assert!(matches!(decode(&bytes[..len]), Err(StoreError::Corrupt { .. })));
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            let _ = decode(&damaged);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(StoreError::Corrupt { .. })));
        // A state in the older CBOR form, and a NaN.
        assert!(matches!(decode(b"\x82\x01\x80"), Err(StoreError::Corrupt { .. })));
        let nan = encode(&state(vec![Value::Real(1.0)]));
        let mut nan = nan.clone();
        let at = nan.len() - 8;
        nan[at..].copy_from_slice(&f64::NAN.to_bits().to_be_bytes());
        assert!(matches!(decode(&nan), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn columns_out_of_order_or_repeated_are_corrupt() {
        let one = |value| encode(&state(vec![value]));
        let (a, b) = (one(Value::Integer(1)), one(Value::Integer(2)));
        // Both states are [format, generation 3, one cell]: splice cells.
        let cell = |bytes: &[u8]| bytes[3..].to_vec();
        let twice = [vec![FORMAT, 3, 2], cell(&a), cell(&b)].concat();
        assert!(matches!(decode(&twice), Err(StoreError::Corrupt { .. })));
        assert_eq!(decode(&[vec![FORMAT, 3, 1], cell(&a)].concat()).unwrap(), decode(&a).unwrap());
    }
}
