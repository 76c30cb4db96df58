//! Running a checked `SELECT` on the view and typing its result.

use basic_proto::{Name, Value};
use rusqlite::Connection;

use crate::schema::Catalog;
use crate::view::{self, Param};

/// Most rows one query may return; past it, add `LIMIT`.
pub const MAX_ROWS: usize = 100_000;

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
    /// The result has more than [`MAX_ROWS`] rows.
    #[error("the result has more than {MAX_ROWS} rows: add a LIMIT, or page with LIMIT and OFFSET")]
    TooManyRows,
}

/// Runs `sql` (already checked and rewritten) with `params`.
pub fn run(
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
