//! One column of a table group: the cells of every row, as runs of cell
//! tags followed by the payloads of the cells that have one.
//!
//! Implements `protocol-spec/wire-format.md` §4.3. Integers and timestamps
//! are zigzag deltas from the column's previous one; texts, bytes and JSON
//! share their longest prefix with the column's previous value of the same
//! type (front coding); reals are 8 bytes. A run of cells of one tag costs
//! one varint, so a column that is mostly absent, null or one bool is small;
//! a value equal to the one before costs a few bytes whatever its length,
//! so each front-coded payload counts its [`units`] as soon as its length
//! is read, before it is copied.

use crate::codec::DecodeError;
use crate::json::check_json;
use crate::value::{KeyPart, MAX_VALUE_LEN, Value};

use super::units::{self, Units};
use super::wire::{Reader, WHAT, put_uint, unzigzag, zigzag};

/// What a cell holds, as written in a run (the low 4 bits of its varint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    /// No cell: the row does not write this column.
    Absent = 0,
    /// Null.
    Null = 1,
    /// The bool false.
    False = 2,
    /// The bool true.
    True = 3,
    /// An integer: a zigzag varint of the delta from the previous integer.
    Integer = 4,
    /// A real: 8 bytes, IEEE 754 binary64, big-endian.
    Real = 5,
    /// A text: front-coded against the previous text.
    Text = 6,
    /// Bytes: front-coded against the previous bytes.
    Bytes = 7,
    /// A timestamp: a zigzag varint of the delta from the previous timestamp.
    Timestamp = 8,
    /// A JSON text: front-coded against the previous JSON text.
    Json = 9,
}

impl Tag {
    const ALL: [Tag; 10] = [
        Tag::Absent,
        Tag::Null,
        Tag::False,
        Tag::True,
        Tag::Integer,
        Tag::Real,
        Tag::Text,
        Tag::Bytes,
        Tag::Timestamp,
        Tag::Json,
    ];

    fn of(value: &Value) -> Tag {
        match value {
            Value::Null => Tag::Null,
            Value::Bool(false) => Tag::False,
            Value::Bool(true) => Tag::True,
            Value::Integer(_) => Tag::Integer,
            Value::Real(_) => Tag::Real,
            Value::Text(_) => Tag::Text,
            Value::Bytes(_) => Tag::Bytes,
            Value::Timestamp(_) => Tag::Timestamp,
            Value::Json(_) => Tag::Json,
        }
    }
}

/// A cell to encode, borrowed from a row op.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cell<'a> {
    /// The row does not write the column.
    Absent,
    /// A cell value.
    Value(&'a Value),
    /// A part of the row's key.
    Key(&'a KeyPart),
}

impl Cell<'_> {
    fn tag(self) -> Tag {
        match self {
            Cell::Absent => Tag::Absent,
            Cell::Value(value) => Tag::of(value),
            Cell::Key(KeyPart::Integer(_)) => Tag::Integer,
            Cell::Key(KeyPart::Text(_)) => Tag::Text,
            Cell::Key(KeyPart::Bytes(_)) => Tag::Bytes,
        }
    }
}

/// Bits of a run's varint that hold the tag.
const TAG_BITS: u32 = 4;

/// Appends the column of `cells`, one per row: its runs, then its payloads.
pub(super) fn encode(out: &mut Vec<u8>, cells: &[Cell<'_>]) {
    let mut start = 0;
    while let Some(first) = cells.get(start) {
        let tag = first.tag();
        let len = cells[start..].iter().take_while(|cell| cell.tag() == tag).count();
        put_uint(out, ((len as u64) << TAG_BITS) | tag as u64);
        start += len;
    }
    let mut previous = Previous::default();
    for cell in cells {
        match *cell {
            Cell::Absent => {}
            Cell::Value(value) => previous.put(out, value),
            Cell::Key(KeyPart::Integer(n)) => put_delta(out, &mut previous.integer, *n),
            Cell::Key(KeyPart::Text(text)) => put_front(out, &mut previous.text, text.as_bytes()),
            Cell::Key(KeyPart::Bytes(bytes)) => put_front(out, &mut previous.bytes, bytes),
        }
    }
}

/// The previous value of each delta- or front-coded type in a column.
#[derive(Debug, Default)]
struct Previous<'a> {
    integer: i64,
    timestamp: i64,
    text: &'a [u8],
    bytes: &'a [u8],
    json: &'a [u8],
}

