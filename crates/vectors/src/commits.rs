//! `commits.json`: commits with every step of their making.

use basic_proto::{
    Changes, Commit, CommitDraft, CommitId, DatabaseId, Hlc, KeyPart, LiteMap, Name, RowKey, RowOp,
    ScopeKey, SigningContext, Value,
};
use serde_json::{Value as Json, json};

use crate::json::{self, hex};
use crate::{fixture, principal, rng};

/// Wall time of the first vector commit: 2026-11-28T00:00:00Z.
pub(crate) const BASE_WALL_MS: u64 = 1_795_824_000_000;

pub(crate) fn name(text: &str) -> Name {
    Name::new(text).expect("fixture names are valid")
}

/// The vector database: the id of the genesis of control.json.
pub(crate) fn database() -> DatabaseId {
    crate::control::genesis().database()
}

/// The scope id of namespace `todo` under the naming key of the 'user'
/// principal of keys.json.
pub(crate) fn scope_id() -> basic_proto::ScopeId {
    basic_proto::NamingKey::of_root(&crate::principal("user")).scope_id(&name("todo"))
}

pub(crate) fn scope_key() -> ScopeKey {
    ScopeKey::from_bytes(fixture("scope key todo epoch 0"))
}

pub(crate) fn draft(seq: u64, prev: Option<CommitId>, wall_ms: u64) -> CommitDraft {
    CommitDraft {
        database: database(),
        seq,
        prev,
        hlc: Hlc { wall_ms, counter: 0 },
        scope: scope_id(),
        epoch: 0,
    }
}

fn one_cell() -> Changes {
    Changes::new(vec![RowOp::Upsert {
        table: name("todo.items"),
        key: RowKey::single(KeyPart::Text("milk".into())),
        generation: 1,
        cells: LiteMap::from_iter([(name("title"), Value::Text("Buy milk".into()))]),
    }])
    .expect("valid changes")
}

