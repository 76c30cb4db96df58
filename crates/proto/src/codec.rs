//! Deterministic CBOR: the typed boundary between bytes and protocol types.
//!
//! Implements `protocol-spec/wire-format.md` §1 (Encoding). Every protocol
//! structure has exactly one valid encoding: RFC 8949 §4.2.1 core
//! deterministic encoding (shortest heads, definite lengths, map keys sorted
//! by their encoded bytes, floats in the shortest form that keeps the value).
//! Decoding re-encodes what it read and rejects input that differs, so two
//! byte strings never decode to the same value.

use ciborium::Value;

/// Deepest nesting accepted when parsing CBOR.
pub const MAX_NESTING: usize = 16;

/// Why bytes could not be decoded into a protocol structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the structure allows.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// The structure being decoded.
        what: &'static str,
        /// Length of the input.
        len: usize,
        /// Largest length allowed.
        max: usize,
    },
    /// The input is not well-formed CBOR (truncated, bad head, too deep).
    #[error("malformed CBOR in {what}: {reason}")]
    Malformed {
        /// The structure being decoded.
        what: &'static str,
        /// What the CBOR parser reported.
        reason: String,
    },
    /// Bytes follow the single CBOR item.
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes {
        /// The structure being decoded.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// Well-formed CBOR, but not the one deterministic encoding of its value.
    #[error("{what} is not in deterministic CBOR form")]
    NonCanonical {
        /// The structure being decoded.
        what: &'static str,
    },
    /// A field has the wrong CBOR type.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// The field, as named in the spec.
        field: &'static str,
        /// The CBOR type the spec requires.
        expected: &'static str,
    },
    /// A field's length or count is out of range.
    #[error("{field}: length {len} is outside {min}..={max}")]
    BadLength {
        /// The field, as named in the spec.
        field: &'static str,
        /// The length found.
        len: usize,
        /// Smallest length allowed.
        min: usize,
        /// Largest length allowed.
        max: usize,
    },
    /// A field has the right type and size but a value the spec forbids.
    #[error("{field}: {reason}")]
    InvalidValue {
        /// The field, as named in the spec.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },
    /// A field holds a public key that is refused.
    #[error("{field}: {error}")]
    BadKey {
        /// The field, as named in the spec.
        field: &'static str,
        /// Why the key is refused.
        error: crate::keys::KeyError,
    },
    /// The structure declares a protocol version this implementation lacks.
    #[error("{what}: unsupported version {version}")]
    UnsupportedVersion {
        /// The structure being decoded.
        what: &'static str,
        /// The version found.
        version: u64,
    },
}

/// A protocol structure with a deterministic CBOR encoding.
pub trait Cbor: Sized {
    /// Name used in errors.
    const WHAT: &'static str;
    /// Largest encoding accepted by [`Cbor::decode`].
    const MAX_BYTES: usize;

    /// The structure as a CBOR data item.
    fn to_cbor(&self) -> Value;

    /// Reads the structure from a parsed CBOR data item, checking every field.
    fn from_cbor(value: Value) -> Result<Self, DecodeError>;

    /// The deterministic encoding.
    fn encode(&self) -> Vec<u8> {
        encode_value(&self.to_cbor())
    }

    /// Decodes and validates `bytes`, which must be the deterministic
    /// encoding of the structure and nothing more.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_canonical(bytes)
    }
}

/// [`Cbor::decode`] through CBOR values: parsed, read field by field, then
/// encoded again and compared. A structure that overrides `decode` to read
/// its bytes directly falls back to this for the error.
pub fn decode_canonical<T: Cbor>(bytes: &[u8]) -> Result<T, DecodeError> {
    let value = parse(bytes, T::WHAT, T::MAX_BYTES)?;
    let decoded = T::from_cbor(value)?;
    if decoded.encode() != bytes {
        return Err(DecodeError::NonCanonical { what: T::WHAT });
    }
    Ok(decoded)
}

/// Encodes a CBOR data item.
pub fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Invariant: writing to a Vec cannot fail, and every `Value` has a CBOR form.
    #[allow(clippy::expect_used)]
    ciborium::into_writer(value, &mut out).expect("a CBOR value always encodes into a Vec");
    out
}

