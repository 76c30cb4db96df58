//! The node on the network: libp2p (crates/net) driving the sync protocol
//! (`protocol-spec/sync.md`) over the replica.
//!
//! For every connected peer the node runs, through [`basic_peer`], two
//! tasks: a session (our `Requester`: pulls what we lack, pushes what is
//! new here) and a responder (answers the peer's requests). What they
//! report goes to the status (`basic status`) and to `shown.json`
//! (`NodeHooks`). Join requests (`/basic/join/0`) from new devices are
//! answered here too.
//!
//! A node behind a NAT reserves a slot on the relays it is given (`--relay`,
//! a pinning peer's address): its relayed address joins the addresses it
//! listens on (status, `api.json`, invites), and peers that dial it connect
//! through the relay; sync runs over that connection as over any other.
//! A pinning peer runs the relay, announcing its listen addresses (and
//! `--external` ones).
//!
//! Live changes go to each authenticated peer as sync `push` requests,
//! which are acknowledged once durable and never leave a peer's entitled
//! view (there is no gossip: a topic could not be gated by the sync
//! membership proof).

mod bootstrap;
mod identity;
mod shown;
mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use basic_net::{Config, Event, Multiaddr, Net, PeerId, Protocol};
use basic_peer::{Hooks, PeerTasks, Peering, Shown};
use basic_store::Database;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use bootstrap::bootstrap;
pub(crate) use bootstrap::{fetch_as as fetch_control_log, one_off as one_off_config};
use shown::ShownStore;
use status::Status;
pub(crate) use status::device_peers;

use crate::join::answer_join;
use crate::node::NodeConfig;
use crate::status::NetworkStatus;
use basic_store::JoinAnswer;

/// Join requests answered at once.
const JOIN_SLOTS: usize = 2;
/// How often traffic counters are copied into the status.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
/// How long startup waits for the listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// What the network is asked to do.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial and keep dialling.
    pub peers: Vec<Multiaddr>,
    /// Discover peers on the LAN.
    pub mdns: bool,
    /// Relays to reserve a slot on, each ending in `/p2p/<relay id>`.
    pub relays: Vec<Multiaddr>,
    /// Addresses announced as publicly reachable.
    pub external: Vec<Multiaddr>,
    /// Relay connections for other peers (pinning peers do), announcing
    /// our listen addresses as reachable.
    pub relay_server: bool,
}

impl NetworkConfig {
    /// Parses `--listen`, `--peer`, `--relay` and `--external` values; no
    /// `--listen` means every interface, on ports the system picks, over
    /// TCP and QUIC.
    pub fn parse(config: &NodeConfig) -> anyhow::Result<Self> {
        let parse = |text: &String| {
            text.parse::<Multiaddr>().with_context(|| {
                format!(
                    "{text:?} is not a network address (e.g. /ip4/192.168.1.5/tcp/4001/p2p/12D3…)"
                )
            })
        };
        let relays = config
            .relays
            .iter()
            .map(|text| {
                let address = parse(text)?;
                if basic_net::is_relayed(&address) || basic_net::peer_of(&address).is_none() {
                    bail!(
                        "--relay {text}: give a pinning peer's address ending in its peer id \
                         (…/p2p/12D3…, as its log or `basic status` shows it), without /p2p-circuit"
                    );
                }
                Ok(address)
            })
            .collect::<anyhow::Result<_>>()?;
        let external = config.external.iter().map(parse).collect::<Result<_, _>>()?;
        let mut listen: Vec<Multiaddr> =
            config.listen.iter().map(parse).collect::<Result<_, _>>()?;
        if listen.is_empty() {
            listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, _>>()?;
        }
        let peers = config.peers.iter().map(parse).collect::<Result<_, _>>()?;
        Ok(Self { listen, peers, mdns: config.mdns, relays, external, relay_server: false })
    }
}

/// The network libp2p identity and transport, started but not yet syncing
/// (a pinning peer fetches its control log first, see [`bootstrap`]).
#[derive(Debug)]
pub struct Transport {
    net: Net,
    events: mpsc::Receiver<Event>,
    /// Events seen while waiting for the listeners, replayed later.
    pending: Vec<Event>,
    /// Where we listen, with `/p2p/<our peer id>`.
    pub addresses: Vec<String>,
}

impl Transport {
    /// A handle on the running network.
    pub fn net(&self) -> Net {
        self.net.clone()
    }

    /// Starts libp2p with the identity in `key_file` and waits (briefly)
    /// until every listener reports an address.
    pub async fn start(key_file: &std::path::Path, config: &NetworkConfig) -> anyhow::Result<Self> {
        let mut net_config = Config::new(identity::load_or_create(key_file)?);
        net_config.listen = config.listen.clone();
        net_config.peers = config.peers.clone();
        net_config.mdns = config.mdns;
        net_config.relays = config.relays.clone();
        net_config.external = config.external.clone();
        net_config.relay_server = config.relay_server;
        net_config.listen_is_external = config.relay_server;
        net_config.limits = basic_peer::limits();
        let (net, mut events) =
            basic_net::start(net_config).await.context("cannot start the network")?;
        let mut pending = Vec::new();
        let mut listeners = 0;
        let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
        while listeners < config.listen.len() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Listening { .. })) => listeners += 1,
                Ok(Some(event)) => pending.push(event),
                Ok(None) | Err(_) => break,
            }
        }
        let local = net.local_peer_id();
        let addresses = net
            .listen_addresses()
            .await
            .into_iter()
            .map(|address| address.with_p2p(local).unwrap_or_else(|address| address).to_string())
            .collect();
        Ok(Self { net, events, pending, addresses })
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.net.local_peer_id()
    }
}

