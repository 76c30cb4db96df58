//! What the network part of a running node reports, for `basic status`
//! and `GET /v0/status`. The network layer fills it; the API reads it.

use serde::{Deserialize, Serialize};

/// The node's network state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Addresses the node listens on (as the network layer reports them).
    pub listening: Vec<String>,
    /// Peers the node knows of, connected or not.
    pub peers: Vec<PeerStatus>,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its network (libp2p) peer id.
    pub id: String,
    /// The address it is reached at, if connected.
    pub address: Option<String>,
    /// Its principal text id (`dev_…`, `pin_…`, `app_…`), once known.
    pub principal: Option<String>,
    /// Where syncing with it stands, in words (`connecting`, `syncing`,
    /// `in sync`, an error…).
    pub sync: String,
    /// When the last sync with it completed, ms since 1970.
    pub last_sync_ms: Option<u64>,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
}
