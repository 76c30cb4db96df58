//! The storage layer: an ordered key-value store behind the [`kv::Store`]
//! trait (sled on a device, memory in tests and the simulator, redb as a
//! measured alternative), how the replica lays its records out in it
//! ([`layout`]) and encodes row states ([`rows`]), and where secrets are
//! kept ([`secrets`]).

pub mod kv;
pub mod layout;
pub mod redb;
pub mod rows;
pub mod secrets;
