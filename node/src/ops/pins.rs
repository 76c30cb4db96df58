//! Pinning peers: authorising, listing and removing them, with the
//! addresses this device dials them at (`peers.json`, see
//! [`crate::peers`]).

use basic_proto::keys::{Principal, Role};
use serde::{Deserialize, Serialize};

use super::{Caller, Done, Op, Route, encode};
use crate::error::ApiError;
use crate::ids::parse_principal;
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
    /// The addresses this device dials it at.
    #[serde(default)]
    pub addresses: Vec<String>,
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
            .map(|(key, active)| {
                let id = Principal { role: Role::Pinner, key: *key }.to_string();
                PinInfo { addresses: node.peers.addresses_of(&id), id, active: *active }
            })
            .collect())
    }
}

/// `POST /v0/pins`: authorises a pinning peer to store and serve this
/// database's ciphertext (it receives no key), and saves the addresses
/// this device dials it at. Given addresses for a pinning peer already
/// authorised, it only replaces its addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddPin {
    /// Its id (`pin_…`).
    pub id: String,
    /// Where it listens, each ending in `/p2p/<its peer id>`; `basic up`
    /// dials them.
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl Op for AddPin {
    type Output = Done;

    fn route(self) -> Route {
        Route::post("pins", &self)
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Done, ApiError> {
        caller.require_owner()?;
        let key = parse_principal(Role::Pinner, &self.id)?;
        let id = Principal { role: Role::Pinner, key }.to_string();
        node.peers.check(&id, &self.addresses)?;
        match node.db.auth_state().pinners().get(&key) {
            Some(true) if self.addresses.is_empty() => {
                return Err(ApiError::conflict(format!("{id} pins already")));
            }
            Some(true) => {}
            Some(false) => {
                return Err(ApiError::conflict(format!(
                    "{id} was removed, for good: it cannot be added again"
                )));
            }
            None => {
                node.db.add_pinner(key)?;
            }
        }
        if !self.addresses.is_empty() {
            node.peers.save(&id, self.addresses.clone())?;
            node.dial_now(&self.addresses);
        }
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
        node.peers.save(&Principal { role: Role::Pinner, key }.to_string(), Vec::new())?;
        Ok(Done {})
    }
}
