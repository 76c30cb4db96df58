//! Turning an `INSERT`, `UPDATE` or `DELETE` into row operations.
//!
//! SQLite evaluates the statement's own expressions — its `VALUES` or
//! `SELECT`, its assignments, its `WHERE` — as a read on the view; each row
//! that comes back becomes one row operation, typed and checked against
//! the schema, with the generation the row's merge state calls for. An
//! `INSERT` whose `VALUES` holds bare `?` placeholders only is the one
//! exception: its rows are the parameters, exactly as SQLite would return
//! them (D53). Nothing is written here: the operations go into a signed
//! commit.
//!
//! The evaluation runs on the writer's connection entered in its
//! [`Gate`] for the caller, as a query would: only the caller's tables,
//! within the statement's time budget, at most [`MAX_ROWS`] rows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use basic_proto::json::check_json;
use basic_proto::{ColumnDef, ColumnType, KeyPart, LiteMap, Name, RowKey, RowOp, Value};
use rusqlite::Connection;
use rusqlite::types::{Value as SqlValue, ValueRef};

use crate::replica::Txn;
use crate::sql::query::{MAX_ROWS, QueryError};
use crate::sql::schema::{Catalog, TableDef, timestamp_from_text};
use crate::sql::view::{Gate, MAX_LENGTH, Param, Reach, quote, value_ref};
use crate::sql::{OnConflict, ParamRows, Statement};
use crate::storage::kv::{Store, StoreError};

/// Why a write was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// SQLite could not evaluate the statement's expressions.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Evaluating the statement ran past its time budget and was stopped.
    #[error(
        "the statement ran past its budget of {0:?} and was stopped: narrow it (WHERE, LIMIT, an index) or bound its recursion"
    )]
    Timeout(Duration),
    /// SQLite's authorizer refused a table or an action outside the
    /// caller's reach (SQLite's message).
    #[error("{0}: the statement reaches outside what this caller may read")]
    Denied(String),
    /// The statement would change more than 100,000 rows.
    #[error(
        "the statement changes more than {MAX_ROWS} rows: split it (WHERE, LIMIT in its SELECT)"
    )]
    TooManyRows,
    /// Reading the replica failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The table is not (or no longer) in the schema.
    #[error("no table {0} in the schema")]
    UnknownTable(Name),
    /// The statement names a column the table does not have.
    #[error("{table} has no column {column}")]
    UnknownColumn {
        /// The table.
        table: Name,
        /// The column as written.
        column: String,
    },
    /// A value does not fit its column.
    #[error("{table}.{column}: expected {expected}, got {found}")]
    Type {
        /// The table.
        table: Name,
        /// The column.
        column: String,
        /// The column's type.
        expected: String,
        /// What was given.
        found: String,
    },
    /// An `INSERT` leaves a non-nullable column without a value or default.
    #[error("{table}.{column} is required: it is not nullable and has no default")]
    MissingValue {
        /// The table.
        table: Name,
        /// The column.
        column: String,
    },
    /// An `INSERT` gives a different number of values than columns.
    #[error("INSERT into {table} gives {values} values for {columns} columns")]
    ValueCount {
        /// The table.
        table: Name,
        /// Values per row.
        values: usize,
        /// Columns to fill.
        columns: usize,
    },
    /// A plain `INSERT` of a key that already has a live row.
    #[error(
        "{table} already has a row with key {key}: use UPDATE, INSERT OR REPLACE or INSERT OR IGNORE"
    )]
    DuplicateKey {
        /// The table.
        table: Name,
        /// The key, as SQL literals.
        key: String,
    },
    /// An `UPDATE` of a primary-key column.
    #[error(
        "{table}.{column} is part of the primary key and cannot be updated: delete the row and insert it anew"
    )]
    KeyUpdate {
        /// The table.
        table: Name,
        /// The column.
        column: String,
    },
    /// A row that has been deleted and re-created so often it can live no more.
    #[error("{table} row {key} has reached the highest generation and cannot be written again")]
    GenerationCeiling {
        /// The table.
        table: Name,
        /// The key.
        key: String,
    },
}

/// What a caller's write may read, and for how long it may run.
#[derive(Debug, Clone)]
pub(crate) struct Bounds<'a> {
    /// The gate of the connection the write is evaluated on.
    pub gate: &'a Gate,
    /// The tables the caller may read.
    pub reach: Arc<Reach>,
    /// The statement's time budget.
    pub budget: Duration,
}

