//! A replica on the network: for every connected peer, one sync session
//! (our requester, stepped by basic-store's session driver
//! [`basic_store::sync::Session`]) and one responder, over basic-net
//! (`protocol-spec/sync.md` §3–§6).
//!
//! The node and the light client both run their peers through this crate;
//! what differs between them (what `basic status` shows, what peers showed
//! in earlier runs) goes through [`Hooks`]. Both call the replica on the
//! blocking pool, never on the async executor.

mod changes;
mod serve;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use basic_net::{Limits, Net, PeerId};
use basic_proto::control::AuthState;
use basic_proto::keys::{Principal, Role};
use basic_proto::{PublicKey, SecretKey};
use basic_store::{Database, DbError};
use basic_store::{DeviceStore, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Time between sync rounds with a peer once in sync.
pub const RESYNC_MS: u64 = 30_000;
/// How long a peer that broke the protocol is refused.
const BAN: Duration = Duration::from_secs(60);
/// Sync requests per second we accept from one peer, sustained, and at
/// once. A session sends one request at a time, so an honest peer's rate
/// is bounded by round trips: live pushes under a steady write load reach
/// hundreds a second on a LAN. Requests above the rate are dropped (a lost
/// push waits for the next round), and a peer that keeps sending at twice
/// the rate is banned; our sessions pace themselves at half of it
/// (`session::Pace`), so two peers of this version never get there.
const PEER_REQUESTS_PER_S: u32 = 200;
const PEER_REQUEST_BURST: u32 = 400;
/// Inbound sync requests queued for one peer's responder.
const SERVE_QUEUE: usize = 8;

/// The transport limits every peer of this version applies, so that our
/// sessions' pacing stays below what the other side accepts.
pub fn limits() -> Limits {
    Limits {
        ban_duration: BAN,
        requests_per_second: PEER_REQUESTS_PER_S,
        request_burst: PEER_REQUEST_BURST,
        ..Limits::default()
    }
}

/// The heads a peer principal has shown: author → (max seq, count).
pub use basic_store::sync::Shown as Heads;

/// What one peer principal has shown.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The principal the peer proved.
    pub principal: PublicKey,
    /// The heads it showed.
    pub heads: Heads,
}

/// What the owner of the replica hears of its peers, and what it remembers
/// of them across sessions. Every method has a default that does nothing.
pub trait Hooks: Send + Sync + 'static {
    /// What `peer` showed in an earlier session (rollback detection).
    fn shown(&self, _peer: &PeerId) -> Option<Shown> {
        None
    }
    /// `peer` completed a round showing `shown`.
    fn remember(&self, _peer: PeerId, _shown: Shown) {}
    /// `peer` proved `principal` (its text id) to our session.
    fn authenticated(&self, _peer: PeerId, _principal: &str) {}
    /// A round with `peer` completed; `principal` is what it proved.
    fn synced(&self, _peer: PeerId, _principal: Option<String>) {}
    /// Sessions with `peer` stopped, or paused, for `reason`.
    fn failed(&self, _peer: PeerId, _reason: &str) {}
}

/// What every peer task shares: the replica, the network, our principal.
pub struct Peering<S: Store = DeviceStore> {
    db: Arc<Database<S>>,
    net: Net,
    /// Our principal (device, pinning peer or app) for the sync proof.
    key: SecretKey,
    /// Our transport id: our peer id's bytes.
    local: Vec<u8>,
    clock: Instant,
    changes: watch::Receiver<u64>,
    /// Bumped to have every session start a round now.
    resync: watch::Sender<u64>,
    hooks: Arc<dyn Hooks>,
}

impl<S: Store> std::fmt::Debug for Peering<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peering").field("local", &self.net.local_peer_id()).finish_non_exhaustive()
    }
}