fn every_value_type() -> Changes {
    let cells = LiteMap::from_iter([
        (name("nothing"), Value::Null),
        (name("count"), Value::Integer(-42)),
        (name("ratio"), Value::Real(2.5)),
        (name("precise"), Value::Real(0.1)),
        (name("done"), Value::Bool(true)),
        (name("title"), Value::Text("héllo ✓".into())),
        (name("blob"), Value::Bytes(vec![0, 1, 254, 255])),
        (name("due"), Value::Timestamp(1_795_824_000_123_456)),
        (name("meta"), Value::Json(r#"{"tags":["a","b"],"n":1}"#.into())),
        (name("list"), Value::Text("groceries".into())),
    ]);
    let composite = RowKey::new(vec![
        KeyPart::Integer(7),
        KeyPart::Text("a".into()),
        KeyPart::Bytes(vec![0x00, 0xff]),
    ])
    .expect("three parts");
    Changes::new(vec![
        RowOp::Upsert { table: name("todo.items"), key: composite, generation: 1, cells },
        RowOp::Delete {
            table: name("todo.items"),
            key: RowKey::new(vec![
                KeyPart::Integer(7),
                KeyPart::Text("a".into()),
                KeyPart::Bytes(vec![0x01]),
            ])
            .expect("three parts"),
            generation: 2,
        },
    ])
    .expect("valid changes")
}

/// 10 rows × 10 columns: the 100-cell commit of the benchmarks.
pub(crate) fn hundred_cells() -> Changes {
    let ops = (0..10)
        .map(|row| {
            let cells = (0..10)
                .map(|col| {
                    let value = match col % 4 {
                        0 => Value::Text(format!("row {row} column {col} text")),
                        1 => Value::Integer(row * 1000 + col),
                        2 => Value::Bool((row + col) % 2 == 0),
                        _ => Value::Real(row as f64 + col as f64 / 8.0),
                    };
                    (name(&format!("c{col}")), value)
                })
                .collect();
            RowOp::Upsert {
                table: name("todo.items"),
                key: RowKey::single(KeyPart::Integer(row)),
                generation: 1,
                cells,
            }
        })
        .collect();
    Changes::new(ops).expect("valid changes")
}

/// 100 rows of a 20-byte text, an integer and a bool: the rows of the
/// first-sync benchmark, where the columnar encoding pays.
fn hundred_rows() -> Changes {
    let ops = (0..100)
        .map(|i| RowOp::Upsert {
            table: name("todo.items"),
            key: RowKey::single(KeyPart::Integer(i)),
            generation: 1,
            cells: LiteMap::from_iter([
                (name("title"), Value::Text(format!("value-{i:014}"))),
                (name("n"), Value::Integer(i)),
                (name("done"), Value::Bool(true)),
            ]),
        })
        .collect();
    Changes::new(ops).expect("valid changes")
}

/// 100 rows keyed 0.. each setting `done` to true: 200 units in 126
/// bytes of content, so padded to its units (wire-format.md §4.4).
fn one_value_on_many_rows() -> Changes {
    let ops = (0..100)
        .map(|i| RowOp::Upsert {
            table: name("todo.items"),
            key: RowKey::single(KeyPart::Integer(i)),
            generation: 1,
            cells: LiteMap::from_iter([(name("done"), Value::Bool(true))]),
        })
        .collect();
    Changes::new(ops).expect("valid changes")
}

/// One 256-byte text on 150 rows keyed 0..: front-coded, the repeats cost
/// 4 bytes a row, but each value is 4 units (one per 64 bytes), so the
/// 884 bytes of content are padded to their 900 units (wire-format.md §4.4)
/// rather than to their own 896.
fn long_value_on_many_rows() -> Changes {
    let note = Value::Text("a note of 256 bytes, the same on every row. ".repeat(6)[..256].into());
    let ops = (0..150)
        .map(|i| RowOp::Upsert {
            table: name("todo.items"),
            key: RowKey::single(KeyPart::Integer(i)),
            generation: 1,
            cells: LiteMap::from_iter([(name("note"), note.clone())]),
        })
        .collect();
    Changes::new(ops).expect("valid changes")
}

/// The vector commits, each chained to the one before.
pub(crate) fn chain() -> Vec<(&'static str, Commit, Changes)> {
    let author = principal("device");
    let key = scope_key();
    let mut rng = rng("commits");
    let mut prev = None;
    let cases = [
        ("one cell", one_cell()),
        ("every value type, composite key, a delete", every_value_type()),
        ("100 cells", hundred_cells()),
        ("100 rows of a text, an integer and a bool", hundred_rows()),
        ("done = true on 100 rows: padded to its 200 units", one_value_on_many_rows()),
        ("a 256-byte text on 150 rows: padded to its 900 units", long_value_on_many_rows()),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (title, changes))| {
            let draft = draft(i as u64 + 1, prev, BASE_WALL_MS + 1000 * i as u64);
            let commit = Commit::create(&author, draft, &changes, &key, &mut rng).expect("commit");
            prev = Some(commit.id());
            (title, commit, changes)
        })
        .collect()
}

pub(crate) fn vectors() -> Json {
    let author = principal("device");
    let key = scope_key();
    let cases: Vec<Json> = chain()
        .into_iter()
        .map(|(title, commit, changes)| {
            let header = commit.header();
            let plaintext = changes.encode();
            assert_eq!(
                key.encrypt(&header.nonce, commit.header_bytes(), &plaintext),
                commit.ciphertext()
            );
            let signed_bytes = SigningContext::Commit.signed_bytes(&commit.signed_message());
            assert_eq!(
                &author.sign(SigningContext::Commit, &commit.signed_message()),
                commit.signature()
            );
            json!({
                "name": title,
                "author_seed": hex(author.seed()),
                "header": json::header(header),
                "header_cbor": hex(commit.header_bytes()),
                "aead": {
                    "key": hex(key.as_bytes()),
                    "nonce": hex(header.nonce),
                    "associated_data": hex(commit.header_bytes()),
                    "plaintext": hex(&plaintext),
                    "ciphertext": hex(commit.ciphertext()),
                },
                "signed_bytes": hex(signed_bytes),
                "signature": hex(commit.signature()),
                "commit": hex(commit.as_bytes()),
                "commit_id": hex(commit.id().0),
                "changes": json::changes(&changes),
            })
        })
        .collect();
    json!({
        "description": "Commits by the 'device' principal of keys.json under one scope key, each chained to the previous (seq, prev). For each: the header and its CBOR, the AEAD inputs and output (the plaintext is the padded columnar change set of wire-format.md §4), the exact signed bytes (label, 0x00, header CBOR, ciphertext), the signature, the full commit, its id, and its decoded changes in canonical order.",
        "commits": cases,
    })
}
