//! Basic's libp2p transport.
//!
//! This crate moves opaque byte frames between peers and knows nothing of
//! what they mean. It offers one channel, **requests**: on the
//! `/basic/sync/0` protocol [`Net::request`] sends a frame to one peer and
//! awaits its answer; the peer sees an [`Event::Request`] and answers
//! through its [`Responder`]. The same framing runs on `/basic/join/0` for
//! pairing a new device ([`Net::request_on`] with [`Protocol::Join`]), and
//! on `/basic/access/0` for apps asking a device for access
//! ([`Protocol::Access`], requests capped at [`MAX_ACCESS_REQUEST_BYTES`]).
//! Live changes travel as requests too (sync `push` frames, sent only to
//! peers that proved membership): there is no gossip, which could not be
//! gated by that proof.
//!
//! [`start`] builds the swarm (TCP and QUIC, noise, yamux, relay client and
//! DCUtR, identify, ping, optional mDNS and relay server), spawns its task on
//! the current tokio runtime and returns a cloneable [`Net`] handle plus the
//! receiver of [`Event`]s. Every queue is bounded; every frame is capped by
//! [`Limits`]; inbound requests are rate-limited per peer.
//!
//! **Relaying.** A node behind a NAT reserves a slot on each relay of
//! [`Config::relays`] (circuit relay v2): it listens on
//! `<relay>/p2p/<relay id>/p2p-circuit`, libp2p renews the reservation
//! before it expires, and the reserved address,
//! `<relay>/p2p/<relay id>/p2p-circuit/p2p/<our id>`, is reported as
//! [`Event::Listening`]. A lost reservation is retried with backoff. Any
//! node dials such an address like any other: the connection runs through
//! the relay, and DCUtR then tries to replace it with a direct one (hole
//! punching; it needs two real NATs and cannot be shown on loopback). A
//! relay ([`Config::relay_server`]) only grants reservations once it has a
//! confirmed external address: [`Config::external`], and its listen
//! addresses when [`Config::listen_is_external`]. Its caps are
//! [`RelayLimits`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), basic_net::NetError> {
//! use basic_net::{Config, Event, start};
//!
//! let keypair = basic_net::Keypair::generate_ed25519();
//! let mut config = Config::new(keypair);
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("address")];
//! let (net, mut events) = start(config).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Request { frame, reply, .. } => {
//!             let _ = reply.send(frame); // echo
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_docs)]

mod behaviour;
mod codec;
mod driver;
mod error;
mod lan;
mod rate;
mod redial;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub use codec::{JOIN_PROTOCOL, SYNC_PROTOCOL};

/// The protocol name negotiated for apps asking a device for access: the
/// same framing, another stream protocol.
pub const ACCESS_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/basic/access/0");
/// Largest request frame on [`ACCESS_PROTOCOL`] (an app's ask or poll is a
/// few KiB), whatever [`Limits::max_request_bytes`] says; a longer one is
/// dropped unread.
pub const MAX_ACCESS_REQUEST_BYTES: usize = 64 << 10;
pub use error::{NetError, RequestError, RespondError};
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use redial::{is_relayed, peer_of};

use driver::Command;

/// Capacity of the command queue from [`Net`] handles to the swarm task.
const COMMAND_CAPACITY: usize = 256;