/// The tasks of one connected peer: our session with it and our responder
/// for it. Dropping them leaves the tasks running: call [`PeerTasks::abort`].
#[derive(Debug)]
pub struct PeerTasks {
    requests: mpsc::Sender<(Vec<u8>, basic_net::Responder)>,
    session: JoinHandle<()>,
    serve: JoinHandle<()>,
}

impl PeerTasks {
    /// Hands a sync request frame from the peer to its responder; false if
    /// the responder's queue is full (the request is dropped: the peer's
    /// request fails and it asks again later).
    pub fn offer(&self, frame: Vec<u8>, reply: basic_net::Responder) -> bool {
        self.requests.try_send((frame, reply)).is_ok()
    }

    /// Stops both tasks.
    pub fn abort(self) {
        self.session.abort();
        self.serve.abort();
    }
}

impl<S: Store + Send + Sync + 'static> Peering<S> {
    /// Syncs `db` over `net` as the principal `db` holds, telling `hooks`.
    /// Blocking: it reads the replica's key.
    pub fn new(
        db: Arc<Database<S>>,
        net: Net,
        hooks: Arc<dyn Hooks>,
    ) -> Result<Arc<Self>, PeeringError> {
        let key = db.member_key().map_err(PeeringError::Key)?;
        let changes = changes::watch(&db)?;
        Ok(Arc::new(Self {
            local: net.local_peer_id().to_bytes(),
            db,
            net,
            key,
            clock: Instant::now(),
            changes,
            resync: watch::Sender::new(0),
            hooks,
        }))
    }

    /// A counter bumped after every durable change to the replica.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Has every session start a sync round now rather than at its next
    /// interval (what the peer shows of us is then known afresh).
    pub fn resync_now(&self) {
        self.resync.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts answering `peer` and our session with it; `dialled` says
    /// whether we dialled it.
    pub fn start_peer(self: &Arc<Self>, peer: PeerId, dialled: bool) -> PeerTasks {
        let (requests, inbox) = mpsc::channel(SERVE_QUEUE);
        // What the peer proved to our responder, for our session with it,
        // and a counter bumped when the responder wants a round of ours.
        let (proved, proof) = watch::channel(None);
        let (pull, pulls) = watch::channel(0);
        PeerTasks {
            requests,
            session: tokio::spawn(session::run(Arc::clone(self), peer, dialled, proof, pulls)),
            serve: tokio::spawn(serve::run(Arc::clone(self), peer, inbox, proved, pull)),
        }
    }

    /// Only answers `peer`'s requests: no session of ours (a removed
    /// device still answers whom its log counts as members).
    pub fn start_serving(self: &Arc<Self>, peer: PeerId) -> PeerTasks {
        let (requests, inbox) = mpsc::channel(SERVE_QUEUE);
        PeerTasks {
            requests,
            session: tokio::spawn(async {}),
            serve: tokio::spawn(serve::run(
                Arc::clone(self),
                peer,
                inbox,
                watch::channel(None).0,
                watch::channel(0).0,
            )),
        }
    }

    /// Milliseconds since we started: the sync state machines' clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bans `peer` for a while after telling it why (the error frame goes
    /// out first: the ban closes the connection).
    async fn cut_off(&self, peer: PeerId) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.net.disconnect(peer).await;
    }
}

/// Why peering could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    /// The replica holds no usable key of ours.
    #[error("cannot read this replica's key: {0}")]
    Key(#[source] DbError),
    /// The change watcher could not start.
    #[error("cannot start the change watcher: {0}")]
    Watcher(#[from] std::io::Error),
}

/// The text id of `key` as the control log knows it (`dev_…`, `app_…`).
pub fn principal_id(auth: &AuthState, key: &PublicKey) -> String {
    let role = if auth.root().is_some_and(|root| root.key == *key) {
        Role::User
    } else if auth.pinners().contains_key(key) {
        Role::Pinner
    } else if auth.apps().contains_key(key) {
        Role::App
    } else {
        Role::Device
    };
    Principal { role, key: *key }.to_string()
}
