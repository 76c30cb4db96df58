//! Basic's replica: one user's database on one device.
//!
//! Commit logs and merged row states live in one ordered keyspace behind
//! the [`Store`] trait (in memory for tests and the simulator, sled for the
//! node); [`Replica`] keeps them consistent. [`Database`] adds schemas, SQL
//! through a derived SQLite view, durable group-committed writes, live
//! queries, received commits, and export and import.
//!
//! ```
//! use basic_store::{Database, Executed, Format, Schema};
//! use basic_proto::Value;
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path())?;
//! db.apply_schema(Schema::parse(r#"
//!     namespace = "todo"
//!     [tables.items]
//!     primary_key = ["id"]
//!     columns = { id = "text", title = "text", done = { type = "bool", default = false } }
//! "#, Format::Toml)?)?;
//!
//! // A write is a signed, encrypted commit, on disk when execute returns.
//! db.execute("INSERT INTO todo.items (id, title) VALUES ('a', 'Buy milk')", &[], None)?;
//! let live = db.subscribe("SELECT title FROM todo.items WHERE NOT done", &[], None)?;
//! db.execute("UPDATE todo.items SET done = true WHERE id = ?", &[Value::Text("a".into())], None)?;
//!
//! let rows = db.query("SELECT id, done FROM todo.items", &[], None)?;
//! assert_eq!(rows.rows, [[Value::Text("a".into()), Value::Bool(true)]]);
//! # let first = live.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![deny(missing_docs)]

mod access;
pub mod apps;
pub mod author;
mod control_error;
pub mod database;
pub mod export;
pub mod kv;
pub mod layout;
pub mod live;
pub mod pairing;
pub mod query;
pub mod recovery;
pub mod replica;
pub mod rows;
pub mod schema;
pub mod scope_keys;
pub mod secrets;
pub mod sql;
pub mod sync;
#[cfg(test)]
mod test_edits;
pub mod value_json;
pub mod view;
pub mod write;

pub use apps::{AccessRequest, AppInfo, RequestError, RequestId, Written};
pub use author::LogWriter;
pub use control_error::ControlError;
pub use database::{Database, DbError, Environment, Executed, IngestError, WriteOutcome};
pub use export::{ExportError, ExportSummary, ImportSummary};
pub use kv::{Batch, MemStore, SledStore, Store, StoreError};
pub use live::Subscription;
pub use pairing::{Invite, JOIN_REQUEST_BYTES, JoinRequest, PairingError};
pub use query::Rows;
pub use replica::{
    Head, Inserted, Keyring, Outcome, Placed, Replica, RowChange, ScopeSummary, Txn,
};
pub use schema::{
    AddedColumn, Catalog, ColumnSpec, Format, IndexDef, Migration, Refusal, Schema, SchemaError,
    TableDef,
};
pub use sync::SyncReplica;
