//! The node's state at a glance.

use basic_proto::PublicKey;
use basic_proto::keys::{Principal, Role};
use serde::{Deserialize, Serialize};

use super::devices::{DeviceInfo, devices};
use super::{Caller, Op, Route};
use crate::error::ApiError;
use crate::ids::device_id;
use crate::node::Node;
use crate::status::NetworkStatus;

/// What a removed device says of itself (control-log.md §9.5).
pub const REMOVED: &str = "this device was removed from the database by one of your devices: it no longer syncs and refuses writes; what it holds stays readable here (export it with `basic export`)";

/// `GET /v0/status`.
#[derive(Debug, Clone, Copy)]
pub struct Status;

/// What `basic status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusOutput {
    /// The database id (`db_…`).
    pub database: String,
    /// This device (`dev_…`).
    pub device: String,
    /// Whether this device learnt that it was removed from the database:
    /// it then writes nothing more and no longer syncs.
    #[serde(default)]
    pub removed: bool,
    /// Where this device's secrets are kept: the platform keystore's name,
    /// or none for the replica's file (readable by its owner only).
    #[serde(default)]
    pub keystore: Option<String>,
    /// Whether this device still holds the recovery secret (until `basic
    /// recovery confirm`).
    #[serde(default)]
    pub holds_recovery_secret: bool,
    /// The user's root identity (`usr_…`).
    pub user: Option<String>,
    /// Every device.
    pub devices: Vec<DeviceInfo>,
    /// Apps holding at least one unrevoked grant.
    pub apps: usize,
    /// App requests waiting for an answer.
    pub pending_requests: usize,
    /// Authors whose logs forked (a cloned or restored device), with the
    /// seq where they fork.
    pub forks: Vec<Fork>,
    /// Namespaces with a schema.
    pub namespaces: Vec<String>,
    /// Bytes on disk of the data directory.
    pub storage_bytes: u64,
    /// The network, if a node is running.
    pub network: Option<NetworkView>,
}

/// A forked log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    /// The author (`dev_…` or `app_…` as the control log knows it).
    pub author: String,
    /// The seq at which two commits exist.
    pub seq: u64,
}

/// The running node's network side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// `--listen` addresses given to `basic up`.
    pub listen: Vec<String>,
    /// `--peer` addresses given to `basic up`.
    pub peers_configured: Vec<String>,
    /// What the network layer reports.
    pub state: NetworkStatus,
}

impl Op for Status {
    type Output = StatusOutput;

    fn route(self) -> Route {
        Route::get("status")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<StatusOutput, ApiError> {
        caller.require_owner()?;
        let state = node.db.auth_state();
        let role = |key: &PublicKey| {
            if state.apps().contains_key(key) { Role::App } else { Role::Device }
        };
        let forks = node
            .db
            .replica()
            .forks()?
            .into_iter()
            .map(|(key, seq)| Fork { author: Principal { role: role(&key), key }.to_string(), seq })
            .collect();
        let network = node.network.as_ref().map(|status| NetworkView {
            listen: node.config.listen.clone(),
            peers_configured: node.config.peers.clone(),
            state: status.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        });
        Ok(StatusOutput {
            database: node.db.id().to_string(),
            device: device_id(&node.db.device()),
            removed: node.db.is_removed(),
            keystore: node.db.keystore()?,
            holds_recovery_secret: node.db.root_secret()?.is_some(),
            user: state
                .root()
                .map(|root| Principal { role: Role::User, key: root.key }.to_string()),
            devices: devices(node),
            apps: state
                .apps()
                .values()
                .filter(|app| app.scopes.values().any(|g| g.revoked.is_none()))
                .count(),
            pending_requests: node.db.access_requests()?.len(),
            forks,
            namespaces: node.db.catalog().schemas().map(|s| s.namespace().to_string()).collect(),
            storage_bytes: node.data.size_on_disk(),
            network,
        })
    }
}
