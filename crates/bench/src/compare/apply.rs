//! Apply: Basic ingesting signed, encrypted commits of the same rows that
//! plain SQLite upserts (WAL, prepared statements, 100-row transactions,
//! one change-log row per row), and the crypto limit — strict verification
//! and decryption alone — on as many threads as the ingest uses.

use std::time::Instant;

use basic_proto::{KeyPart, Value};
use rand::{RngExt, SeedableRng};
use rusqlite::Connection;

use super::Error;
use crate::fixture;
use crate::ingest::{FEEDERS, Took, Verifier, crypto_only, feed};
use crate::report::{Comparison, Reporter, rounded};

/// One generated row of the anchor table: a random 16-hex-character id,
/// five 20-byte texts, five integers.
struct Row {
    id: String,
    texts: [String; 5],
    integers: [i64; 5],
}

/// `count` rows from `seed`; the same `id_seed` gives the same ids.
fn rows(count: usize, id_seed: u64, seed: u64) -> Vec<Row> {
    let mut ids = rand::rngs::StdRng::seed_from_u64(id_seed);
    let mut values = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| Row {
            id: format!("{:016x}", ids.random::<u64>()),
            texts: std::array::from_fn(|_| format!("{:020}", values.random::<u64>())),
            integers: std::array::from_fn(|_| values.random::<i64>()),
        })
        .collect()
}

