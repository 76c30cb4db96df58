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

/// What `basic status` shows in a pinning peer's directory: what it holds
/// and whom it serves, all of it without a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnerStatus {
    /// The pinning peer (`pin_…`).
    pub pinner: String,
    /// The database it pins (`db_…`); none before its first start.
    pub database: Option<String>,
    /// Whether it holds a replica of the database yet (a first start
    /// waits for an authorised device to send the control log).
    pub replica: bool,
    /// Whether the database's control log authorises it now.
    pub authorised: bool,
    /// Whether the control log removed it, for good.
    pub removed: bool,
    /// Commits it holds (ciphertext), every author's.
    pub commits: u64,
    /// Authors of those commits (devices and apps).
    pub authors: usize,
    /// Control operations it holds.
    pub control_ops: usize,
    /// Bytes on disk of its data directory.
    pub storage_bytes: u64,
    /// Whether it runs now (`basic up`).
    pub running: bool,
    /// When the running pinning peer took this status, ms since 1970; none
    /// when read from the replica of a stopped one.
    pub taken_at_ms: Option<u64>,
    /// Its network while it runs: addresses, and the peers it serves
    /// (connected or not, with their last sync).
    pub network: Option<NetworkStatus>,
}
