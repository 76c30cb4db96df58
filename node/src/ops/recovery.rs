//! The recovery secret on this device: showing it while the device holds
//! it, and forgetting it once the user has written it down
//! (`protocol-spec/control-log.md` §9.4).

use serde::{Deserialize, Serialize};

use super::{Caller, Op, Route};
use crate::error::ApiError;
use crate::node::Node;

/// `GET /v0/recovery`: the recovery secret, while this device holds it.
#[derive(Debug, Clone, Copy)]
pub struct ShowRecovery;

/// What `basic recovery show` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryInfo {
    /// The database (`db_…`): recovery needs it with the secret.
    pub database: String,
    /// The recovery secret; none once this device forgot it.
    pub secret: Option<String>,
}

impl Op for ShowRecovery {
    type Output = RecoveryInfo;

    fn route(self) -> Route {
        Route::get("recovery")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<RecoveryInfo, ApiError> {
        caller.require_owner()?;
        Ok(RecoveryInfo { database: node.db.id().to_string(), secret: node.db.recovery_secret()? })
    }
}

/// `POST /v0/recovery/confirm`: the user wrote the secret down; this
/// device forgets it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ConfirmRecovery;

/// What confirming did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    /// Whether this device held the secret until now.
    pub forgotten: bool,
}

impl Op for ConfirmRecovery {
    type Output = Confirmed;

    fn route(self) -> Route {
        Route::post("recovery/confirm", &serde_json::json!({}))
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Confirmed, ApiError> {
        caller.require_owner()?;
        let held = node.db.recovery_secret()?.is_some();
        node.db.forget_recovery_secret()?;
        Ok(Confirmed { forgotten: held })
    }
}
