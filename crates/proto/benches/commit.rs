//! Benchmarks of the commit pipeline and of each of its steps, for a commit
//! of 1 cell change and one of 100 (10 rows × 10 columns of mixed types).
//!
//! ```text
//! cargo bench -p basic-proto --bench commit -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every benchmark is named `commit/<n>-cell/<step>` and reports throughput
//! in cells. Inputs come from a seeded ChaCha20 RNG, so runs are comparable.
//!
//! `verify/<n>-cell/16_together` and `16_alone` time the verification of
//! sixteen received commits together (one field inversion) and one by one.
//!
//! `changes/decode-worst/<case>` times decoding the change sets that the
//! units rule (wire-format.md §4.0) lets grow the most per byte: a
//! megabyte that decodes to a million null cells, or to 64 MiB of values.

use std::collections::BTreeSet;
use std::hint::black_box;

use basic_proto::change::{BYTES_PER_UNIT, MAX_CELLS, MAX_CHANGES_BYTES, MAX_OPS};
use basic_proto::merge::Tables;
use basic_proto::value::MAX_VALUE_LEN;
use basic_proto::{
    Changes, Commit, CommitDraft, DatabaseId, Hlc, KeyCache, KeyPart, Located, Name, RowKey, RowOp,
    ScopeKey, SecretKey, SigningContext, Stamp, Value,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// The table every benchmark writes.
const TABLE: &str = "app.items";
/// Column names; column `i` holds text, integer, bool or real as `i % 4`.
const COLUMNS: [&str; 10] = [
    "title", "quantity", "done", "price", "note", "position", "archived", "weight", "label", "rank",
];
/// Rows already in the table the merge benchmark applies to.
const EXISTING_ROWS: usize = 10_000;
/// Length of the text values, in bytes.
const TEXT_LEN: usize = 20;
/// Wall time of the rows already in the table; commits are stamped later.
const BASE_MS: u64 = 1_700_000_000_000;

fn name(s: &str) -> Name {
    Name::new(s).expect("benchmark names are valid")
}

/// A 20-byte lowercase text.
fn text(rng: &mut ChaCha20Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ";
    (0..TEXT_LEN).map(|_| char::from(ALPHABET[rng.next_u32() as usize % ALPHABET.len()])).collect()
}

/// A value of the type of column `column`.
fn value(column: usize, rng: &mut ChaCha20Rng) -> Value {
    match column % 4 {
        0 => Value::Text(text(rng)),
        // Integers of every width, so their encodings take 1 to 9 bytes.
        1 => Value::Integer((rng.next_u64() >> (rng.next_u32() % 64)) as i64),
        2 => Value::Bool(rng.next_u32() % 2 == 1),
        // A full-precision double in [0, 1000): always encoded in 9 bytes.
        _ => Value::Real((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1000.0),
    }
}

/// A UUID-like 16-byte key, as offline clients generate.
fn row_key(rng: &mut ChaCha20Rng) -> RowKey {
    let mut bytes = vec![0; 16];
    rng.fill_bytes(&mut bytes);
    RowKey::single(KeyPart::Bytes(bytes))
}

/// An upsert of the first `columns` columns of row `key`, generation 1.
fn upsert(key: RowKey, columns: usize, rng: &mut ChaCha20Rng) -> RowOp {
    RowOp::Upsert {
        table: name(TABLE),
        key,
        generation: 1,
        cells: (0..columns).map(|c| (name(COLUMNS[c]), value(c, rng))).collect(),
    }
}

/// A table of [`EXISTING_ROWS`] rows of 10 cells, written by another
/// device, and the keys of its rows.
fn existing_table(rng: &mut ChaCha20Rng) -> (Tables, Vec<RowKey>) {
    let mut keys = BTreeSet::new();
    while keys.len() < EXISTING_ROWS {
        keys.insert(row_key(rng));
    }
    let keys: Vec<RowKey> = keys.into_iter().collect();
    let ops = keys.iter().map(|key| upsert(key.clone(), COLUMNS.len(), rng)).collect();
    let changes = Changes::new(ops).expect("10k distinct rows are a valid change set");
    let author = SecretKey::generate(rng).public();
    let mut tables = Tables::default();
    tables.apply(
        Stamp { hlc: Hlc { wall_ms: BASE_MS, counter: 0 }, author: author.into() },
        &changes,
    );
    (tables, keys)
}

/// One benchmarked commit and everything its steps take as input.
struct Fixture {
    label: String,
    cells: u64,
    device: SecretKey,
    scope_key: ScopeKey,
    draft: CommitDraft,
    changes: Changes,
    /// `changes.encode()`.
    plaintext: Vec<u8>,
    commit: Commit,
    /// What the commit's signature covers (before the context label).
    message: Vec<u8>,
    rng: ChaCha20Rng,
}

impl Fixture {
    /// A commit updating `rows` × `columns` cells of rows of `existing`.
    fn new(rows: usize, columns: usize, existing: &[RowKey], seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let device = SecretKey::generate(&mut rng);
        let scope_key = ScopeKey::generate(&mut rng);
        // Rows spread over the table: one from each of `rows` equal slices.
        let slice = existing.len() / rows;
        let ops = (0..rows)
            .map(|r| {
                let key = existing[r * slice + rng.next_u32() as usize % slice].clone();
                upsert(key, columns, &mut rng)
            })
            .collect();
        let changes = Changes::new(ops).expect("distinct rows are a valid change set");
        let cells = changes.cell_count();
        assert_eq!(cells, rows * columns);
        let draft = CommitDraft {
            database: DatabaseId([7; 32]),
            seq: 1,
            prev: None,
            hlc: Hlc { wall_ms: BASE_MS + 60_000, counter: 0 },
            scope: basic_proto::ScopeId([7; 16]),
            epoch: 0,
        };
        let commit = Commit::create(&device, draft.clone(), &changes, &scope_key, &mut rng)
            .expect("the commit is within limits");
        Self {
            label: format!("{cells}-cell"),
            cells: cells as u64,
            plaintext: changes.encode(),
            message: commit.signed_message(),
            device,
            scope_key,
            draft,
            changes,
            commit,
            rng,
        }
    }
}

fn bench_commit(c: &mut Criterion, fx: &mut Fixture, existing: &Tables) {
    let cells = fx.cells;
    let mut group = c.benchmark_group(format!("commit/{}", fx.label));
    group.throughput(Throughput::Elements(cells));

    let Fixture { device, scope_key, draft, changes, plaintext, commit, message, rng, .. } = fx;
    let public = device.public();
    let nonce = commit.header().nonce;
    let header = commit.header_bytes();
    let signature = *commit.signature();

    // Each step is checked once before it is timed, so that every benchmark
    // measures the success path.
    assert_eq!(device.sign(SigningContext::Commit, message), signature);
    assert_eq!(public.verify(SigningContext::Commit, message, &signature), Ok(()));
    assert_eq!(scope_key.encrypt(&nonce, header, plaintext), commit.ciphertext());
    assert_eq!(scope_key.decrypt(&nonce, header, commit.ciphertext()).as_ref(), Some(&*plaintext));
    assert_eq!(Changes::decode(plaintext).as_ref(), Ok(&*changes));
    assert_eq!(
        Commit::decode(commit.as_bytes()).and_then(|c| c.open(scope_key)).as_ref(),
        Ok(&*changes)
    );

    group.bench_function("sign", |b| {
        b.iter(|| device.sign(SigningContext::Commit, black_box(message)))
    });
    group.bench_function("verify", |b| {
        b.iter(|| public.verify(SigningContext::Commit, black_box(message), black_box(&signature)))
    });
    // The rule's reference, on the signed bytes whole.
    let reference =
        ed25519_dalek::VerifyingKey::from_bytes(public.as_bytes()).expect("a valid key");
    let signed = SigningContext::Commit.signed_bytes(message);
    let dalek_signature = ed25519_dalek::Signature::from_bytes(&signature);
    group.bench_function("verify_strict_reference", |b| {
        b.iter(|| reference.verify_strict(black_box(&signed), black_box(&dalek_signature)))
    });
    group.bench_function("encrypt", |b| {
        b.iter(|| scope_key.encrypt(black_box(&nonce), black_box(header), black_box(plaintext)))
    });
    group.bench_function("decrypt", |b| {
        b.iter(|| scope_key.decrypt(black_box(&nonce), black_box(header), commit.ciphertext()))
    });
    group.bench_function("encode", |b| b.iter(|| black_box(&*changes).encode()));
    group.bench_function("decode", |b| b.iter(|| Changes::decode(black_box(plaintext))));
    // `create` takes its draft by value: the clone is made outside the timing.
    group.bench_function("create", |b| {
        b.iter_batched(
            || draft.clone(),
            |draft| Commit::create(device, draft, changes, scope_key, rng),
            BatchSize::SmallInput,
        )
    });
    // What a received commit costs before its signature: the envelope and
    // header read and checked, and its id read off the bytes (a held
    // copy's check).
    let keys = KeyCache::default();
    assert_eq!(Commit::header_of(commit.as_bytes(), &keys).as_ref(), Ok(commit.header()));
    group.bench_function("header_of", |b| {
        b.iter(|| Commit::header_of(black_box(commit.as_bytes()), &keys))
    });
    group.bench_function("id_of", |b| b.iter(|| Commit::id_of(black_box(commit.as_bytes()))));
    group.bench_function("decode_verify_open", |b| {
        b.iter(|| Commit::decode(black_box(commit.as_bytes())).and_then(|c| c.open(scope_key)))
    });

    // Merge: the commit updates rows already in a table of 10k rows.
    //
    // The table is cloned once, outside the timing, and the same change set
    // is applied to it again and again, each time with a strictly greater
    // HLC stamp. Every application therefore does the full work of a real
    // newer write — find each row among the 10k, build its row state, and
    // replace (and drop) every cell it writes — and leaves the table with
    // the same rows and shape, so nothing drifts between iterations. Cloning
    // a fresh 10k-row table per iteration (`iter_batched`) would do the same
    // work, but either forces one timer read per iteration (`PerIteration`,
    // tens of ns: a sizeable share of a 1-cell merge) or holds thousands of
    // multi-megabyte clones at once, and would time writes into cold,
    // freshly allocated memory that a long-lived table does not have.
    let mut tables = existing.clone();
    let mut stamp = Stamp { hlc: draft.hlc, author: public.into() };
    tables.apply(stamp, changes);
    assert_eq!(tables.states().count(), EXISTING_ROWS, "the commit updates existing rows");
    let won = tables.states().flat_map(|(_, _, s)| s.cells.values()).filter(|c| c.stamp == stamp);
    assert_eq!(won.count() as u64, cells, "every cell of the commit wins");
    group.bench_function("merge", |b| {
        b.iter(|| {
            stamp.hlc = stamp.hlc.successor();
            tables.apply(black_box(stamp), black_box(changes));
        })
    });

    group.finish();
}

/// The change sets that decode to the most per byte the units rule
/// allows, each a megabyte once padded to its units: null cells (one unit
/// each, one run per column), and values of 256 KiB front-coded against
/// the row before (one unit per 64 bytes of each).
fn worst_cases() -> Vec<(String, Changes)> {
    let nulls = |rows: usize, columns: usize| {
        let columns: Vec<Name> = (0..columns).map(|c| name(&format!("c{c:04}"))).collect();
        (0..rows as i64)
            .map(|k| RowOp::Upsert {
                table: name("t.t"),
                key: RowKey::single(KeyPart::Integer(k)),
                generation: 1,
                cells: columns.iter().map(|c| (c.clone(), Value::Null)).collect(),
            })
            .collect::<Vec<_>>()
    };
    let per_value = MAX_VALUE_LEN / BYTES_PER_UNIT;
    let text = Value::Text("a".repeat(MAX_VALUE_LEN));
    let texts = (0..(MAX_CHANGES_BYTES / (2 + per_value)) as i64)
        .map(|k| RowOp::Upsert {
            table: name("t.t"),
            key: RowKey::single(KeyPart::Integer(k)),
            generation: 1,
            cells: [(name("c"), text.clone())].into_iter().collect(),
        })
        .collect();
    let keys = (0..MAX_CHANGES_BYTES / (1 + per_value))
        .map(|row| {
            let mut key = vec![0; MAX_VALUE_LEN - 2];
            key.extend((row as u16).to_be_bytes());
            RowOp::Delete {
                table: name("t.t"),
                key: RowKey::single(KeyPart::Bytes(key)),
                generation: 2,
            }
        })
        .collect();
    let rows_of_widest = MAX_OPS * 104 / (MAX_CELLS + 1);
    [
        (format!("nulls-{MAX_OPS}x103"), nulls(MAX_OPS, 103)),
        (format!("nulls-{rows_of_widest}x{MAX_CELLS}"), nulls(rows_of_widest, MAX_CELLS)),
        ("texts-256KiB".to_owned(), texts),
        ("keys-256KiB".to_owned(), keys),
    ]
    .into_iter()
    .map(|(case, ops)| (case, Changes::new(ops).expect("a valid change set")))
    .collect()
}

fn bench_decode_worst(c: &mut Criterion) {
    let mut group = c.benchmark_group("changes/decode-worst");
    group.sample_size(10);
    for (case, changes) in worst_cases() {
        let bytes = changes.encode();
        assert!(bytes.len() <= MAX_CHANGES_BYTES && bytes.len() > MAX_CHANGES_BYTES / 2, "{case}");
        assert_eq!(Changes::decode(&bytes).as_ref(), Ok(&changes), "{case}");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(&case, |b| b.iter(|| Changes::decode(black_box(&bytes))));
    }
    group.finish();
}

/// Sixteen received commits verified together, as a device's ingest takes
/// them (`Located::verify_all`: one field inversion for all), against each
/// verified alone. Both read each commit's envelope and id first.
fn bench_verify_together(c: &mut Criterion, fx: &Fixture) {
    const COMMITS: usize = 16;
    let mut group = c.benchmark_group(format!("verify/{}", fx.label));
    group.throughput(Throughput::Elements(COMMITS as u64));
    let keys = KeyCache::default();
    let received = vec![fx.commit.as_bytes(); COMMITS];
    let locate = || received.iter().filter_map(|bytes| Commit::locate(bytes, &keys));
    assert_eq!(Located::verify_all(locate().collect()), vec![Ok(fx.commit.clone()); COMMITS]);
    group.bench_function("16_together", |b| b.iter(|| Located::verify_all(locate().collect())));
    group.bench_function("16_alone", |b| {
        b.iter(|| locate().map(Located::verify).collect::<Vec<_>>())
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(0xba51c);
    let (existing, keys) = existing_table(&mut rng);
    for (rows, columns, seed) in [(1, 1, 1), (10, 10, 100)] {
        let mut fixture = Fixture::new(rows, columns, &keys, seed);
        bench_commit(c, &mut fixture, &existing);
        bench_verify_together(c, &fixture);
    }
    bench_decode_worst(c);
}

criterion_group!(commit, benches);
criterion_main!(commit);
