//! The SQLite view: the live rows of every schema table, as typed SQLite
//! tables with their indexes, for queries.
//!
//! The view is derived: every row in it comes from a row state in the
//! [`Replica`], and the whole view can be rebuilt from the replica at any
//! time. It is written with `synchronous = OFF`; a counter kept both in the
//! replica and in the view (the watermark) tells, on opening, whether the
//! view holds exactly the replica's state, and if not it is rebuilt.
//!
//! Column types: text and json are `TEXT`, integer, bool (0/1) and
//! timestamp (µs) are `INTEGER`, real is `REAL`, bytes is `BLOB`; a
//! reference takes its key's type. Tables are `STRICT`. A cell whose value
//! does not fit its column (written by a peer with another schema) shows
//! as the column's default, or NULL.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use basic_proto::codec;
use basic_proto::{Cell, Cells, ColumnDef, ColumnType, KeyPart, Name, RowKey, RowState, Value};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, OpenFlags, ToSql, params_from_iter};

use crate::replica::{Replica, RowChange};
use crate::sql::schema::{Catalog, ColumnSpec, IndexDef, TableDef};
use crate::sql::{Caller, TABLE_FUNCTIONS};
use crate::storage::kv::{Store, StoreError};

/// Name of the view's own bookkeeping table.
const META_TABLE: &str = "_basic_meta";

/// A failure of the view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// SQLite reported an error.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Reading the replica failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The SQL type a column's values take in the view.
fn sql_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Text | ColumnType::Json => "TEXT",
        ColumnType::Integer | ColumnType::Bool | ColumnType::Timestamp => "INTEGER",
        ColumnType::Real => "REAL",
        ColumnType::Bytes => "BLOB",
        // Resolved through the catalog before we get here.
        ColumnType::Reference { .. } => "ANY",
    }
}

/// `"name"`, with quotes doubled: names are checked identifiers, but
/// quoting keeps every generated statement well-formed regardless.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A value as SQLite stores it in the view.
pub(crate) fn value_ref(value: &Value) -> ValueRef<'_> {
    match value {
        Value::Null => ValueRef::Null,
        Value::Integer(i) | Value::Timestamp(i) => ValueRef::Integer(*i),
        Value::Real(r) => ValueRef::Real(*r),
        Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
        Value::Text(t) | Value::Json(t) => ValueRef::Text(t.as_bytes()),
        Value::Bytes(b) => ValueRef::Blob(b),
    }
}

/// A key part as SQLite stores it in the view (as [`value_ref`] stores
/// the part's value).
pub(crate) fn key_ref(part: &KeyPart) -> ValueRef<'_> {
    match part {
        KeyPart::Integer(i) => ValueRef::Integer(*i),
        KeyPart::Text(t) => ValueRef::Text(t.as_bytes()),
        KeyPart::Bytes(b) => ValueRef::Blob(b),
    }
}

/// A query parameter.
#[derive(Debug)]
pub(crate) struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(value_ref(self.0)))
    }
}

/// A SQLite result value, typed by the column it came from when known.
pub(crate) fn from_sql(value: ValueRef<'_>, ty: Option<&ColumnType>) -> Value {
    match (value, ty) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(i), Some(ColumnType::Bool)) => Value::Bool(i != 0),
        (ValueRef::Integer(i), Some(ColumnType::Timestamp)) => Value::Timestamp(i),
        (ValueRef::Integer(i), _) => Value::Integer(i),
        (ValueRef::Real(r), _) => Value::Real(r),
        (ValueRef::Text(t), Some(ColumnType::Json)) => {
            Value::Json(String::from_utf8_lossy(t).into_owned())
        }
        (ValueRef::Text(t), _) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        (ValueRef::Blob(b), _) => Value::Bytes(b.to_vec()),
    }
}

/// VM instructions between two looks at a statement's deadline.
const PROGRESS_STEPS: i32 = 1000;

/// The longest string or blob (and record) a caller's statement may build,
/// in bytes (SQLite's `SQLITE_LIMIT_LENGTH`, 1 GB by default): past it
/// SQLite fails the statement at once with `SQLITE_TOOBIG` (see
/// [`is_too_big`]) instead of allocating the value. A cell holds at most
/// [`basic_proto::value::MAX_VALUE_LEN`] bytes, far below it.
pub(crate) const MAX_LENGTH: i32 = 16 << 20;

/// Opens the view's read-write connection at `path`, with its [`Gate`]:
/// outside [`Gate::enter`] it maintains the view unhindered; inside, it
/// evaluates a caller's statement under the caller's limits.
pub(crate) fn open_writer(path: &Path) -> Result<(Connection, Gate), ViewError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT"
    ))?;
    let gate = Gate::install(&mut conn, true)?;
    Ok((conn, gate))
}

