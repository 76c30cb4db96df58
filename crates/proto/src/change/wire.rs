//! The primitives of the change-set encoding: unsigned LEB128 varints,
//! zigzag integers, names, and a reader that refuses what they forbid.
//!
//! Implements `protocol-spec/wire-format.md` §4.1.

use crate::codec::DecodeError;
use crate::value::{MAX_NAME_LEN, Name};

/// Name of the structure in errors.
pub(super) const WHAT: &str = "changes";

/// Appends `n` as an unsigned LEB128 varint: 7 bits a byte, low bits
/// first, the high bit set on every byte but the last.
pub(super) fn put_uint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Maps a signed integer onto an unsigned one, small magnitudes first
/// (0, −1, 1, −2, … → 0, 1, 2, 3, …).
pub(super) fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub(super) fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// Appends a name: its length as a varint, then its bytes.
pub(super) fn put_name(out: &mut Vec<u8>, name: &Name) {
    put_uint(out, name.as_str().len() as u64);
    out.extend_from_slice(name.as_str().as_bytes());
}

/// Reads a change set front to back; every read checks what it reads.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    /// Bytes read so far.
    pub(super) fn position(&self) -> usize {
        self.position
    }

    /// The next `n` bytes.
    pub(super) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.bytes[self.position..];
        if n > rest.len() {
            return Err(DecodeError::Malformed {
                what: WHAT,
                reason: format!("input ends inside {field}"),
            });
        }
        self.position += n;
        Ok(&rest[..n])
    }

    /// A varint of at most 64 bits in its shortest form.
    pub(super) fn uint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.take(1, field)?[0];
            // The tenth byte holds bit 63 only.
            if shift == 63 && byte > 1 {
                return Err(DecodeError::Malformed {
                    what: WHAT,
                    reason: format!("{field}: varint over 64 bits"),
                });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                // A last byte of 0 after others adds nothing: not the shortest form.
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::NonCanonical { what: WHAT });
                }
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// A varint count in `min..=max`.
    pub(super) fn count(
        &mut self,
        field: &'static str,
        min: usize,
        max: usize,
    ) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.uint(field)?).unwrap_or(usize::MAX);
        if n < min || n > max {
            return Err(DecodeError::BadLength { field, len: n, min, max });
        }
        Ok(n)
    }

    /// A name: a length of 1 to 64, then that many bytes of the name grammar.
    pub(super) fn name(&mut self, field: &'static str) -> Result<Name, DecodeError> {
        let len = self.count(field, 1, MAX_NAME_LEN)?;
        let bytes = self.take(len, field)?;
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidValue {
            field,
            reason: "not a name: invalid UTF-8".into(),
        })?;
        Name::new(text).map_err(|e| DecodeError::InvalidValue { field, reason: e.reason.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(bytes: &[u8]) -> Result<u64, DecodeError> {
        let mut reader = Reader::new(bytes);
        let n = reader.uint("n")?;
        assert_eq!(reader.position(), bytes.len(), "a varint is read to its last byte");
        Ok(n)
    }

    proptest! {
        #[test]
        fn varints_round_trip(n in any::<u64>()) {
            let mut out = Vec::new();
            put_uint(&mut out, n);
            prop_assert_eq!(read(&out), Ok(n));
        }

        #[test]
        fn zigzag_round_trips(n in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(n)), n);
        }
    }

    #[test]
    fn varint_examples() {
        let encode = |n| {
            let mut out = Vec::new();
            put_uint(&mut out, n);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!([zigzag(0), zigzag(-1), zigzag(1), zigzag(-2)], [0, 1, 2, 3]);
    }

    #[test]
    fn varints_are_shortest_and_bounded() {
        // 0 written in two bytes: the same value, not the shortest form.
        assert_eq!(read(&[0x80, 0x00]), Err(DecodeError::NonCanonical { what: WHAT }));
        assert_eq!(read(&[0xff, 0x80, 0x00]), Err(DecodeError::NonCanonical { what: WHAT }));
        // 2^64: one bit too many in the tenth byte.
        let over = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02];
        assert!(matches!(read(&over), Err(DecodeError::Malformed { .. })));
        let long = [0x80; 11];
        assert!(matches!(read(&long), Err(DecodeError::Malformed { .. })));
        assert!(matches!(read(&[0x80]), Err(DecodeError::Malformed { .. })));
        assert!(matches!(read(&[]), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn names_are_checked() {
        let mut reader = Reader::new(&[2, b'a', b'b']);
        assert_eq!(reader.name("n").unwrap().as_str(), "ab");
        assert!(matches!(
            Reader::new(&[0]).name("n"),
            Err(DecodeError::BadLength { field: "n", len: 0, .. })
        ));
        assert!(matches!(
            Reader::new(&[65]).name("n"),
            Err(DecodeError::BadLength { field: "n", len: 65, .. })
        ));
        assert!(matches!(
            Reader::new(&[1, b'A']).name("n"),
            Err(DecodeError::InvalidValue { field: "n", .. })
        ));
        assert!(matches!(
            Reader::new(&[1, 0xff]).name("n"),
            Err(DecodeError::InvalidValue { field: "n", .. })
        ));
        assert!(matches!(Reader::new(&[3, b'a']).name("n"), Err(DecodeError::Malformed { .. })));
    }
}
