//! Why a control operation could not be made, or was refused.

use std::path::PathBuf;

use basic_proto::control::{InsertError, OpError};
use basic_proto::{Name, SealError};

use crate::flows::apps::RequestError;
use crate::storage::kv::StoreError;

/// Why a control operation could not be made, or was refused; also why a
/// directory cannot start, join or recover a database.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// An operation does not decode, or could not be signed.
    #[error(transparent)]
    Op(#[from] OpError),
    /// The control log refused an operation.
    #[error(transparent)]
    Refused(#[from] InsertError),
    /// Sealing a key to a reader failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Reading the replica failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An access request is unknown.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A grant of a scope that has no key yet.
    #[error("scope {0} has no key yet: apply its schema first")]
    NoScopeKey(Name),
    /// A scope whose current epoch is unknown.
    #[error("the scope has no key")]
    NoEpoch,
    /// This device does not hold the key an operation needs.
    #[error("this device holds no key of {namespace} epoch {epoch}")]
    NoEpochKey {
        /// The scope's namespace.
        namespace: Name,
        /// The epoch.
        epoch: u32,
    },
    /// A replica that is not a device's (a pinning peer's) names no scope.
    #[error("this replica holds no naming key: it is not a device's")]
    NotADevice,
    /// Adding a device needs the naming key, which this replica lacks.
    #[error("this replica holds no naming key")]
    NoNamingKey,
    /// The control log has no genesis yet.
    #[error("the control log has no root")]
    NoRoot,
    /// Received operations are admitted, not issued.
    #[error("received operations are not issued")]
    NotIssued,
    /// A command made no operation.
    #[error("no operation was made")]
    NoOperation,
    /// The directory is half-way through a join.
    #[error("this directory is joining a database: finish with finish_join")]
    Joining,
    /// The directory holds a database already.
    #[error("{} already holds a database", .0.display())]
    HoldsDatabase(PathBuf),
    /// The store holds a database already.
    #[error("this store already holds a database")]
    StoreHoldsDatabase,
    /// `finish_join` on a directory that started no join.
    #[error("{} is not joining a database", .0.display())]
    NotJoining(PathBuf),
    /// The operations received do not make this device a member yet.
    #[error(
        "these operations do not add this device yet: accept the join on the inviting device first"
    )]
    NotAdded,
    /// A recovery with the control log of another database.
    #[error("these operations are not of the database this recovery secret created")]
    OtherDatabase,
}
