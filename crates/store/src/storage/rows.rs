//! Stored row states: a row's generation and each cell's winning write.
//!
//! A row state is read and rewritten for every operation merged, so it is
//! kept in a plain binary form that is written and read without building
//! an intermediate tree (D36). The cells of a row are nearly always won by
//! the same few commits, so each distinct stamp is written once and cells
//! name it by index (D42):
//!
//! ```text
//! state  = 0x02 generation:varint stamps:varint stamp* count:varint cell*
//! stamp  = wall_ms:varint counter:varint author:32   (distinct, in the order cells first use them)
//! cell   = name-len:u8 name stamp-index:varint value  (cells in column-name order)
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
//! A cell that names a stamp past those used so far plus one, or a stamp
//! no cell uses, is corrupt: what is written is what [`encode`] writes.
//!
//! The leading byte is the format. States written before D42 (format
//! 0x01: each cell with its whole stamp, `name-len name wall_ms counter
//! author value`) are read as they are and written in the new form when
//! their row next changes. A state written by an older version still
//! (CBOR, starting 0x82) is reported as corrupt, not read (pre-1.0 data
//! directories from before D36 are not migrated).

use std::collections::HashMap;

use basic_proto::{AuthorId, Cell, Cells, Hlc, Name, RowState, Stamp, Value};

use crate::storage::kv::StoreError;

/// The format byte that starts every row state written now.
const FORMAT: u8 = 0x02;
/// The format byte of states written before D42, each cell with its stamp.
const FORMAT_STAMP_PER_CELL: u8 = 0x01;
/// Bytes of a stamp at least (two one-byte varints and the author).
const MIN_STAMP_LEN: usize = 34;

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
    let (stamps, indices) = stamp_table(state);
    let size: usize = stamps.len() * (20 + 32)
        + state
            .cells
            .iter()
            .map(|(column, cell)| 1 + column.as_str().len() + 2 + 11 + value_len(&cell.value))
            .sum::<usize>();
    let mut out = Vec::with_capacity(1 + 5 + 10 + 10 + size);
    out.push(FORMAT);
    varint(&mut out, state.generation.into());
    varint(&mut out, stamps.len() as u64);
    for stamp in &stamps {
        varint(&mut out, stamp.hlc.wall_ms);
        varint(&mut out, stamp.hlc.counter.into());
        out.extend_from_slice(stamp.author.as_bytes());
    }
    varint(&mut out, state.cells.len() as u64);
    for ((column, cell), index) in state.cells.iter().zip(indices) {
        // Names are at most 64 bytes (basic_proto::value::MAX_NAME_LEN).
        out.push(column.as_str().len() as u8);
        out.extend_from_slice(column.as_str().as_bytes());
        varint(&mut out, index as u64);
        value(&mut out, &cell.value);
    }
    out
}

/// Stamps up to which a linear search finds a cell's stamp.
const LINEAR_STAMPS: usize = 8;

