//! `JoinRequest::from_bytes` on arbitrary bytes (what a would-be device sends
//! the inviting node). It must never panic, and a request that decodes
//! encodes to bytes that decode to itself.

#![no_main]

use basic_store::JoinRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = JoinRequest::from_bytes(data) else { return };
    assert_eq!(JoinRequest::from_bytes(&request.to_bytes()).as_ref(), Ok(&request));
});