impl<'a> Previous<'a> {
    fn put(&mut self, out: &mut Vec<u8>, value: &'a Value) {
        match value {
            Value::Null | Value::Bool(_) => {}
            Value::Integer(n) => put_delta(out, &mut self.integer, *n),
            Value::Timestamp(t) => put_delta(out, &mut self.timestamp, *t),
            Value::Real(r) => out.extend_from_slice(&r.to_bits().to_be_bytes()),
            Value::Text(text) => put_front(out, &mut self.text, text.as_bytes()),
            Value::Bytes(bytes) => put_front(out, &mut self.bytes, bytes),
            Value::Json(json) => put_front(out, &mut self.json, json.as_bytes()),
        }
    }
}

fn put_delta(out: &mut Vec<u8>, previous: &mut i64, n: i64) {
    put_uint(out, zigzag(n.wrapping_sub(*previous)));
    *previous = n;
}

/// The length of the longest prefix `value` shares with `previous`, the
/// length of the rest, and the rest.
fn put_front<'a>(out: &mut Vec<u8>, previous: &mut &'a [u8], value: &'a [u8]) {
    let shared = previous.iter().zip(value).take_while(|(a, b)| a == b).count();
    put_uint(out, shared as u64);
    put_uint(out, (value.len() - shared) as u64);
    out.extend_from_slice(&value[shared..]);
    *previous = value;
}

/// Which cells a column may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A part of every row's key: integer, text or bytes, never absent.
    Key,
    /// Cell values: any tag, and at least one cell not absent.
    Values,
}

impl Kind {
    /// The field named in errors about the column's cells.
    pub(super) fn field(self) -> &'static str {
        match self {
            Kind::Key => "op.key",
            Kind::Values => "op.cells.value",
        }
    }
}

/// The runs of a column: which rows hold which tag.
#[derive(Debug)]
pub(super) struct Runs {
    runs: Vec<(Tag, usize)>,
    kind: Kind,
}

impl Runs {
    /// Reads runs covering exactly `rows` rows.
    pub(super) fn read(
        reader: &mut Reader<'_>,
        rows: usize,
        kind: Kind,
    ) -> Result<Self, DecodeError> {
        let mut runs: Vec<(Tag, usize)> = Vec::new();
        let mut covered = 0;
        while covered < rows {
            let word = reader.uint("column.cells")?;
            let tag = Tag::ALL.get((word & ((1 << TAG_BITS) - 1)) as usize).copied().ok_or_else(
                || DecodeError::InvalidValue {
                    field: "column.cells",
                    reason: format!("unknown cell tag {}", word & 0xf),
                },
            )?;
            let len = usize::try_from(word >> TAG_BITS).unwrap_or(usize::MAX);
            if len == 0 || len > rows - covered {
                return Err(DecodeError::InvalidValue {
                    field: "column.cells",
                    reason: format!("a run of {len} cells where {} rows are left", rows - covered),
                });
            }
            if kind == Kind::Key && !matches!(tag, Tag::Integer | Tag::Text | Tag::Bytes) {
                return Err(DecodeError::WrongType {
                    field: "op.key",
                    expected: "integer, text or bytes key",
                });
            }
            if runs.last().is_some_and(|(last, _)| *last == tag) {
                return Err(DecodeError::NonCanonical { what: WHAT });
            }
            runs.push((tag, len));
            covered += len;
        }
        if kind == Kind::Values && runs.iter().all(|(tag, _)| *tag == Tag::Absent) {
            return Err(DecodeError::NonCanonical { what: WHAT });
        }
        Ok(Self { runs, kind })
    }

