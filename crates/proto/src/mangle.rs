//! Byte edits for the "mangled input never panics" property tests.
//!
//! Random bytes rarely get past a decoder's first tag; a valid encoding
//! with a few bytes set, flipped, inserted, removed or cut off reaches the
//! fields, lengths and nested structures behind it. Bytes are drawn half
//! the time from CBOR heads that matter (lengths, arrays, maps, simple
//! values, the break), so that edits change structure, not only content.

use proptest::prelude::*;
use proptest::sample::Index;

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    /// Sets the byte at a position.
    Set(Index, u8),
    /// Flips one bit of the byte at a position.
    Flip(Index, u8),
    /// Inserts bytes at a position.
    Insert(Index, Vec<u8>),
    /// Removes up to this many bytes at a position.
    Remove(Index, usize),
    /// Cuts the input at a position.
    Truncate(Index),
}

/// A byte, often a CBOR head.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![
            0x00, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x20, 0x3b, 0x40, 0x57, 0x58, 0x59, 0x5a, 0x5b,
            0x5f, 0x60, 0x78, 0x7f, 0x80, 0x81, 0x88, 0x98, 0x9f, 0xa0, 0xa1, 0xbf, 0xc0, 0xd8,
            0xf4, 0xf5, 0xf6, 0xf7, 0xf9, 0xfb, 0xff,
        ]),
    ]
}

/// One to four edits.
pub(crate) fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        3 => (any::<Index>(), byte()).prop_map(|(at, b)| Edit::Set(at, b)),
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        2 => (any::<Index>(), prop::collection::vec(byte(), 1..4))
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        2 => (any::<Index>(), 1usize..8).prop_map(|(at, n)| Edit::Remove(at, n)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..5)
}

/// Applies `edits` to `bytes` in turn.
pub(crate) fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Set(at, b) if len > 0 => bytes[at.index(len)] = *b,
            Edit::Flip(at, bit) if len > 0 => bytes[at.index(len)] ^= 1 << bit,
            Edit::Insert(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Edit::Remove(at, n) if len > 0 => {
                let at = at.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Truncate(at) => bytes.truncate(at.index(len + 1)),
            _ => {}
        }
    }
}
