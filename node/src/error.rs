//! The error of an operation: an HTTP status, a stable code and a message
//! for people. The API sends it as `{"error": {"code", "message"}}`; the
//! CLI prints its message.

use basic_store::DbError;
use serde::{Deserialize, Serialize};

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The HTTP status.
    #[serde(skip, default = "internal_status")]
    pub status: u16,
    /// A stable machine-readable code (`bad_request`, `forbidden`…).
    pub code: String,
    /// What went wrong and, where possible, what to do.
    pub message: String,
}

fn internal_status() -> u16 {
    500
}

/// The JSON body of an error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

impl ApiError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_owned(), message: message.into() }
    }

    /// 400: the input is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401: no token, or not a token of this node.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// 403: the token does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 409: refused in the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    /// 409 `device_removed`: this device was removed from the database,
    /// so it writes nothing more.
    pub fn device_removed(message: impl Into<String>) -> Self {
        Self::new(409, "device_removed", message)
    }

    /// 413: the request body is too large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "too_large", message)
    }

    /// 422 `query_timeout`: the statement ran past its time budget.
    pub fn query_timeout(message: impl Into<String>) -> Self {
        Self::new(422, "query_timeout", message)
    }

    /// 500: a failure of the node, not of the request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        use basic_store::QueryError;
        use basic_store::SqlError;
        use basic_store::WriteError;
        let message = error.to_string();
        match error {
            DbError::Query(QueryError::Timeout(_)) | DbError::Write(WriteError::Timeout(_)) => {
                Self::query_timeout(message)
            }
            DbError::Sql(SqlError::Denied { .. })
            | DbError::Query(QueryError::Denied(_))
            | DbError::Write(WriteError::Denied(_))
            | DbError::NoGrant => Self::forbidden(message),
            DbError::Sql(_)
            | DbError::Query(_)
            | DbError::Write(_)
            | DbError::Schema(_)
            | DbError::Commit(_)
            | DbError::NotAQuery
            | DbError::Pairing(_)
            | DbError::Recovery(_) => Self::bad_request(message),
            DbError::DeviceRemoved => Self::device_removed(message),
            DbError::NoScopeKey(_)
            | DbError::Control(_)
            | DbError::InUse(_)
            | DbError::NotCustodial => Self::conflict(message),
            DbError::Store(_)
            | DbError::View(_)
            | DbError::Io { .. }
            | DbError::Stopped(_)
            | DbError::Closed
            | DbError::SigningStopped
            | DbError::SyncStopped
            | DbError::Keystore(_) => Self::internal(message),
        }
    }
}

impl From<basic_store::StoreError> for ApiError {
    fn from(error: basic_store::StoreError) -> Self {
        Self::internal(error.to_string())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(causes(&error))
    }
}

/// `error` and its causes, outermost first, joined by `: ` (as `{:#}`
/// prints them), each cause left out where the message before it already
/// ends with it: the store's errors name their source in their own
/// message.
pub(crate) fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if text.is_empty() {
            text = cause;
        } else if !text.ends_with(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

impl From<basic_store::ExportError> for ApiError {
    fn from(error: basic_store::ExportError) -> Self {
        use basic_store::ExportError as E;
        match error {
            E::Db(error) => error.into(),
            E::UnknownNamespace(_) => Self::not_found(error.to_string()),
            E::Exists { .. } => Self::conflict(error.to_string()),
            E::File { .. } | E::Sqlite { .. } | E::Read(_) | E::Output(_) | E::Stopped { .. } => {
                Self::internal(error.to_string())
            }
            E::Input(_)
            | E::TooLong { .. }
            | E::Malformed { .. }
            | E::Header { .. }
            | E::Schema { .. }
            | E::UnknownTable { .. }
            | E::UnknownColumn { .. }
            | E::MissingKey { .. }
            | E::MissingValue { .. }
            | E::Type { .. } => Self::bad_request(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause that the message before it already ends with is printed
    /// once; other causes are kept.
    #[test]
    fn a_cause_repeated_by_its_error_is_printed_once() {
        let store =
            basic_store::StoreError::Corrupt { what: "LSM store", reason: "damaged".into() };
        let error = anyhow::Error::new(DbError::from(store)).context("cannot open the database");
        assert_eq!(
            causes(&error),
            "cannot open the database: storage: corrupt stored record LSM store: damaged"
        );
        let io = std::io::Error::other("disk gone");
        let error = anyhow::Error::new(io).context("cannot read x");
        assert_eq!(causes(&error), "cannot read x: disk gone");
    }
}
