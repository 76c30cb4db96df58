//! What the crash test's parent and its child share: the writes the child
//! reports, and the seeded generator both draw their choices from.

use std::fmt;

/// One write the child makes: what it prints before and after `execute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Inserts a row (new, or a new life of a deleted one) with this title.
    Insert { id: String, title: String },
    /// Sets the title of a live row.
    Update { id: String, title: String },
    /// Deletes a live row.
    Delete { id: String },
    /// Adds 1 to the priority of every row: one statement over hundreds
    /// of rows, whose view rows are written while its batch commits on
    /// another thread (D44). Titles stay as they are.
    Bump,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Insert { id, title } => write!(f, "insert {id} {title}"),
            Op::Update { id, title } => write!(f, "update {id} {title}"),
            Op::Delete { id } => write!(f, "delete {id}"),
            Op::Bump => write!(f, "bump"),
        }
    }
}

/// SplitMix64: small, seedable, good enough to pick writes and delays.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `range`.
    pub(crate) fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.below(range.end - range.start)
    }
}
