//! `control.json`: control operations step by step, the state they give,
//! commits checked against it, and operations that must be refused.

use std::collections::BTreeMap;

use basic_proto::control::{
    ControlLog, ControlOp, Cutoff, OpBody, OpId, Payload, Rights, Rotation, SealedSchema,
    seal_label, seal_naming,
};
use basic_proto::{
    Changes, Commit, CommitDraft, DatabaseId, Hlc, KeyPart, Name, NamingKey, Party, RowKey, RowOp,
    ScopeKey, SecretKey, SigningContext, Value,
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
    let changes = Changes::new(vec![RowOp::Upsert {
        table: Name::new("todo.items").expect("name"),
        key: RowKey::single(KeyPart::Text(format!("row {wall_ms}"))),
        generation: 1,
        cells: BTreeMap::from([(Name::new("done").expect("name"), Value::Bool(false))]),
    }])
    .expect("changes");
    let draft = CommitDraft {
        database,
        seq: prev.map_or(1, |p| p.header().seq + 1),
        prev: prev.map(Commit::id),
        hlc: Hlc { wall_ms, counter: 0 },
        scope: scope_id(),
        epoch,
    };
    Commit::create(author, draft, &changes, key, rng).expect("commit")
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

    let genesis = ControlOp::create(
        &root,
        body(
            &root,
            DatabaseId([0; 32]),
            vec![],
            0,
            Payload::genesis(&root, &Party::of(&laptop), &mut r).expect("seal"),
        ),
    )
    .expect("genesis");
    let db = genesis.database();
    let rotation =
        Rotation::seal(&laptop, db, todo, 0, &k0, &[Party::of(&laptop)], &mut r).expect("seal");
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
    let rotation =
        Rotation::seal(&laptop, db, todo, 1, &k1, &[Party::of(&laptop), Party::of(&phone)], &mut r)
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
    let ops = [
        ("genesis", "user", &genesis),
        ("create scope todo", "device", &create),
        ("add phone", "device", &add),
        ("grant app", "control phone", &grant),
        ("revoke app", "device", &revoke),
        ("schema of todo", "device", &schema),
    ];

    let mut log = ControlLog::new(db);
    for (_, _, op) in ops.iter().rev() {
        log.insert((*op).clone(), u64::MAX).expect("admitted");
    }
    assert_eq!(log.held(), 0);
    let state = log.state();
    assert_eq!(state.scope_keys(&phone, &todo, 1), vec![k1.clone()]);
    assert!(state.scope_keys(&app, &todo, 1).is_empty());

    let c3 = commit(&app, db, Some(&c2), T0 + 9000, 1, &k1, &mut r);
    let by_phone = commit(&phone, db, None, T0 + 5000, 1, &k1, &mut r);
    let by_stranger = commit(&stranger, db, None, T0 + 5000, 1, &k1, &mut r);
    let commits: Vec<Json> = [
        ("app seq 1: at the cut-off", &c1),
        ("app seq 2: after the cut-off (it arrived before the revocation)", &c2),
        ("app seq 3: under epoch 1, never sealed to it", &c3),
        ("phone under epoch 1", &by_phone),
        ("stranger", &by_stranger),
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
    let pinner = principal("pinner");
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
            ..body(&laptop, db, log.heads(), 10, Payload::AddPinner { pinner: pinner.public() })
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
            body(&app, db, heads.clone(), 10, Payload::AddPinner { pinner: pinner.public() }),
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
                10,
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
                10,
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
        "description": "Control operations of one database (control-log.md): the genesis by the 'user' principal of keys.json, the 'device' (laptop) creating scope todo, adding a phone, the phone granting the 'app' read-write, and the laptop revoking it with cut-off at the app's first commit, rotating todo to epoch 1. op = [body, signature]; signature over \"basic/v0/control\" || 0x00 || body; id = BLAKE3 derive_key(\"basic/v0 control op id\", op); the genesis id is the database id. 'state' results from the ops in any order; 'commits' are checked against it; 'negative' ops are refused by that log, 'negative_decode' by decoding.",
        "principals": {
            "user": hex(root.seed()),
            "device": hex(laptop.seed()),
            "control phone": hex(phone.seed()),
            "app": hex(app.seed()),
            "control stranger": hex(stranger.seed()),
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
        "scope_keys": { "todo/0": hex(k0.as_bytes()), "todo/1": hex(k1.as_bytes()) },
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
