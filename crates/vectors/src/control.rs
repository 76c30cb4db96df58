//! `control.json`: control operations step by step, the state they give,
//! commits checked against it, and operations that must be refused.

use std::collections::BTreeMap;

use basic_proto::control::{
    ControlLog, ControlOp, Cutoff, OpBody, OpId, Payload, Rights, Rotation, SealedSchema,
    seal_label, seal_naming,
};
use basic_proto::{
    Changes, Commit, CommitDraft, DatabaseId, Hlc, KeyPart, LiteMap, Name, NamingKey, Party,
    RowKey, RowOp, ScopeKey, SecretKey, SigningContext, Value,
};
use serde_json::{Value as Json, json};

use crate::commits::scope_id;
use crate::json::{self, hex};
use crate::{errors, fixture, principal, rng};

const T0: u64 = 1_795_824_000_000;

fn body(
    author: &SecretKey,
    database: DatabaseId,
    parents: Vec<OpId>,
    tick: u64,
    payload: Payload,
) -> OpBody {
    OpBody {
        database,
        author: author.public(),
        parents,
        hlc: Hlc { wall_ms: T0 + tick * 1000, counter: 0 },
        payload,
    }
}

fn op_json(name: &str, author: &str, op: &ControlOp) -> Json {
    let body = op.body_bytes();
    json!({
        "name": name,
        "kind": op.body().payload.kind_name(),
        "author": author,
        "author_public": hex(op.body().author.as_bytes()),
        "parents": op.body().parents.iter().map(|p| hex(p.0)).collect::<Vec<_>>(),
        "hlc": json::hlc(op.body().hlc),
        "body": hex(&body),
        "signed_bytes": hex(SigningContext::Control.signed_bytes(&body)),
        "signature": hex(op.signature()),
        "op": hex(op.as_bytes()),
        "id": hex(op.id().0),
    })
}

