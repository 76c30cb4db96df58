//! `Changes::decode` on arbitrary bytes (the plaintext inside a commit).
//! Decoding must never panic, and a change set that decodes must encode to
//! the same bytes and decode again to itself.

#![no_main]

use basic_proto::Changes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(changes) = Changes::decode(data) else { return };
    let bytes = changes.encode();
    // Only canonical encodings decode, so re-encoding gives `data` back.
    assert_eq!(bytes, data);
    assert_eq!(Changes::decode(&bytes), Ok(changes));
});
