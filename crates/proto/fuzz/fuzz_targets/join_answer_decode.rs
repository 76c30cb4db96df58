//! `JoinAnswer::from_bytes` on arbitrary bytes (what the inviting node
//! answers a new device). It must never panic, and an answer that decodes
//! encodes to bytes that decode to itself.

#![no_main]

use basic_store::JoinAnswer;
use libfuzzer_sys::fuzz_target;

/// The cap the new device reads answers with (a response frame).
const MAX: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = JoinAnswer::from_bytes(data, MAX) else { return };
    assert_eq!(JoinAnswer::from_bytes(&answer.to_bytes(), MAX).as_ref(), Ok(&answer));
});