fn commit(
    author: &SecretKey,
    database: DatabaseId,
    prev: Option<&Commit>,
    wall_ms: u64,
    epoch: u32,
    key: &ScopeKey,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Commit {
    commit_in(author, database, prev, wall_ms, scope_id(), epoch, key, rng)
}

/// [`commit`] in scope `scope`.
#[allow(clippy::too_many_arguments)]
fn commit_in(
    author: &SecretKey,
    database: DatabaseId,
    prev: Option<&Commit>,
    wall_ms: u64,
    scope: basic_proto::ScopeId,
    epoch: u32,
    key: &ScopeKey,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Commit {
    let changes = Changes::new(vec![RowOp::Upsert {
        table: Name::new("todo.items").expect("name"),
        key: RowKey::single(KeyPart::Text(format!("row {wall_ms}"))),
        generation: 1,
        cells: LiteMap::from_iter([(Name::new("done").expect("name"), Value::Bool(false))]),
    }])
    .expect("changes");
    let draft = CommitDraft {
        database,
        seq: prev.map_or(1, |p| p.header().seq + 1),
        prev: prev.map(Commit::id),
        hlc: Hlc { wall_ms, counter: 0 },
        scope,
        epoch,
    };
    Commit::create(author, draft, &changes, key, rng).expect("commit")
}

/// The genesis of the vector database: by the 'user' principal, with the
/// 'device' principal (the laptop) as the first device. Its id is the
/// database id of every vector file.
pub(crate) fn genesis() -> ControlOp {
    let (root, laptop) = (principal("user"), principal("device"));
    let mut r = rng("control genesis");
    ControlOp::create(
        &root,
        body(
            &root,
            DatabaseId([0; 32]),
            vec![],
            0,
            Payload::genesis(&root, &Party::of(&laptop), &mut r).expect("seal"),
        ),
    )
    .expect("genesis")
}

pub(crate) fn vectors() -> Json {
    let (root, laptop, phone, app, stranger) = (
        principal("user"),
        principal("device"),
        principal("control phone"),
        principal("app"),
        principal("control stranger"),
    );
    let mut r = rng("control");
    let naming = NamingKey::of_root(&root);
    let todo = scope_id();
    let k0 = ScopeKey::from_bytes(fixture("control todo epoch 0"));
    let k1 = ScopeKey::from_bytes(fixture("control todo epoch 1"));

    let genesis = genesis();
    let db = genesis.database();
    // Every rotation seals the new key to the root and every device (and
    // every app still granted): the root can always recover (§4, §9.4).
    let rotation =
        Rotation::seal(&laptop, db, todo, 0, &k0, &[Party::of(&root), Party::of(&laptop)], &mut r)
            .expect("seal");
    let create = ControlOp::create(
        &laptop,
        body(&laptop, db, vec![genesis.id()], 1, Payload::RotateKey(rotation)),
    )
    .expect("op");
    let label = seal_label(db, &todo, 0, &phone.public());
    let for_phone = basic_proto::SealedKey::seal(&k0, &laptop, &Party::of(&phone), &label, &mut r)
        .expect("seal");
    let add = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            vec![create.id()],
            2,
            Payload::AddDevice {
                device: phone.public(),
                sealing: phone.sealing_key(),
                naming: seal_naming(&naming, &laptop, &root.public(), &Party::of(&phone), &mut r)
                    .expect("seal"),
                keys: BTreeMap::from([((todo, 0), for_phone)]),
            },
        ),
    )
    .expect("op");
    let label = seal_label(db, &todo, 0, &app.public());
    let for_app =
        basic_proto::SealedKey::seal(&k0, &phone, &Party::of(&app), &label, &mut r).expect("seal");
    let grant = ControlOp::create(
        &phone,
        body(
            &phone,
            db,
            vec![add.id()],
            3,
            Payload::Grant {
                app: app.public(),
                sealing: app.sealing_key(),
                scope: todo,
                rights: Rights::ReadWrite,
                epoch: 0,
                key: for_app,
            },
        ),
    )
    .expect("op");
    // The app writes twice; the laptop has seen the first when it revokes.
    let c1 = commit(&app, db, None, T0 + 3500, 0, &k0, &mut r);
    let c2 = commit(&app, db, Some(&c1), T0 + 3600, 0, &k0, &mut r);
    let rotation = Rotation::seal(
        &laptop,
        db,
        todo,
        1,
        &k1,
        &[Party::of(&root), Party::of(&laptop), Party::of(&phone)],
        &mut r,
    )
    .expect("seal");
    let revoke = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            vec![grant.id()],
            4,
            Payload::Revoke {
                app: app.public(),
                cutoff: Cutoff { seq: 1, last: Some(c1.id()) },
                rotation,
            },
        ),
    )
    .expect("op");
    // The laptop publishes the schema of namespace todo, sealed under the
    // current key (epoch 1): its readers read the namespace and text,
    // nobody else learns them.
    let schema_text = r#"{"namespace":"todo","tables":{}}"#;
    let todo_name = Name::new("todo").expect("name");
    let sealed = SealedSchema::seal(&k1, db, &todo, 1, &todo_name, schema_text, &mut r);
    let schema = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            vec![revoke.id()],
            5,
            Payload::Schema { scope: todo, epoch: 1, sealed: sealed.clone() },
        ),
    )
    .expect("op");
    let pinner = principal("pinner");
    let reader = principal("control reader");
    let add_pinner = ControlOp::create(
        &laptop,
        body(&laptop, db, vec![schema.id()], 6, Payload::AddPinner { pinner: pinner.public() }),
    )
    .expect("op");
    let label = seal_label(db, &todo, 1, &reader.public());
    let for_reader =
        basic_proto::SealedKey::seal(&k1, &laptop, &Party::of(&reader), &label, &mut r)
            .expect("seal");
    let grant_read = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            vec![add_pinner.id()],
            7,
            Payload::Grant {
                app: reader.public(),
                sealing: reader.sealing_key(),
                scope: todo,
                rights: Rights::Read,
                epoch: 1,
                key: for_reader,
            },
        ),
    )
    .expect("op");
    // The laptop and the phone rotate todo to epoch 2 concurrently: two
    // keys of one epoch, both kept (§5.4).
    let readers = [Party::of(&root), Party::of(&laptop), Party::of(&phone), Party::of(&reader)];
    let k2a = ScopeKey::from_bytes(fixture("control todo epoch 2, laptop"));
    let k2b = ScopeKey::from_bytes(fixture("control todo epoch 2, phone"));
    let rotate_laptop = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            vec![grant_read.id()],
            8,
            Payload::RotateKey(
                Rotation::seal(&laptop, db, todo, 2, &k2a, &readers, &mut r).expect("seal"),
            ),
        ),
    )
    .expect("op");
    let rotate_phone = ControlOp::create(
        &phone,
        body(
            &phone,
            db,
            vec![grant_read.id()],
            8,
            Payload::RotateKey(
                Rotation::seal(&phone, db, todo, 2, &k2b, &readers, &mut r).expect("seal"),
            ),
        ),
    )
    .expect("op");
    // The phone wrote twice, its second commit stamped far ahead; the
    // laptop removes it with the cut-off at that commit, rotating todo.
    let p1 = commit(&phone, db, None, T0 + 5000, 1, &k1, &mut r);
    let p2 = commit(&phone, db, Some(&p1), T0 + 200_000, 1, &k1, &mut r);
    let p3 = commit(&phone, db, Some(&p2), T0 + 200_500, 1, &k1, &mut r);
    let k3 = ScopeKey::from_bytes(fixture("control todo epoch 3"));
    let mut heads = [rotate_laptop.id(), rotate_phone.id()];
    heads.sort();
    let remove_phone = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            heads.to_vec(),
            9,
            Payload::RemoveDevice {
                device: phone.public(),
                cutoff: Cutoff { seq: 2, last: Some(p2.id()) },
                rotations: BTreeMap::from([(
                    todo,
                    Rotation::seal(
                        &laptop,
                        db,
                        todo,
                        3,
                        &k3,
                        &[Party::of(&root), Party::of(&laptop), Party::of(&reader)],
                        &mut r,
                    )
                    .expect("seal"),
                )]),
            },
        ),
    )
    .expect("op");
    let remove_pinner = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            vec![remove_phone.id()],
            10,
            Payload::RemovePinner { pinner: pinner.public() },
        ),
    )
    .expect("op");
    // Schemas and the ops of a removed device (their own RNG: the draws
    // above and the commits below stay as they were). The phone, not
    // having seen its removal, publishes a schema stamped after every
    // other: cut off (unseen by a removal in effect), so it does not win.
    // After its removal (the removal in the op's past) it adds a pinning
    // peer: admitted, cut off. The laptop then publishes todo's schema
    // again under epoch 3: the winner, highest (hlc, op id) in effect.
    let mut r2 = rng("control schemas and a removed device");
    let phone_schema_text = r#"{"namespace":"todo","tables":{"phone":{}}}"#;
    let phone_schema = ControlOp::create(
        &phone,
        body(
            &phone,
            db,
            vec![rotate_phone.id()],
            13,
            Payload::Schema {
                scope: todo,
                epoch: 2,
                sealed: SealedSchema::seal(
                    &k2b,
                    db,
                    &todo,
                    2,
                    &todo_name,
                    phone_schema_text,
                    &mut r2,
                ),
            },
        ),
    )
    .expect("op");
    let puppet = principal("control puppet pinner");
    let phone_after_removal = ControlOp::create(
        &phone,
        body(
            &phone,
            db,
            vec![remove_phone.id()],
            11,
            Payload::AddPinner { pinner: puppet.public() },
        ),
    )
    .expect("op");
    let schema_v2_text = r#"{"namespace":"todo","tables":{"lists":{}}}"#;
    let schema_v2 = ControlOp::create(
        &laptop,
        body(
            &laptop,
            db,
            vec![remove_pinner.id()],
            12,
            Payload::Schema {
                scope: todo,
                epoch: 3,
                sealed: SealedSchema::seal(&k3, db, &todo, 3, &todo_name, schema_v2_text, &mut r2),
            },
        ),
    )
    .expect("op");
    let ops = [
        ("genesis", "user", &genesis),
        ("create scope todo", "device", &create),
        ("add phone", "device", &add),
        ("grant app", "control phone", &grant),
        ("revoke app", "device", &revoke),
        ("schema of todo", "device", &schema),
        ("add pinning peer", "device", &add_pinner),
        ("grant reader app read-only", "device", &grant_read),
        ("laptop rotates todo to epoch 2", "device", &rotate_laptop),
        ("phone rotates todo to epoch 2, concurrently", "control phone", &rotate_phone),
        ("remove phone", "device", &remove_phone),
        ("remove pinning peer", "device", &remove_pinner),
        (
            "phone publishes a schema, unseen by its removal (cut off)",
            "control phone",
            &phone_schema,
        ),
        (
            "phone adds a pinning peer after its removal (cut off)",
            "control phone",
            &phone_after_removal,
        ),
        ("schema of todo again, under epoch 3 (wins)", "device", &schema_v2),
    ];

    let mut log = ControlLog::new(db);
    for (_, _, op) in ops.iter().rev() {
        log.insert((*op).clone(), u64::MAX).expect("admitted");
    }
    assert_eq!(log.held(), 0);
    let state = log.state();
    assert_eq!(state.scope_keys(&phone, &todo, 1), vec![k1.clone()]);
    assert!(state.scope_keys(&app, &todo, 1).is_empty());
    assert_eq!(state.scope_keys(&laptop, &todo, 2).len(), 2, "two keys of epoch 2");
    assert_eq!(state.scope_keys(&root, &todo, 3), vec![k3.clone()]);
    assert!(state.scope_keys(&phone, &todo, 3).is_empty());
    assert!(!state.is_pinner(&puppet.public()), "a removed device adds nobody");
    let cut_off = [phone_schema.id(), phone_after_removal.id()];
    assert!(
        cut_off.iter().all(|id| state.cut_off().contains(id)),
        "the phone's late ops are cut off"
    );

    let c3 = commit(&app, db, Some(&c2), T0 + 9000, 1, &k1, &mut r);
    let app_fork = commit(&app, db, None, T0 + 3550, 0, &k0, &mut r);
    let by_stranger = commit(&stranger, db, None, T0 + 5000, 1, &k1, &mut r);
    let by_reader = commit(&reader, db, None, T0 + 7500, 1, &k1, &mut r);
    let laptop_2 = commit(&laptop, db, None, T0 + 8500, 2, &k2a, &mut r);
    let other_scope =
        basic_proto::NamingKey::of_root(&root).scope_id(&Name::new("other").expect("name"));
    let unknown_scope = commit_in(&laptop, db, None, T0 + 8500, other_scope, 0, &k0, &mut r);
    let unknown_epoch = commit(&laptop, db, None, T0 + 8500, 9, &k1, &mut r);
    let commits: Vec<Json> = [
        ("app seq 1: at the cut-off", &c1),
        ("app seq 2: after the cut-off (it arrived before the revocation)", &c2),
        ("app seq 3: under epoch 1, never sealed to it", &c3),
        ("app seq 1, a fork: at the cut-off's seq, not the cut-off commit", &app_fork),
        ("phone seq 1 under epoch 1: below its removal's cut-off", &p1),
        ("phone seq 2: the cut-off commit, stamped after the removal's end", &p2),
        ("phone seq 3: after its removal's cut-off", &p3),
        ("stranger", &by_stranger),
        ("reader app: granted read only", &by_reader),
        ("laptop under epoch 2 (one of its two keys)", &laptop_2),
        ("laptop under a scope id that has no key", &unknown_scope),
        ("laptop under epoch 9 of todo, which does not exist", &unknown_epoch),
    ]
    .into_iter()
    .map(|(name, c)| {
        json!({
            "name": name,
            "commit": hex(c.as_bytes()),
            "header": json::header(c.header()),
            "result": match state.check_commit(c.header(), c.id()) {
                Ok(()) => "authorised",
                Err(e) => errors::auth(&e),
            },
        })
    })
    .collect();

    // Ops that must be refused, each inserted into the log above.
    let mut negative = Vec::new();
    // Each is inserted at local wall time `now_ms`: the ops' own clock,
    // unless the vector is about a clock far behind the op's stamp.
    let local_clock = T0 + 20_000;
    let mut refuse_at = |name: &str, why: &str, op: ControlOp, now_ms: u64| {
        let mut l = log.clone();
        let error = l.insert(op.clone(), now_ms).expect_err("refused");
        negative.push(json!({
            "name": name,
            "why": why,
            "op": hex(op.as_bytes()),
            "now_ms": now_ms,
            "error": errors::insert(&error),
        }));
    };
    let ahead = ControlOp::create(
        &laptop,
        OpBody {
            hlc: Hlc { wall_ms: u64::MAX, counter: u32::MAX },
            ..body(&laptop, db, log.heads(), 15, Payload::AddPinner { pinner: pinner.public() })
        },
    )
    .expect("op");
    refuse_at(
        "stamped far ahead of the local clock",
        "hlc.wall_ms more than 60,000 ms past the receiver's clock: not admitted yet (and not remembered as refused), so one op cannot freeze the log",
        ahead,
        local_clock,
    );
    let mut refuse = |name: &str, why: &str, op: ControlOp| refuse_at(name, why, op, local_clock);
    let heads = log.heads();
    refuse(
        "app adds a pinning peer",
        "apps issue no control ops",
        ControlOp::create(
            &app,
            body(&app, db, heads.clone(), 15, Payload::AddPinner { pinner: pinner.public() }),
        )
        .expect("op"),
    );
    refuse(
        "app publishes a schema",
        "apps issue no control ops, schemas included",
        ControlOp::create(
            &app,
            body(
                &app,
                db,
                heads.clone(),
                15,
                Payload::Schema {
                    scope: todo,
                    epoch: 1,
                    sealed: SealedSchema::seal(
                        &k1,
                        db,
                        &todo,
                        1,
                        &todo_name,
                        schema_text,
                        &mut rng("control app schema"),
                    ),
                },
            ),
        )
        .expect("op"),
    );
    refuse(
        "stranger adds a device",
        "the author is neither the root nor a device in the op's past",
        ControlOp::create(
            &stranger,
            body(
                &stranger,
                db,
                heads.clone(),
                15,
                Payload::AddDevice {
                    device: stranger.public(),
                    sealing: stranger.sealing_key(),
                    naming: seal_naming(
                        &naming,
                        &stranger,
                        &root.public(),
                        &Party::of(&stranger),
                        &mut rng("control stranger"),
                    )
                    .expect("seal"),
                    keys: BTreeMap::new(),
                },
            ),
        )
        .expect("op"),
    );
    refuse(
        "stamp not after parents",
        "the op's hlc is not above its parent's",
        ControlOp::create(
            &laptop,
            body(&laptop, db, heads.clone(), 4, Payload::AddPinner { pinner: pinner.public() }),
        )
        .expect("op"),
    );
    refuse(
        "wrong database",
        "the op names another database",
        ControlOp::create(
            &laptop,
            body(
                &laptop,
                DatabaseId(fixture("database")),
                heads,
                15,
                Payload::AddPinner { pinner: pinner.public() },
            ),
        )
        .expect("op"),
    );
    let mut bad_signature = grant.as_bytes().to_vec();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let decode_error = ControlOp::decode(&bad_signature).expect_err("refused");

    json!({
        "description": "Control operations of one database (control-log.md): the genesis by the 'user' principal of keys.json, the 'device' (laptop) creating scope todo, adding a phone, the phone granting the 'app' read-write, and the laptop revoking it with cut-off at the app's first commit, rotating todo to epoch 1, publishing todo's schema, adding a pinning peer, granting the 'control reader' app read-only, the laptop and the phone rotating todo to epoch 2 concurrently (two keys of one epoch), the laptop removing the phone with cut-off at its second commit (rotating todo to epoch 3) and removing the pinning peer; then the phone publishing a schema on its pre-removal heads and adding a pinning peer after its removal (both admitted and cut off: a removed device's ops have no effect, and its schema does not win although stamped last), and the laptop publishing todo's schema again under epoch 3 (the winning schema). Every rotation seals the new key to the root, every device and every app still granted. op = [body, signature]; signature over \"basic/v0/control\" || 0x00 || body; id = BLAKE3 derive_key(\"basic/v0 control op id\", op); the genesis id is the database id. 'state' results from the ops in any order; 'commits' are checked against it; 'negative' ops are refused by that log, 'negative_decode' by decoding.",
        "principals": {
            "user": hex(root.seed()),
            "device": hex(laptop.seed()),
            "control phone": hex(phone.seed()),
            "app": hex(app.seed()),
            "control stranger": hex(stranger.seed()),
            "control reader": hex(reader.seed()),
            "pinner": hex(pinner.seed()),
            "control puppet pinner": hex(puppet.seed()),
        },
        "database": hex(db.0),
        "database_text": db.to_string(),
        "naming_key": hex(naming.as_bytes()),
        "scope_ids": { "todo": hex(todo.0) },
        "schema": {
            "namespace": "todo",
            "text": schema_text,
            "epoch": 1,
            "aad": hex(basic_proto::control::schema_aad(db, &todo, 1)),
            "nonce": hex(sealed.nonce),
            "ciphertext": hex(&sealed.ciphertext),
        },
        "scope_keys": {
            "todo/0": hex(k0.as_bytes()),
            "todo/1": hex(k1.as_bytes()),
            "todo/2 (laptop)": hex(k2a.as_bytes()),
            "todo/2 (phone)": hex(k2b.as_bytes()),
            "todo/3": hex(k3.as_bytes()),
        },
        "ops": ops.iter().map(|(name, author, op)| op_json(name, author, op)).collect::<Vec<_>>(),
        "state": json::auth_state(&state),
        "commits": commits,
        "negative": negative,
        "negative_decode": [{
            "name": "grant with a flipped signature bit",
            "op": hex(&bad_signature),
            "error": errors::op(&decode_error),
        }],
    })
}
