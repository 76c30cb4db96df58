//! The *units* of a change set: what decoding it costs a receiver, which
//! its encoding may never be shorter than.
//!
//! Implements `protocol-spec/wire-format.md` §4.0 and §4.4. A row
//! operation is one unit, a written cell one more, and every text, bytes
//! or json value and every text or bytes key part adds one unit per
//! [`BYTES_PER_UNIT`] of its decoded length. Runs (a varint for any number
//! of cells) and front coding (a few bytes for a value equal to the one
//! before) make rows, cells and value bytes cheap to send; counting them
//! keeps what a change set decodes to within a constant factor of its
//! length, so a decoder allocates at most about 64 bytes of values per
//! byte it is given.

use crate::codec::DecodeError;
use crate::value::KeyPart;

use super::RowOp;

/// Decoded bytes of a text, bytes or json value, or of a text or bytes key
/// part, that count one unit.
pub const BYTES_PER_UNIT: usize = 64;

/// The units a text, bytes or json value, or a text or bytes key part, of
/// `len` decoded bytes adds to the change set: `⌊len / 64⌋`. For json,
/// `len` is the length of the JSON text as written (and as the decoder
/// materialises it). The one rule the encoder ([`super::Changes::units`])
/// and the decoder ([`Units::add`]) share.
pub(super) fn of_payload(len: usize) -> usize {
    len / BYTES_PER_UNIT
}

/// The units of one row operation: 1, plus its key parts' payloads, plus,
/// for an upsert, 1 per cell written and its payload.
pub(super) fn of_op(op: &RowOp) -> usize {
    let key: usize = op
        .key()
        .parts()
        .iter()
        .map(|part| match part {
            KeyPart::Integer(_) => 0,
            KeyPart::Text(text) => of_payload(text.len()),
            KeyPart::Bytes(bytes) => of_payload(bytes.len()),
        })
        .sum();
    let cells: usize = match op {
        RowOp::Upsert { cells, .. } => {
            cells.values().map(|value| 1 + of_payload(value.payload_len())).sum()
        }
        RowOp::Delete { .. } => 0,
    };
    1 + key + cells
}

/// The units read so far, which may not exceed the input's length: a
/// valid change set is padded to at least its units, so a decoder refuses
/// one that has more as soon as it counts them, before it allocates for
/// them.
#[derive(Debug)]
pub(super) struct Units {
    count: usize,
    max: usize,
}

impl Units {
    /// No units yet, of an input of `max` bytes.
    pub(super) fn new(max: usize) -> Self {
        Self { count: 0, max }
    }

    /// The units counted so far.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// Counts `n` more units; `BadLength` `changes.units` once they pass
    /// the input's length.
    pub(super) fn add(&mut self, n: usize) -> Result<(), DecodeError> {
        self.count = self.count.saturating_add(n);
        if self.count > self.max {
            return Err(DecodeError::BadLength {
                field: "changes.units",
                len: self.count,
                min: 0,
                max: self.max,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_per_64_bytes_rounded_down() {
        let cases = [(0, 0), (1, 0), (63, 0), (64, 1), (127, 1), (128, 2), (262_144, 4_096)];
        for (len, units) in cases {
            assert_eq!(of_payload(len), units, "units of {len} bytes");
        }
    }

    #[test]
    fn the_count_may_reach_the_length_but_not_pass_it() {
        let mut units = Units::new(10);
        assert_eq!(units.add(10), Ok(()));
        assert_eq!(units.count(), 10);
        assert_eq!(
            units.add(1),
            Err(DecodeError::BadLength { field: "changes.units", len: 11, min: 0, max: 10 })
        );
    }
}