    /// The rows that hold a cell, as ranges of row indexes.
    pub(super) fn present(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.runs
            .iter()
            .scan(0, |start, &(tag, len)| {
                let range = *start..*start + len;
                *start += len;
                Some((tag, range))
            })
            .filter(|(tag, _)| *tag != Tag::Absent)
            .map(|(_, range)| range)
    }

    /// Reads the payloads and hands `each` every cell that is not absent,
    /// with its row index, in row order (stopping at its first error), counting each text, bytes or json
    /// payload into `units` as soon as its length is read.
    pub(super) fn read_values(
        &self,
        reader: &mut Reader<'_>,
        units: &mut Units,
        mut each: impl FnMut(usize, Value) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let field = self.kind.field();
        let mut previous = Decoded::default();
        let mut row = 0;
        for &(tag, len) in &self.runs {
            if tag != Tag::Absent {
                for index in row..row + len {
                    each(index, previous.read(reader, tag, field, units)?)?;
                }
            }
            row += len;
        }
        Ok(())
    }
}

/// The previous value of each delta- or front-coded type, while decoding.
#[derive(Debug, Default)]
struct Decoded {
    integer: i64,
    timestamp: i64,
    text: Vec<u8>,
    bytes: Vec<u8>,
    json: Vec<u8>,
}

impl Decoded {
    fn read(
        &mut self,
        reader: &mut Reader<'_>,
        tag: Tag,
        field: &'static str,
        units: &mut Units,
    ) -> Result<Value, DecodeError> {
        Ok(match tag {
            // Runs never yield absent cells here.
            Tag::Absent | Tag::Null => Value::Null,
            Tag::False => Value::Bool(false),
            Tag::True => Value::Bool(true),
            Tag::Integer => Value::Integer(read_delta(reader, &mut self.integer, field)?),
            Tag::Timestamp => Value::Timestamp(read_delta(reader, &mut self.timestamp, field)?),
            Tag::Real => {
                let mut bits = [0; 8];
                bits.copy_from_slice(reader.take(8, field)?);
                let real = f64::from_bits(u64::from_be_bytes(bits));
                if real.is_nan() {
                    return Err(DecodeError::InvalidValue {
                        field,
                        reason: "NaN is not a value".into(),
                    });
                }
                Value::Real(real)
            }
            Tag::Bytes => Value::Bytes(read_front(reader, &mut self.bytes, field, units)?.to_vec()),
            Tag::Text => {
                Value::Text(utf8(read_front(reader, &mut self.text, field, units)?, field)?)
            }
            Tag::Json => {
                let json = utf8(read_front(reader, &mut self.json, field, units)?, field)?;
                if let Err(e) = check_json(&json) {
                    return Err(DecodeError::InvalidValue {
                        field,
                        reason: format!("not JSON: {e}"),
                    });
                }
                Value::Json(json)
            }
        })
    }
}

fn read_delta(
    reader: &mut Reader<'_>,
    previous: &mut i64,
    field: &'static str,
) -> Result<i64, DecodeError> {
    *previous = previous.wrapping_add(unzigzag(reader.uint(field)?));
    Ok(*previous)
}

