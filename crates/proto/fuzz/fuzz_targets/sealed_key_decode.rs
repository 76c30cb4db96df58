//! `SealedKey::decode` on arbitrary bytes (a scope key sealed to a device or
//! app, carried in control operations), then opening it. Neither may panic;
//! a sealed key that decodes is canonical and decodes again to itself.
//!
//! Opening uses the recipient, sender and label of the first seal in
//! `protocol-spec/vectors/sealing.json`, so that the vectors, used as seeds,
//! reach decryption.

#![no_main]

use std::sync::LazyLock;

use basic_proto::keys::SecretKey;
use basic_proto::{Cbor, Party, SealedKey};
use libfuzzer_sys::fuzz_target;

/// `recipient_seed`, `sender_seed` and `label` of `sealing.json`'s first seal.
const RECIPIENT: &str = "c614eac7e3ab4ec8671c460dc800d3c6bd969b1404ba50490a797ac2625f0783";
const SENDER: &str = "50a05b7bdfe093d5451b9c1c7671b908a56902a8ea668927818d2a56d749daa8";
const LABEL: &str =
    "6578616d706c65206c6162656c3a2064617461626173652c2073636f706520746f646f2c2065706f63682031";

fn seed(text: &str) -> SecretKey {
    let mut seed = [0; 32];
    let bytes = hex::decode(text).unwrap_or_default();
    let len = bytes.len().min(32);
    seed[..len].copy_from_slice(&bytes[..len]);
    SecretKey::from_seed(seed)
}

static KEYS: LazyLock<(SecretKey, Party, Vec<u8>)> = LazyLock::new(|| {
    (seed(RECIPIENT), Party::of(&seed(SENDER)), hex::decode(LABEL).unwrap_or_default())
});

fuzz_target!(|data: &[u8]| {
    let Ok(sealed) = SealedKey::decode(data) else { return };
    assert_eq!(sealed.encode(), data);
    assert_eq!(SealedKey::decode(&sealed.encode()).as_ref(), Ok(&sealed));
    let (recipient, sender, label) = &*KEYS;
    let _ = sealed.open(recipient, sender, label);
});
