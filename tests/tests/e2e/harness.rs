//! The shared end-to-end harness ([`basic_testkit`]), run on this package's
//! `basic` binary.

pub(crate) use basic_testkit::*;

/// The `basic` binary (built from the node's library by this package).
pub(crate) const BASIC: &str = env!("CARGO_BIN_EXE_basic-e2e-node");
