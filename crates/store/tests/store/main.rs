//! The store's integration tests, one binary (one link, one file on disk):
//! each module is one area, its doc says which; `cargo test -p basic-store
//! --test store -- crash::` runs one module's tests. `secrets.rs` is a
//! binary of its own: it installs a keystore for its whole process.

mod common;

mod apps;
mod control;
mod crash;
mod custodial;
mod database;
mod export;
mod move_crash;
mod pairing;
mod pipeline;
mod recovery;
mod sql_access;
mod sync;
