//! Random text edits for the "mangled input never panics" property tests.

use proptest::sample::Index;

/// Applies each `(at, cut, insert)` edit in turn: removes up to `cut` bytes
/// at a position chosen by `at` and inserts `insert` there, keeping the text
/// valid UTF-8 by moving both ends down to character boundaries.
pub(crate) fn apply_edits(text: &mut String, edits: Vec<(Index, usize, String)>) {
    for (at, cut, insert) in edits {
        let mut start = at.index(text.len() + 1);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.replace_range(start..end, &insert);
    }
}
