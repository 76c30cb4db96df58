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

use std::path::Path;

use basic_proto::codec;
use basic_proto::{ColumnDef, ColumnType, Name, RowKey, RowState, Value};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql, params_from_iter};

use crate::kv::{Store, StoreError};
use crate::replica::{Replica, RowChange};
use crate::schema::{Catalog, ColumnSpec, IndexDef, TableDef};

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
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A value as SQLite stores it in the view.
pub fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Integer(i) | Value::Timestamp(i) => SqlValue::Integer(*i),
        Value::Real(r) => SqlValue::Real(*r),
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Text(t) | Value::Json(t) => SqlValue::Text(t.clone()),
        Value::Bytes(b) => SqlValue::Blob(b.clone()),
    }
}

/// A query parameter.
#[derive(Debug)]
pub struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(to_sql(self.0)))
    }
}

/// A SQLite result value, typed by the column it came from when known.
pub fn from_sql(value: ValueRef<'_>, ty: Option<&ColumnType>) -> Value {
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

/// Opens the view's read-write connection at `path`.
pub fn open_writer(path: &Path) -> Result<Connection, ViewError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT"
    ))?;
    Ok(conn)
}

/// Opens a read-only connection for queries, limited by an authorizer to
/// reading schema tables: no writes, no `ATTACH`, no `PRAGMA`, nothing of
/// SQLite's own or ours.
pub fn open_reader(path: &Path) -> Result<Connection, ViewError> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.authorizer(Some(read_only_policy))?;
    Ok(conn)
}

/// The authorizer of query connections.
pub fn read_only_policy(context: AuthContext<'_>) -> Authorization {
    match context.action {
        AuthAction::Select | AuthAction::Recursive => Authorization::Allow,
        AuthAction::Function { function_name }
            if !function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Authorization::Allow
        }
        AuthAction::Read { table_name, .. } if is_schema_table(table_name) => Authorization::Allow,
        _ => Authorization::Deny,
    }
}

fn is_schema_table(name: &str) -> bool {
    !name.starts_with("sqlite_") && !name.starts_with('_') && Name::new(name).is_ok()
}

/// The watermark: how many replica transactions the view reflects.
pub fn watermark(conn: &Connection) -> Result<u64, ViewError> {
    let value: Option<i64> = conn
        .query_row(&format!("SELECT value FROM {META_TABLE} WHERE key = 'watermark'"), [], |row| {
            row.get(0)
        })
        .map(Some)
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
    Ok(value.map_or(0, |v| v as u64))
}

/// Records the watermark.
pub fn set_watermark(conn: &Connection, value: u64) -> Result<(), ViewError> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES ('watermark', ?1)"),
        [value as i64],
    )?;
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
pub fn sync_schema<S: Store>(
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
    let writer = RowWriter::new(catalog, table);
    for entry in replica.table_states(table.name()) {
        let (key_bytes, state) = entry?;
        writer.write(conn, &decode_key(&key_bytes)?, &state)?;
    }
    Ok(())
}

/// Drops every table of the view and fills it again from the replica.
pub fn rebuild<S: Store>(
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

/// Writes the rows a replica transaction changed.
pub fn apply(conn: &Connection, catalog: &Catalog, changes: &[RowChange]) -> Result<(), ViewError> {
    let mut writers: Vec<(&Name, RowWriter<'_>)> = Vec::new();
    for change in changes {
        let writer = match writers.iter().position(|(name, _)| **name == change.table) {
            Some(i) => &writers[i].1,
            None => {
                let Some(table) = catalog.table(&change.table) else { continue };
                writers.push((&change.table, RowWriter::new(catalog, table)));
                &writers[writers.len() - 1].1
            }
        };
        writer.write(conn, &change.key, &change.state)?;
    }
    Ok(())
}

/// How the rows of one table are written into the view: the statements
/// and, per column, where its value comes from.
struct RowWriter<'a> {
    table: &'a TableDef,
    upsert: String,
    delete: String,
    /// Per column: its place in the key, or its definition and default.
    columns: Vec<Source<'a>>,
}

enum Source<'a> {
    Key(usize),
    Cell { column: &'a ColumnSpec, def: Option<ColumnDef> },
}

impl<'a> RowWriter<'a> {
    fn new(catalog: &Catalog, table: &'a TableDef) -> Self {
        let name = quote(table.name().as_str());
        let names: Vec<String> = table.columns().iter().map(|c| quote(c.name.as_str())).collect();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
        let condition: Vec<String> = table
            .primary_key()
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", quote(c.as_str()), i + 1))
            .collect();
        let columns = table
            .columns()
            .iter()
            .map(|column| match table.primary_key().iter().position(|k| *k == column.name) {
                Some(i) => Source::Key(i),
                None => Source::Cell {
                    column,
                    def: catalog.value_def(table.name(), column.name.as_str()),
                },
            })
            .collect();
        RowWriter {
            table,
            upsert: format!(
                "INSERT OR REPLACE INTO {name} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            ),
            delete: format!("DELETE FROM {name} WHERE {}", condition.join(" AND ")),
            columns,
        }
    }

    /// Makes the view's copy of one row match its state.
    fn write(&self, conn: &Connection, key: &RowKey, state: &RowState) -> Result<(), ViewError> {
        if self.table.primary_key().len() != key.parts().len() {
            // A row written under another key shape: not representable here.
            return Ok(());
        }
        if !state.is_live() {
            let key_values = key.parts().iter().map(|p| to_sql(&p.to_value()));
            conn.prepare_cached(&self.delete)?.execute(params_from_iter(key_values))?;
            return Ok(());
        }
        let values = self.columns.iter().map(|source| match source {
            Source::Key(i) => to_sql(&key.parts()[*i].to_value()),
            Source::Cell { column, def } => to_sql(cell_value(column, def.as_ref(), state)),
        });
        conn.prepare_cached(&self.upsert)?.execute(params_from_iter(values))?;
        Ok(())
    }
}

/// The value a live row shows in `column`: its cell if it fits the column
/// (`def`, with references resolved), else the default, else NULL.
fn cell_value<'a>(
    column: &'a ColumnSpec,
    def: Option<&ColumnDef>,
    state: &'a RowState,
) -> &'a Value {
    const NULL: &Value = &Value::Null;
    match state.cells.get(&column.name) {
        Some(cell) if def.is_some_and(|def| def.check(&cell.value).is_ok()) => &cell.value,
        _ => column.default.as_ref().unwrap_or(NULL),
    }
}
