//! Basic's replica: one user's database on one device.
//!
//! The crate is built in layers, each a folder using only those before it:
//!
//! - `storage`: one ordered keyspace behind the [`Store`] trait (redb on a
//!   device, memory in tests and the simulator), the layout of the
//!   replica's records in it, and where secrets are kept;
//! - `replica`: commit logs, row states and their merge, the control log
//!   as this device uses it, and the scope keys it opens ([`Replica`]);
//! - `sql`: schemas, statements checked against them, the derived SQLite
//!   view, queries, writes turned into row operations, live queries;
//! - `database`: the [`Database`] facade, with its writer thread that
//!   group-commits and makes every write durable before it returns;
//! - `flows`: pairing, recovery, apps asking for access, export and
//!   import;
//! - [`sync`]: the replica as the sync protocol sees it, the change feed
//!   and the session driver every transport steps.
//!
//! Time and randomness come from an [`Environment`]. The public API is
//! what this page lists: the types re-exported here, and the [`storage`],
//! [`sync`] and [`secrets`] modules.
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

mod control_error;
mod database;
mod environment;
mod flows;
mod replica;
mod sql;
pub mod storage;
pub mod sync;
#[cfg(test)]
mod test_edits;
pub mod value_json;

pub use control_error::ControlError;
pub use database::{
    CACHE_BYTES, Database, DbError, Executed, IngestError, OpOutcome, VERIFIED_TOGETHER,
    WriteOutcome, make_private, scope_of,
};
pub use environment::{Environment, now_ms};
pub use flows::access::{
    ACCESS_CODE_PREFIX, ACCESS_FRESHNESS_MS, AccessAnswer, AccessAsk, AccessCode, AccessDenial,
    AccessError, AccessFrame, AccessPoll, AccessRefusal, AccessRelay, MAX_ACCESS_FRAME,
};
pub use flows::apps::{
    ANSWER_KEPT_MS, AccessRequest, Answered, AppInfo, Denied, MAX_APP_NAME, MAX_PENDING_REQUESTS,
    MAX_REQUEST_SCOPES, REQUEST_TTL_MS, RequestError, RequestId, Written,
};
pub use flows::export::{ExportError, ExportSummary, ImportSummary};
pub use flows::pairing::{
    Invite, JOIN_REQUEST_BYTES, JoinAnswer, JoinRequest, MAX_ADDRESSES, MAX_REFUSAL_LEN,
    PairingError,
};
pub use flows::recovery;
pub use replica::author::LogWriter;
pub use replica::scope_keys::ScopeKeys;
pub use replica::{
    Head, Inserted, Keyring, Outcome, Placed, Replica, RowChange, ScopeSummary, Txn, Unsettled,
};
pub use sql::live::{LiveError, Subscription};
pub use sql::query::{DEFAULT_BUDGET as DEFAULT_QUERY_BUDGET, QueryError, Rows};
pub use sql::schema::{
    AddedColumn, Catalog, ColumnSpec, Format, IndexDef, Migration, Refusal, Schema, SchemaError,
    TableDef,
};
pub use sql::write::WriteError;
pub use sql::{Caller, SqlError, parse as parse_sql};
pub use storage::device::DeviceStore;
pub use storage::kv::{Batch, Entry, MemStore, SledStore, Store, StoreError, scan_prefix};
pub use storage::lsm::LsmStore;
pub use storage::redb::RedbStore;
pub use storage::secrets;
pub use sync::SyncReplica;
