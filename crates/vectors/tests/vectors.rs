//! Checks the stored vectors: that they are what the generator writes, and
//! that each step they list holds when recomputed from the file alone.

use basic_proto::commit::COMMIT_ID_CONTEXT;
use basic_proto::hlc::check_not_ahead;
use basic_proto::{
    Cbor, Changes, Commit, Hlc, Party, Principal, PublicKey, ScopeKey, SealedKey, SealingKey,
    SecretKey, SigningContext, Stamp, Tables,
};
use basic_vectors::{errors, json};
use serde_json::Value as Json;

fn load(name: &str) -> Json {
    let path = format!("{}/../../protocol-spec/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn bytes(json: &Json) -> Vec<u8> {
    hex::decode(json.as_str().expect("hex string")).expect("valid hex")
}

fn array<const N: usize>(json: &Json) -> [u8; N] {
    bytes(json).try_into().expect("right length")
}

#[test]
fn stored_vectors_are_what_the_generator_writes() {
    for file in basic_vectors::generate() {
        let path =
            format!("{}/../../protocol-spec/vectors/{}", env!("CARGO_MANIFEST_DIR"), file.name);
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == file.render(),
            "{} is out of date: run `cargo run -p basic-vectors`",
            file.name
        );
    }
}

#[test]
fn keys_derive_as_listed() {
    let keys = load("keys.json");
    for p in keys["principals"].as_array().unwrap() {
        let secret = SecretKey::from_seed(array(&p["seed"]));
        assert_eq!(secret.public().as_bytes().to_vec(), bytes(&p["ed25519_public"]));
        assert_eq!(secret.sealing_secret().to_bytes().to_vec(), bytes(&p["x25519_secret"]));
        assert_eq!(secret.sealing_key().0.to_vec(), bytes(&p["x25519_public"]));
        let id: Principal = p["text_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(id.key, secret.public());
    }
    for s in keys["signatures"].as_array().unwrap() {
        let signed = bytes(&s["signed_bytes"]);
        let label = bytes(&s["label"]);
        let label = &label[..];
        assert_eq!(&signed[..label.len()], label);
        assert_eq!(signed[label.len()], 0);
        assert_eq!(&signed[label.len() + 1..], &bytes(&s["message"])[..]);
        let context = if label == b"basic/v0/commit" {
            SigningContext::Commit
        } else {
            SigningContext::Control
        };
        let signer = SecretKey::from_seed(array(&s["signer_seed"]));
        signer.public().verify(context, &bytes(&s["message"]), &array(&s["signature"])).unwrap();
    }
}

#[test]
fn commits_check_step_by_step() {
    for c in load("commits.json")["commits"].as_array().unwrap() {
        let author = SecretKey::from_seed(array(&c["author_seed"]));
        let aead = &c["aead"];
        let key = ScopeKey::from_bytes(array(&aead["key"]));
        let header = bytes(&c["header_cbor"]);
        assert_eq!(bytes(&aead["associated_data"]), header);
        let plaintext =
            key.decrypt(&array(&aead["nonce"]), &header, &bytes(&aead["ciphertext"])).unwrap();
        assert_eq!(plaintext, bytes(&aead["plaintext"]));
        let signed =
            [b"basic/v0/commit\0".as_slice(), &header, &bytes(&aead["ciphertext"])].concat();
        assert_eq!(signed, bytes(&c["signed_bytes"]));
        let message = &signed[b"basic/v0/commit\0".len()..];
        author.public().verify(SigningContext::Commit, message, &array(&c["signature"])).unwrap();

        let encoded = bytes(&c["commit"]);
        let commit = Commit::decode(&encoded).unwrap();
        assert_eq!(commit.id().0.to_vec(), bytes(&c["commit_id"]));
        // The id is the hash of the signed message without its label (D49).
        assert_eq!(blake3::derive_key(COMMIT_ID_CONTEXT, message).to_vec(), bytes(&c["commit_id"]));
        assert_eq!(json::header(commit.header()), c["header"]);
        let changes = commit.open(&key).unwrap();
        assert_eq!(json::changes(&changes), c["changes"]);
        assert_eq!(changes.encode(), plaintext);
    }
}

#[test]
fn seals_open_to_the_listed_payload() {
    for s in load("sealing.json")["seals"].as_array().unwrap() {
        let sealed = SealedKey::decode(&bytes(&s["sealed"])).unwrap();
        let recipient = SecretKey::from_seed(array(&s["recipient_seed"]));
        let sender = Party {
            key: PublicKey::from_bytes(array(&s["sender_ed25519_public"])).unwrap(),
            sealing: SealingKey(array(&s["sender_x25519_public"])),
        };
        let payload = sealed.open(&recipient, &sender, &bytes(&s["label"])).unwrap();
        assert_eq!(payload.as_bytes().to_vec(), bytes(&s["payload"]));
        let seal_key = ScopeKey::from_bytes(array(&s["seal_key"]));
        assert_eq!(
            seal_key.decrypt(&array(&s["nonce"]), &bytes(&s["label"]), &bytes(&s["ciphertext"])),
            Some(bytes(&s["payload"]))
        );
        assert_eq!(
            blake3::derive_key("basic/v0 seal key", &bytes(&s["kdf_input"])).to_vec(),
            bytes(&s["seal_key"])
        );
    }
}

#[test]
fn merges_give_the_listed_tables_in_any_order() {
    for case in load("merge.json")["cases"].as_array().unwrap() {
        let commits: Vec<(Stamp, Changes)> = case["commits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let hlc = Hlc {
                    wall_ms: c["hlc"][0].as_u64().unwrap(),
                    counter: c["hlc"][1].as_u64().unwrap() as u32,
                };
                let author = PublicKey::from_bytes(array(&c["author"])).unwrap();
                (
                    Stamp { hlc, author: author.into() },
                    Changes::decode(&bytes(&c["changes_bytes"])).unwrap(),
                )
            })
            .collect();
        // Every rotation, forwards and backwards.
        for start in 0..commits.len() {
            for reverse in [false, true] {
                let mut order: Vec<_> =
                    commits.iter().cycle().skip(start).take(commits.len()).collect();
                if reverse {
                    order.reverse();
                }
                let mut tables = Tables::default();
                for (stamp, changes) in order {
                    tables.apply(*stamp, changes);
                }
                assert_eq!(json::tables(&tables), case["result"], "{}", case["name"]);
            }
        }
    }
}

