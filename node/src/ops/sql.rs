//! Running one SQL statement.

use basic_store::now_ms;
use basic_store::{DbError, Executed, Rows};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{Caller, Op, Route};
use crate::capability;
use crate::error::ApiError;
use crate::node::Node;
use basic_store::value_json;

/// `POST /v0/sql`: one statement with `?` parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sql {
    /// The statement.
    pub sql: String,
    /// Its parameters, in order (see [`basic_store::value_json`]).
    #[serde(default)]
    pub params: Vec<Json>,
}

/// What a statement returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SqlOutput {
    /// A `SELECT`'s rows.
    Rows {
        /// Column names.
        columns: Vec<String>,
        /// Rows of values.
        rows: Vec<Vec<Json>>,
    },
    /// A write, durable on disk.
    Written {
        /// Rows inserted, updated or deleted.
        written: usize,
        /// The commits made (none if nothing changed).
        commits: Vec<String>,
    },
}

impl From<Rows> for SqlOutput {
    fn from(rows: Rows) -> Self {
        SqlOutput::Rows {
            columns: rows.columns,
            rows: rows
                .rows
                .iter()
                .map(|row| row.iter().map(value_json::to_json).collect())
                .collect(),
        }
    }
}

impl Op for Sql {
    type Output = SqlOutput;

    fn route(self) -> Route {
        Route::post("sql", &self)
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<SqlOutput, ApiError> {
        let runs_as = match caller {
            Caller::App(app) => {
                capability::check(&node.db, app, &self.sql)?;
                capability::caller(&node.db, app)?
            }
            Caller::Owner => basic_store::Caller::Owner,
            Caller::Anyone => return Err(ApiError::unauthorized("this needs a token")),
        };
        let params = value_json::params_from_json(&self.params)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let executed = node
            .db
            .execute_as(&runs_as, &self.sql, &params, None)
            .map_err(|e| statement_error(e, params.len()))?;
        Ok(match executed {
            Executed::Rows(rows) => rows.into(),
            Executed::Written(outcome) => {
                if let Caller::App(app) = caller
                    && !outcome.commits.is_empty()
                    && let Err(error) = node.writes.record(app, &outcome.commits, now_ms())
                {
                    // The write is durable; failing it now would make the
                    // app write it again.
                    tracing::error!("{error:#}");
                }
                SqlOutput::Written {
                    written: outcome.rows_affected,
                    commits: outcome.commits.iter().map(ToString::to_string).collect(),
                }
            }
        })
    }
}

/// The error of a statement run with `given` parameters. SQLite's count
/// mismatch (`Got 2, needed 1`, where 2 is only where binding stopped)
/// becomes how many parameters were given and how many placeholders the
/// statement has; any other error is as it is.
pub fn statement_error(error: DbError, given: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(rusqlite::Error::InvalidParameterCount(_, wanted)) = cause.downcast_ref() {
            return ApiError::bad_request(format!(
                "the statement has {wanted} placeholder{} but {given} parameter{} given",
                if *wanted == 1 { "" } else { "s" },
                if given == 1 { " was" } else { "s were" },
            ));
        }
        source = cause.source();
    }
    error.into()
}
