//! `compare`: each Basic figure beside its anchor, measured in this same
//! process on the same generated rows (shared/BENCH-ANCHORS.md describes
//! the anchor workloads):
//!
//! - first sync and one-row resync against automerge-rs 0.12 ([`sync`]),
//!   and every TCP byte between two real nodes ([`wire`]);
//! - ingest against plain SQLite upserts and against the crypto limit on
//!   as many threads as the ingest uses ([`apply`]);
//! - durable writes against sled's raw insert + flush, Basic's storage
//!   primitive alone (the LSM store), SQLite WAL `synchronous=FULL` and the disk's own
//!   `fdatasync` rate ([`durable`]);
//! - live latency under a fixed write rate, through a real `SELECT`.
//!
//! Only the ratios of one run mean much: the machine is shared.

mod apply;
mod durable;
mod sync;
mod wire;

use crate::report::Reporter;

type Error = Box<dyn std::error::Error>;

/// automerge-rs's bytes per row on a first sync, both directions.
#[derive(Debug, Default, Clone, Copy)]
struct AutomergeBytes {
    /// With 1,000 rows per change.
    per_row_1000: f64,
    /// With one row per change.
    per_row_single: f64,
}

/// The parts of `compare`, to run some only (`--only sync,durable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// First sync and one-row resync against automerge-rs.
    Sync,
    /// TCP bytes between two real nodes (measures automerge-rs's bytes too).
    Wire,
    /// Ingest against SQLite upserts and the crypto limit.
    Apply,
    /// Durable writes against sled, Basic's store alone, SQLite FULL and the disk.
    Durable,
    /// Live latency under a fixed write rate.
    Live,
}

/// Runs the parts in `only` (every part if empty).
pub(crate) fn run(reporter: &Reporter, quick: bool, only: &[Part]) -> Result<(), Error> {
    let wanted = |part| only.is_empty() || only.contains(&part);
    if wanted(Part::Sync) || wanted(Part::Wire) {
        let automerge = sync::run(reporter, quick)?;
        if wanted(Part::Wire) {
            wire::run(reporter, quick, &automerge)?;
        }
    }
    if wanted(Part::Apply) {
        apply::run(reporter, quick)?;
    }
    if wanted(Part::Durable) {
        durable::run(reporter, quick)?;
    }
    if wanted(Part::Live) {
        crate::live::fixed_rate(reporter, quick).map_err(|e| -> Error { e.to_string().into() })?;
    }
    Ok(())
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
