//! `compare`: each Basic figure beside its anchor, measured in this same
//! process on the same generated rows (shared/BENCH-ANCHORS.md describes
//! the anchor workloads):
//!
//! - first sync and one-row resync against automerge-rs 0.12 ([`sync`]),
//!   and every TCP byte between two real nodes ([`wire`]);
//! - ingest against plain SQLite upserts and against the crypto limit on
//!   as many threads as the ingest uses ([`apply`]);
//! - durable writes against sled's raw insert + flush, the same with
//!   Basic's fdatasync, SQLite WAL `synchronous=FULL` and the disk's own
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

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let automerge = sync::run(reporter, quick)?;
    wire::run(reporter, quick, &automerge)?;
    apply::run(reporter, quick)?;
    durable::run(reporter, quick)?;
    crate::live::fixed_rate(reporter, quick).map_err(|e| -> Error { e.to_string().into() })?;
    Ok(())
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