/// Rows per commit (and per SQLite transaction on Basic's side: 100 cells).
const ROWS_PER_COMMIT: usize = 10;
/// Rows per SQLite transaction.
const ROWS_PER_TRANSACTION: usize = 100;

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let count = if quick { 10_000 } else { 100_000 };
    let single = if quick { 2_000 } else { 40_000 };
    let inserted = rows(count, 1, 2);
    let updated = rows(count, 1, 3);
    let cells = (count * 10) as f64;

    reporter.note(&format!("compare: SQLite upserts of {count} rows"));
    let normal = sqlite(&inserted, &updated, "NORMAL")?;
    let full = sqlite(&inserted, &updated, "FULL")?;

    reporter.note(&format!("compare: Basic ingests the same {count} rows in 100-cell commits"));
    let bench = fixture::open_with(16)?;
    let mut signers = fixture::Signers::new(&bench);
    let mut commits = |rows: &[Row]| {
        signers.sign(
            rows.chunks(ROWS_PER_COMMIT)
                .map(|chunk| fixture::changes("bench.rows", chunk.iter().map(cells_of).collect())),
        )
    };
    let (insert_commits, update_commits) = (commits(&inserted), commits(&updated));
    let crypto = crypto_only(&insert_commits, &bench.key, FEEDERS, Verifier::Reference)?.wall;
    let insert_encoded = encode(&insert_commits);
    // (A mark for a profiler attached from here on.)
    reporter.note("compare: timing Basic's ingest of 100-cell commits");
    let insert_s = feed(&bench.db, &insert_encoded)?.1.wall;
    reporter.note(&format!("compare: Basic's ingest of 100-cell commits took {insert_s:.2} s"));
    let update_s = feed(&bench.db, &encode(&update_commits))?.1.wall;
    let held = bench.db.query("SELECT count(*) FROM bench.rows", &[], None)?;
    if held.rows.first().and_then(|r| r.first()) != Some(&Value::Integer(count as i64)) {
        return Err(format!("Basic holds {:?} rows, not {count}", held.rows).into());
    }

    let shape = format!("{count} rows, 10 cells each");
    reporter.compare(Comparison {
        figure: &format!("ingest (insert), 100-cell commits, {shape}"),
        unit: "cells/s",
        basic: cells / insert_s,
        anchor_name: "SQLite upsert, WAL, synchronous=NORMAL, 100-row transactions + change log",
        anchor: cells / normal.insert,
        extra: vec![
            ("anchor_full_cells_per_s", rounded(cells / full.insert)),
            ("ratio_to_full", rounded(full.insert / insert_s)),
            ("feeders", FEEDERS.into()),
        ],
    });
    reporter.compare(Comparison {
        figure: &format!("ingest (update pass), 100-cell commits, {shape}"),
        unit: "cells/s",
        basic: cells / update_s,
        anchor_name: "SQLite upsert update pass, WAL, synchronous=NORMAL",
        anchor: cells / normal.update,
        extra: vec![("anchor_full_cells_per_s", rounded(cells / full.update))],
    });
    reporter.compare(Comparison {
        figure: &format!("ingest (insert), 100-cell commits, {shape}, against crypto alone"),
        unit: "cells/s",
        basic: cells / insert_s,
        anchor_name: "verify_strict + XChaCha20-Poly1305 decrypt per commit",
        anchor: cells / crypto,
        extra: vec![("crypto_threads", FEEDERS.into()), ("authors", bench.authors.into())],
    });

    // The database above (and its threads) gone before the next is timed.
    drop(bench);
    let rounds = if quick { 1 } else { SINGLE_ROUNDS };
    reporter.note(&format!("compare: Basic ingests {single} 1-cell commits, round(s): {rounds}"));
    let samples = (0..rounds).map(|_| single_cell_round(single)).collect::<Result<Vec<_>, _>>()?;
    // The median round by ratio: one slow round of either side (this
    // machine's other work) moves it less than it moves a single round.
    let mut by_ratio: Vec<&SingleCellRound> = samples.iter().collect();
    by_ratio.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    let median = by_ratio[by_ratio.len() / 2];
    let per_commit = |cpu: f64| rounded(cpu / single as f64 * 1e6);
    let every = |of: fn(&SingleCellRound) -> f64| -> serde_json::Value {
        samples.iter().map(|round| rounded(of(round))).collect::<Vec<_>>().into()
    };
    reporter.compare(Comparison {
        figure: &format!("ingest, {single} 1-cell commits, against crypto alone"),
        unit: "commits/s",
        basic: single as f64 / median.basic.wall,
        anchor_name: "verify_strict + XChaCha20-Poly1305 decrypt per commit",
        anchor: single as f64 / median.crypto.wall,
        extra: vec![
            // The CPU each took (every thread), per commit: a ratio of these
            // does not move with how busy the machine is.
            ("cpu_us_per_commit", per_commit(median.basic.cpu)),
            ("anchor_cpu_us_per_commit", per_commit(median.crypto.cpu)),
            ("rounds", rounds.into()),
            ("round_ratios", every(SingleCellRound::ratio)),
            ("round_cpu_ratios", every(|round| round.crypto.cpu / round.basic.cpu)),
            // Against Basic's own verification (the same rule, faster): what
            // the ingest adds to the cryptography it does itself.
            ("own_crypto_cpu_us_per_commit", per_commit(median.own_crypto.cpu)),
            ("round_own_crypto_ratios", every(|round| round.own_crypto.wall / round.basic.wall)),
            ("crypto_threads", FEEDERS.into()),
            ("authors", median.authors.into()),
            ("signed_bytes", median.signed_bytes.into()),
        ],
    });
    Ok(())
}

/// Rounds of the 1-cell comparison; the median is reported.
const SINGLE_ROUNDS: usize = 5;

/// One round of the 1-cell comparison: the crypto limit (with the reference
/// verification, then with Basic's own), then Basic's ingest into a new
/// database, of the same commits.
struct SingleCellRound {
    basic: Took,
    crypto: Took,
    /// The same limit with Basic's own verification.
    own_crypto: Took,
    authors: u8,
    signed_bytes: usize,
}

impl SingleCellRound {
    /// Basic's throughput over the crypto limit's.
    fn ratio(&self) -> f64 {
        self.crypto.wall / self.basic.wall
    }
}