/// Opens a read-only connection for queries, with its [`Gate`]: nothing
/// runs on it outside [`Gate::enter`].
pub(crate) fn open_reader(path: &Path) -> Result<(Connection, Gate), ViewError> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    let gate = Gate::install(&mut conn, false)?;
    Ok((conn, gate))
}

/// Eponymous virtual tables of the bundled SQLite that take no `CREATE`
/// (besides the `pragma_` ones): real tables as far as a caller goes.
const EPONYMOUS: [&str; 5] = ["dbstat", "json_each", "json_tree", "jsonb_each", "jsonb_tree"];

/// The tables one caller's SQL may read, by their names in the view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Reach {
    /// Schema tables within reach.
    tables: BTreeSet<String>,
    /// Schema tables out of reach.
    others: BTreeSet<String>,
}

impl Reach {
    /// What `caller` may read of `catalog`: every table for the owner, the
    /// tables of its granted scopes for an app.
    pub(crate) fn of(caller: &Caller, catalog: &Catalog) -> Self {
        let (tables, others) = catalog
            .schemas()
            .flat_map(|schema| schema.tables())
            .map(TableDef::name)
            .partition::<Vec<_>, _>(|table| caller.may_read(table));
        let names = |tables: Vec<&Name>| tables.iter().map(|t| t.as_str().to_owned()).collect();
        Self { tables: names(tables), others: names(others) }
    }

    /// Whether `table` (as SQLite names it) is within reach.
    pub(crate) fn contains(&self, table: &str) -> bool {
        self.tables.contains(table)
    }

    /// Whether SQLite could resolve `table` (lowercase) to a table of its
    /// own, of the view, or a virtual table, rather than a `WITH` table.
    fn is_real(&self, table: &str) -> bool {
        self.tables.contains(table)
            || self.others.contains(table)
            || table.starts_with("sqlite_")
            || table.starts_with("pragma_")
            || table.starts_with('_')
            || EPONYMOUS.contains(&table)
    }
}

/// What a gate lets through right now.
#[derive(Debug, Default)]
struct Limits {
    /// Inside [`Gate::enter`]: the caller's tables and deadline.
    entered: Option<(Arc<Reach>, Instant)>,
    /// The reach of the statements in the connection's cache.
    cached: Option<Arc<Reach>>,
}

/// The authorizer and progress handler of a connection that runs callers'
/// SQL, installed once; [`Gate::enter`] sets, for one statement, what it
/// may read and until when it may run.
///
/// Inside, the authorizer (consulted when SQLite prepares a statement, so
/// wherever SQLite resolves a table, whatever the SQL parser made of the
/// text) allows reading the caller's tables and the JSON table functions,
/// selecting and calling functions other than `load_extension`; it denies
/// every other read (SQLite's own tables, the view's bookkeeping, pragma
/// tables, other callers' tables), every write, `ATTACH`, `PRAGMA` and
/// transaction control. The progress handler interrupts the statement at
/// its deadline. Outside, a maintenance connection runs anything and a
/// query connection nothing.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    limits: Arc<Mutex<Limits>>,
    /// A maintenance connection: its statement cache holds the view's own
    /// statements, so callers' statements are never cached on it.
    maintenance: bool,
}

impl Gate {
    fn install(conn: &mut Connection, maintenance: bool) -> Result<Self, ViewError> {
        let limits = Arc::new(Mutex::new(Limits::default()));
        let shared = Arc::clone(&limits);
        conn.authorizer(Some(move |context: AuthContext<'_>| {
            let limits = shared.lock().unwrap_or_else(PoisonError::into_inner);
            match &limits.entered {
                Some((reach, _)) => authorize(reach, &context),
                None if maintenance => Authorization::Allow,
                None => Authorization::Deny,
            }
        }))?;
        if !maintenance {
            conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_LENGTH)?;
        }
        let shared = Arc::clone(&limits);
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || {
                let limits = shared.lock().unwrap_or_else(PoisonError::into_inner);
                limits.entered.as_ref().is_some_and(|(_, deadline)| Instant::now() >= *deadline)
            }),
        )?;
        Ok(Self { limits, maintenance })
    }

    /// Limits `conn` (the connection this gate was installed on) to
    /// `reach`, to `budget` of time and to values of [`MAX_LENGTH`], until
    /// the returned guard is dropped. On a query connection, statements
    /// cached under another reach are dropped first: SQLite asks the
    /// authorizer when it prepares a statement, not when it runs it. On a
    /// maintenance connection, prepare callers' statements without caching
    /// them; its length limit is lifted again when the guard is dropped.
    pub(crate) fn enter<'a>(
        &'a self,
        conn: &'a Connection,
        reach: &Arc<Reach>,
        budget: Duration,
    ) -> Entered<'a> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = limits
            .cached
            .as_ref()
            .is_some_and(|cached| !Arc::ptr_eq(cached, reach) && cached != reach);
        if !self.maintenance && changed {
            conn.flush_prepared_statement_cache();
        }
        limits.cached = Some(Arc::clone(reach));
        let deadline = Instant::now().checked_add(budget).unwrap_or_else(far_future);
        limits.entered = Some((Arc::clone(reach), deadline));
        // A query connection keeps the limit from its opening. Should
        // SQLite refuse the change (it cannot for this limit), the
        // statement runs under the default limit: a slower failure, no
        // harm to the view.
        let lifted = if self.maintenance {
            conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_LENGTH).ok()
        } else {
            None
        };
        Entered { gate: self, conn, lifted }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365)
}

