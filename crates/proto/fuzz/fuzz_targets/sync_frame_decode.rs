//! `sync::Message::decode` on arbitrary bytes (every frame a peer sends).
//! Decoding must never panic, and a frame that decodes is canonical: it
//! encodes to the same bytes.

#![no_main]

use basic_proto::KeyCache;
use basic_proto::sync::message::{MAX_FRAME_BYTES, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data, MAX_FRAME_BYTES, &KeyCache::default()) else { return };
    assert_eq!(message.encode(), data);
});