/// Parses exactly one CBOR data item of at most `max` bytes.
pub fn parse(bytes: &[u8], what: &'static str, max: usize) -> Result<Value, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { what, len: bytes.len(), max });
    }
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_NESTING)
        .map_err(|e| DecodeError::Malformed { what, reason: parser_reason(e) })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { what, count: rest.len() });
    }
    Ok(value)
}

fn parser_reason<E: std::fmt::Debug>(error: ciborium::de::Error<E>) -> String {
    match error {
        ciborium::de::Error::Io(_) => "unexpected end of input".to_owned(),
        ciborium::de::Error::Syntax(offset) => format!("syntax error at byte {offset}"),
        ciborium::de::Error::Semantic(offset, msg) => match offset {
            Some(offset) => format!("{msg} at byte {offset}"),
            None => msg,
        },
        ciborium::de::Error::RecursionLimitExceeded => {
            format!("nested deeper than {MAX_NESTING} levels")
        }
    }
}

/// Reads the items of a CBOR array one field at a time.
#[derive(Debug)]
pub struct Fields {
    items: std::vec::IntoIter<Value>,
    what: &'static str,
}

impl Fields {
    /// Opens `value` as an array of exactly `count` items.
    pub fn new(value: Value, what: &'static str, count: usize) -> Result<Self, DecodeError> {
        let items = as_array(value, what, count, count)?;
        Ok(Self { items: items.into_iter(), what })
    }

    /// Opens `value` as an array of `min..=max` items.
    pub fn between(
        value: Value,
        what: &'static str,
        min: usize,
        max: usize,
    ) -> Result<Self, DecodeError> {
        let items = as_array(value, what, min, max)?;
        Ok(Self { items: items.into_iter(), what })
    }

    /// Items not yet read.
    pub fn remaining(&self) -> usize {
        self.items.len()
    }

    /// The next item, whatever its type.
    pub fn next(&mut self, field: &'static str) -> Result<Value, DecodeError> {
        self.items.next().ok_or(DecodeError::WrongType { field, expected: "another array item" })
    }

    /// The next item as an unsigned integer.
    pub fn uint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        as_uint(self.next(field)?, field)
    }

    /// The next item as a byte string of `min..=max` bytes.
    pub fn bytes(
        &mut self,
        field: &'static str,
        min: usize,
        max: usize,
    ) -> Result<Vec<u8>, DecodeError> {
        as_bytes(self.next(field)?, field, min, max)
    }

    /// The next item as a byte string of exactly `N` bytes.
    pub fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        as_fixed(self.next(field)?, field)
    }

    /// The next item as a text string of `min..=max` bytes.
    pub fn text(
        &mut self,
        field: &'static str,
        min: usize,
        max: usize,
    ) -> Result<String, DecodeError> {
        as_text(self.next(field)?, field, min, max)
    }

    /// Name of the structure being read.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

/// `value` as an array of `min..=max` items.
pub fn as_array(
    value: Value,
    field: &'static str,
    min: usize,
    max: usize,
) -> Result<Vec<Value>, DecodeError> {
    match value {
        Value::Array(items) => check_len(items, |v| v.len(), field, min, max),
        _ => Err(DecodeError::WrongType { field, expected: "array" }),
    }
}

/// `value` as a map of `min..=max` entries.
pub fn as_map(
    value: Value,
    field: &'static str,
    min: usize,
    max: usize,
) -> Result<Vec<(Value, Value)>, DecodeError> {
    match value {
        Value::Map(entries) => check_len(entries, |v| v.len(), field, min, max),
        _ => Err(DecodeError::WrongType { field, expected: "map" }),
    }
}

/// `value` as an unsigned integer that fits in 64 bits.
pub fn as_uint(value: Value, field: &'static str) -> Result<u64, DecodeError> {
    match value {
        Value::Integer(i) => u64::try_from(i128::from(i))
            .map_err(|_| DecodeError::WrongType { field, expected: "unsigned integer" }),
        _ => Err(DecodeError::WrongType { field, expected: "unsigned integer" }),
    }
}

