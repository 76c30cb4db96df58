//! Padding of a change set, so that a commit's ciphertext length reveals
//! only a coarse size.
//!
//! Implements `protocol-spec/wire-format.md` §4.4: Padmé (Nikitin et al.,
//! "Reducing Metadata Leakage from Encrypted Files and Communication with
//! PURBs", PETS 2019) over a floor of [`MIN_PADDED`] bytes. A length `L` is
//! rounded up to a multiple of `2^(E − S)`, where `E = ⌊log2 L⌋` and
//! `S = ⌊log2 E⌋ + 1`: at most 12 % more bytes, and a padded length
//! leaves about `log2 E` + 1 bits of `L` to learn instead of `log2 L`.

/// Every change set is padded to at least this many bytes.
pub const MIN_PADDED: usize = 64;

/// The length a change set of `len` encoded bytes is padded to.
pub fn padded_len(len: usize) -> usize {
    let len = len.max(MIN_PADDED);
    let e = usize::BITS - 1 - len.leading_zeros();
    let s = u32::BITS - e.leading_zeros();
    let mask = (1usize << (e - s)) - 1;
    (len + mask) & !mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let cases = [
            (0, 64),
            (64, 64),
            (65, 72),
            (100, 104),
            (300, 304),
            (1000, 1024),
            (5030, 5120),
            (100_000, 100_352),
            (1 << 20, 1 << 20),
        ];
        for (len, padded) in cases {
            assert_eq!(padded_len(len), padded, "padded length of {len}");
        }
    }

    proptest! {
        #[test]
        fn padding_is_bounded_and_idempotent(len in 0usize..(1 << 21)) {
            let padded = padded_len(len);
            prop_assert!(padded >= len.max(MIN_PADDED));
            prop_assert!(padded - len.max(MIN_PADDED) <= len.max(MIN_PADDED) / 8);
            prop_assert_eq!(padded_len(padded), padded);
        }
    }
}