/// Plans a write statement, evaluating it on `conn` (within `bounds`)
/// against the state in `txn`: one operation per row changed, at most one
/// per row. A `SELECT` plans nothing.
pub(crate) fn plan<S: Store>(
    conn: &Connection,
    bounds: &Bounds<'_>,
    catalog: &Catalog,
    txn: &Txn<'_, S>,
    statement: &Statement,
    params: &[Value],
) -> Result<Vec<RowOp>, WriteError> {
    if statement.written_table().is_none() {
        return Ok(Vec::new());
    }
    let _entered = bounds.gate.enter(conn, &bounds.reach, bounds.budget);
    let budget = bounds.budget;
    plan_entered(conn, catalog, txn, statement, params).map_err(|error| match error {
        WriteError::Sqlite(error) => match QueryError::classify(error, budget) {
            QueryError::Timeout(budget) => WriteError::Timeout(budget),
            QueryError::Denied(reason) => WriteError::Denied(reason),
            QueryError::Sqlite(error) => WriteError::Sqlite(error),
            QueryError::TooManyRows => WriteError::TooManyRows,
        },
        other => other,
    })
}

fn plan_entered<S: Store>(
    conn: &Connection,
    catalog: &Catalog,
    txn: &Txn<'_, S>,
    statement: &Statement,
    params: &[Value],
) -> Result<Vec<RowOp>, WriteError> {
    let Some(name) = statement.written_table() else { return Ok(Vec::new()) };
    let table = catalog.table(name).ok_or_else(|| WriteError::UnknownTable(name.clone()))?;
    let typer = Typer { catalog, table };
    match statement {
        Statement::Insert { columns, source, on_conflict, param_rows, .. } => {
            let rows = match param_rows.and_then(|shape| bound_rows(shape, params)) {
                Some(rows) => rows?,
                None => evaluate(conn, source, params)?,
            };
            insert(&typer, txn, columns, rows, *on_conflict)
        }
        Statement::Update { alias, assignments, filter, .. } => {
            update(conn, &typer, txn, alias, assignments, filter.as_deref(), params)
        }
        Statement::Delete { alias, filter, .. } => {
            delete(conn, &typer, txn, alias, filter.as_deref(), params)
        }
        Statement::Select { .. } => Ok(Vec::new()),
    }
}

/// Converts evaluated SQLite values into typed values of one table.
struct Typer<'a> {
    catalog: &'a Catalog,
    table: &'a TableDef,
}

