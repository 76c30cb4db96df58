//! `merge.json`: sets of stamped operations and the tables they merge into.

use std::collections::BTreeMap;

use basic_proto::{Changes, Hlc, KeyPart, PublicKey, RowKey, RowOp, Stamp, Tables, Value};
use rand_core::Rng;
use serde_json::{Value as Json, json};

use crate::commits::name;
use crate::json::{self, hex};
use crate::{principal, rng};

fn writer(n: usize) -> PublicKey {
    principal(["writer a", "writer b", "writer c"][n]).public()
}

fn stamp(wall_ms: u64, counter: u32, writer_index: usize) -> Stamp {
    Stamp { hlc: Hlc { wall_ms, counter }, author: writer(writer_index).into() }
}

fn row(k: i64) -> RowKey {
    RowKey::single(KeyPart::Integer(k))
}

fn upsert(k: i64, generation: u32, cells: &[(&str, Value)]) -> Changes {
    Changes::new(vec![RowOp::Upsert {
        table: name("app.notes"),
        key: row(k),
        generation,
        cells: cells.iter().map(|(c, v)| (name(c), v.clone())).collect(),
    }])
    .expect("one op")
}

fn delete(k: i64, generation: u32) -> Changes {
    Changes::new(vec![RowOp::Delete { table: name("app.notes"), key: row(k), generation }])
        .expect("one op")
}

fn text(t: &str) -> Value {
    Value::Text(t.into())
}

/// Merges `commits` in the given order and in reverse, checks both agree,
/// and renders the case.
fn case(title: &str, commits: Vec<(Stamp, Changes)>) -> Json {
    let merge = |order: &mut dyn Iterator<Item = &(Stamp, Changes)>| {
        let mut tables = Tables::default();
        for (stamp, changes) in order {
            tables.apply(*stamp, changes);
        }
        tables
    };
    let forward = merge(&mut commits.iter());
    assert_eq!(forward, merge(&mut commits.iter().rev()), "{title}: order matters");
    let mut doubled = commits.iter().chain(commits.iter());
    assert_eq!(forward, merge(&mut doubled), "{title}: duplicates matter");
    json!({
        "name": title,
        "commits": commits.iter().map(|(stamp, changes)| json!({
            "author": hex(stamp.author.as_bytes()),
            "hlc": json::hlc(stamp.hlc),
            "changes": json::changes(changes),
            "changes_bytes": hex(changes.encode()),
        })).collect::<Vec<_>>(),
        "result": json::tables(&forward),
    })
}

fn random_mix() -> Vec<(Stamp, Changes)> {
    let mut rng = rng("merge random mix");
    (0..40)
        .map(|_| {
            let k = i64::from(rng.next_u32() % 3);
            let generation = rng.next_u32() % 4 + 1;
            let stamp = stamp(
                1000 + u64::from(rng.next_u32() % 5),
                rng.next_u32() % 2,
                (rng.next_u32() % 3) as usize,
            );
            let changes = if generation % 2 == 1 {
                let column = ["a", "b", "c"][(rng.next_u32() % 3) as usize];
                upsert(k, generation, &[(column, Value::Integer(i64::from(rng.next_u32() % 100)))])
            } else {
                delete(k, generation)
            };
            (stamp, changes)
        })
        .collect()
}

/// A random mix like [`random_mix`] whose rows end live: generations up to
/// 5, and a last upsert of each row at generation 5 with the highest stamp
/// of its row or not, as the draw gives.
fn random_mix_live() -> Vec<(Stamp, Changes)> {
    let mut rng = rng("merge random mix, live rows");
    let mut commits: Vec<(Stamp, Changes)> = (0..37)
        .map(|_| {
            let k = i64::from(rng.next_u32() % 3);
            let generation = rng.next_u32() % 5 + 1;
            let stamp = stamp(
                1000 + u64::from(rng.next_u32() % 5),
                rng.next_u32() % 2,
                (rng.next_u32() % 3) as usize,
            );
            let changes = if generation % 2 == 1 {
                let column = ["a", "b", "c"][(rng.next_u32() % 3) as usize];
                upsert(k, generation, &[(column, Value::Integer(i64::from(rng.next_u32() % 100)))])
            } else {
                delete(k, generation)
            };
            (stamp, changes)
        })
        .collect();
    for k in 0..3 {
        let wall = 1000 + u64::from(rng.next_u32() % 6);
        commits.push((stamp(wall, 0, k as usize), upsert(k, 5, &[("a", text("last life"))])));
    }
    commits
}

