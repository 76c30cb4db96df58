//! Where the CLI's commands run: through the running node's API, or on the
//! database directly when no node runs.

use anyhow::bail;

use crate::client::ApiClient;
use crate::node::{Node, NodeConfig, is_in_use};
use crate::ops::transfer::Export;
use crate::ops::{Caller, Op};
use crate::paths::{ApiInfo, DataDir};
use crate::tokens::OwnerToken;

/// What executes operations for the CLI.
#[derive(Debug)]
pub enum Backend {
    /// The running node, over its HTTP API with the owner token.
    Api(ApiClient),
    /// The database, opened by this process.
    Direct(Box<Node>),
}

impl Backend {
    /// The running node's API if it answers, else the database itself.
    pub fn connect(data: &DataDir) -> anyhow::Result<Self> {
        if data.is_pinner() {
            bail!(
                "{} is a pinning peer's directory: it holds ciphertext and no key, so there is nothing to read or change here; use a device",
                data.root().display()
            );
        }
        data.require_database()?;
        let info = ApiInfo::read(data)?;
        if let Some(info) = &info
            && let Some(address) = info.address
        {
            let client = ApiClient::new(address, &OwnerToken::read(&data.owner_token())?);
            if client.answers() {
                return Ok(Backend::Api(client));
            }
        }
        match Node::open(data.clone(), NodeConfig::default(), None) {
            Ok(node) => {
                // This process holds the database: no node runs, and an
                // api.json left by one that crashed is stale.
                if info.is_some() {
                    let _ = std::fs::remove_file(data.api());
                }
                Ok(Backend::Direct(Box::new(node)))
            }
            Err(error) if is_in_use(&error) => match info {
                Some(info) => bail!(
                    "the node for {} (pid {}) holds the database but its API{} does not answer; if it is stuck, stop it (kill {}) and try again",
                    data.root().display(),
                    info.pid,
                    info.address.map(|a| format!(" at {a}")).unwrap_or_default(),
                    info.pid
                ),
                None => bail!(
                    "the database in {} is open in another process that serves no API (a node starting up, or another basic command); wait for it to finish or stop it",
                    data.root().display()
                ),
            },
            Err(error) => Err(error),
        }
    }

    /// Whether the commands go through a running node (which also syncs
    /// and dials), not to the database directly.
    pub fn is_running(&self) -> bool {
        matches!(self, Backend::Api(_))
    }

    /// Runs `op` as the owner.
    pub fn call<O: Op>(&self, op: O) -> anyhow::Result<O::Output> {
        match self {
            Backend::Api(client) => client.call(op.route()),
            Backend::Direct(node) => Ok(op.run(node, &Caller::Owner)?),
        }
    }

    /// Exports the database (or a namespace) as a file's bytes.
    pub fn export(&self, export: Export) -> anyhow::Result<Vec<u8>> {
        match self {
            Backend::Api(client) => client.send(export.route()),
            Backend::Direct(node) => Ok(export.run(node, &Caller::Owner)?),
        }
    }
}
