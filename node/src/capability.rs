//! What an app token may do: the same rule as the protocol's grants.
//!
//! An app may read a table if it holds an unrevoked grant on the table's
//! scope (its namespace), and write it if that grant is read-write. The
//! check runs on every request against the database's current
//! authorisation state, so a revocation — made here or received from
//! another device — stops the token at once.
//!
//! [`check`] is the friendly early answer: which tables a statement
//! touches is decided by the store's own SQL resolver, so a statement that
//! reaches outside the grant gets a 403 that names the table. It is not
//! the enforcement: the statement then runs as the app (a write through
//! [`basic_store::Database::execute_as_app`], signed with the app's key; a
//! live query as its [`basic_store::Caller`], [`caller`]), and the store
//! refuses it again, and has SQLite's authorizer refuse any table outside
//! the grant wherever SQLite resolves it, so that a difference between the
//! SQL parser and SQLite opens no door.

use std::collections::BTreeSet;

use basic_proto::control::Rights;
use basic_proto::{Name, PublicKey};
use basic_store::Database;
use basic_store::scope_of;
use basic_store::{Caller, SqlError, parse_sql};

use crate::error::ApiError;
use crate::tokens::app_id;

/// What `app` may reach now, as the store's caller: every scope it holds
/// an unrevoked grant on for reading, the read-write ones for writing.
pub fn caller(db: &Database, app: &PublicKey) -> Result<Caller, ApiError> {
    db.app_caller(app).ok_or_else(|| no_grant(app))
}

fn no_grant(app: &PublicKey) -> ApiError {
    ApiError::forbidden(format!(
        "{} holds no grant any more (revoked, or never approved)",
        app_id(app)
    ))
}

/// Checks that `app` may run `sql`.
pub fn check(db: &Database, app: &PublicKey, sql: &str) -> Result<(), ApiError> {
    let grants = db.live_grants(app);
    if grants.is_empty() {
        return Err(no_grant(app));
    }
    let catalog = db.catalog();
    let tables: BTreeSet<Name> =
        catalog.schemas().flat_map(|s| s.tables().iter().map(|t| t.name().clone())).collect();
    let statement =
        parse_sql(sql, &tables, None).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let readable: BTreeSet<Name> =
        tables.into_iter().filter(|table| grants.contains_key(&scope_of(table))).collect();
    let granted = || grants.keys().map(Name::as_str).collect::<Vec<_>>().join(", ");
    if let Err(error) = parse_sql(sql, &readable, None) {
        let what = match error {
            SqlError::UnknownTable(table) => table,
            _ => "a table".to_owned(),
        };
        return Err(ApiError::forbidden(format!(
            "{} may not read {what}: it is granted {}",
            app_id(app),
            granted()
        )));
    }
    if let Some(table) = statement.written_table() {
        let scope = scope_of(table);
        if grants.get(&scope) != Some(&Rights::ReadWrite) {
            return Err(ApiError::forbidden(format!(
                "{} may not write {table}: its grant on {scope} is read-only",
                app_id(app)
            )));
        }
    }
    Ok(())
}
