//! First sync and one-row resync: Basic (a new device, and a pinning peer,
//! pulling through the sync protocol in this process) against automerge-rs
//! syncing the same rows as maps.

use std::time::Instant;

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc};
use basic_proto::{KeyPart, Value};
use basic_store::Database;
use basic_store::sync::LocalLink;

use super::{AutomergeBytes, Error, median};
use crate::fixture;
use crate::report::{Comparison, Reporter, rounded};

const AUTOMERGE: &str = "automerge-rs 0.12";

/// Row `i` as Basic cells of `bench.items`: a 20-byte text, an integer, a bool.
fn row(i: i64) -> (KeyPart, Vec<(&'static str, Value)>) {
    (
        KeyPart::Integer(i),
        vec![
            ("title", Value::Text(text(i))),
            ("n", Value::Integer(i)),
            ("done", Value::Bool(true)),
        ],
    )
}

/// `value-` and `i` in 14 digits: 20 bytes.
fn text(i: i64) -> String {
    format!("value-{i:014}")
}

/// What one side of the comparison measured.
#[derive(Debug, Default)]
struct Sync {
    rows_per_s: f64,
    /// Commits (automerge: changes) moved per second.
    commits_per_s: f64,
    /// Seconds the sync took.
    seconds: f64,
    round_trips: u64,
    /// Bytes of every message, both directions.
    bytes: u64,
    /// Basic only: the commits' own bytes.
    commit_bytes: u64,
}

/// A one-row resync.
#[derive(Debug, Default)]
struct Resync {
    round_trips: u64,
    bytes: u64,
    /// Basic only: the commit's own bytes.
    commit_bytes: u64,
}

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<AutomergeBytes, Error> {
    let (rows, single_rows, repetitions) =
        if quick { (5_000, 300, 1) } else { (100_000, 10_000, 5) };

    // 1,000 rows per commit (per automerge transaction).
    reporter.note(&format!("compare: automerge-rs, {rows} rows in transactions of 1,000"));
    let (am, am_resync) = automerge_sync(rows, 1_000, repetitions)?;
    reporter.note(&format!("compare: Basic, {rows} rows in commits of 1,000"));
    let (basic, basic_resync, pinner) = basic_sync(reporter, rows, 1_000, true)?;
    let shape = "100k rows (20-byte text, integer, bool), 1,000 per commit";
    let shape = if quick { shape.replace("100k", &rows.to_string()) } else { shape.to_owned() };
    reporter.compare(Comparison {
        figure: &format!("first sync to a new device, {shape}"),
        unit: "rows/s",
        basic: basic.rows_per_s,
        anchor_name: AUTOMERGE,
        anchor: am.rows_per_s,
        extra: vec![
            ("basic_round_trips", basic.round_trips.into()),
            ("anchor_round_trips", am.round_trips.into()),
            ("anchor_repetitions", repetitions.into()),
        ],
    });
    if let Some(pinner) = pinner {
        reporter.compare(Comparison {
            figure: &format!("first sync to a pinning peer, {shape}"),
            unit: "rows/s",
            basic: pinner.rows_per_s,
            anchor_name: AUTOMERGE,
            anchor: am.rows_per_s,
            extra: vec![
                ("commits_per_s", rounded(pinner.commits_per_s)),
                ("wire_mb_per_s", rounded(pinner.bytes as f64 / pinner.seconds / 1e6)),
                ("commit_mb_per_s", rounded(pinner.commit_bytes as f64 / pinner.seconds / 1e6)),
            ],
        });
    }
    reporter.compare(Comparison {
        figure: &format!("wire bytes per row on first sync, both directions, {shape}"),
        unit: "bytes/row",
        basic: basic.bytes as f64 / rows as f64,
        anchor_name: AUTOMERGE,
        anchor: am.bytes as f64 / rows as f64,
        extra: vec![(
            "basic_commit_bytes_per_row",
            rounded(basic.commit_bytes as f64 / rows as f64),
        )],
    });
    reporter.compare(Comparison {
        figure: "one-row resync after the first sync: bytes, both directions",
        unit: "bytes",
        basic: basic_resync.bytes as f64,
        anchor_name: AUTOMERGE,
        anchor: am_resync.bytes as f64,
        extra: vec![
            ("basic_round_trips", basic_resync.round_trips.into()),
            ("anchor_round_trips", am_resync.round_trips.into()),
            ("basic_commit_bytes", basic_resync.commit_bytes.into()),
            (
                "basic_protocol_bytes",
                basic_resync.bytes.saturating_sub(basic_resync.commit_bytes).into(),
            ),
        ],
    });

    // One row per commit (per transaction).
    reporter.note(&format!("compare: {single_rows} rows, one per commit, both sides"));
    let (am_single, _) = automerge_sync(single_rows, 1, 1)?;
    let (basic_single, _, _) = basic_sync(reporter, single_rows, 1, false)?;
    reporter.compare(Comparison {
        figure: &format!("first sync to a new device, {single_rows} single-row commits"),
        unit: "rows/s",
        basic: basic_single.rows_per_s,
        anchor_name: AUTOMERGE,
        anchor: am_single.rows_per_s,
        extra: vec![
            ("basic_round_trips", basic_single.round_trips.into()),
            ("anchor_round_trips", am_single.round_trips.into()),
        ],
    });
    reporter.compare(Comparison {
        figure: &format!(
            "wire bytes per row on first sync, both directions, {single_rows} single-row commits"
        ),
        unit: "bytes/row",
        basic: basic_single.bytes as f64 / single_rows as f64,
        anchor_name: AUTOMERGE,
        anchor: am_single.bytes as f64 / single_rows as f64,
        extra: vec![(
            "basic_commit_bytes_per_row",
            rounded(basic_single.commit_bytes as f64 / single_rows as f64),
        )],
    });
    Ok(AutomergeBytes {
        per_row_1000: am.bytes as f64 / rows as f64,
        per_row_single: am_single.bytes as f64 / single_rows as f64,
    })
}

/// automerge-rs: document A of `rows` rows in transactions of `per_change`,
/// synced into a fresh B `repetitions` times (median time), then one new
/// row synced with the kept states.
fn automerge_sync(rows: i64, per_change: i64, repetitions: usize) -> Result<(Sync, Resync), Error> {
    let mut a = Automerge::new();
    for first in (0..rows).step_by(per_change as usize) {
        let mut tx = a.transaction();
        for i in first..(first + per_change).min(rows) {
            put_row(&mut tx, i)?;
        }
        tx.commit();
    }
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..repetitions.max(1) {
        let mut b = Automerge::new();
        let (mut sa, mut sb) = (State::new(), State::new());
        let start = Instant::now();
        let (round_trips, bytes) = automerge_exchange(&mut a, &mut b, &mut sa, &mut sb)?;
        times.push(start.elapsed().as_secs_f64());
        if b.keys(ROOT).count() != rows as usize || a.get_heads() != b.get_heads() {
            return Err("automerge: B does not hold A's rows after the sync".into());
        }
        last = Some((b, sa, sb, round_trips, bytes));
    }
    let (mut b, mut sa, mut sb, round_trips, bytes) = last.ok_or("no repetition ran")?;
    let seconds = median(&mut times);
    let changes = (rows + per_change - 1) / per_change;
    let first = Sync {
        rows_per_s: rows as f64 / seconds,
        commits_per_s: changes as f64 / seconds,
        seconds,
        round_trips,
        bytes,
        commit_bytes: 0,
    };

    let mut tx = a.transaction();
    put_row(&mut tx, rows)?;
    tx.commit();
    let (round_trips, bytes) = automerge_exchange(&mut a, &mut b, &mut sa, &mut sb)?;
    if b.keys(ROOT).count() != rows as usize + 1 {
        return Err("automerge: B lacks the new row after the resync".into());
    }
    Ok((first, Resync { round_trips, bytes, commit_bytes: 0 }))
}

/// Row `i` as a map under `row-<i>` with fields `a`, `b`, `c`.
fn put_row(tx: &mut impl Transactable, i: i64) -> Result<(), Error> {
    let row = tx.put_object(ROOT, format!("row-{i}"), ObjType::Map)?;
    tx.put(&row, "a", text(i))?;
    tx.put(&row, "b", i)?;
    tx.put(&row, "c", true)?;
    Ok(())
}

/// Alternates `generate_sync_message` / `receive_sync_message` (each
/// message encoded and decoded, as on a wire) until neither side has a
/// message. Returns the round trips (messages of the busier direction) and
/// the bytes of every message, both directions.
fn automerge_exchange(
    a: &mut Automerge,
    b: &mut Automerge,
    sa: &mut State,
    sb: &mut State,
) -> Result<(u64, u64), Error> {
    let (mut a_to_b, mut b_to_a, mut bytes) = (0u64, 0u64, 0u64);
    loop {
        let mut moved = false;
        if let Some(message) = a.generate_sync_message(sa) {
            let encoded = message.encode();
            bytes += encoded.len() as u64;
            a_to_b += 1;
            b.receive_sync_message(sb, Message::decode(&encoded)?)?;
            moved = true;
        }
        if let Some(message) = b.generate_sync_message(sb) {
            let encoded = message.encode();
            bytes += encoded.len() as u64;
            b_to_a += 1;
            a.receive_sync_message(sa, Message::decode(&encoded)?)?;
            moved = true;
        }
        if !moved {
            return Ok((a_to_b.max(b_to_a), bytes));
        }
    }
}

/// Basic: a database holding `rows` rows in commits of `per_commit` (by
/// four apps), pulled by a new device through the sync protocol (frames
/// in memory), then one new row; and, if `pinner`, pulled by a pinning
/// peer (verified and stored as ciphertext).
fn basic_sync(
    reporter: &Reporter,
    rows: i64,
    per_commit: i64,
    pinner: bool,
) -> Result<(Sync, Resync, Option<Sync>), Error> {
    let source = fixture::open()?;
    let changes = (0..rows).step_by(per_commit as usize).map(|first| {
        fixture::changes("bench.items", (first..(first + per_commit).min(rows)).map(row).collect())
    });
    let written = fixture::commits(&source, changes);
    let commit_bytes: usize = written.iter().map(|c| c.as_bytes().len()).sum();
    let encoded: Vec<Vec<u8>> = written.iter().map(|c| c.as_bytes().to_vec()).collect();
    for chunk in encoded.chunks(1_000) {
        for outcome in source.db.ingest(chunk)? {
            outcome?;
        }
    }

    let (_target_dir, target) = fixture::second_device(&source)?;

    let mut link = LocalLink::new(&target, &source.db)?;
    // (A mark for a profiler attached from here on.)
    reporter.note("compare: timing the first sync to the new device");
    let start = Instant::now();
    let run = link.run(&target, &source.db, 0)?;
    let seconds = start.elapsed().as_secs_f64();
    reporter.note(&format!("compare: the first sync to the new device took {seconds:.2} s"));
    let held = target.query("SELECT count(*) FROM bench.items", &[], None)?;
    if held.rows.first().and_then(|r| r.first()) != Some(&Value::Integer(rows)) {
        return Err(format!("the new device holds {:?} rows, not {rows}", held.rows).into());
    }
    let first = Sync {
        rows_per_s: rows as f64 / seconds,
        commits_per_s: encoded.len() as f64 / seconds,
        seconds,
        round_trips: run.exchanges_a,
        bytes: run.bytes,
        commit_bytes: commit_bytes as u64,
    };

    let written = source.db.execute(
        "INSERT INTO bench.items (id, title, n, done) VALUES (?, ?, ?, true)",
        &[Value::Integer(rows), Value::Text(text(rows)), Value::Integer(rows)],
        None,
    )?;
    let basic_store::Executed::Written(written) = written else {
        return Err("an insert returned rows".into());
    };
    let mut new_bytes = 0;
    for id in &written.commits {
        new_bytes += source.db.replica().commit_bytes(id)?.map_or(0, |b| b.len());
    }
    let one = link.run(&target, &source.db, 1)?;
    let resync =
        Resync { round_trips: one.exchanges_a, bytes: one.bytes, commit_bytes: new_bytes as u64 };

    let pinned = if pinner {
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
        reporter.note("compare: timing the first sync to the pinning peer");
        let start = Instant::now();
        let run = pinning.run(&pinner, &source.db, 0)?;
        let seconds = start.elapsed().as_secs_f64();
        // The one new row goes too.
        Some(Sync {
            rows_per_s: (rows + 1) as f64 / seconds,
            commits_per_s: (encoded.len() + 1) as f64 / seconds,
            seconds,
            round_trips: run.exchanges_a,
            bytes: run.bytes,
            commit_bytes: (commit_bytes + new_bytes) as u64,
        })
    } else {
        None
    };
    Ok((first, resync, pinned))
}
