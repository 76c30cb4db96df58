//! Pinning peers: authorising, listing and removing them.

use basic_proto::keys::{Principal, Role};
use serde::{Deserialize, Serialize};

use super::devices::parse_principal;
use super::{Caller, Done, Op, Route, encode};
use crate::error::ApiError;
use crate::node::Node;

/// `GET /v0/pins`.
#[derive(Debug, Clone, Copy)]
pub struct ListPins;

/// One pinning peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinInfo {
    /// Its id (`pin_…`).
    pub id: String,
    /// Whether it is authorised (false once removed, for good).
    pub active: bool,
}

impl Op for ListPins {
    type Output = Vec<PinInfo>;

    fn route(self) -> Route {
        Route::get("pins")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Vec<PinInfo>, ApiError> {
        caller.require_owner()?;
        Ok(node
            .db
            .auth_state()
            .pinners()
            .iter()
            .map(|(key, active)| PinInfo {
                id: Principal { role: Role::Pinner, key: *key }.to_string(),
                active: *active,
            })
            .collect())
    }
}

/// `POST /v0/pins`: authorises a pinning peer to store and serve this
/// database's ciphertext (it receives no key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddPin {
    /// Its id (`pin_…`).
    pub id: String,
}

impl Op for AddPin {
    type Output = Done;

    fn route(self) -> Route {
        Route::post("pins", &self)
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Done, ApiError> {
        caller.require_owner()?;
        let key = parse_principal(Role::Pinner, &self.id)?;
        match node.db.auth_state().pinners().get(&key) {
            Some(true) => return Err(ApiError::conflict(format!("{} pins already", self.id))),
            Some(false) => {
                return Err(ApiError::conflict(format!(
                    "{} was removed, for good: it cannot be added again",
                    self.id
                )));
            }
            None => {}
        }
        node.db.add_pinner(key)?;
        Ok(Done {})
    }
}

/// `DELETE /v0/pins/{id}`: ends a pinning peer's authorisation, for good.
#[derive(Debug, Clone)]
pub struct RemovePin {
    /// Its id (`pin_…`).
    pub id: String,
}

impl Op for RemovePin {
    type Output = Done;

    fn route(self) -> Route {
        Route::delete(format!("pins/{}", encode(&self.id)))
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Done, ApiError> {
        caller.require_owner()?;
        let key = parse_principal(Role::Pinner, &self.id)?;
        match node.db.auth_state().pinners().get(&key) {
            Some(true) => {}
            Some(false) => {
                return Err(ApiError::conflict(format!("{} was removed already", self.id)));
            }
            None => return Err(ApiError::not_found(format!("no pinning peer {}", self.id))),
        }
        node.db.remove_pinner(key)?;
        Ok(Done {})
    }
}
