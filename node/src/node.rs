//! The node: the database with the node's own files — what operations
//! run against, whether `basic up` runs them (see [`crate::daemon`]) or a
//! command runs them on the database directly.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use basic_store::{Database, DbError};

use crate::paths::DataDir;
use crate::peers::SavedPeers;
use crate::status::NetworkStatus;
use crate::tokens::{AppTokens, OwnerToken};

/// Network settings of a running node, for the network layer.
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// Addresses to listen on (`--listen`).
    pub listen: Vec<String>,
    /// Peers to dial (`--peer`).
    pub peers: Vec<String>,
    /// Relays to reserve a slot on (`--relay`).
    pub relays: Vec<String>,
    /// Public addresses to announce (`--external`).
    pub external: Vec<String>,
    /// Find peers on the LAN with mDNS (off with `--no-mdns`).
    pub mdns: bool,
}

/// One database with the node's files: what operations run against.
#[derive(Debug)]
pub struct Node {
    /// The database.
    pub db: Arc<Database>,
    /// Its data directory.
    pub data: DataDir,
    /// The owner's token, for checking.
    pub owner: OwnerToken,
    /// App requests and tokens.
    pub apps: AppTokens,
    /// The pinning peers' addresses this device dials (`peers.json`).
    pub peers: SavedPeers,
    /// Network settings (empty unless running).
    pub config: NodeConfig,
    /// The network's state, filled by the network layer; `None` when the
    /// CLI works on the database directly, without a running node.
    pub network: Option<Arc<RwLock<NetworkStatus>>>,
    /// The running network, once `basic up` has started it.
    net: std::sync::OnceLock<basic_net::Net>,
}

/// Whether `error` says that another process has the database open.
pub fn is_in_use(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<DbError>(), Some(DbError::InUse(_)))
}

impl Node {
    /// Opens the database in `data` with the node's files.
    pub fn open(
        data: DataDir,
        config: NodeConfig,
        network: Option<Arc<RwLock<NetworkStatus>>>,
    ) -> anyhow::Result<Self> {
        data.require_database()?;
        let db = Database::open(data.root())
            .with_context(|| format!("cannot open the database in {}", data.root().display()))?;
        Ok(Self {
            db: Arc::new(db),
            owner: OwnerToken::load(&data.owner_token())?,
            apps: AppTokens::open(data.apps())?,
            peers: SavedPeers::open(data.peers())?,
            data,
            config,
            network,
            net: std::sync::OnceLock::new(),
        })
    }

    /// Gives operations the running network (see [`Node::dial_now`]); the
    /// first one given stays.
    pub fn attach_network(&self, net: basic_net::Net) {
        let _ = self.net.set(net);
    }

    /// The running network, once `basic up` has started it.
    pub fn net(&self) -> Option<&basic_net::Net> {
        self.net.get()
    }

    /// Starts dialling `addresses` (and redialling them) now, when this
    /// process runs the network; otherwise the next `basic up` dials them.
    pub fn dial_now(&self, addresses: &[String]) {
        let (Some(net), Ok(runtime)) = (self.net.get(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        for address in addresses.iter().filter_map(|a| a.parse::<basic_net::Multiaddr>().ok()) {
            let net = net.clone();
            runtime.spawn(async move { net.add_peer(address).await });
        }
    }
}
