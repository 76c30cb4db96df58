//! What can go wrong for an app, each with what to do about it.

use std::path::PathBuf;

use basic_store::{AccessRefusal, DbError};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The identity file cannot be read or written.
    #[error("cannot keep the app identity in {path}: {error}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// A file of the client's directory cannot be read or written.
    #[error("cannot use {path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// The identity file does not hold 32 bytes.
    #[error("{path} does not hold an app identity (32 bytes): remove it to make a new one")]
    BadIdentity {
        /// The file.
        path: PathBuf,
    },
    /// A namespace name is not valid.
    #[error("{0:?} is not a namespace name")]
    BadScope(String),
    /// The access code does not parse.
    #[error("not an access code (copy it whole from `basic app connect`): {0}")]
    BadCode(String),
    /// The directory holds no replica yet: ask for access first.
    #[error("{0} holds no replica: ask the user for access first (Client::request_access)")]
    NotConnected(PathBuf),
    /// The directory's replica cannot be read: nothing is served from it.
    #[error(
        "the replica in {path} is damaged ({cause}): remove the directory and ask for access again"
    )]
    Damaged {
        /// The directory.
        path: PathBuf,
        /// What failed.
        cause: Box<DbError>,
    },
    /// The directory already holds a replica: open it instead.
    #[error("{0} already holds a replica: open it with Client::open")]
    AlreadyConnected(PathBuf),
    /// None of the user's devices could be reached.
    #[error("cannot reach the user's device at {0}: is `basic up` running there?")]
    Unreachable(String),
    /// The user denied the request.
    #[error("the user denied the request for access")]
    Denied,
    /// Nobody answered the request in time.
    #[error("the request for access expired unanswered: ask again")]
    Expired,
    /// The device refused the request.
    #[error("the device refused the request: {0}")]
    Refused(AccessRefusal),
    /// The device's answer does not parse.
    #[error("the device sent a malformed answer: {0}")]
    BadAnswer(String),
    /// The user revoked this app: it reads and writes nothing new.
    #[error("the user revoked this app's access; rows it wrote before stay in their database")]
    Revoked,
    /// The network could not start.
    #[error("cannot start the network: {0}")]
    Network(#[from] basic_net::NetError),
    /// The replica refused or failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A row does not have the shape the app asked for.
    #[error("a row does not fit the type asked for: {0}")]
    Row(#[from] serde_json::Error),
    /// The client's background task stopped.
    #[error("the client stopped: {0}")]
    Stopped(String),
}
