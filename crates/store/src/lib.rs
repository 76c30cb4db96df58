//! Basic's replica: one user's database on one device.
//!
//! Commit logs and merged row states live in one ordered keyspace behind
//! the [`Store`] trait (in memory for tests and the simulator, sled for the
//! node); [`Replica`] keeps them consistent.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![deny(missing_docs)]

pub mod author;
pub mod database;
pub mod export;
pub mod kv;
pub mod layout;
pub mod live;
pub mod query;
pub mod replica;
pub mod rows;
pub mod schema;
pub mod scope_keys;
pub mod sql;
pub mod view;
pub mod write;

pub use author::LogWriter;
pub use database::{Database, DbError, Executed, IngestError, WriteOutcome};
pub use export::{ExportError, ExportSummary, ImportSummary};
pub use kv::{Batch, MemStore, SledStore, Store, StoreError};
pub use live::Subscription;
pub use query::Rows;
pub use replica::{Head, Inserted, Keyring, Outcome, Replica, RowChange, Txn};
pub use schema::{
    AddedColumn, Catalog, ColumnSpec, Format, IndexDef, Migration, Refusal, Schema, SchemaError,
    TableDef,
};