/// `single` 1-cell commits signed for a new database, the crypto limit
/// timed over them, then their ingest.
fn single_cell_round(single: usize) -> Result<SingleCellRound, Error> {
    let bench = fixture::open_with(16)?;
    let signed = fixture::commits(
        &bench,
        (0..single as i64).map(|i| {
            fixture::changes(
                "bench.items",
                vec![(KeyPart::Integer(i), vec![("n", Value::Integer(i))])],
            )
        }),
    );
    let crypto = crypto_only(&signed, &bench.key, FEEDERS, Verifier::Reference)?;
    let own_crypto = crypto_only(&signed, &bench.key, FEEDERS, Verifier::Basic)?;
    let (_, basic) = feed(&bench.db, &encode(&signed))?;
    Ok(SingleCellRound {
        basic,
        crypto,
        own_crypto,
        authors: bench.authors,
        signed_bytes: signed.first().map_or(0, |c| c.as_bytes().len()),
    })
}

/// The commits as received: their bytes.
fn encode(commits: &[basic_proto::Commit]) -> Vec<Vec<u8>> {
    commits.iter().map(|c| c.as_bytes().to_vec()).collect()
}

/// A row as Basic cells of `bench.rows`.
fn cells_of(row: &Row) -> (KeyPart, Vec<(&'static str, Value)>) {
    const TEXTS: [&str; 5] = ["c1", "c2", "c3", "c4", "c5"];
    const INTEGERS: [&str; 5] = ["c6", "c7", "c8", "c9", "c10"];
    let mut cells: Vec<(&str, Value)> =
        TEXTS.iter().zip(&row.texts).map(|(c, t)| (*c, Value::Text(t.clone()))).collect();
    cells.extend(INTEGERS.iter().zip(&row.integers).map(|(c, i)| (*c, Value::Integer(*i))));
    (KeyPart::Text(row.id.clone()), cells)
}

/// Seconds of SQLite's insert pass and update pass.
struct Passes {
    insert: f64,
    update: f64,
}

/// Plain SQLite: the rows upserted with prepared statements in 100-row
/// transactions, one change-log row each, then the update pass.
fn sqlite(inserted: &[Row], updated: &[Row], synchronous: &str) -> Result<Passes, Error> {
    let dir = tempfile::tempdir()?;
    let mut conn = Connection::open(dir.path().join("anchor.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch(
        "CREATE TABLE rows (id TEXT PRIMARY KEY, c1 TEXT, c2 TEXT, c3 TEXT, c4 TEXT, c5 TEXT,
             c6 INTEGER, c7 INTEGER, c8 INTEGER, c9 INTEGER, c10 INTEGER);
         CREATE TABLE changes (seq INTEGER PRIMARY KEY, row_id TEXT, tx INTEGER, hlc INTEGER,
             author BLOB);",
    )?;
    let author = [7u8; 32];
    let mut tx_number = 0i64;
    let mut pass = |rows: &[Row]| -> Result<f64, Error> {
        let start = Instant::now();
        for chunk in rows.chunks(ROWS_PER_TRANSACTION) {
            tx_number += 1;
            let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO rows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT(id) DO UPDATE SET c1 = excluded.c1, c2 = excluded.c2,
                     c3 = excluded.c3, c4 = excluded.c4, c5 = excluded.c5, c6 = excluded.c6,
                     c7 = excluded.c7, c8 = excluded.c8, c9 = excluded.c9, c10 = excluded.c10",
                )?;
                let mut log = tx.prepare_cached(
                    "INSERT INTO changes (row_id, tx, hlc, author) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (i, row) in chunk.iter().enumerate() {
                    let [t1, t2, t3, t4, t5] = &row.texts;
                    let [i1, i2, i3, i4, i5] = row.integers;
                    upsert.execute(rusqlite::params![
                        row.id, t1, t2, t3, t4, t5, i1, i2, i3, i4, i5
                    ])?;
                    log.execute(rusqlite::params![row.id, tx_number, i as i64, &author[..]])?;
                }
            }
            tx.commit()?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let insert = pass(inserted)?;
    let update = pass(updated)?;
    Ok(Passes { insert, update })
}