/// Reads a front-coded value into `previous` and returns it. The shared
/// prefix must be the longest one, so each value has one encoding. The
/// value's units are counted as soon as its length is known, before its
/// bytes are read or copied.
fn read_front<'p>(
    reader: &mut Reader<'_>,
    previous: &'p mut Vec<u8>,
    field: &'static str,
    units: &mut Units,
) -> Result<&'p [u8], DecodeError> {
    let shared = usize::try_from(reader.uint(field)?).unwrap_or(usize::MAX);
    if shared > previous.len() {
        return Err(DecodeError::InvalidValue {
            field,
            reason: format!("shares {shared} bytes with a previous value of {}", previous.len()),
        });
    }
    let rest = usize::try_from(reader.uint(field)?).unwrap_or(usize::MAX);
    if rest > MAX_VALUE_LEN - shared {
        return Err(DecodeError::BadLength {
            field,
            len: shared.saturating_add(rest),
            min: 0,
            max: MAX_VALUE_LEN,
        });
    }
    units.add(units::of_payload(shared + rest))?;
    let suffix = reader.take(rest, field)?;
    if suffix.first().is_some_and(|first| previous.get(shared) == Some(first)) {
        return Err(DecodeError::NonCanonical { what: WHAT });
    }
    previous.truncate(shared);
    previous.extend_from_slice(suffix);
    Ok(previous)
}

