//! `ControlOp::decode` on arbitrary bytes, and the control log fed with what
//! decodes. Decoding must never panic; an op that decodes keeps exactly its
//! bytes and decodes again to itself; inserting any sequence of decoded ops
//! into a log and computing its state must not panic either.
//!
//! The input is either one encoded op or a CBOR array of encoded ops (the
//! seeds hold every op of `protocol-spec/vectors/control.json` in both
//! forms), so that reordered, repeated and dropped ops reach the log.

#![no_main]

use basic_proto::codec;
use basic_proto::control::ControlLog;
use basic_proto::keys::DatabaseId;
use basic_proto::{ControlOp, OpId};
use ciborium::Value;
use libfuzzer_sys::fuzz_target;

/// Wall time handed to the log: after every stamp in the vectors.
const NOW_MS: u64 = 1_795_900_000_000;

fn check(bytes: &[u8]) -> Option<ControlOp> {
    let op = ControlOp::decode(bytes).ok()?;
    assert_eq!(op.as_bytes(), bytes);
    assert_eq!(op.id(), OpId::of(bytes));
    assert_eq!(ControlOp::decode(op.as_bytes()).as_ref(), Ok(&op));
    Some(op)
}

fuzz_target!(|data: &[u8]| {
    let ops: Vec<ControlOp> = match codec::parse(data, "ops", 1 << 20) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Bytes(bytes) => check(&bytes),
                _ => None,
            })
            .collect(),
        _ => check(data).into_iter().collect(),
    };
    let Some(first) = ops.first() else { return };
    // The database is the genesis op's id, which every other op names.
    let database = if first.body().parents.is_empty() {
        DatabaseId(first.id().0)
    } else {
        first.body().database
    };
    let mut log = ControlLog::new(database);
    for op in ops {
        let _ = log.insert(op, NOW_MS);
    }
    let _ = log.state();
    let _ = log.ordered();
});