impl Typer<'_> {
    fn name(&self) -> &Name {
        self.table.name()
    }

    fn column_def(&self, column: &str) -> Result<ColumnDef, WriteError> {
        self.catalog.value_def_in(self.table, column).ok_or_else(|| WriteError::UnknownColumn {
            table: self.name().clone(),
            column: column.to_owned(),
        })
    }

    /// `value` as a value of `column`, or a type error naming both.
    fn typed(&self, column: &str, value: SqlValue) -> Result<Value, WriteError> {
        let def = self.column_def(column)?;
        let mismatch = |found: String| WriteError::Type {
            table: self.name().clone(),
            column: column.to_owned(),
            expected: if def.nullable { format!("{} or NULL", def.ty) } else { def.ty.to_string() },
            found,
        };
        let typed = match (&def.ty, value) {
            (_, SqlValue::Null) if def.nullable => Value::Null,
            (_, SqlValue::Null) => return Err(mismatch("NULL".into())),
            (ColumnType::Integer, SqlValue::Integer(i)) => Value::Integer(i),
            (ColumnType::Real, SqlValue::Integer(i)) => Value::Real(i as f64),
            (ColumnType::Real, SqlValue::Real(r)) => Value::Real(r),
            (ColumnType::Bool, SqlValue::Integer(i @ (0 | 1))) => Value::Bool(i == 1),
            (ColumnType::Timestamp, SqlValue::Integer(i)) => Value::Timestamp(i),
            (ColumnType::Text, SqlValue::Text(t)) => Value::Text(t),
            (ColumnType::Json, SqlValue::Text(t)) => match check_json(&t) {
                Ok(()) => Value::Json(t),
                Err(e) => return Err(mismatch(format!("text that is not JSON ({e})"))),
            },
            (ColumnType::Bytes, SqlValue::Blob(b)) => Value::Bytes(b),
            (ColumnType::Timestamp, SqlValue::Text(t)) => match timestamp_from_text(&t) {
                Ok(micros) => Value::Timestamp(micros),
                Err(reason) => {
                    return Err(mismatch(format!(
                        "text {} that {reason} (or give microseconds since 1970 as an integer)",
                        literal(ValueRef::Text(t.as_bytes()))
                    )));
                }
            },
            (_, other) => return Err(mismatch(describe(&other))),
        };
        Ok(typed)
    }

    /// The key of a row from its key columns' values, in key order.
    fn key(&self, values: Vec<SqlValue>) -> Result<RowKey, WriteError> {
        let parts = self
            .table
            .primary_key()
            .iter()
            .zip(values)
            .map(|(column, value)| {
                let typed = self.typed(column.as_str(), value)?;
                KeyPart::from_value(typed).ok_or_else(|| WriteError::Type {
                    table: self.name().clone(),
                    column: column.to_string(),
                    expected: "a key value".into(),
                    found: "NULL".into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        RowKey::new(parts).ok_or_else(|| WriteError::MissingValue {
            table: self.name().clone(),
            column: "primary key".into(),
        })
    }

    fn is_key(&self, column: &str) -> bool {
        self.table.primary_key().iter().any(|k| k.as_str() == column)
    }

    fn column_name(&self, column: &str) -> Result<Name, WriteError> {
        self.table.column(column).map(|c| c.name.clone()).ok_or_else(|| WriteError::UnknownColumn {
            table: self.name().clone(),
            column: column.to_owned(),
        })
    }
}

fn describe(value: &SqlValue) -> String {
    let kind = match value {
        SqlValue::Null => "NULL",
        SqlValue::Integer(_) => "integer",
        SqlValue::Real(_) => "real",
        SqlValue::Text(_) => "text",
        SqlValue::Blob(_) => "bytes",
    };
    format!("{kind} {}", literal(value.into()))
}

/// A short SQL literal for messages.
fn literal(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => {
            let t = String::from_utf8_lossy(t);
            match t.char_indices().nth(40) {
                Some((end, _)) => format!("'{}…'", t[..end].replace('\'', "''")),
                None => format!("'{}'", t.replace('\'', "''")),
            }
        }
        ValueRef::Blob(b) => {
            format!("X'{}'", b.iter().take(20).map(|x| format!("{x:02X}")).collect::<String>())
        }
    }
}

fn key_literal(key: &RowKey) -> String {
    let parts: Vec<String> =
        key.parts().iter().map(|p| literal(crate::sql::view::key_ref(p))).collect();
    format!("({})", parts.join(", "))
}

fn evaluate(
    conn: &Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Vec<SqlValue>>, WriteError> {
    // Not cached: the writer's cache holds the view's own statements, and
    // SQLite asks the authorizer when it prepares (see Gate::enter).
    let mut statement = conn.prepare(sql)?;
    let width = statement.column_count();
    let mut rows = statement.query(rusqlite::params_from_iter(params.iter().map(Param)))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        if out.len() == MAX_ROWS {
            return Err(WriteError::TooManyRows);
        }
        out.push((0..width).map(|i| row.get::<_, SqlValue>(i)).collect::<Result<_, _>>()?);
    }
    Ok(out)
}

/// The rows of a `VALUES` of bare `?` placeholders (`shape`): `params`
/// as SQLite would return them, `None` where only SQLite can say (a
/// parameter count that does not fit, a value SQLite would turn into
/// `NULL` or refuse).
fn bound_rows(
    shape: ParamRows,
    params: &[Value],
) -> Option<Result<Vec<Vec<SqlValue>>, WriteError>> {
    if params.len() != shape.rows * shape.width {
        return None;
    }
    if shape.rows > MAX_ROWS {
        return Some(Err(WriteError::TooManyRows));
    }
    let row = |row: &[Value]| row.iter().map(bound_value).collect::<Option<Vec<_>>>();
    params.chunks(shape.width).map(row).collect::<Option<_>>().map(Ok)
}

/// What SQLite returns for `value` bound to a bare `?` in a `VALUES`:
/// the value as [`Param`] binds it. `None` for what SQLite changes or
/// refuses: a NaN (bound as `NULL`) and text or bytes over its length
/// limit.
fn bound_value(value: &Value) -> Option<SqlValue> {
    Some(match value_ref(value) {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(r) if r.is_nan() => return None,
        ValueRef::Real(r) => SqlValue::Real(r),
        ValueRef::Text(t) | ValueRef::Blob(t) if t.len() > MAX_LENGTH as usize => return None,
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8(t.to_vec()).ok()?),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    })
}

fn insert<S: Store>(
    typer: &Typer<'_>,
    txn: &Txn<'_, S>,
    columns: &[String],
    rows: Vec<Vec<SqlValue>>,
    on_conflict: OnConflict,
) -> Result<Vec<RowOp>, WriteError> {
    let table = typer.table;
    let targets: Vec<Name> = if columns.is_empty() {
        table.columns().iter().map(|c| c.name.clone()).collect()
    } else {
        columns.iter().map(|c| typer.column_name(&c.to_lowercase())).collect::<Result<_, _>>()?
    };
    let mut ops: BTreeMap<RowKey, RowOp> = BTreeMap::new();
    for row in rows {
        if row.len() != targets.len() {
            return Err(WriteError::ValueCount {
                table: typer.name().clone(),
                values: row.len(),
                columns: targets.len(),
            });
        }
        let mut given: BTreeMap<&Name, SqlValue> = targets.iter().zip(row).collect();
        let mut key_values = Vec::new();
        for column in table.primary_key() {
            let value = given.remove(column).ok_or_else(|| WriteError::MissingValue {
                table: typer.name().clone(),
                column: column.to_string(),
            })?;
            key_values.push(value);
        }
        let key = typer.key(key_values)?;
        // Collected, then sorted by name once (a table has up to 256 columns).
        let cells: LiteMap<Name, Value> = (table.columns().iter())
            .filter(|c| !typer.is_key(c.name.as_str()))
            .map(|column| {
                let value = match given.remove(&column.name) {
                    Some(value) => typer.typed(column.name.as_str(), value)?,
                    None => match &column.default {
                        Some(default) => default.clone(),
                        None if column.def.nullable => Value::Null,
                        None => {
                            return Err(WriteError::MissingValue {
                                table: typer.name().clone(),
                                column: column.name.to_string(),
                            });
                        }
                    },
                };
                Ok((column.name.clone(), value))
            })
            .collect::<Result<_, _>>()?;
        let state = txn.row(typer.name(), &key)?;
        let exists = state.is_live() || ops.contains_key(&key);
        match (exists, on_conflict) {
            (true, OnConflict::Fail) => {
                return Err(WriteError::DuplicateKey {
                    table: typer.name().clone(),
                    key: key_literal(&key),
                });
            }
            (true, OnConflict::Ignore) => continue,
            _ => {}
        }
        let generation = state.upsert_generation().ok_or_else(|| {
            WriteError::GenerationCeiling { table: typer.name().clone(), key: key_literal(&key) }
        })?;
        ops.insert(
            key.clone(),
            RowOp::Upsert { table: typer.name().clone(), key, generation, cells },
        );
    }
    Ok(ops.into_values().collect())
}

/// `alias."k1", alias."k2"` for the key columns.
fn key_select(typer: &Typer<'_>, alias: &str) -> String {
    typer
        .table
        .primary_key()
        .iter()
        .map(|k| format!("{}.{}", quote(alias), quote(k.as_str())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn from_clause(typer: &Typer<'_>, alias: &str, filter: Option<&str>) -> String {
    let mut sql = format!(" FROM {} AS {}", quote(typer.name().as_str()), quote(alias));
    if let Some(filter) = filter {
        sql.push_str(" WHERE ");
        sql.push_str(filter);
    }
    sql
}

fn update<S: Store>(
    conn: &Connection,
    typer: &Typer<'_>,
    txn: &Txn<'_, S>,
    alias: &str,
    assignments: &[(String, String)],
    filter: Option<&str>,
    params: &[Value],
) -> Result<Vec<RowOp>, WriteError> {
    let mut columns = Vec::with_capacity(assignments.len());
    for (column, _) in assignments {
        let name = typer.column_name(&column.to_lowercase())?;
        if typer.is_key(name.as_str()) {
            return Err(WriteError::KeyUpdate {
                table: typer.name().clone(),
                column: name.to_string(),
            });
        }
        columns.push(name);
    }
    let expressions: Vec<String> = assignments.iter().map(|(_, e)| format!("({e})")).collect();
    let sql = format!(
        "SELECT {}, {}{}",
        key_select(typer, alias),
        expressions.join(", "),
        from_clause(typer, alias, filter)
    );
    let key_len = typer.table.primary_key().len();
    let mut ops = Vec::new();
    for mut row in evaluate(conn, &sql, params)? {
        let values = row.split_off(key_len);
        let key = typer.key(row)?;
        let cells: LiteMap<Name, Value> = (columns.iter().zip(values))
            .map(|(column, value)| Ok((column.clone(), typer.typed(column.as_str(), value)?)))
            .collect::<Result<_, WriteError>>()?;
        let state = txn.row(typer.name(), &key)?;
        if !state.is_live() {
            continue;
        }
        ops.push(RowOp::Upsert {
            table: typer.name().clone(),
            key,
            generation: state.generation,
            cells,
        });
    }
    Ok(ops)
}

fn delete<S: Store>(
    conn: &Connection,
    typer: &Typer<'_>,
    txn: &Txn<'_, S>,
    alias: &str,
    filter: Option<&str>,
    params: &[Value],
) -> Result<Vec<RowOp>, WriteError> {
    let sql = format!("SELECT {}{}", key_select(typer, alias), from_clause(typer, alias, filter));
    let mut ops = Vec::new();
    for row in evaluate(conn, &sql, params)? {
        let key = typer.key(row)?;
        if let Some(generation) = txn.row(typer.name(), &key)?.delete_generation() {
            ops.push(RowOp::Delete { table: typer.name().clone(), key, generation });
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            prop_oneof![any::<f64>(), Just(f64::NAN), Just(-0.0), Just(f64::INFINITY)]
                .prop_map(Value::Real),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Timestamp),
            ".{0,12}".prop_map(Value::Text),
            ".{0,12}".prop_map(Value::Json),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
        ]
    }

    /// The exact value, a real's sign and payload included.
    fn exact(value: &SqlValue) -> String {
        match value {
            SqlValue::Real(r) => format!("real {:x}", r.to_bits()),
            other => format!("{other:?}"),
        }
    }

    proptest! {
        /// The rows of a `VALUES` of bare placeholders are the parameters
        /// exactly as SQLite's evaluation, which they stand in for, returns
        /// them; what SQLite would change is left to it.
        #[test]
        fn bound_rows_are_what_sqlite_returns(
            (rows, width, params) in (1usize..4, 1usize..5).prop_flat_map(|(rows, width)| {
                (Just(rows), Just(width), proptest::collection::vec(any_value(), rows * width))
            })
        ) {
            let conn = Connection::open_in_memory().unwrap();
            let row = format!("({})", vec!["?"; width].join(", "));
            let sql = format!("VALUES {}", vec![row; rows].join(", "));
            let evaluated = evaluate(&conn, &sql, &params).unwrap();
            match bound_rows(ParamRows { rows, width }, &params) {
                Some(bound) => {
                    let bound = bound.unwrap();
                    let exact_rows =
                        |rows: &[Vec<SqlValue>]| rows.iter().map(|r| r.iter().map(exact).collect::<Vec<_>>()).collect::<Vec<_>>();
                    prop_assert_eq!(exact_rows(&bound), exact_rows(&evaluated));
                }
                None => prop_assert!(params.iter().any(|v| matches!(v, Value::Real(r) if r.is_nan()))),
            }
        }
    }

    #[test]
    fn bound_rows_leave_what_only_sqlite_can_say_to_it() {
        let shape = ParamRows { rows: 1, width: 2 };
        // A count that does not fit: SQLite's own error names both counts.
        assert!(bound_rows(shape, &[Value::Null]).is_none());
        assert!(bound_rows(shape, &[Value::Null, Value::Null, Value::Null]).is_none());
        // A NaN SQLite binds as NULL; text past SQLite's length limit it refuses.
        assert!(bound_rows(shape, &[Value::Null, Value::Real(f64::NAN)]).is_none());
        let long = Value::Text("x".repeat(MAX_LENGTH as usize + 1));
        assert!(bound_rows(shape, &[Value::Null, long]).is_none());
        let many = ParamRows { rows: MAX_ROWS + 1, width: 1 };
        assert!(matches!(
            bound_rows(many, &vec![Value::Null; MAX_ROWS + 1]),
            Some(Err(WriteError::TooManyRows))
        ));
    }

    #[test]
    fn a_literal_quotes_text_and_cuts_it_at_forty_characters() {
        let forty = "é".repeat(40);
        assert_eq!(literal(ValueRef::Text(forty.as_bytes())), format!("'{forty}'"));
        let long = format!("{forty}x");
        assert_eq!(literal(ValueRef::Text(long.as_bytes())), format!("'{forty}…'"));
        assert_eq!(literal(ValueRef::Text(b"it's")), "'it''s'");
        assert_eq!(literal(ValueRef::Blob(&[0xAB; 30])), format!("X'{}'", "AB".repeat(20)));
        assert_eq!(literal(ValueRef::Null), "NULL");
        assert_eq!(literal(ValueRef::Integer(-3)), "-3");
    }
}
