//! A pinning peer's first contact: fetching the database's control log
//! from a device with the sync protocol itself.
//!
//! A pinning peer starts with its key and the database id only. It opens
//! an ordinary sync session (`protocol-spec/sync.md` §3–§4) over a
//! replica that holds nothing but a control log in memory: the device
//! serves it only if its control log lists the pinning peer (the
//! handshake proves the key), and the pinning peer accepts the operations
//! only if they are signed into the database's log and make the device a
//! member. The session stops where it would first ask for commits; the
//! operations then seed the replica on disk
//! ([`basic_store::Database::replicate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use basic_net::{Event, Net, PeerId, Protocol};
use basic_proto::control::{AuthState, ControlLog, OpId};
use basic_proto::keys::{Principal, Role};
use basic_proto::sync::message::MAX_FRAME_BYTES;
use basic_proto::sync::{
    Entry, Fingerprint, Message, Requester, RequesterConfig, StoreFailure, Stored, SyncStore, View,
};
use basic_proto::{DatabaseId, KeyCache, PublicKey, SecretKey};
use rand::RngExt;
use tracing::{info, warn};

use super::Transport;
use basic_store::JoinAnswer;

/// Wait between attempts when no connected device serves the log yet.
const RETRY: Duration = Duration::from_secs(3);
/// Exchanges one attempt may take (a handshake, then control batches).
const MAX_EXCHANGES: usize = 80;

/// Waits for a device among the connected peers (dialled by us or dialling
/// us: a device with our address saved) to serve `database`'s
/// control log to `key` (a pinning peer listed in it), and returns the
/// operations. Peers connected meanwhile are replayed to the node after.
pub async fn bootstrap(
    transport: &mut Transport,
    database: DatabaseId,
    key: &SecretKey,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let pin = Principal { role: Role::Pinner, key: key.public() };
    let mut connected: BTreeSet<PeerId> = BTreeSet::new();
    for event in &transport.pending {
        if let Event::Connected { peer, .. } = event {
            connected.insert(*peer);
        }
    }
    let mut retry = tokio::time::interval(RETRY);
    loop {
        let targets: Vec<PeerId> = tokio::select! {
            event = transport.events.recv() => {
                let Some(event) = event else { bail!("the network stopped") };
                match event {
                    Event::Connected { peer, address, dialled } => {
                        connected.insert(peer);
                        transport.pending.push(Event::Connected { peer, address, dialled });
                        vec![peer]
                    }
                    Event::Disconnected { peer } => {
                        connected.remove(&peer);
                        transport.pending.push(Event::Disconnected { peer });
                        continue;
                    }
                    Event::Request { protocol: Protocol::Join, reply, .. } => {
                        let refusal = JoinAnswer::Refused("this is a pinning peer: ask a device".into());
                        let _ = reply.send(refusal.to_bytes());
                        continue;
                    }
                    // Kept for the status once syncing (a few, one per address).
                    event @ (Event::Listening { .. } | Event::ListenExpired { .. }) => {
                        transport.pending.push(event);
                        continue;
                    }
                    // Nothing to serve yet: the peer's session retries later.
                    Event::Request { .. } => continue,
                }
            }
            _ = retry.tick() => connected.iter().copied().collect(),
        };
        for peer in targets {
            match fetch(&transport.net, peer, database, key).await {
                Ok(ops) => {
                    info!(%peer, ops = ops.len(), "received the control log");
                    return Ok(ops);
                }
                Err(error) => warn!(
                    %peer,
                    "no control log from this peer yet: {error:#} (has a device run `basic pin add {pin}`?)"
                ),
            }
        }
    }
}

/// Whether a control log lists a key as what it should be.
pub(crate) type Lists = fn(&AuthState, &PublicKey) -> bool;

/// One attempt with `peer`: the control log as a pinning peer (listed in
/// it) is served it.
async fn fetch(
    net: &Net,
    peer: PeerId,
    database: DatabaseId,
    key: &SecretKey,
) -> anyhow::Result<Vec<Vec<u8>>> {
    fetch_as(net, peer, database, key, AuthState::is_pinner, "this pinning peer").await
}