/// What a [`ListenHook`] calls, with every address we listen on.
type ListenCall = Box<dyn Fn(&[String]) + Send + Sync>;

/// Told of the addresses we listen on whenever they change (a relay
/// reservation made or lost), on the blocking pool: `basic up` rewrites
/// `api.json` with them.
pub struct ListenHook {
    call: ListenCall,
    /// One call at a time, each reading the addresses when it runs: the
    /// last call sees the latest.
    running: Mutex<()>,
}

impl ListenHook {
    /// A hook that calls `call` with every address we listen on.
    pub fn new(call: impl Fn(&[String]) + Send + Sync + 'static) -> Self {
        Self { call: Box::new(call), running: Mutex::new(()) }
    }
}

impl std::fmt::Debug for ListenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenHook").finish_non_exhaustive()
    }
}

/// The running network side of a node.
#[derive(Debug)]
pub struct Network {
    net: Net,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the node's event loop shares.
#[derive(Debug)]
struct Context {
    db: Arc<Database>,
    net: Net,
    /// Every peer's session and responder.
    peering: Arc<Peering>,
    status: Status,
    /// Told when the addresses we listen on change.
    on_listen: ListenHook,
}

/// What the node hears of its peers: it shows it in the status and keeps
/// what each peer showed, in `shown.json` (rollback detection).
#[derive(Debug)]
struct NodeHooks {
    db: Arc<Database>,
    status: Status,
    /// What each peer showed in earlier sessions and earlier runs, with
    /// the principal that showed it.
    shown: Arc<ShownStore>,
}

impl Hooks for NodeHooks {
    fn shown(&self, peer: &PeerId) -> Option<Shown> {
        self.shown.get(peer)
    }

    /// Saves `shown.json` (on the blocking pool) if `shown` changed it.
    fn remember(&self, peer: PeerId, shown: Shown) {
        if self.shown.remember(peer, shown, &self.db.auth_state()) {
            let store = Arc::clone(&self.shown);
            drop(tokio::task::spawn_blocking(move || {
                if let Err(error) = store.save() {
                    warn!("cannot save what peers showed: {error:#}");
                }
            }));
        }
    }

    fn authenticated(&self, peer: PeerId, principal: &str) {
        self.status.authenticated(peer, principal.to_owned());
    }

    fn synced(&self, peer: PeerId, principal: Option<String>) {
        self.status.synced(peer, principal);
    }

    fn failed(&self, peer: PeerId, reason: &str) {
        self.status.failed(peer, reason);
    }
}

impl Network {
    /// Starts syncing `db` over `transport`. `status` is what `basic
    /// status` shows; `joins` says whether this node answers join requests
    /// (devices do, pinning peers do not); `on_listen` hears of every
    /// change of our addresses after `transport.addresses`; `shown` is the
    /// file that keeps what peers showed (`shown.json`), loaded here.
    pub async fn start(
        db: Arc<Database>,
        transport: Transport,
        status: Arc<RwLock<NetworkStatus>>,
        joins: bool,
        on_listen: ListenHook,
        shown: PathBuf,
    ) -> anyhow::Result<Self> {
        let shown = Arc::new(ShownStore::open(shown)?);
        let Transport { net, events, pending, addresses } = transport;
        let status = Status::new(status);
        status.listening(addresses);
        let hooks = NodeHooks { db: Arc::clone(&db), status: status.clone(), shown };
        let peering = {
            let (db, net) = (Arc::clone(&db), net.clone());
            tokio::task::spawn_blocking(move || Peering::new(db, net, Arc::new(hooks))).await??
        };
        let context = Arc::new(Context { on_listen, db, net: net.clone(), peering, status });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(context, events, pending, stopped, joins));
        Ok(Self { net, stop, task })
    }

    /// Stops every session and closes every connection.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
        self.net.shutdown().await;
    }
}

/// The event loop: starts and stops peer tasks, routes requests.
async fn run(
    context: Arc<Context>,
    mut events: mpsc::Receiver<Event>,
    pending: Vec<Event>,
    mut stopped: watch::Receiver<bool>,
    joins: bool,
) {
    let mut peers: HashMap<PeerId, PeerTasks> = HashMap::new();
    let join_slots = Arc::new(Semaphore::new(JOIN_SLOTS));
    let mut refresh = tokio::time::interval(STATUS_REFRESH);
    // A removed device syncs no more (control-log.md §9.5): said once.
    let mut changes = context.peering.changes();
    let mut removed = false;
    let mut watching = true;
    check_removed(&context, &mut peers, &mut removed);
    for event in pending {
        on_event(&context, &mut peers, &join_slots, joins && !removed, removed, event).await;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    on_event(&context, &mut peers, &join_slots, joins && !removed, removed, event)
                        .await;
                }
                None => break,
            },
            _ = stopped.changed() => break,
            _ = refresh.tick() => context.status.traffic(&context.net.peers().await),
            changed = changes.changed(), if watching && !removed => {
                watching = changed.is_ok();
                check_removed(&context, &mut peers, &mut removed);
            }
        }
    }
    for (_, tasks) in peers.drain() {
        tasks.abort();
    }
}

