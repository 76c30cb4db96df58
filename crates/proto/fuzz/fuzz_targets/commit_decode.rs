//! `Commit::decode` on arbitrary bytes. Decoding must never panic; a commit
//! that decodes must decode again to itself, and opening it with a fixed key
//! must not panic either, and verified together with a copy of itself it
//! verifies as alone. `Commit::locate` reads a header in place exactly
//! when, and as, the general decoder reads it.
//!
//! Random bytes essentially never carry a valid signature, so only seed
//! inputs that are real signed commits get past `decode`; those sealed under
//! [`KEY`] also reach decryption and change-set decoding.

#![no_main]

use basic_proto::{Cbor, Changes, Commit, KeyCache, Located, ScopeKey};
use libfuzzer_sys::fuzz_target;

/// The scope key of the commits in `protocol-spec/vectors/commits.json` and
/// `negative.json` (`aead.key`, `scope_key`), so that those vectors, used as
/// seeds, exercise `open`.
const KEY: [u8; 32] = [
    0x65, 0xce, 0x69, 0xcb, 0x3a, 0x28, 0x7b, 0xa8, 0x9f, 0x2e, 0x22, 0xa9, 0x42, 0x31, 0xa2, 0xf8,
    0x2d, 0xd5, 0x58, 0x1a, 0xd5, 0x9f, 0x9b, 0x32, 0xd5, 0x41, 0xfd, 0xb7, 0x58, 0x40, 0x97, 0xde,
];

fuzz_target!(|data: &[u8]| {
    let keys = KeyCache::default();
    let header = Commit::header_of(data, &keys).ok();
    let located = Commit::locate(data, &keys);
    assert_eq!(located.as_ref().map(|located| located.header()), header.as_ref());
    assert_eq!(located.as_ref().map(|located| located.id()), header.and(Commit::id_of(data)));
    // Verified, alone or with others, it is what decoding gives.
    if let Some(located) = located {
        let decoded = Commit::decode(data).ok();
        let twice = [Commit::locate(data, &keys), Commit::locate(data, &keys)];
        let together = Located::verify_all(twice.into_iter().flatten().collect());
        assert_eq!(
            together.into_iter().map(Result::ok).collect::<Vec<_>>(),
            [decoded.clone(), decoded.clone()]
        );
        assert_eq!(located.verify().ok(), decoded);
    }
    let Ok(commit) = Commit::decode(data) else { return };
    // Only canonical encodings decode, so the commit keeps exactly `data`.
    assert_eq!(commit.as_bytes(), data);
    assert_eq!(Commit::id_of(data), Some(commit.id()));
    assert_eq!(commit.header().encode(), commit.header_bytes());
    assert_eq!(Commit::decode(commit.as_bytes()).as_ref(), Ok(&commit));
    if let Ok(changes) = commit.open(&ScopeKey::from_bytes(KEY)) {
        assert_eq!(Changes::decode(&changes.encode()).as_ref(), Ok(&changes));
    }
});
