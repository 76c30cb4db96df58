//! `sealing.json`: a scope key sealed from a device to an app, step by step.

use basic_proto::seal::SEAL_KEY_CONTEXT;
use basic_proto::{Cbor, Party, ScopeKey, SealedKey};
use rand_core::Rng;
use serde_json::{Value as Json, json};
use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};

use crate::json::hex;
use crate::{fixture, principal, rng};

pub(crate) fn vectors() -> Json {
    let sender = principal("device");
    let recipient = principal("app");
    let payload = ScopeKey::from_bytes(fixture("scope key todo epoch 1"));
    let label = b"example label: database, scope todo, epoch 1";
    let mut seal_rng = rng("sealing");

    // Recompute every step from the spec's formulas, with the RNG's bytes.
    let mut replay = seal_rng.clone();
    let mut ephemeral_secret = [0; 32];
    replay.fill_bytes(&mut ephemeral_secret);
    let mut nonce = [0; 24];
    replay.fill_bytes(&mut nonce);
    let sender_x_secret = sender.sealing_secret().to_bytes();
    let recipient_x = recipient.sealing_key().0;
    let ephemeral_public = x25519(ephemeral_secret, X25519_BASEPOINT_BYTES);
    let ephemeral_shared = x25519(ephemeral_secret, recipient_x);
    let static_shared = x25519(sender_x_secret, recipient_x);
    let kdf_input: Vec<u8> = [
        &ephemeral_shared[..],
        &static_shared,
        &ephemeral_public,
        &sender.sealing_key().0,
        &recipient_x,
        sender.public().as_bytes(),
        recipient.public().as_bytes(),
    ]
    .concat();
    let seal_key = blake3::derive_key(SEAL_KEY_CONTEXT, &kdf_input);
    let ciphertext = ScopeKey::from_bytes(seal_key).encrypt(&nonce, label, payload.as_bytes());

    let sealed = SealedKey::seal(&payload, &sender, &Party::of(&recipient), label, &mut seal_rng)
        .expect("seal");
    assert_eq!(sealed.ephemeral, ephemeral_public);
    assert_eq!(sealed.nonce, nonce);
    assert_eq!(sealed.ciphertext.to_vec(), ciphertext);
    assert_eq!(sealed.open(&recipient, &Party::of(&sender), label).expect("opens"), payload);

    json!({
        "description": "A scope key sealed by the 'device' principal to the 'app' principal of keys.json. ephemeral_shared = X25519(ephemeral_secret, recipient_x25519_public); static_shared = X25519(sender_x25519_secret, recipient_x25519_public); seal_key = BLAKE3 derive_key(\"basic/v0 seal key\", kdf_input); ciphertext = XChaCha20-Poly1305(seal_key, nonce, aad = label, plaintext = payload).",
        "seals": [{
            "sender_seed": hex(sender.seed()),
            "sender_ed25519_public": hex(sender.public().as_bytes()),
            "sender_x25519_secret": hex(sender_x_secret),
            "sender_x25519_public": hex(sender.sealing_key().0),
            "recipient_seed": hex(recipient.seed()),
            "recipient_ed25519_public": hex(recipient.public().as_bytes()),
            "recipient_x25519_public": hex(recipient_x),
            "payload": hex(payload.as_bytes()),
            "label": hex(label),
            "ephemeral_secret": hex(ephemeral_secret),
            "ephemeral_public": hex(ephemeral_public),
            "ephemeral_shared": hex(ephemeral_shared),
            "static_shared": hex(static_shared),
            "kdf_input": hex(&kdf_input),
            "seal_key": hex(seal_key),
            "nonce": hex(nonce),
            "ciphertext": hex(&ciphertext),
            "sealed": hex(sealed.encode()),
        }],
    })
}