/// One attempt with `peer` to fetch `database`'s control log as `key`, a
/// member: a pinning peer, or the root recovering (`basic init --recover`).
/// `lists` checks that the log received makes `key` what it claims
/// (`who`, for the error).
pub(crate) async fn fetch_as(
    net: &Net,
    peer: PeerId,
    database: DatabaseId,
    key: &SecretKey,
    lists: Lists,
    who: &str,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut requester = Requester::new(one_off(net, peer, database, key), BTreeMap::new());
    let mut store = LogOnly { log: ControlLog::new(database), keys: Default::default() };
    let keys = KeyCache::default();
    for _ in 0..MAX_EXCHANGES {
        let request = requester.poll_request(&mut store, 0)?;
        while let Some(event) = requester.poll_event() {
            if let basic_proto::sync::Event::Closed { reason } = event {
                bail!("{reason}");
            }
        }
        let Some(request) = request else { bail!("the session stalled") };
        if matches!(Message::decode(&request, MAX_FRAME_BYTES, &keys), Ok(Message::Summary { .. }))
        {
            // The control exchange is over: next it would ask for commits.
            if !lists(&store.log.state(), &key.public()) {
                bail!("its control log does not list {who}");
            }
            return Ok(store.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect());
        }
        let answer = net.request(peer, request).await.map_err(|e| anyhow!("{e}"))?;
        requester.handle_response(&mut store, &answer, 0)?;
    }
    bail!("the control log did not arrive in {MAX_EXCHANGES} exchanges")
}

/// A requester's settings for one session with `peer` as `key`, with no
/// round after the first unless asked (the pinning peer's first contact,
/// the root recovering).
pub(crate) fn one_off(
    net: &Net,
    peer: PeerId,
    database: DatabaseId,
    key: &SecretKey,
) -> RequesterConfig {
    RequesterConfig {
        key: key.clone(),
        database,
        local_transport: net.local_peer_id().to_bytes(),
        peer_transport: peer.to_bytes(),
        view: View::All,
        resync_ms: u64::MAX,
        nonce: rand::rng().random(),
        // A pinning peer knows no member before it has the log: it never
        // sends a prelude.
        known_peer: None,
    }
}

/// A replica that holds only a control log, in memory: enough for the
/// handshake and the control exchange, serving nothing.
#[derive(Debug)]
struct LogOnly {
    log: ControlLog,
    keys: basic_proto::KeyCache,
}

/// A bootstrap replica was asked for operations it does not serve.
#[derive(Debug, thiserror::Error)]
#[error("a bootstrap replica serves no operations")]
struct ServesNoOps;

impl SyncStore for LogOnly {
    fn database(&self) -> DatabaseId {
        self.log.database()
    }

    fn keys(&self) -> &basic_proto::KeyCache {
        &self.keys
    }

    fn auth(&self) -> Arc<AuthState> {
        Arc::new(self.log.state())
    }

    fn control_heads(&self) -> Result<Vec<OpId>, StoreFailure> {
        Ok(self.log.heads())
    }

    fn has_op(&self, id: &OpId) -> Result<bool, StoreFailure> {
        Ok(self.log.get(id).is_some())
    }

    fn ops_since(&self, heads: &[OpId]) -> Result<Vec<Vec<u8>>, StoreFailure> {
        // Only ever asked for the whole log (a prelude), which a pinning
        // peer never sends: it knows no member before it has the log.
        if !heads.is_empty() {
            return Err(StoreFailure::new(ServesNoOps));
        }
        Ok(self.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect())
    }

    fn ingest_ops(&mut self, ops: &[Vec<u8>]) -> Result<Stored, StoreFailure> {
        Ok(basic_proto::sync::admit_ops(&mut self.log, ops, basic_store::now_ms()))
    }

    fn entries(&self, _: &View) -> Result<Vec<Entry>, StoreFailure> {
        Ok(Vec::new())
    }

    fn fingerprint(
        &self,
        _: &View,
        _: &PublicKey,
        _: u64,
        _: u64,
    ) -> Result<Fingerprint, StoreFailure> {
        Ok(Fingerprint::default())
    }

    fn commits(
        &self,
        _: &View,
        _: &PublicKey,
        _: u64,
        _: u64,
        _: usize,
        _: &mut Vec<Vec<u8>>,
    ) -> Result<bool, StoreFailure> {
        Ok(true)
    }

    fn ingest_commits(&mut self, commits: &[Vec<u8>]) -> Result<Stored, StoreFailure> {
        Ok(Stored { refused: commits.len() as u64, ..Stored::default() })
    }
}