/// What to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's libp2p identity.
    pub keypair: Keypair,
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0` and
    /// `/ip4/127.0.0.1/udp/0/quic-v1`; a `/p2p-circuit` address listens
    /// through a relay.
    pub listen: Vec<Multiaddr>,
    /// Addresses advertised as publicly reachable (identify, relay
    /// reservations). A relay server only offers relaying once it has one.
    pub external: Vec<Multiaddr>,
    /// Also confirm every address we listen on (relayed ones excepted) as
    /// external, as soon as it is reported: for a relay reachable where it
    /// listens (a pinning peer on a LAN or with a public address).
    pub listen_is_external: bool,
    /// Relays to reserve a slot on, each `…/p2p/<relay peer id>` (no
    /// `/p2p-circuit`): we listen through each, and redo a lost reservation
    /// with backoff.
    pub relays: Vec<Multiaddr>,
    /// Peers dialled at start and redialled with backoff whenever the last
    /// connection to them drops. A trailing `/p2p/<id>` is optional.
    pub peers: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS and dial them.
    pub mdns: bool,
    /// Relay connections for NATed peers (pinning peers).
    pub relay_server: bool,
    /// Caps and rates.
    pub limits: Limits,
}

impl Config {
    /// A config that listens nowhere and dials no one, with mDNS and the
    /// relay server off and default [`Limits`].
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            external: Vec::new(),
            listen_is_external: false,
            relays: Vec::new(),
            peers: Vec::new(),
            mdns: false,
            relay_server: false,
            limits: Limits::default(),
        }
    }
}

/// Caps, rates and timeouts. The defaults suit a device node.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request frame we accept (and send).
    pub max_request_bytes: usize,
    /// Largest response frame we accept (and send).
    pub max_response_bytes: usize,
    /// Connections to one peer at once.
    pub max_established_per_peer: u32,
    /// Inbound connections at once.
    pub max_established_inbound: u32,
    /// Connections being set up at once, in each direction.
    pub max_pending: u32,
    /// New connections are refused while the process uses more memory.
    pub max_memory_bytes: usize,
    /// Sustained inbound requests per second per peer.
    pub requests_per_second: u32,
    /// Inbound requests per peer allowed in a burst.
    pub request_burst: u32,
    /// Concurrent request streams per connection and direction.
    pub max_concurrent_streams: usize,
    /// Our requests awaiting a response at once.
    pub max_requests_in_flight: usize,
    /// Time for a request to be answered, both ways.
    pub request_timeout: Duration,
    /// A connection with no stream in use closes after this long
    /// (configured peers are redialled).
    pub idle_timeout: Duration,
    /// How long a peer disconnected by [`Net::disconnect`] or for abusing
    /// the rate limit is refused.
    pub ban_duration: Duration,
    /// Events buffered for the receiver before requests are shed.
    pub event_capacity: usize,
    /// What the relay server grants, when it runs.
    pub relay: RelayLimits,
}

/// Caps of the relay server ([`Config::relay_server`]). Reservations and
/// circuits past a cap are refused; a circuit past its duration or bytes is
/// closed by the relay (the peers redial if they were configured to). The
/// rate limits are libp2p's: per peer, 30 reservations and 30 new circuits
/// per 2 minutes; per IP address, 60 of each per minute.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Reservations held at once, in all.
    pub max_reservations: usize,
    /// Reservations held at once by one peer.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts; clients renew it before it ends.
    pub reservation_duration: Duration,
    /// Circuits relayed at once, in all.
    pub max_circuits: usize,
    /// Circuits relayed at once for one source peer.
    pub max_circuits_per_peer: usize,
    /// Longest a circuit stays open.
    pub max_circuit_duration: Duration,
    /// Most bytes relayed over one circuit, both directions.
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    /// Sized for a pinning peer serving one user's devices: a few dozen
    /// devices, circuits long and large enough to carry a sync session
    /// (libp2p's own defaults, 2 minutes and 128 KiB, are for hole punching
    /// only and would cut a sync short).
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(60 * 60),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 256 << 20,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: (1 << 20) + (64 << 10),
            max_response_bytes: (4 << 20) + (64 << 10),
            max_established_per_peer: 2,
            max_established_inbound: 64,
            max_pending: 32,
            max_memory_bytes: 1 << 30,
            requests_per_second: 20,
            request_burst: 40,
            max_concurrent_streams: 32,
            max_requests_in_flight: 1024,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            ban_duration: Duration::from_secs(600),
            event_capacity: 1024,
            relay: RelayLimits::default(),
        }
    }
}

/// The request-response protocol a request travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/basic/sync/0`: sync sessions between members.
    Sync,
    /// `/basic/join/0`: a new device (or a pinning peer) asking to join.
    Join,
    /// `/basic/access/0`: an app asking a device for access, and what
    /// became of its ask.
    Access,
}

/// Something that happened on the network.
#[derive(Debug)]
pub enum Event {
    /// We listen on a new address: a local one, or a relayed one
    /// (`…/p2p-circuit/p2p/<our id>`) once a relay granted a reservation.
    /// Reported once per address, not on each renewal.
    Listening {
        /// The address.
        address: Multiaddr,
    },
    /// We no longer listen on an address (a relay reservation was lost:
    /// it is being redone).
    ListenExpired {
        /// The address.
        address: Multiaddr,
    },
    /// The first connection to `peer` is up.
    Connected {
        /// The peer.
        peer: PeerId,
        /// Its address on that connection.
        address: Multiaddr,
        /// Whether this side dialled it (else the peer dialled us).
        dialled: bool,
    },
    /// The last connection to `peer` closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer sent a request frame. Answer with [`Responder::send`];
    /// dropping `reply` answers nothing (the peer sees its stream dropped).
    Request {
        /// The peer.
        peer: PeerId,
        /// The protocol it came on.
        protocol: Protocol,
        /// The request, at most `max_request_bytes`.
        frame: Vec<u8>,
        /// Where the answer goes.
        reply: Responder,
    },
}

/// Answers one [`Event::Request`].
pub struct Responder {
    sender: oneshot::Sender<Vec<u8>>,
    max: usize,
}

impl Responder {
    /// Sends `frame` as the response.
    pub fn send(self, frame: Vec<u8>) -> Result<(), RespondError> {
        if frame.len() > self.max {
            return Err(RespondError::TooLarge { len: frame.len(), max: self.max });
        }
        self.sender.send(frame).map_err(|_| RespondError::Closed)
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("open", &!self.sender.is_closed()).finish()
    }
}

