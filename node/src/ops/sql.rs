//! Running one SQL statement.

use basic_proto::PublicKey;
use basic_store::{DbError, Executed, Rows};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{Caller, Op, Route};
use crate::capability;
use crate::error::ApiError;
use crate::node::Node;
use crate::tokens::app_id;
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
        let app = match caller {
            Caller::App(app) => {
                capability::check(&node.db, app, &self.sql)?;
                Some(app)
            }
            Caller::Owner => None,
            Caller::Anyone => return Err(ApiError::unauthorized("this needs a token")),
        };
        let params = value_json::params_from_json(&self.params)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let executed = match app {
            // Within its live grants; its writes signed with its own key.
            Some(app) => node
                .db
                .execute_as_app(app, &self.sql, &params, None)
                .map_err(|e| app_statement_error(app, e, params.len())),
            None => node
                .db
                .execute_as(&basic_store::Caller::Owner, &self.sql, &params, None)
                .map_err(|e| statement_error(e, params.len())),
        }?;
        Ok(match executed {
            Executed::Rows(rows) => rows.into(),
            Executed::Written(outcome) => SqlOutput::Written {
                written: outcome.rows_affected,
                commits: outcome.commits.iter().map(ToString::to_string).collect(),
            },
        })
    }
}

/// The error of a statement `app` ran: [`statement_error`], except that an
/// app whose key this node does not keep is told how to get one.
fn app_statement_error(app: &PublicKey, error: DbError, given: usize) -> ApiError {
    match error {
        // A token issued by an earlier version of Basic, whose node kept
        // no key for its app and signed its writes as the device.
        DbError::NotCustodial => ApiError::conflict(format!(
            "this node keeps no key for {} (its token was issued by an older version of Basic), so it cannot sign the app's writes: ask for access again (POST /v0/apps/requests) and use the new token",
            app_id(app)
        )),
        error => statement_error(error, given),
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