pub(crate) fn vectors() -> Json {
    let cases = vec![
        case(
            "later stamp wins, per cell",
            vec![
                (
                    stamp(1000, 0, 0),
                    upsert(1, 1, &[("title", text("first")), ("body", text("one"))]),
                ),
                (stamp(2000, 0, 1), upsert(1, 1, &[("title", text("second"))])),
                (
                    stamp(1500, 0, 2),
                    upsert(1, 1, &[("title", text("stale")), ("body", text("two"))]),
                ),
            ],
        ),
        case(
            "equal wall time: counter, then author key bytes",
            vec![
                (stamp(1000, 1, 0), upsert(1, 1, &[("title", text("counter 1"))])),
                (stamp(1000, 0, 1), upsert(1, 1, &[("title", text("counter 0"))])),
                (stamp(1000, 2, 0), upsert(1, 1, &[("body", text("by a"))])),
                (stamp(1000, 2, 1), upsert(1, 1, &[("body", text("by b"))])),
            ],
        ),
        case(
            "delete wins over a concurrent update with a later clock",
            vec![
                (stamp(1000, 0, 0), upsert(1, 1, &[("title", text("x"))])),
                (stamp(2000, 0, 0), delete(1, 2)),
                (stamp(9000, 0, 1), upsert(1, 1, &[("title", text("concurrent edit"))])),
            ],
        ),
        case(
            "re-insert after delete starts a fresh row",
            vec![
                (
                    stamp(1000, 0, 0),
                    upsert(1, 1, &[("title", text("old")), ("body", text("old body"))]),
                ),
                (stamp(2000, 0, 1), delete(1, 2)),
                (stamp(3000, 0, 2), upsert(1, 3, &[("title", text("new"))])),
                (stamp(2500, 0, 0), upsert(1, 1, &[("body", text("lost edit"))])),
            ],
        ),
        case(
            "a delete ends only the life it saw",
            vec![
                (stamp(1000, 0, 0), upsert(1, 1, &[("title", text("a"))])),
                (stamp(2000, 0, 0), delete(1, 2)),
                (stamp(3000, 0, 0), upsert(1, 3, &[("title", text("again"))])),
                (stamp(4000, 0, 1), delete(1, 2)),
            ],
        ),
        case(
            "concurrent inserts merge",
            vec![
                (
                    stamp(1000, 0, 0),
                    upsert(1, 1, &[("a", Value::Integer(1)), ("b", Value::Integer(1))]),
                ),
                (
                    stamp(1000, 0, 1),
                    upsert(1, 1, &[("b", Value::Integer(2)), ("c", Value::Integer(2))]),
                ),
            ],
        ),
        case(
            "forked author: equal stamps, greater value encoding wins",
            vec![
                (stamp(1000, 0, 0), upsert(1, 1, &[("title", text("abc"))])),
                (stamp(1000, 0, 0), upsert(1, 1, &[("title", text("abd"))])),
            ],
        ),
        case("random mix of 40 operations on 3 rows by 3 writers", random_mix()),
        case(
            "random mix of 40 operations on 3 rows by 3 writers, some rows live",
            random_mix_live(),
        ),
    ];
    let authors: BTreeMap<&str, Json> = [("writer a", 0), ("writer b", 1), ("writer c", 2)]
        .into_iter()
        .map(|(n, i)| (n, hex(writer(i).as_bytes())))
        .collect();
    json!({
        "description": "Each case: commits (author, hlc, changes) and the resulting row states of every row ever written, deleted rows included, in key order. Applying the commits in any order, any number of times, MUST give this result. Writers are fixture principals (seed = BLAKE3 derive_key(\"basic/v0 test vector fixture\", name)).",
        "writers": authors,
        "cases": cases,
    })
}