/// A connected peer, as [`Net::peers`] reports it. Counters cover the
/// frames of the current connection period only.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Remote addresses of its open connections.
    pub addresses: Vec<Multiaddr>,
    /// When its first open connection was established.
    pub connected_since: Instant,
    /// Requests it sent us that we delivered.
    pub requests_in: u64,
    /// Requests it sent us that the rate limit dropped.
    pub requests_refused: u64,
    /// Requests we sent it.
    pub requests_out: u64,
    /// Frame bytes received from it (requests, responses).
    pub bytes_in: u64,
    /// Frame bytes sent to it (requests, responses).
    pub bytes_out: u64,
}

/// Counters since start, as [`Net::stats`] reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inbound requests dropped by the rate limit.
    pub requests_rate_limited: u64,
    /// Inbound requests that failed after being read (timed out,
    /// unanswered, connection closed). Read failures are not reported by
    /// libp2p; see `frames_oversized`.
    pub inbound_failures: u64,
    /// Inbound frames (requests or responses) refused for announcing more
    /// than their cap; the stream was dropped.
    pub frames_oversized: u64,
    /// Connections refused because the peer was in its cool-down.
    pub connections_refused: u64,
    /// Peers disconnected for a protocol violation or rate abuse.
    pub peers_banned: u64,
    /// Requests shed because the event receiver lagged.
    pub events_dropped: u64,
}

/// A handle on the running network. Cheap to clone; every method talks to
/// the swarm task through a bounded queue.
#[derive(Debug, Clone)]
pub struct Net {
    local: PeerId,
    commands: mpsc::Sender<Command>,
    max_request_bytes: usize,
}

/// Builds the swarm, listens on `config.listen`, dials `config.peers`,
/// reserves on `config.relays` and spawns the swarm task on the current
/// tokio runtime.
///
/// Must be called from within a tokio runtime. Fails if the swarm cannot be
/// built, an address cannot be listened on or a relay address is not one.
pub async fn start(config: Config) -> Result<(Net, mpsc::Receiver<Event>), NetError> {
    let local = config.keypair.public().to_peer_id();
    let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (event_tx, events) = mpsc::channel(config.limits.event_capacity.max(1));
    let net = Net { local, commands, max_request_bytes: config.limits.max_request_bytes };
    let driver = driver::Driver::new(config, command_rx, event_tx)?;
    tokio::spawn(driver.run());
    Ok((net, events))
}

impl Net {
    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Sends `frame` to `peer` on the sync protocol and awaits the answer.
    /// Dials the peer if needed (addresses learnt from identify, mDNS or a
    /// previous dial).
    pub async fn request(&self, peer: PeerId, frame: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        self.request_on(Protocol::Sync, peer, frame).await
    }

    /// Sends `frame` to `peer` on `protocol` and awaits the answer, as
    /// [`Net::request`] does on the sync protocol.
    pub async fn request_on(
        &self,
        protocol: Protocol,
        peer: PeerId,
        frame: Vec<u8>,
    ) -> Result<Vec<u8>, RequestError> {
        if frame.len() > self.max_request_bytes {
            return Err(RequestError::TooLarge { len: frame.len(), max: self.max_request_bytes });
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Request { protocol, peer, frame, reply })
            .await
            .map_err(|_| RequestError::Closed)?;
        answer.await.map_err(|_| RequestError::Closed)?
    }

    /// Dials `address` (with or without a trailing `/p2p/<id>`). Returns
    /// once the dial has started; [`Event::Connected`] tells when it is up.
    pub async fn dial(&self, address: Multiaddr) -> Result<(), NetError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Dial { address, reply }).await?;
        answer.await.map_err(|_| NetError::Closed)?
    }

    /// Adds `address` to the configured peers: dialled at the next tick
    /// (within a second) and redialled like those of [`Config::peers`].
    pub async fn add_peer(&self, address: Multiaddr) {
        let _ = self.send(Command::AddPeer { address }).await;
    }

    /// Disconnects `peer` for a protocol violation: closes its connections
    /// and refuses it, both ways, for `limits.ban_duration`.
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.send(Command::Disconnect { peer }).await;
    }

    /// The connected peers. Empty once the network has stopped.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::Peers { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// The addresses we listen on. Empty once the network has stopped.
    pub async fn listen_addresses(&self) -> Vec<Multiaddr> {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::ListenAddresses { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Counters since start. Zero once the network has stopped.
    pub async fn stats(&self) -> Stats {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::Stats { reply }).await.is_err() {
            return Stats::default();
        }
        answer.await.unwrap_or_default()
    }

    /// Stops the swarm task, closing every connection, and waits for it.
    /// Later calls on any handle fail with `Closed` or return nothing.
    pub async fn shutdown(&self) {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), NetError> {
        self.commands.send(command).await.map_err(|_| NetError::Closed)
    }
}