/// `value` as a byte string of `min..=max` bytes.
pub fn as_bytes(
    value: Value,
    field: &'static str,
    min: usize,
    max: usize,
) -> Result<Vec<u8>, DecodeError> {
    match value {
        Value::Bytes(bytes) => check_len(bytes, |v| v.len(), field, min, max),
        _ => Err(DecodeError::WrongType { field, expected: "byte string" }),
    }
}

/// `value` as a byte string of exactly `N` bytes.
pub fn as_fixed<const N: usize>(value: Value, field: &'static str) -> Result<[u8; N], DecodeError> {
    let bytes = as_bytes(value, field, N, N)?;
    let mut out = [0; N];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// `value` as a text string of `min..=max` bytes.
pub fn as_text(
    value: Value,
    field: &'static str,
    min: usize,
    max: usize,
) -> Result<String, DecodeError> {
    match value {
        Value::Text(text) => check_len(text, |v| v.len(), field, min, max),
        _ => Err(DecodeError::WrongType { field, expected: "text string" }),
    }
}

fn check_len<T>(
    item: T,
    len: impl Fn(&T) -> usize,
    field: &'static str,
    min: usize,
    max: usize,
) -> Result<T, DecodeError> {
    let n = len(&item);
    if n < min || n > max {
        return Err(DecodeError::BadLength { field, len: n, min, max });
    }
    Ok(item)
}

/// Sorts map entries into deterministic order: by the encoded bytes of the
/// key, which for text keys is shorter first, then bytewise.
pub fn sort_text_keys<V>(entries: &mut [(&str, V)]) {
    entries.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
}

/// CBOR's major type of unsigned integers.
pub const MAJOR_UINT: u8 = 0;
/// CBOR's major type of byte strings.
pub const MAJOR_BYTES: u8 = 2;
/// CBOR's major type of arrays.
pub const MAJOR_ARRAY: u8 = 4;
/// CBOR's `null`.
pub const NULL: u8 = 0xf6;

/// The argument of the CBOR head at the start of `bytes`, if it is of
/// `major` type, of definite length and in the shortest form for its
/// value, and what follows it: for reading a structure in canonical form
/// in place, the general decoder left for anything else.
pub fn read_head(bytes: &[u8], major: u8) -> Option<(u64, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    if first >> 5 != major {
        return None;
    }
    let width = match first & 0x1f {
        small @ 0..=23 => return Some((u64::from(small), rest)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return None,
    };
    let (argument, rest) = rest.split_at_checked(width)?;
    let value = argument.iter().fold(0, |value, &byte| value << 8 | u64::from(byte));
    // The least value a head of this width may carry: any smaller one fits
    // a narrower head.
    let least = if width == 1 { 24 } else { 1 << (4 * width) };
    (value >= least).then_some((value, rest))
}

/// The length of the shortest CBOR head for `value`: 1, 2, 3, 5 or 9 bytes.
pub fn head_len(value: u64) -> usize {
    match value {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Appends the shortest CBOR head of `major` type for `value`.
pub fn write_head(out: &mut Vec<u8>, major: u8, value: u64) {
    put_head(out, major, value, head_len(value) - 1);
}

/// Appends a CBOR head of `major` type for `value` with an argument
/// `width` bytes wide (0, 1, 2, 4 or 8; 0: `value`, under 24, in the first
/// byte).
fn put_head(out: &mut Vec<u8>, major: u8, value: u64, width: usize) {
    let code = match width {
        0 => value as u8,
        1 => 24,
        2 => 25,
        4 => 26,
        _ => 27,
    };
    out.push(major << 5 | code);
    out.extend_from_slice(&value.to_be_bytes()[8 - width.min(8)..]);
}

/// A CBOR byte string with the shortest head for its length, and what
/// follows it.
pub fn byte_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = read_head(bytes, MAJOR_BYTES)?;
    rest.split_at_checked(usize::try_from(len).ok()?)
}

/// `value` in a head of `major` type `width` bytes wide (0, 1, 2, 4 or 8;
/// 0: in the first byte), whether or not that is its shortest form: for
/// tests of the readers.
#[cfg(test)]
pub(crate) fn head_of_width(major: u8, value: u64, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + width);
    put_head(&mut out, major, value, width);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Pair(u64, Vec<u8>);

    impl Cbor for Pair {
        const WHAT: &'static str = "pair";
        const MAX_BYTES: usize = 64;
        fn to_cbor(&self) -> Value {
            Value::Array(vec![Value::Integer(self.0.into()), Value::Bytes(self.1.clone())])
        }
        fn from_cbor(value: Value) -> Result<Self, DecodeError> {
            let mut f = Fields::new(value, Self::WHAT, 2)?;
            Ok(Pair(f.uint("n")?, f.bytes("b", 0, 8)?))
        }
    }

    #[test]
    fn round_trip() {
        let p = Pair(500, vec![1, 2, 3]);
        assert_eq!(Pair::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn rejects_non_shortest_integer() {
        // [ 500 as 0x1a 4-byte head, h'' ]
        let bytes = [0x82, 0x1a, 0, 0, 0x01, 0xf4, 0x40];
        assert_eq!(Pair::decode(&bytes), Err(DecodeError::NonCanonical { what: "pair" }));
    }

    #[test]
    fn rejects_indefinite_array() {
        let bytes = [0x9f, 0x01, 0x40, 0xff];
        assert_eq!(Pair::decode(&bytes), Err(DecodeError::NonCanonical { what: "pair" }));
    }

    #[test]
    fn rejects_trailing_and_truncated_and_oversized() {
        let mut bytes = Pair(1, vec![]).encode();
        bytes.push(0);
        assert!(matches!(Pair::decode(&bytes), Err(DecodeError::TrailingBytes { count: 1, .. })));
        let bytes = Pair(1, vec![1, 2]).encode();
        assert!(matches!(
            Pair::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(Pair::decode(&[0u8; 65]), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn rejects_deep_nesting() {
        let bytes = [0x81; 40];
        assert!(matches!(Pair::decode(&bytes), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn text_keys_sort_length_first() {
        let mut entries = vec![("bb", 0), ("a", 1), ("ab", 2), ("c", 3)];
        sort_text_keys(&mut entries);
        let keys: Vec<_> = entries.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["a", "c", "ab", "bb"]);
    }

    proptest::proptest! {
        /// An unsigned integer's head is written as the general encoder
        /// writes it, and read back; a head of any other width (or of
        /// another major type) is not read in place.
        #[test]
        fn heads_are_written_shortest_and_read_only_so(
            value in proptest::prop_oneof![0..=30u64, 250..=260u64, 65_530..=65_540u64, proptest::num::u64::ANY],
            major in proptest::prop_oneof![proptest::strategy::Just(MAJOR_UINT), proptest::strategy::Just(MAJOR_BYTES), proptest::strategy::Just(MAJOR_ARRAY)],
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..3),
        ) {
            let mut written = Vec::new();
            write_head(&mut written, major, value);
            if major == MAJOR_UINT {
                proptest::prop_assert_eq!(&written, &encode_value(&Value::Integer(value.into())));
            }
            let shortest = written.len() - 1;
            written.extend_from_slice(&tail);
            proptest::prop_assert_eq!(read_head(&written, major), Some((value, &tail[..])));
            proptest::prop_assert_eq!(read_head(&written, (major + 1) % 8), None);
            for width in [0, 1, 2, 4, 8] {
                let fits = width == 8 || value < 1 << (8 * width);
                if width != shortest && (width > 0 || value < 24) && fits {
                    let other = head_of_width(major, value, width);
                    proptest::prop_assert_eq!(read_head(&other, major), None, "width {}", width);
                }
            }
        }
    }

    #[test]
    fn indefinite_and_reserved_heads_are_not_read() {
        for first in [0x1c, 0x1d, 0x1e, 0x1f, 0x5f, 0x9f] {
            assert_eq!(read_head(&[first, 0, 0, 0, 0, 0, 0, 0, 0], first >> 5), None);
        }
        assert_eq!(read_head(&[0x19, 0x01], MAJOR_UINT), None, "cut short");
        assert_eq!(read_head(&[], MAJOR_UINT), None);
    }
}