/// Once this device learns that it was removed: says so (once, at WARN)
/// and stops every session.
fn check_removed(context: &Context, peers: &mut HashMap<PeerId, PeerTasks>, removed: &mut bool) {
    if *removed || !context.db.is_removed() {
        return;
    }
    *removed = true;
    warn!("{}", crate::ops::status::REMOVED);
    for (peer, tasks) in peers.drain() {
        tasks.abort();
        context.status.failed(peer, "not syncing: this device was removed");
    }
}

async fn on_event(
    context: &Arc<Context>,
    peers: &mut HashMap<PeerId, PeerTasks>,
    join_slots: &Arc<Semaphore>,
    joins: bool,
    removed: bool,
    event: Event,
) {
    match event {
        Event::Listening { address } => {
            let local = context.net.local_peer_id();
            let address = address.with_p2p(local).unwrap_or_else(|address| address);
            info!(%address, "listening");
            if context.status.listen_on(address.to_string()) {
                listen_changed(context);
            }
        }
        Event::ListenExpired { address } => {
            let local = context.net.local_peer_id();
            let address = address.with_p2p(local).unwrap_or_else(|address| address);
            info!(%address, "no longer listening");
            if context.status.stop_listening(&address.to_string()) {
                listen_changed(context);
            }
        }
        Event::Connected { peer, address, dialled } => {
            context.status.connected(peer, &address);
            if removed {
                context.status.failed(peer, "not syncing: this device was removed");
                return;
            }
            peers.entry(peer).or_insert_with(|| context.peering.start_peer(peer, dialled));
        }
        Event::Disconnected { peer } => {
            context.status.disconnected(peer);
            if let Some(tasks) = peers.remove(&peer) {
                tasks.abort();
            }
        }
        Event::Request { peer, protocol: Protocol::Sync, frame, reply } => {
            // A removed device still answers (its responder serves only
            // whom its log counts as members: the root recovering, say),
            // but runs no session of its own.
            let tasks = peers.entry(peer).or_insert_with(|| match removed {
                false => context.peering.start_peer(peer, false),
                true => context.peering.start_serving(peer),
            });
            if !tasks.offer(frame, reply) {
                debug!(%peer, "sync request dropped: the peer's queue is full");
            }
        }
        Event::Request { peer, protocol: Protocol::Join, frame, reply } => {
            if removed {
                let refusal = JoinAnswer::Refused(
                    "this device was removed from the database: ask another of its devices".into(),
                );
                let _ = reply.send(refusal.to_bytes());
                return;
            }
            if !joins {
                let refusal = JoinAnswer::Refused("this is a pinning peer: ask a device".into());
                let _ = reply.send(refusal.to_bytes());
                return;
            }
            let Ok(slot) = Arc::clone(join_slots).try_acquire_owned() else {
                debug!(%peer, "join request dropped: busy");
                return;
            };
            let db = Arc::clone(&context.db);
            tokio::spawn(async move {
                if let Ok(answer) =
                    tokio::task::spawn_blocking(move || answer_join(&db, &frame)).await
                {
                    let _ = reply.send(answer.to_bytes());
                }
                drop(slot);
            });
        }
        Event::Request { peer, protocol: Protocol::Access, frame, reply } => {
            // Only a device that is still one answers apps: a pinning peer
            // holds no key to grant, a removed device none to be trusted.
            if removed || !joins {
                let _ = reply.send(crate::access::not_a_device());
                return;
            }
            let Some(slot) = crate::access::slot() else {
                debug!(%peer, "access request dropped: busy");
                return;
            };
            let context = Arc::clone(context);
            tokio::spawn(async move {
                let db = Arc::clone(&context.db);
                let local = context.net.local_peer_id().to_bytes();
                let answered = tokio::task::spawn_blocking(move || {
                    crate::access::answer_access(&db, &frame, &local)
                });
                if let Ok(answered) = answered.await {
                    let _ = reply.send(answered.answer.to_bytes());
                    // A new ask: the user's other devices show it too.
                    if let Some(relay) = answered.relay {
                        let devices = context.status.device_peers(&context.db.auth_state());
                        crate::access::relay(&context.net, devices, relay);
                    }
                }
                drop(slot);
            });
        }
    }
}

/// Tells the listen hook, on the blocking pool (it writes a file).
fn listen_changed(context: &Arc<Context>) {
    let context = Arc::clone(context);
    drop(tokio::task::spawn_blocking(move || {
        let _one = context.on_listen.running.lock().unwrap_or_else(PoisonError::into_inner);
        (context.on_listen.call)(&context.status.listen_addresses());
    }));
}