/// A statement's limits, in force until dropped.
#[derive(Debug)]
pub(crate) struct Entered<'a> {
    gate: &'a Gate,
    conn: &'a Connection,
    /// A maintenance connection's length limit before [`Gate::enter`].
    lifted: Option<i32>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(length) = self.lifted {
            // Cannot fail: the limit and the value it had are valid.
            let _ = self.conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, length);
        }
        self.gate.limits.lock().unwrap_or_else(PoisonError::into_inner).entered = None;
    }
}

/// The authorizer's rule for a caller's statement.
fn authorize(reach: &Reach, context: &AuthContext<'_>) -> Authorization {
    match context.action {
        AuthAction::Select | AuthAction::Recursive => Authorization::Allow,
        AuthAction::Function { function_name }
            if !function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Authorization::Allow
        }
        AuthAction::Read { table_name, column_name } => {
            // Names as written (a table named in FROM of which no column
            // is read) or as defined (a column read): SQLite folds ASCII.
            let table = table_name.to_ascii_lowercase();
            let granted = (reach.contains(&table) || TABLE_FUNCTIONS.contains(&table.as_str()))
                && context.database_name.is_none_or(|db| db == "main");
            // A WITH table counted without reading a column (count(*)).
            let with_table =
                context.database_name.is_none() && column_name.is_empty() && !reach.is_real(&table);
            if granted || with_table { Authorization::Allow } else { Authorization::Deny }
        }
        _ => Authorization::Deny,
    }
}

/// Whether a SQLite error is an interruption by a gate's deadline.
pub(crate) fn is_interrupt(error: &rusqlite::Error) -> bool {
    error_code(error) == Some(rusqlite::ErrorCode::OperationInterrupted)
}

/// Whether a SQLite error is a value built past [`MAX_LENGTH`] by a
/// caller's statement (`string or blob too big`).
#[cfg(test)]
pub(crate) fn is_too_big(error: &rusqlite::Error) -> bool {
    error_code(error) == Some(rusqlite::ErrorCode::TooBig)
}

/// Whether a SQLite error is a refusal by a gate's authorizer (SQLite
/// reports a refused function as a plain error, with its own message).
pub(crate) fn is_denied(error: &rusqlite::Error) -> bool {
    let message = match error {
        rusqlite::Error::SqlInputError { msg, .. } => Some(msg.as_str()),
        rusqlite::Error::SqliteFailure(_, msg) => msg.as_deref(),
        _ => None,
    };
    error_code(error) == Some(rusqlite::ErrorCode::AuthorizationForStatementDenied)
        || message.is_some_and(|m| m.starts_with("not authorized"))
}

fn error_code(error: &rusqlite::Error) -> Option<rusqlite::ErrorCode> {
    match error {
        rusqlite::Error::SqlInputError { error, .. } => Some(error.code),
        other => other.sqlite_error_code(),
    }
}

fn is_schema_table(name: &str) -> bool {
    !name.starts_with("sqlite_") && !name.starts_with('_') && Name::new(name).is_ok()
}

/// The watermark: how many replica transactions the view reflects.
pub(crate) fn watermark(conn: &Connection) -> Result<u64, ViewError> {
    let value: Option<i64> = conn
        .query_row(&format!("SELECT value FROM {META_TABLE} WHERE key = 'watermark'"), [], |row| {
            row.get(0)
        })
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
    Ok(value.map_or(0, |v| v as u64))
}

/// Records the watermark (on the writer's connection, once per group: the
/// statement is cached, not parsed again each time).
pub(crate) fn set_watermark(conn: &Connection, value: u64) -> Result<(), ViewError> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES ('watermark', ?1)"
    ))?
    .execute([value as i64])?;
    Ok(())
}

/// The `CREATE TABLE` of `table` in the view (and in SQLite exports).
pub(crate) fn create_table_sql(catalog: &Catalog, table: &TableDef) -> String {
    let columns: Vec<String> =
        table.columns().iter().map(|column| column_sql(catalog, table, column)).collect();
    let key: Vec<String> = table.primary_key().iter().map(|c| quote(c.as_str())).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({})) STRICT",
        quote(table.name().as_str()),
        columns.join(", "),
        key.join(", ")
    )
}

fn column_sql(catalog: &Catalog, table: &TableDef, column: &ColumnSpec) -> String {
    let ty = catalog.value_type(table.name(), column.name.as_str()).unwrap_or(ColumnType::Bytes);
    format!("{} {}", quote(column.name.as_str()), sql_type(&ty))
}