#[test]
fn negative_vectors_fail_as_stated() {
    for case in load("negative.json")["cases"].as_array().unwrap() {
        let expected = case["error"].as_str().unwrap();
        let found = match case["check"].as_str().unwrap() {
            "commit-decode" => errors::commit(&Commit::decode(&bytes(&case["input"])).unwrap_err()),
            "commit-open" => {
                let commit = Commit::decode(&bytes(&case["input"])).unwrap();
                errors::commit(
                    &commit.open(&ScopeKey::from_bytes(array(&case["scope_key"]))).unwrap_err(),
                )
            }
            "clock" => {
                let commit = Commit::decode(&bytes(&case["input"])).unwrap();
                let held = check_not_ahead(commit.header().hlc, case["now_ms"].as_u64().unwrap())
                    .unwrap_err();
                assert_eq!(held.apply_at_ms, case["apply_at_ms"].as_u64().unwrap());
                errors::clock(&held).to_owned()
            }
            "seal-open" => {
                let sealed = SealedKey::decode(&bytes(&case["input"])).unwrap();
                let sender = Party {
                    key: PublicKey::from_bytes(array(&case["sender_ed25519_public"])).unwrap(),
                    sealing: SealingKey(array(&case["sender_x25519_public"])),
                };
                let recipient = SecretKey::from_seed(array(&case["recipient_seed"]));
                errors::seal(&sealed.open(&recipient, &sender, &bytes(&case["label"])).unwrap_err())
                    .to_owned()
            }
            "text-id" => {
                errors::key(&case["input"].as_str().unwrap().parse::<Principal>().unwrap_err())
                    .to_owned()
            }
            other => panic!("unknown check {other}"),
        };
        assert_eq!(found, expected, "{}", case["name"]);
    }
}

