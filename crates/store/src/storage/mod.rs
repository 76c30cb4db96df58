//! The storage layer: an ordered key-value store behind the [`kv::Store`]
//! trait (an LSM tree on a device, memory in tests and the simulator, redb and
//! sled read once to move an older replica: [`device`]), how the replica lays its records out in it
//! ([`layout`]) and encodes row states ([`rows`]), and where secrets are
//! kept ([`secrets`]).

pub mod device;
pub mod kv;
pub mod layout;
pub mod lsm;
mod lsm_files;
pub mod redb;
pub mod rows;
pub mod secrets;
mod wal;