/// The `CREATE INDEX` of `index` in the view (and in SQLite exports).
pub(crate) fn create_index_sql(index: &IndexDef) -> String {
    let columns: Vec<String> = index.columns.iter().map(|c| quote(c.as_str())).collect();
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
        quote(&index.name),
        quote(index.table.as_str()),
        columns.join(", ")
    )
}

/// Columns the view's copy of `table` has.
fn existing_columns(conn: &Connection, table: &Name) -> Result<Vec<String>, ViewError> {
    let mut statement = conn.prepare(&format!(
        "SELECT name FROM pragma_table_info({})",
        quote_literal(table.as_str())
    ))?;
    let names =
        statement.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<_, _>>()?;
    Ok(names)
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Brings the view's tables, columns and indexes up to `catalog`, refilling
/// from the replica every table it creates or extends. Returns the tables
/// refilled.
pub(crate) fn sync_schema<S: Store>(
    conn: &Connection,
    catalog: &Catalog,
    replica: &Replica<S>,
) -> Result<Vec<Name>, ViewError> {
    let mut refilled = Vec::new();
    for schema in catalog.schemas() {
        for table in schema.tables() {
            let existing = existing_columns(conn, table.name())?;
            let changed = if existing.is_empty() {
                conn.execute_batch(&create_table_sql(catalog, table))?;
                true
            } else {
                let missing: Vec<&ColumnSpec> = table
                    .columns()
                    .iter()
                    .filter(|c| !existing.iter().any(|e| e == c.name.as_str()))
                    .collect();
                for column in &missing {
                    conn.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {}",
                        quote(table.name().as_str()),
                        column_sql(catalog, table, column)
                    ))?;
                }
                !missing.is_empty()
            };
            for index in table.indexes() {
                conn.execute_batch(&create_index_sql(index))?;
            }
            if changed {
                refill(conn, catalog, table, replica)?;
                refilled.push(table.name().clone());
            }
        }
    }
    Ok(refilled)
}

/// Replaces the view's copy of `table` with the replica's live rows.
fn refill<S: Store>(
    conn: &Connection,
    catalog: &Catalog,
    table: &TableDef,
    replica: &Replica<S>,
) -> Result<(), ViewError> {
    conn.execute(&format!("DELETE FROM {}", quote(table.name().as_str())), [])?;
    let mut writer = RowWriter::new(conn, table, Arc::new(RowPlan::new(catalog, table)))?;
    for entry in replica.table_states(table.name()) {
        let (key_bytes, state) = entry?;
        writer.write(&decode_key(&key_bytes)?, &state)?;
    }
    Ok(())
}

/// Drops every table of the view and fills it again from the replica.
pub(crate) fn rebuild<S: Store>(
    conn: &Connection,
    catalog: &Catalog,
    replica: &Replica<S>,
) -> Result<(), ViewError> {
    let tables: Vec<String> = {
        let mut statement = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
        let names = statement
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        names.into_iter().filter(|name| is_schema_table(name)).collect()
    };
    for table in tables {
        conn.execute_batch(&format!("DROP TABLE {}", quote(&table)))?;
    }
    sync_schema(conn, catalog, replica)?;
    Ok(())
}

fn decode_key(bytes: &[u8]) -> Result<RowKey, StoreError> {
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "row key", reason: e.to_string() };
    let value = codec::parse(bytes, "row key", bytes.len()).map_err(corrupt)?;
    RowKey::from_cbor(value, "row key").map_err(corrupt)
}

