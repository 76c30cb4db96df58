//! `sync`: a second device pulls a 100k-row database through the sync
//! protocol and the device's store (both replicas in this process, frames
//! passed in memory), then one new row, twice. Wire bytes are every frame
//! of both sides' requests and answers.

use std::time::Instant;

use basic_store::Database;
use basic_store::sync::LocalLink;
use serde_json::Value;

use crate::fixture;
use crate::report::{Reporter, per_second};

type Error = Box<dyn std::error::Error>;

/// Rows per commit.
const ROWS_PER_COMMIT: i64 = 1000;

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let commits = if quick { 5 } else { 100 };
    let rows = commits as i64 * ROWS_PER_COMMIT;
    let source = fixture::open()?;
    reporter.note(&format!("sync: writing {rows} rows in {commits} commits"));
    // Rows of a 20-byte text, an integer and a bool (three cells).
    let written = fixture::foreign_commits(&source.db, &source.key, commits, ROWS_PER_COMMIT, 3);
    let commit_bytes: usize = written.iter().map(|c| c.as_bytes().len()).sum();
    let encoded: Vec<Vec<u8>> = written.iter().map(|c| c.as_bytes().to_vec()).collect();
    for outcome in source.db.ingest(&encoded)? {
        outcome?;
    }

    let (_target_dir, target) = fixture::second_device(&source)?;

    let mut link = LocalLink::new(&target, &source.db)?;
    let start = Instant::now();
    let first = link.run(&target, &source.db, 0)?;
    let elapsed = start.elapsed().as_secs_f64();
    let held = target.query("SELECT count(*) FROM bench.items", &[], None)?;
    if held.rows.first().and_then(|r| r.first()) != Some(&basic_proto::Value::Integer(rows)) {
        return Err(format!("the target holds {:?} rows, not {rows}", held.rows).into());
    }
    reporter.result(
        "sync",
        &[
            ("phase", "first sync".into()),
            ("rows", rows.into()),
            ("rows_per_s", per_second(rows as f64, elapsed)),
            ("wire_bytes_per_row", Value::from(first.bytes as f64 / rows as f64)),
            ("wire_to_commit_bytes", Value::from(first.bytes as f64 / commit_bytes as f64)),
            ("round_trips", first.exchanges_a.into()),
        ],
    );

    for (round, row) in [(1, rows), (2, rows + 1)] {
        let written = source.db.execute(
            "INSERT INTO bench.items (id, title, done, list_id) VALUES (?, ?, false, 1)",
            &[basic_proto::Value::Integer(row), basic_proto::Value::Text(format!("{:0>20}", row))],
            None,
        )?;
        let basic_store::Executed::Written(written) = written else {
            return Err("an insert returned rows".into());
        };
        let mut new_bytes = 0;
        for id in &written.commits {
            new_bytes += source.db.replica().commit_bytes(id)?.map_or(0, |b| b.len());
        }
        let one = link.run(&target, &source.db, round)?;
        reporter.result(
            "sync",
            &[
                ("phase", format!("one new row ({round})").into()),
                ("round_trips", one.exchanges_a.into()),
                ("wire_bytes", one.bytes.into()),
                ("commit_bytes", new_bytes.into()),
                ("overhead_bytes", (one.bytes as usize).saturating_sub(new_bytes).into()),
                ("received", one.received.into()),
            ],
        );
    }
    // The same transfer into a pinning peer: verified and stored as
    // ciphertext, nothing decrypted or merged (the protocol and the log).
    let pinner_key = basic_proto::SecretKey::from_seed([201; 32]);
    source.db.add_pinner(pinner_key.public())?;
    let pinner_dir = tempfile::tempdir()?;
    let pinner = Database::replicate_with_store(
        basic_store::DeviceStore::open(
            &pinner_dir.path().join("replica"),
            basic_store::CACHE_BYTES,
        )?,
        &pinner_dir.path().join("view.sqlite"),
        source.db.id(),
        &pinner_key,
        &source.db.control_ops()?,
        basic_store::Environment::system(),
    )?;
    let mut pinning = LocalLink::new(&pinner, &source.db)?;
    let start = Instant::now();
    let to_pinner = pinning.run(&pinner, &source.db, 0)?;
    let elapsed = start.elapsed().as_secs_f64();
    reporter.result(
        "sync",
        &[
            ("phase", "first sync to a pinning peer".into()),
            ("rows", rows.into()),
            ("rows_per_s", per_second(rows as f64, elapsed)),
            ("wire_to_commit_bytes", Value::from(to_pinner.bytes as f64 / commit_bytes as f64)),
            ("round_trips", to_pinner.exchanges_a.into()),
        ],
    );

    Ok(())
}
