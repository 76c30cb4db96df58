//! Running a checked `SELECT` on the view and typing its result.
//!
//! The connection runs it entered in its [`view::Gate`] for the caller:
//! SQLite's authorizer refuses any table outside the caller's reach, and
//! the statement is interrupted when its time budget is spent.

use std::time::Duration;

use basic_proto::{Name, Value};
use rusqlite::Connection;

use crate::sql::schema::Catalog;
use crate::sql::view::{self, Param};

/// Time a statement may run unless the database is told otherwise.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// Most rows one query may return; past it, add `LIMIT`.
pub(crate) const MAX_ROWS: usize = 100_000;

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Column names, in result order.
    pub columns: Vec<String>,
    /// The rows; values typed by the schema where a column comes straight
    /// from a table (bool, timestamp, json), as SQLite gives them otherwise.
    pub rows: Vec<Vec<Value>>,
}

/// Why a query failed while running.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// SQLite refused or failed the statement (unknown column, type error…).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The result has more than 100,000 rows.
    #[error("the result has more than {MAX_ROWS} rows: add a LIMIT, or page with LIMIT and OFFSET")]
    TooManyRows,
    /// The statement ran past its time budget and was stopped.
    #[error(
        "the statement ran past its budget of {0:?} and was stopped: narrow it (WHERE, LIMIT, an index) or bound its recursion"
    )]
    Timeout(Duration),
    /// SQLite's authorizer refused a table or an action outside the
    /// caller's reach (SQLite's message).
    #[error("{0}: the statement reaches outside what this caller may read")]
    Denied(String),
}

impl QueryError {
    /// A SQLite error, told apart: an interruption at the deadline of a
    /// statement run with `budget`, a refusal by the authorizer, or else.
    pub fn classify(error: rusqlite::Error, budget: Duration) -> Self {
        if view::is_interrupt(&error) {
            QueryError::Timeout(budget)
        } else if view::is_denied(&error) {
            QueryError::Denied(error.to_string())
        } else {
            QueryError::Sqlite(error)
        }
    }
}

/// Runs `sql` (already checked and rewritten) with `params`, on a
/// connection entered in its gate with `budget`.
pub(crate) fn run(
    conn: &Connection,
    catalog: &Catalog,
    sql: &str,
    params: &[Value],
    budget: Duration,
) -> Result<Rows, QueryError> {
    run_inner(conn, catalog, sql, params).map_err(|error| match error {
        QueryError::Sqlite(error) => QueryError::classify(error, budget),
        other => other,
    })
}

fn run_inner(
    conn: &Connection,
    catalog: &Catalog,
    sql: &str,
    params: &[Value],
) -> Result<Rows, QueryError> {
    let mut statement = conn.prepare_cached(sql)?;
    let types: Vec<_> = statement
        .columns_with_metadata()
        .map(|column| {
            let table = column.table_name().and_then(|t| Name::new(t).ok())?;
            catalog.value_type(&table, column.origin_name()?)
        })
        .collect();
    let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let mut rows = Vec::new();
    let mut cursor = statement.query(rusqlite::params_from_iter(params.iter().map(Param)))?;
    while let Some(row) = cursor.next()? {
        if rows.len() == MAX_ROWS {
            return Err(QueryError::TooManyRows);
        }
        let values = (0..columns.len())
            .map(|i| Ok(view::from_sql(row.get_ref(i)?, types[i].as_ref())))
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        rows.push(values);
    }
    Ok(Rows { columns, rows })
}