/// Writes `changes` into the view, each table's rows by its plan in
/// `plans` (made at its first row while the catalog stays the same).
pub(crate) fn apply(
    conn: &Connection,
    catalog: &Catalog,
    plans: &mut RowPlans,
    changes: &[RowChange<'_>],
) -> Result<(), ViewError> {
    if plans.generation != catalog.generation() {
        *plans = RowPlans { generation: catalog.generation(), tables: HashMap::new() };
    }
    let mut writers: Vec<(&Name, RowWriter<'_>)> = Vec::new();
    for change in changes {
        let writer = match writers.iter().position(|(name, _)| *name == change.table) {
            Some(i) => &mut writers[i].1,
            None => {
                let Some(table) = catalog.table(change.table) else { continue };
                let plan = plans
                    .tables
                    .entry(change.table.clone())
                    .or_insert_with(|| Arc::new(RowPlan::new(catalog, table)));
                writers.push((change.table, RowWriter::new(conn, table, Arc::clone(plan))?));
                let last = writers.len() - 1;
                &mut writers[last].1
            }
        };
        writer.write(change.key, change.state)?;
    }
    Ok(())
}

/// How each table's rows are written into the view, made from one
/// catalog generation ([`Catalog::generation`]).
#[derive(Default)]
pub(crate) struct RowPlans {
    /// The generation the plans were made from (0 before any: no catalog
    /// has it).
    generation: u64,
    tables: HashMap<Name, Arc<RowPlan>>,
}

/// How the rows of one table are written into the view: the statements'
/// text and, per column, where its value comes from.
struct RowPlan {
    upsert: String,
    delete: String,
    /// Per column: its place in the key, or its definition.
    columns: Vec<Source>,
    /// The value columns' places in `columns` and names, in name order:
    /// matched against a row's cells (also in name order) in one pass.
    by_name: Vec<(usize, Name)>,
}

enum Source {
    Key(usize),
    /// The column's definition with references resolved
    /// ([`Catalog::value_def`]); `None` if the catalog cannot tell.
    Cell(Option<ColumnDef>),
}

impl RowPlan {
    fn new(catalog: &Catalog, table: &TableDef) -> Self {
        let name = quote(table.name().as_str());
        let names: Vec<String> = table.columns().iter().map(|c| quote(c.name.as_str())).collect();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let condition: Vec<String> = table
            .primary_key()
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", quote(c.as_str()), i + 1))
            .collect();
        let columns: Vec<Source> = table
            .columns()
            .iter()
            .map(|column| match table.primary_key().iter().position(|k| *k == column.name) {
                Some(i) => Source::Key(i),
                None => Source::Cell(catalog.value_def(table.name(), column.name.as_str())),
            })
            .collect();
        let mut by_name: Vec<(usize, Name)> = (columns.iter().enumerate())
            .filter(|(_, source)| matches!(source, Source::Cell(_)))
            .map(|(i, _)| (i, table.columns()[i].name.clone()))
            .collect();
        by_name.sort_by(|a, b| a.1.cmp(&b.1));
        // An existing row is updated in place: the index entries of the
        // columns that keep their value stay as they are (a replace deletes
        // the row and inserts it again, with every index entry).
        let key: Vec<String> = table.primary_key().iter().map(|c| quote(c.as_str())).collect();
        let updates: Vec<String> = (names.iter().zip(&columns))
            .filter(|(_, source)| matches!(source, Source::Cell(_)))
            .map(|(column, _)| format!("{column} = excluded.{column}"))
            .collect();
        let on_conflict = match updates.is_empty() {
            true => "DO NOTHING".to_owned(),
            false => format!("DO UPDATE SET {}", updates.join(", ")),
        };
        RowPlan {
            upsert: format!(
                "INSERT INTO {name} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
                names.join(", "),
                placeholders.join(", "),
                key.join(", ")
            ),
            delete: format!("DELETE FROM {name} WHERE {}", condition.join(" AND ")),
            columns,
            by_name,
        }
    }
}

/// Writes the rows of one table by its plan, the statements prepared once
/// for a whole batch of rows.
struct RowWriter<'a> {
    conn: &'a Connection,
    table: &'a TableDef,
    plan: Arc<RowPlan>,
    upsert: CachedStatement<'a>,
    /// Prepared at the first deleted row.
    delete: Option<CachedStatement<'a>>,
    /// Per column, for the row being written: the place of its cell among
    /// the row's cells, if it has one.
    found: Vec<Option<usize>>,
}

impl<'a> RowWriter<'a> {
    fn new(
        conn: &'a Connection,
        table: &'a TableDef,
        plan: Arc<RowPlan>,
    ) -> Result<Self, ViewError> {
        Ok(RowWriter {
            conn,
            table,
            upsert: conn.prepare_cached(&plan.upsert)?,
            delete: None,
            found: vec![None; plan.columns.len()],
            plan,
        })
    }

    /// Makes the view's copy of one row match its state.
    fn write(&mut self, key: &RowKey, state: &RowState) -> Result<(), ViewError> {
        if self.table.primary_key().len() != key.parts().len() {
            // A row written under another key shape: not representable here.
            return Ok(());
        }
        if !state.is_live() {
            let key_values = key.parts().iter().map(|p| ToSqlOutput::Borrowed(key_ref(p)));
            let delete = match &mut self.delete {
                Some(delete) => delete,
                None => self.delete.insert(self.conn.prepare_cached(&self.plan.delete)?),
            };
            delete.execute(params_from_iter(key_values))?;
            return Ok(());
        }
        find_cells(&self.plan.by_name, &state.cells, &mut self.found);
        let specs = self.table.columns();
        let sources = self.plan.columns.iter().zip(specs).zip(&self.found);
        let values = sources.map(|((source, column), found)| {
            ToSqlOutput::Borrowed(match source {
                Source::Key(i) => key_ref(&key.parts()[*i]),
                Source::Cell(def) => {
                    let cell = found.and_then(|i| state.cells.get_indexed(i)).map(|(_, c)| c);
                    value_ref(cell_value(column, def.as_ref(), cell))
                }
            })
        });
        self.upsert.execute(params_from_iter(values))?;
        Ok(())
    }
}

/// Sets `found[column]` to the place among `cells` of the cell of each
/// `(column, name)` of `by_name`, or `None`: both in name order, walked
/// side by side.
fn find_cells(by_name: &[(usize, Name)], cells: &Cells, found: &mut [Option<usize>]) {
    found.fill(None);
    let mut cells = cells.iter().enumerate().peekable();
    for (column, name) in by_name {
        while cells.next_if(|(_, (cell, _))| *cell < name).is_some() {}
        if let Some((i, _)) = cells.next_if(|(_, (cell, _))| *cell == name) {
            found[*column] = Some(i);
        }
    }
}

/// The value a live row shows in `column`: its `cell` if it fits the
/// column (`def`, with references resolved), else the default, else NULL.
fn cell_value<'a>(
    column: &'a ColumnSpec,
    def: Option<&ColumnDef>,
    cell: Option<&'a Cell>,
) -> &'a Value {
    const NULL: &Value = &Value::Null;
    match cell {
        Some(cell) if def.is_some_and(|def| def.check(&cell.value).is_ok()) => &cell.value,
        _ => column.default.as_ref().unwrap_or(NULL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each column finds its own cell, whatever cells the others or no
    /// column have.
    #[test]
    fn columns_find_their_cells() {
        let name = |n: &str| Name::new(n).unwrap();
        let (a, b, d) = (name("a"), name("b"), name("d"));
        let stamp = basic_proto::Stamp {
            hlc: basic_proto::Hlc { wall_ms: 1, counter: 0 },
            author: basic_proto::AuthorId([1; 32]),
        };
        let cells: Cells = ["a", "c", "d", "e"]
            .into_iter()
            .map(|n| (name(n), Cell { stamp, value: Value::Null }))
            .collect();
        let mut found = vec![Some(9); 4];
        find_cells(&[(2, a.clone()), (0, b), (1, d)], &cells, &mut found);
        assert_eq!(found, [None, Some(2), Some(0), None]);
        find_cells(&[(3, a)], &Cells::new_vec(), &mut found);
        assert_eq!(found, [None; 4]);
    }

    /// Version `columns` (besides the key `id`) of namespace `todo`, with
    /// one table, `items`.
    fn todo_version(columns: &str) -> crate::sql::schema::Schema {
        let text = format!(
            "namespace = \"todo\"\n[tables.items]\nprimary_key = [\"id\"]\n\
             columns = {{ id = \"text\"{columns} }}"
        );
        crate::sql::schema::Schema::parse(&text, crate::sql::schema::Format::Toml).unwrap()
    }

    /// A live row state with `cells`.
    fn live(cells: &[(&str, Value)]) -> RowState {
        let stamp = basic_proto::Stamp {
            hlc: basic_proto::Hlc { wall_ms: 1, counter: 0 },
            author: basic_proto::AuthorId([1; 32]),
        };
        RowState {
            generation: 1,
            cells: (cells.iter())
                .map(|(n, value)| (Name::new(*n).unwrap(), Cell { stamp, value: value.clone() }))
                .collect(),
        }
    }

    /// A view file holding the tables of `catalog`.
    fn view_of(catalog: &Catalog) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _gate) = open_writer(&dir.path().join("view.sqlite")).unwrap();
        for table in catalog.schemas().flat_map(|schema| schema.tables()) {
            conn.execute_batch(&create_table_sql(catalog, table)).unwrap();
        }
        (dir, conn)
    }

    /// A table's plan is made again once the catalog changes: a column a
    /// new schema version adds is written, not left at its default by the
    /// plan of the version before.
    #[test]
    fn plans_follow_the_catalog() {
        let mut catalog = Catalog::new();
        catalog.apply(todo_version(r#", title = "text""#)).unwrap();
        let (_dir, conn) = view_of(&catalog);
        let table = Name::new("todo.items").unwrap();
        let key = RowKey::single(KeyPart::Text("a".into()));
        let mut plans = RowPlans::default();
        let milk = live(&[("title", Value::Text("milk".into()))]);
        apply(&conn, &catalog, &mut plans, &[RowChange { table: &table, key: &key, state: &milk }])
            .unwrap();

        let before = catalog.generation();
        let mut copy = catalog.clone();
        assert_eq!(copy.generation(), before);
        copy.apply(todo_version(r#", id2 = "text""#)).unwrap_err();
        assert_eq!(copy.generation(), before, "a refused version changes nothing");
        let v2 = todo_version(r#", title = "text", done = { type = "bool", default = false }"#);
        catalog.apply(v2).unwrap();
        assert_ne!(catalog.generation(), before);
        conn.execute_batch(r#"ALTER TABLE "todo.items" ADD COLUMN done INTEGER"#).unwrap();
        let done = live(&[("done", Value::Bool(true)), ("title", Value::Text("milk".into()))]);
        apply(&conn, &catalog, &mut plans, &[RowChange { table: &table, key: &key, state: &done }])
            .unwrap();
        assert_eq!(run(&conn, r#"SELECT done FROM "todo.items""#).unwrap(), ["Integer(1)"]);
    }

    /// A row written again is updated in place, whether the table has
    /// columns besides its key or none.
    #[test]
    fn a_row_written_again_is_updated() {
        let mut catalog = Catalog::new();
        catalog.apply(todo_version(r#", title = "text", note = "text""#)).unwrap();
        let keys_only = "namespace = \"tags\"\n[tables.names]\nprimary_key = [\"name\"]\n\
                         columns = { name = \"text\" }";
        let tags = crate::sql::schema::Schema::parse(keys_only, crate::sql::schema::Format::Toml);
        catalog.apply(tags.unwrap()).unwrap();
        let (_dir, conn) = view_of(&catalog);
        let (items, names) = (Name::new("todo.items").unwrap(), Name::new("tags.names").unwrap());
        let (a, b) = (KeyPart::Text("a".into()), KeyPart::Text("b".into()));
        let (a, b) = (RowKey::single(a), RowKey::single(b));
        let text = |t: &str| Value::Text(t.into());
        let first = live(&[("note", text("n")), ("title", text("milk"))]);
        let second = live(&[("title", text("eggs"))]);
        let other = live(&[("title", text("tea"))]);
        let bare = live(&[]);
        let mut plans = RowPlans::default();
        let change = |table, key, state| RowChange { table, key, state };
        let changes = [
            change(&items, &a, &first),
            change(&items, &b, &other),
            change(&names, &a, &bare),
            change(&items, &a, &second),
            change(&names, &a, &bare),
        ];
        apply(&conn, &catalog, &mut plans, &changes).unwrap();
        let rows = run(
            &conn,
            r#"SELECT id || ':' || title || ':' || ifnull(note, '-') FROM "todo.items" ORDER BY id"#,
        );
        assert_eq!(rows.unwrap(), [r#"Text("a:eggs:-")"#, r#"Text("b:tea:-")"#]);
        assert_eq!(run(&conn, r#"SELECT name FROM "tags.names""#).unwrap(), [r#"Text("a")"#]);
    }

    /// A view file with `todo.items` and `contacts.people`, a writer and a
    /// reader.
    fn view() -> (tempfile::TempDir, (Connection, Gate), (Connection, Gate)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.sqlite");
        let writer = open_writer(&path).unwrap();
        writer
            .0
            .execute_batch(
                r#"CREATE TABLE "todo.items" (id TEXT PRIMARY KEY, title TEXT);
                   CREATE TABLE "contacts.people" (name TEXT PRIMARY KEY);
                   INSERT INTO "todo.items" VALUES ('a', 'milk');
                   INSERT INTO "contacts.people" VALUES ('Ada');"#,
            )
            .unwrap();
        let reader = open_reader(&path).unwrap();
        (dir, writer, reader)
    }

    fn todo_only() -> Arc<Reach> {
        Arc::new(Reach {
            tables: ["todo.items".to_owned()].into_iter().collect(),
            others: ["contacts.people".to_owned()].into_iter().collect(),
        })
    }

    fn run(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
        let mut statement = conn.prepare_cached(sql)?;
        let rows = statement.query_map([], |row| row.get::<_, rusqlite::types::Value>(0))?;
        rows.map(|row| row.map(|value| format!("{value:?}"))).collect()
    }

    /// What the parser refuses, the authorizer refuses too, wherever SQLite
    /// resolves the table.
    #[test]
    fn the_authorizer_holds_a_caller_to_its_tables() {
        let (_dir, _writer, (conn, gate)) = view();
        let budget = Duration::from_secs(5);
        let _entered = gate.enter(&conn, &todo_only(), budget);
        assert_eq!(run(&conn, r#"SELECT title FROM "todo.items""#).unwrap().len(), 1);
        assert_eq!(run(&conn, "SELECT value FROM json_each('[1, 2]')").unwrap().len(), 2);
        for sql in [
            "WITH a AS (SELECT 1) SELECT count(*) FROM a",
            "WITH a AS MATERIALIZED (SELECT 1) SELECT count(*) FROM a, a AS b",
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r LIMIT 3) \
             SELECT count(*) FROM r",
            "SELECT count(*) FROM (SELECT 1)",
            r#"SELECT count(*) FROM "TODO.ITEMS""#,
        ] {
            assert_eq!(run(&conn, sql).unwrap().len(), 1, "{sql}");
        }
        assert_eq!(
            run(&conn, r#"WITH "contacts.people" AS (SELECT 1) SELECT * FROM "contacts.people""#)
                .unwrap(),
            ["Integer(1)"]
        );
        for sql in [
            r#"SELECT name FROM "contacts.people""#,
            r#"SELECT 1 WHERE 'Ada' IN "contacts.people""#,
            r#"SELECT id FROM "todo.items" UNION SELECT name FROM "contacts.people""#,
            r#"SELECT (SELECT name FROM "CONTACTS.PEOPLE")"#,
            r#"SELECT name FROM main."contacts.people""#,
            r#"SELECT count(*) FROM "contacts.people""#,
            r#"SELECT 1 FROM "contacts.people""#,
            r#"SELECT count(*) FROM main."contacts.people""#,
            r#"SELECT count(*) FROM "contacts.people" AS r"#,
            r#"SELECT (SELECT count(*) FROM "contacts.people")"#,
            r#"SELECT count(*) FROM "Contacts.People""#,
            r#"WITH "contacts.people" AS (SELECT 1) SELECT count(*) FROM "contacts.people""#,
            "SELECT count(*) FROM sqlite_master",
            "SELECT count(*) FROM dbstat",
            "SELECT name FROM dbstat",
            "SELECT count(*) FROM _basic_meta",
            "SELECT count(*) FROM pragma_table_list",
            "SELECT sql FROM sqlite_master",
            "SELECT sql FROM sqlite_schema",
            "SELECT sql FROM sqlite_temp_master",
            "SELECT value FROM _basic_meta",
            "SELECT name FROM pragma_table_info('contacts.people')",
            "SELECT name FROM pragma_table_list",
            "SELECT name FROM pragma_database_list",
            "SELECT load_extension('x')",
            "PRAGMA user_version",
            "PRAGMA writable_schema = 1",
            "ATTACH ':memory:' AS other",
            r#"INSERT INTO "todo.items" VALUES ('b', 'eggs')"#,
            r#"DELETE FROM "todo.items""#,
            "BEGIN",
        ] {
            match run(&conn, sql) {
                Err(error) => assert!(is_denied(&error), "{sql}: {error}"),
                Ok(rows) => panic!("{sql}: {rows:?}"),
            }
        }
    }

    #[test]
    fn a_statement_cached_for_one_caller_is_not_reused_for_another() {
        let (_dir, _writer, (conn, gate)) = view();
        let everything = Arc::new(Reach {
            tables: ["todo.items", "contacts.people"].into_iter().map(str::to_owned).collect(),
            others: BTreeSet::new(),
        });
        let sql = r#"SELECT name FROM "contacts.people""#;
        {
            let _entered = gate.enter(&conn, &everything, Duration::from_secs(5));
            assert_eq!(run(&conn, sql).unwrap(), ["Text(\"Ada\")"]);
        }
        let _entered = gate.enter(&conn, &todo_only(), Duration::from_secs(5));
        assert!(is_denied(&run(&conn, sql).unwrap_err()));
    }

    #[test]
    fn outside_a_statement_a_reader_runs_nothing_and_the_writer_anything() {
        let (_dir, (writer, writer_gate), (reader, _)) = view();
        assert!(is_denied(&run(&reader, r#"SELECT title FROM "todo.items""#).unwrap_err()));
        assert!(run(&writer, "SELECT count(*) FROM sqlite_master").is_ok());
        let _entered = writer_gate.enter(&writer, &todo_only(), Duration::from_secs(5));
        let mut statement =
            writer.prepare("SELECT count(*) FROM sqlite_master").unwrap_or_else(|error| {
                assert!(is_denied(&error), "{error}");
                writer.prepare("SELECT 1").unwrap()
            });
        assert!(statement.query_row([], |row| row.get::<_, i64>(0)).unwrap() == 1);
    }

    #[test]
    fn a_statement_is_stopped_at_its_deadline() {
        let (_dir, _writer, (conn, gate)) = view();
        let started = Instant::now();
        let _entered = gate.enter(&conn, &todo_only(), Duration::from_millis(100));
        let error = run(
            &conn,
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r",
        )
        .unwrap_err();
        assert!(is_interrupt(&error), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    /// A caller's statement cannot build a value over the length limit
    /// (it fails at once instead of allocating it), on a query connection
    /// and on the writer while entered; the writer's own maintenance is
    /// not limited.
    #[test]
    fn a_caller_cannot_build_a_huge_value() {
        let (_dir, (writer, writer_gate), (reader, reader_gate)) = view();
        let budget = Duration::from_secs(30);
        for (conn, gate) in [(&reader, &reader_gate), (&writer, &writer_gate)] {
            let started = Instant::now();
            let _entered = gate.enter(conn, &todo_only(), budget);
            for sql in [
                "SELECT zeroblob(1000000000)",
                "SELECT length(zeroblob(1000000000))",
                "SELECT length(randomblob(17000000))",
                "SELECT length(printf('%.*c', 17000000, 'x'))",
            ] {
                let error = run(conn, sql).unwrap_err();
                assert!(is_too_big(&error), "{sql}: {error}");
            }
            assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
            // Below the limit, values are fine.
            assert_eq!(
                run(conn, "SELECT length(zeroblob(1000000))").unwrap(),
                ["Integer(1000000)"]
            );
        }
        let big = "SELECT length(zeroblob(20000000))";
        assert_eq!(run(&writer, big).unwrap(), ["Integer(20000000)"]);
    }
}