#[test]
fn control_ops_check_step_by_step_and_give_the_listed_state() {
    use basic_proto::control::{ControlLog, ControlOp};
    let file = load("control.json");
    let database = basic_proto::DatabaseId(array(&file["database"]));
    let mut ops = Vec::new();
    for o in file["ops"].as_array().unwrap() {
        let encoded = bytes(&o["op"]);
        let op = ControlOp::decode(&encoded).unwrap();
        assert_eq!(op.id().0.to_vec(), bytes(&o["id"]));
        assert_eq!(
            blake3::derive_key("basic/v0 control op id", &encoded).to_vec(),
            bytes(&o["id"])
        );
        let body = bytes(&o["body"]);
        assert_eq!(op.body_bytes(), body);
        let signed = [b"basic/v0/control\0".as_slice(), &body].concat();
        assert_eq!(signed, bytes(&o["signed_bytes"]));
        op.body().author.verify(SigningContext::Control, &body, &array(&o["signature"])).unwrap();
        ops.push(op);
    }
    assert_eq!(ops[0].id().0, database.0, "the genesis id is the database id");
    // Forwards, backwards, and every rotation: the same state.
    for start in 0..ops.len() {
        for reverse in [false, true] {
            let mut order: Vec<_> = ops.iter().cycle().skip(start).take(ops.len()).collect();
            if reverse {
                order.reverse();
            }
            let mut log = ControlLog::new(database);
            for op in order {
                log.insert(op.clone(), u64::MAX).unwrap();
            }
            assert_eq!(log.held(), 0);
            assert_eq!(json::auth_state(&log.state()), file["state"]);
        }
    }
    let mut log = ControlLog::new(database);
    for op in &ops {
        log.insert(op.clone(), u64::MAX).unwrap();
    }
    let state = log.state();
    for c in file["commits"].as_array().unwrap() {
        let commit = Commit::decode(&bytes(&c["commit"])).unwrap();
        let result = match state.check_commit(commit.header(), commit.id()) {
            Ok(()) => "authorised",
            Err(e) => errors::auth(&e),
        };
        assert_eq!(result, c["result"], "{}", c["name"]);
    }
    for n in file["negative"].as_array().unwrap() {
        let op = ControlOp::decode(&bytes(&n["op"])).unwrap();
        let now_ms = n["now_ms"].as_u64().unwrap();
        let error = log.clone().insert(op, now_ms).unwrap_err();
        assert_eq!(errors::insert(&error), n["error"], "{}", n["name"]);
    }
    for n in file["negative_decode"].as_array().unwrap() {
        let error = ControlOp::decode(&bytes(&n["op"])).unwrap_err();
        assert_eq!(errors::op(&error), n["error"], "{}", n["name"]);
    }
    // Names: the naming key from the root's seed, the scope id of `todo`
    // from it, and the schema sealed under the epoch-1 key.
    let seed: [u8; 32] = array(&file["principals"]["user"]);
    let naming = blake3::derive_key("basic/v0 naming key", &seed);
    assert_eq!(naming.to_vec(), bytes(&file["naming_key"]));
    let mut hasher = blake3::Hasher::new_keyed(&naming);
    hasher.update(b"basic/v0 scope id\0todo");
    let todo: [u8; 16] = hasher.finalize().as_bytes()[..16].try_into().unwrap();
    assert_eq!(todo.to_vec(), bytes(&file["scope_ids"]["todo"]));
    let schema = &file["schema"];
    let aad = [b"basic/v0 schema\0".as_slice(), &database.0, &todo, &1u32.to_be_bytes()].concat();
    assert_eq!(aad, bytes(&schema["aad"]));
    let k1 = basic_proto::ScopeKey::from_bytes(array(&file["scope_keys"]["todo/1"]));
    let plaintext =
        k1.decrypt(&array(&schema["nonce"]), &aad, &bytes(&schema["ciphertext"])).unwrap();
    let expected = basic_proto::codec::encode_value(&ciborium::Value::Array(vec![
        ciborium::Value::Text(schema["namespace"].as_str().unwrap().into()),
        ciborium::Value::Text(schema["text"].as_str().unwrap().into()),
    ]));
    assert_eq!(plaintext, expected);
}

#[test]
fn sync_proofs_digests_and_frames_check_from_the_file() {
    use basic_proto::sync::message::{MAX_FRAME_BYTES, Message};
    use basic_proto::{KeyCache, PublicKey, SigningContext};
    let v = load("sync.json");
    let s = &v["session"];
    for (side, key, proof) in [
        ("transcript_requester", "requester_public", "requester_proof"),
        ("transcript_responder", "responder_public", "responder_proof"),
    ] {
        let key = PublicKey::from_bytes(array(&s[key])).unwrap();
        key.verify(SigningContext::SyncProof, &bytes(&s[side]), &array(&s[proof])).unwrap();
    }
    let f = &v["fingerprint"];
    let mut sum = 0u128;
    for id in f["ids"].as_array().unwrap() {
        let id = bytes(id);
        sum = sum.wrapping_add(u128::from_le_bytes(id[..16].try_into().unwrap()));
    }
    assert_eq!(sum.to_le_bytes().to_vec(), bytes(&f["sum_le"]));
    let d = &v["digest"];
    let digest = blake3::derive_key("basic/v0 sync digest", &bytes(&d["entries_cbor"]));
    assert_eq!(digest[..16].to_vec(), bytes(&d["digest"]));
    let responder = PublicKey::from_bytes(array(&s["responder_public"])).unwrap();
    responder
        .verify(
            SigningContext::SyncHeads,
            &bytes(&d["heads_message"]),
            &array(&d["reply_signature"]),
        )
        .unwrap();
    for frame in v["frames"].as_array().unwrap() {
        let raw = bytes(&frame["frame"]);
        let message = Message::decode(&raw, MAX_FRAME_BYTES, &KeyCache::default()).unwrap();
        assert_eq!(message.encode(), raw, "{}", frame["name"]);
    }
    for frame in v["refused"].as_array().unwrap() {
        let raw = bytes(&frame["frame"]);
        assert!(
            Message::decode(&raw, MAX_FRAME_BYTES, &KeyCache::default()).is_err(),
            "{}",
            frame["name"]
        );
    }
}