/// The distinct stamps of `state`'s cells in first-use order, and each
/// cell's index among them. A row's cells are nearly always won by a few
/// commits, found by a linear search; a map takes over past
/// [`LINEAR_STAMPS`], so that a row an author filled with the stamps of
/// many commits does not cost the square of their number.
fn stamp_table(state: &RowState) -> (Vec<Stamp>, Vec<usize>) {
    let mut stamps: Vec<Stamp> = Vec::new();
    let mut positions: HashMap<Stamp, usize> = HashMap::new();
    let indices = state
        .cells
        .values()
        .map(|cell| {
            let found = if stamps.len() <= LINEAR_STAMPS {
                stamps.iter().position(|stamp| *stamp == cell.stamp)
            } else {
                positions.get(&cell.stamp).copied()
            };
            found.unwrap_or_else(|| {
                stamps.push(cell.stamp);
                if stamps.len() > LINEAR_STAMPS {
                    if positions.is_empty() {
                        positions.extend(stamps.iter().enumerate().map(|(i, stamp)| (*stamp, i)));
                    } else {
                        positions.insert(cell.stamp, stamps.len() - 1);
                    }
                }
                stamps.len() - 1
            })
        })
        .collect();
    (stamps, indices)
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

/// Decodes a stored row state (either format, see the
/// [module documentation](self)).
pub fn decode(bytes: &[u8]) -> Result<RowState, StoreError> {
    let mut input = Reader { bytes };
    let format = input.byte()?;
    if format != FORMAT && format != FORMAT_STAMP_PER_CELL {
        return Err(corrupt(format!(
            "format byte {format:#04x} (a state written by an older version: data \
             directories from before this format are not migrated)"
        )));
    }
    let generation =
        u32::try_from(input.varint()?).map_err(|_| corrupt("generation over 2^32-1".into()))?;
    let mut stamps = Vec::new();
    if format == FORMAT {
        let count = input.varint()?;
        if count > (input.bytes.len() / MIN_STAMP_LEN) as u64 {
            return Err(corrupt(format!("{count} stamps in {} bytes", input.bytes.len())));
        }
        for _ in 0..count {
            stamps.push(input.stamp()?);
        }
    }
    let count = input.varint()?;
    // A cell takes 3 bytes at least: its name's length, a name, a value.
    let most = usize::try_from(count).unwrap_or(usize::MAX).min(input.bytes.len() / 3);
    let mut cells = Cells::with_capacity(most);
    // Stamps used so far: each cell uses one of them or the next.
    let mut used = 0;
    for _ in 0..count {
        let len = usize::from(input.byte()?);
        let column = std::str::from_utf8(input.take(len)?)
            .map_err(|_| corrupt("column name is not UTF-8".into()))?;
        let column = Name::new(column).map_err(|error| corrupt(error.to_string()))?;
        let stamp = if format == FORMAT {
            let index = input.varint()?;
            if index > used as u64 || index >= stamps.len() as u64 {
                return Err(corrupt(format!("stamp {index} where {used} were used")));
            }
            if index == used as u64 {
                used += 1;
            }
            stamps[index as usize]
        } else {
            input.stamp()?
        };
        let value = input.value()?;
        if cells.try_append(column, Cell { stamp, value }).is_some() {
            return Err(corrupt("columns out of order".into()));
        }
    }
    if used < stamps.len() {
        return Err(corrupt(format!("{} of {} stamps unused", stamps.len() - used, stamps.len())));
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

    fn stamp(&mut self) -> Result<Stamp, StoreError> {
        let wall_ms = self.varint()?;
        let counter =
            u32::try_from(self.varint()?).map_err(|_| corrupt("counter over 2^32-1".into()))?;
        let author = AuthorId(self.array()?);
        Ok(Stamp { hlc: Hlc { wall_ms, counter }, author })
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
    use proptest::prelude::*;

    fn author(seed: u8) -> AuthorId {
        SecretKey::from_seed([seed; 32]).public().into()
    }

    fn stamp(wall_ms: u64, seed: u8) -> Stamp {
        Stamp { hlc: Hlc { wall_ms, counter: 7 }, author: author(seed) }
    }

    /// A state whose cells `c00`, `c01`… hold `values`, all with one stamp.
    fn state(values: Vec<Value>) -> RowState {
        let stamp = Stamp { hlc: Hlc { wall_ms: u64::MAX, counter: u32::MAX }, author: author(1) };
        let cells = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| (Name::new(format!("c{i:02}")).unwrap(), Cell { stamp, value }))
            .collect();
        RowState { generation: 3, cells }
    }

    /// `state` with the stamp of cell `i` replaced by `stamps[i]`.
    fn stamped(mut state: RowState, stamps: &[Stamp]) -> RowState {
        for ((_, cell), stamp) in state.cells.iter_mut().zip(stamps) {
            cell.stamp = *stamp;
        }
        state
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
        // Stamps shared by some cells and not others, reused after another.
        let (a, b, c) = (stamp(1, 1), stamp(1, 2), stamp(2, 1));
        let mixed = stamped(state, &[a, b, a, c, b, b, c, a, a, b]);
        assert_eq!(decode(&encode(&mixed)).unwrap(), mixed);
    }

    /// A row whose cells were won by many commits, more than a linear
    /// search is used for, with stamps repeated far apart, round-trips.
    #[test]
    fn a_row_of_many_stamps_round_trips() {
        let cells: Vec<Value> = (0..200).map(Value::Integer).collect();
        let stamps: Vec<Stamp> = (0..200u64).map(|i| stamp(i % 37, (i % 3) as u8)).collect();
        let many = stamped(state(cells), &stamps);
        let bytes = encode(&many);
        assert_eq!(decode(&bytes).unwrap(), many);
        // 37 × 3 stamps at most, each written once.
        let distinct: std::collections::BTreeSet<Stamp> = stamps.iter().copied().collect();
        assert_eq!(bytes[2] as usize, distinct.len());
    }

    /// A stamp shared by every cell is written once: a five-cell row is
    /// four stamps (each at least 34 bytes) smaller than one per cell.
    #[test]
    fn a_shared_stamp_is_written_once() {
        let five = state((0..5).map(Value::Integer).collect());
        let one_stamp = encode(&five).len();
        let distinct: Vec<Stamp> = (0..5).map(|i| stamp(1_700_000_000_000, i)).collect();
        let five_stamps = encode(&stamped(five, &distinct)).len();
        assert!(five_stamps >= one_stamp + 4 * MIN_STAMP_LEN, "{five_stamps} vs {one_stamp}");
    }

    /// A state in the form written before D42 (a whole stamp in every
    /// cell), byte by byte, reads as the same state.
    #[test]
    fn a_state_written_with_a_stamp_per_cell_is_read() {
        let (a, b) = (stamp(300, 1), stamp(5, 2));
        let mut old = vec![FORMAT_STAMP_PER_CELL, 3, 2];
        old.extend([1, b'a', 0xac, 0x02, 7]);
        old.extend(a.author.as_bytes());
        old.extend([INTEGER, 0, 0, 0, 0, 0, 0, 0, 9]);
        old.extend([1, b'b', 5, 7]);
        old.extend(b.author.as_bytes());
        old.extend([TEXT, 2, b'h', b'i']);
        let expected = RowState {
            generation: 3,
            cells: [
                (Name::new("a").unwrap(), Cell { stamp: a, value: Value::Integer(9) }),
                (Name::new("b").unwrap(), Cell { stamp: b, value: Value::Text("hi".into()) }),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(decode(&old).unwrap(), expected);
        // Written again, it takes the current form.
        assert_eq!(encode(&expected)[0], FORMAT);
        assert_eq!(decode(&encode(&expected)).unwrap(), expected);
    }

    #[test]
    fn damaged_states_are_corrupt_never_a_panic() {
        let two = state(vec![Value::Text("abc".into()), Value::Real(1.0)]);
        let bytes = encode(&stamped(two, &[stamp(1, 1), stamp(2, 2)]));
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
        // A stamp count that the bytes cannot hold is refused before
        // anything is allocated for it.
        let huge = [vec![FORMAT, 0], vec![0xff; 9], vec![0x01]].concat();
        assert!(matches!(decode(&huge), Err(StoreError::Corrupt { .. })));
    }

    /// The bytes of a state before its cells: generation 3, the table
    /// `stamps`, and a count of `cells`.
    fn header(stamps: &[Stamp], cells: u8) -> Vec<u8> {
        let mut out = vec![FORMAT, 3, stamps.len() as u8];
        for stamp in stamps {
            varint(&mut out, stamp.hlc.wall_ms);
            varint(&mut out, stamp.hlc.counter.into());
            out.extend(stamp.author.as_bytes());
        }
        out.push(cells);
        out
    }

    /// A cell `name` = 1 that names stamp `index`.
    fn cell(name: &str, index: u8) -> Vec<u8> {
        [
            vec![name.len() as u8],
            name.as_bytes().to_vec(),
            vec![index, INTEGER, 0, 0, 0, 0, 0, 0, 0, 1],
        ]
        .concat()
    }

    #[test]
    fn columns_out_of_order_or_repeated_are_corrupt() {
        let one = [stamp(1, 1)];
        let corrupt = |bytes: Vec<u8>| matches!(decode(&bytes), Err(StoreError::Corrupt { .. }));
        assert!(decode(&[header(&one, 2), cell("a", 0), cell("b", 0)].concat()).is_ok());
        assert!(corrupt([header(&one, 2), cell("b", 0), cell("a", 0)].concat()));
        assert!(corrupt([header(&one, 2), cell("a", 0), cell("a", 0)].concat()));
    }

    /// Only what `encode` writes is read: stamps named in first-use order,
    /// each within the table, none left unused.
    #[test]
    fn stamps_out_of_order_unused_or_missing_are_corrupt() {
        let (a, b) = (stamp(1, 1), stamp(2, 2));
        let corrupt = |bytes: Vec<u8>| matches!(decode(&bytes), Err(StoreError::Corrupt { .. }));
        let ok = [header(&[a, b], 3), cell("a", 0), cell("b", 1), cell("c", 0)].concat();
        assert_eq!(encode(&decode(&ok).unwrap()), ok);
        assert!(corrupt([header(&[a, b], 2), cell("a", 1), cell("b", 0)].concat()));
        assert!(corrupt([header(&[a, b], 2), cell("a", 0), cell("b", 0)].concat()));
        assert!(corrupt([header(&[a], 2), cell("a", 0), cell("b", 1)].concat()));
        assert!(corrupt([header(&[a], 0)].concat()));
    }

    proptest! {
        /// Any state round-trips, with its cells' stamps drawn from a few.
        #[test]
        fn any_state_round_trips(
            generation in any::<u32>(),
            cells in proptest::collection::btree_map(
                "[a-z]{1,8}",
                (0..4usize, any::<i64>(), proptest::option::of(".{0,12}")),
                0..12,
            ),
        ) {
            let stamps = [stamp(0, 1), stamp(u64::MAX, 1), stamp(5, 2), stamp(5, 3)];
            let cells = cells
                .into_iter()
                .map(|(name, (s, i, text))| {
                    let value = text.map_or(Value::Integer(i), Value::Text);
                    (Name::new(name).unwrap(), Cell { stamp: stamps[s], value })
                })
                .collect();
            let state = RowState { generation, cells };
            let bytes = encode(&state);
            prop_assert_eq!(decode(&bytes).unwrap(), state);
        }
    }
}
