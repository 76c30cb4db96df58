//! `keys.json`: principals, text ids and domain-separated signatures.

use basic_proto::keys::SEALING_KEY_CONTEXT;
use basic_proto::{Principal, Role, SigningContext};
use serde_json::{Value as Json, json};

use crate::json::hex;
use crate::principal;

pub(crate) fn vectors() -> Json {
    let roles = [
        (Role::User, "user"),
        (Role::Device, "device"),
        (Role::App, "app"),
        (Role::Pinner, "pinner"),
    ];
    let principals: Vec<Json> = roles
        .into_iter()
        .map(|(role, name)| {
            let secret = principal(name);
            let x25519_secret = blake3::derive_key(SEALING_KEY_CONTEXT, secret.seed());
            let x25519_public =
                x25519_dalek::x25519(x25519_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
            assert_eq!(x25519_public, secret.sealing_key().0, "x25519 public key derivation");
            json!({
                "role": name,
                "seed": hex(secret.seed()),
                "ed25519_public": hex(secret.public().as_bytes()),
                "x25519_secret": hex(x25519_secret),
                "x25519_public": hex(x25519_public),
                "text_id": Principal { role, key: secret.public() }.to_string(),
            })
        })
        .collect();
    let database = crate::commits::database();
    let message = b"basic test vector: a message to sign";
    let signer = principal("device");
    let signatures: Vec<Json> = [SigningContext::Commit, SigningContext::Control]
        .into_iter()
        .map(|context| {
            json!({
                "label": hex(context.label()),
                "signer_seed": hex(signer.seed()),
                "message": hex(message),
                "signed_bytes": hex(context.signed_bytes(message)),
                "signature": hex(signer.sign(context, message)),
            })
        })
        .collect();
    json!({
        "description": "Principals (seed, ed25519 and x25519 keys, text id), database ids (the vector database: the id of the genesis op of control.json), and signatures in each context (label: the hex of the context string). x25519_secret is BLAKE3 derive_key(\"basic/v0 sealing key from seed\", seed) before clamping.",
        "principals": principals,
        "database_ids": [{ "bytes": hex(database.0), "text_id": database.to_string() }],
        "signatures": signatures,
    })
}