fn utf8(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DecodeError::InvalidValue { field, reason: "invalid UTF-8".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cell [`Runs::read_values`] reads, with its row index.
    fn collected(
        runs: &Runs,
        reader: &mut Reader<'_>,
        units: &mut Units,
    ) -> Result<Vec<(usize, Value)>, DecodeError> {
        let mut values = Vec::new();
        runs.read_values(reader, units, |row, value| {
            values.push((row, value));
            Ok(())
        })?;
        Ok(values)
    }

    fn round_trip(values: &[Option<Value>]) -> Vec<u8> {
        let cells: Vec<Cell<'_>> =
            values.iter().map(|v| v.as_ref().map_or(Cell::Absent, Cell::Value)).collect();
        let mut out = Vec::new();
        encode(&mut out, &cells);
        let mut reader = Reader::new(&out);
        let runs = Runs::read(&mut reader, values.len(), Kind::Values).unwrap();
        let decoded = collected(&runs, &mut reader, &mut Units::new(usize::MAX)).unwrap();
        assert_eq!(reader.position(), out.len());
        let expected: Vec<(usize, Value)> =
            values.iter().enumerate().filter_map(|(i, v)| v.clone().map(|v| (i, v))).collect();
        assert_eq!(decoded, expected);
        out
    }

    #[test]
    fn runs_and_deltas() {
        let texts: Vec<Option<Value>> =
            (0..3).map(|i| Some(Value::Text(format!("value-{i:014}")))).collect();
        assert_eq!(
            round_trip(&texts),
            [
                0x36, // a run of 3 texts
                0, 20, b'v', b'a', b'l', b'u', b'e', b'-', b'0', b'0', b'0', b'0', b'0', b'0',
                b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0', // nothing shared, 20 new
                19, 1, b'1', // 19 shared, "1"
                19, 1, b'2',
            ]
        );
        let mixed = [
            None,
            Some(Value::Integer(5)),
            Some(Value::Integer(3)),
            None,
            Some(Value::Bool(true)),
            Some(Value::Real(-0.0)),
        ];
        assert_eq!(
            round_trip(&mixed),
            [0x10, 0x24, 0x10, 0x13, 0x15, 10, 3, 0x80, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn front_coding_must_share_the_longest_prefix() {
        // "ab" then "ac" written as 0 shared + "ac": valid bytes, longer form.
        let bytes = [0x26, 0, 2, b'a', b'b', 0, 2, b'a', b'c'];
        let mut reader = Reader::new(&bytes);
        let runs = Runs::read(&mut reader, 2, Kind::Values).unwrap();
        assert_eq!(
            collected(&runs, &mut reader, &mut Units::new(usize::MAX)),
            Err(DecodeError::NonCanonical { what: WHAT })
        );
        // Sharing more bytes than the previous value has.
        let bytes = [0x16, 1, 0];
        let mut reader = Reader::new(&bytes);
        let runs = Runs::read(&mut reader, 1, Kind::Values).unwrap();
        assert!(matches!(
            collected(&runs, &mut reader, &mut Units::new(usize::MAX)),
            Err(DecodeError::InvalidValue { .. })
        ));
    }

    #[test]
    fn a_payload_counts_its_units_after_its_length_and_before_its_bytes() {
        let values = |bytes: &[u8], max| {
            let mut reader = Reader::new(bytes);
            let runs = Runs::read(&mut reader, 1, Kind::Values)?;
            collected(&runs, &mut reader, &mut Units::new(max))
        };
        // A text of 128 bytes (2 units), none of them given.
        let header = [0x16, 0x00, 0x80, 0x01];
        assert_eq!(
            values(&header, 1),
            Err(DecodeError::BadLength { field: "changes.units", len: 2, min: 0, max: 1 })
        );
        assert!(matches!(values(&header, 2), Err(DecodeError::Malformed { .. })));
        // Sharing more than the previous value, and over the longest value,
        // come first.
        assert!(matches!(values(&[0x16, 0x01, 0x00], 0), Err(DecodeError::InvalidValue { .. })));
        let mut too_long = vec![0x16, 0];
        put_uint(&mut too_long, MAX_VALUE_LEN as u64 + 1);
        assert!(matches!(
            values(&too_long, 0),
            Err(DecodeError::BadLength { field: "op.cells.value", .. })
        ));
        // Bytes and json count the same way; under 64 bytes counts nothing.
        assert!(matches!(
            values(&[0x17, 0x00, 0x40], 0),
            Err(DecodeError::BadLength { field: "changes.units", .. })
        ));
        assert!(matches!(
            values(&[0x19, 0x00, 0x40], 0),
            Err(DecodeError::BadLength { field: "changes.units", .. })
        ));
        assert_eq!(values(&[0x16, 0x00, 0x01, b'a'], 0), Ok(vec![(0, Value::Text("a".into()))]));
    }

    #[test]
    fn runs_are_checked() {
        let read = |bytes: &[u8], rows, kind| Runs::read(&mut Reader::new(bytes), rows, kind);
        // Two runs of one tag: one run is the only form.
        assert!(matches!(
            read(&[0x11, 0x11], 2, Kind::Values),
            Err(DecodeError::NonCanonical { .. })
        ));
        assert!(matches!(read(&[0x20], 2, Kind::Values), Err(DecodeError::NonCanonical { .. })));
        assert!(matches!(read(&[0x01], 2, Kind::Values), Err(DecodeError::InvalidValue { .. })));
        assert!(matches!(read(&[0x31], 2, Kind::Values), Err(DecodeError::InvalidValue { .. })));
        assert!(matches!(read(&[0x1a], 1, Kind::Values), Err(DecodeError::InvalidValue { .. })));
        assert!(matches!(read(&[0x11], 1, Kind::Key), Err(DecodeError::WrongType { .. })));
        assert!(matches!(read(&[0x10], 1, Kind::Key), Err(DecodeError::WrongType { .. })));
        assert!(read(&[0x14], 1, Kind::Key).is_ok());
    }

    #[test]
    fn payloads_are_checked() {
        let values = |bytes: &[u8]| {
            let mut reader = Reader::new(bytes);
            let runs = Runs::read(&mut reader, 1, Kind::Values)?;
            collected(&runs, &mut reader, &mut Units::new(usize::MAX))
        };
        let nan = f64::NAN.to_bits().to_be_bytes();
        assert!(matches!(
            values(&[&[0x15][..], &nan].concat()),
            Err(DecodeError::InvalidValue { .. })
        ));
        assert!(matches!(values(&[0x16, 0, 1, 0xff]), Err(DecodeError::InvalidValue { .. })));
        assert!(matches!(values(&[0x19, 0, 1, b'{']), Err(DecodeError::InvalidValue { .. })));
        let mut too_long = vec![0x17, 0];
        put_uint(&mut too_long, MAX_VALUE_LEN as u64 + 1);
        assert!(matches!(values(&too_long), Err(DecodeError::BadLength { .. })));
        assert!(matches!(values(&[0x17, 0, 5, 1]), Err(DecodeError::Malformed { .. })));
    }
}
