//! The swarm task: owns the libp2p `Swarm`, executes [`Command`]s from the
//! [`crate::Net`] handles and turns swarm events into [`Event`]s.
//!
//! One `select!` loop drives five sources: commands, swarm events, answers
//! to inbound requests, the event outbox and a one-second housekeeping tick
//! (ban expiry, redials, relay reservations).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol as Part;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, mdns, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::codec::FrameCodec;
use crate::error::{NetError, RequestError};
use crate::lan::LanPeers;
use crate::rate::{RateLimiter, Verdict};
use crate::redial::{Redialer, is_relayed, peer_of};
use crate::{Config, Event, Limits, PeerInfo, Protocol, Responder, Stats};

/// Most addresses dialled for one peer discovered by mDNS.
const MAX_MDNS_ADDRESSES: usize = 8;
/// Period of the housekeeping tick.
const TICK: Duration = Duration::from_secs(1);

/// Where the answer to one of our requests goes.
type AnswerSender = oneshot::Sender<Result<Vec<u8>, RequestError>>;

/// A request from a [`crate::Net`] handle to the swarm task.
#[derive(Debug)]
pub(crate) enum Command {
    Request { protocol: Protocol, peer: PeerId, frame: Vec<u8>, reply: AnswerSender },
    Dial { address: Multiaddr, reply: oneshot::Sender<Result<(), NetError>> },
    AddPeer { address: Multiaddr },
    Disconnect { peer: PeerId },
    Peers { reply: oneshot::Sender<Vec<PeerInfo>> },
    ListenAddresses { reply: oneshot::Sender<Vec<Multiaddr>> },
    Stats { reply: oneshot::Sender<Stats> },
    Shutdown { reply: oneshot::Sender<()> },
}

/// An inbound request whose answer (or its absence) is known.
struct Answered {
    peer: PeerId,
    protocol: Protocol,
    channel: ResponseChannel<Vec<u8>>,
    response: Option<Vec<u8>>,
}

/// What we know of a connected peer.
#[derive(Debug)]
struct PeerState {
    connections: HashMap<ConnectionId, Multiaddr>,
    since: Instant,
    requests_in: u64,
    requests_refused: u64,
    requests_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// The swarm task.
pub(crate) struct Driver {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Events waiting for room in `events`; bounded by `limits.event_capacity`.
    outbox: VecDeque<Event>,
    events_closed: bool,
    limits: Limits,
    rate: RateLimiter,
    redial: Redialer,
    /// Peers found on the LAN, dialled until connected.
    lan: LanPeers,
    /// Dials started for a redial target, by connection.
    dialing: HashMap<ConnectionId, usize>,
    /// The relays to reserve on (`Config::relays`), with their backoff.
    relays: Redialer,
    /// Relay listeners (one reservation each) and their index in `relays`.
    relay_listeners: HashMap<ListenerId, usize>,
    /// Listen addresses reported as [`Event::Listening`]; a renewed
    /// reservation reports its address again, which is not news.
    announced: HashSet<Multiaddr>,
    /// Confirm our listen addresses as external (`Config::listen_is_external`).
    listen_is_external: bool,
    bans: HashMap<PeerId, Instant>,
    peers: HashMap<PeerId, PeerState>,
    /// Our requests awaiting their answer; ids are per protocol behaviour.
    outbound: HashMap<(Protocol, OutboundRequestId), AnswerSender>,
    answers: FuturesUnordered<BoxFuture<'static, Answered>>,
    stats: Stats,
    /// Written by the codec, read into `stats` on demand.
    oversized: Arc<AtomicU64>,
}

impl Driver {
    /// Builds the swarm and starts listening.
    pub(crate) fn new(
        config: Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, NetError> {
        if let Some(address) = config.relays.iter().find(|a| relay_of(a).is_none()) {
            return Err(NetError::NotARelay(address.clone()));
        }
        let idle = config.limits.idle_timeout;
        let oversized = Arc::new(AtomicU64::new(0));
        let codec_counter = oversized.clone();
        let mut swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetError::Build(e.into()))?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| NetError::Build(e.into()))?
            .with_behaviour(|key, relay_client| {
                Behaviour::new(key, relay_client, &config, codec_counter)
            })
            .map_err(|e| NetError::Build(e.into()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        for address in &config.listen {
            swarm
                .listen_on(address.clone())
                .map_err(|source| NetError::Listen { address: address.clone(), source })?;
        }
        for address in &config.peers {
            if let Some(peer) = peer_of(address) {
                swarm.add_peer_address(peer, address.clone());
            }
        }
        for address in &config.external {
            swarm.add_external_address(address.clone());
        }
        tracing::info!(peer = %swarm.local_peer_id(), "network started");

        let now = Instant::now();
        Ok(Self {
            swarm,
            commands,
            events,
            outbox: VecDeque::new(),
            events_closed: false,
            rate: RateLimiter::new(config.limits.requests_per_second, config.limits.request_burst),
            redial: Redialer::new(config.peers, now),
            lan: LanPeers::default(),
            limits: config.limits,
            dialing: HashMap::new(),
            relays: Redialer::new(config.relays, now),
            relay_listeners: HashMap::new(),
            announced: HashSet::new(),
            listen_is_external: config.listen_is_external,
            bans: HashMap::new(),
            peers: HashMap::new(),
            outbound: HashMap::new(),
            answers: FuturesUnordered::new(),
            stats: Stats::default(),
            oversized,
        })
    }

    /// Runs until [`Command::Shutdown`] or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A second sender so that a reserved permit borrows a local, not `self`.
        let events = self.events.clone();
        let shutdown = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(answered) = self.answers.next(), if !self.answers.is_empty() => {
                    self.on_answered(answered);
                }
                permit = events.reserve(), if !self.outbox.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.outbox.pop_front() {
                            permit.send(event);
                        }
                    }
                    Err(_) => self.close_events(),
                },
                _ = tick.tick() => self.housekeeping(Instant::now()),
            }
        };
        tracing::info!(peer = %self.swarm.local_peer_id(), "network stopped");
        // Drop the swarm (closing every connection) before acknowledging.
        drop(self);
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request { protocol, peer, frame, reply } => {
                if self.is_banned(&peer) {
                    let _ = reply.send(Err(RequestError::Banned(peer)));
                    return;
                }
                if self.outbound.len() >= self.limits.max_requests_in_flight {
                    let _ = reply.send(Err(RequestError::Busy));
                    return;
                }
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.requests_out += 1;
                    state.bytes_out += frame.len() as u64;
                }
                let id = self.frames(protocol).send_request(&peer, frame);
                self.outbound.insert((protocol, id), reply);
            }
            Command::Dial { address, reply } => {
                let _ = reply.send(self.dial(address));
            }
            Command::AddPeer { address } => {
                if !self.redial.add(address.clone(), Instant::now()) {
                    tracing::debug!(%address, "not added to the peers to redial (known, or too many)");
                }
            }
            Command::Disconnect { peer } => self.ban(peer, Instant::now(), "disconnected"),
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
            Command::ListenAddresses { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Stats { reply } => {
                self.stats.frames_oversized = self.oversized.load(Ordering::Relaxed);
                let _ = reply.send(self.stats);
            }
            Command::Shutdown { reply } => {
                // Handled by `run`; answered here only if it ever gets here.
                let _ = reply.send(());
            }
        }
    }

    fn dial(&mut self, address: Multiaddr) -> Result<(), NetError> {
        let opts = match peer_of(&address) {
            Some(peer) if self.is_banned(&peer) => return Err(NetError::Banned(peer)),
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![address])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            None => DialOpts::unknown_peer_id().address(address).build(),
        };
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(NetError::Dial(e)),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event, now),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.lan.connected(&peer_id);
                if let Some(index) = self.dialing.remove(&connection_id) {
                    self.redial.connected(index, peer_id, now);
                }
                let address = remote_address(&endpoint, peer_id);
                if endpoint.is_dialer() {
                    // Remembered so that a request can redial the peer later.
                    self.swarm.add_peer_address(peer_id, address.clone());
                }
                let state = self.peers.entry(peer_id).or_insert_with(|| PeerState {
                    connections: HashMap::new(),
                    since: now,
                    requests_in: 0,
                    requests_refused: 0,
                    requests_out: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                });
                let first = state.connections.is_empty();
                state.connections.insert(connection_id, address.clone());
                if first {
                    tracing::info!(peer = %peer_id, %address, "connected");
                    let dialled = endpoint.is_dialer();
                    self.emit(Event::Connected { peer: peer_id, address, dialled });
                } else {
                    tracing::debug!(peer = %peer_id, %address, "another connection");
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id, connection_id, num_established, cause, ..
            } => {
                self.dialing.remove(&connection_id);
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections.remove(&connection_id);
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.rate.remove(&peer_id);
                    self.redial.dropped(peer_id, now);
                    match cause {
                        Some(cause) => tracing::info!(peer = %peer_id, %cause, "disconnected"),
                        None => tracing::info!(peer = %peer_id, "disconnected"),
                    }
                    self.emit(Event::Disconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let Some(index) = self.dialing.remove(&connection_id) {
                    self.redial.failed(index, now);
                }
                if peer_id.is_some_and(|peer| self.is_banned(&peer)) {
                    self.stats.connections_refused += 1;
                }
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError { peer_id, send_back_addr, error, .. } => {
                if peer_id.is_some_and(|peer| self.is_banned(&peer)) {
                    self.stats.connections_refused += 1;
                }
                tracing::debug!(peer = ?peer_id, address = %send_back_addr, %error, "inbound connection failed");
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                self.on_listening(listener_id, address, now);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.on_expired(address),
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                for address in addresses {
                    self.on_expired(address);
                }
                if let Some(index) = self.relay_listeners.remove(&listener_id) {
                    let relay = self.relays.target(index).map(|t| t.address.clone());
                    let peer = relay.as_ref().and_then(relay_of);
                    let relay = relay.map(|r| r.to_string()).unwrap_or_default();
                    match &reason {
                        Err(error) => tracing::warn!(%relay, %error, "relay reservation refused"),
                        Ok(()) => tracing::info!(%relay, "relay reservation ended"),
                    }
                    // A reservation that was granted counts as a connection
                    // (its duration resets the backoff); one never granted,
                    // as a failed dial.
                    match peer {
                        Some(peer) if self.relays.was_connected(index) => {
                            self.relays.dropped(peer, now);
                        }
                        _ => self.relays.failed(index, now),
                    }
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            other => tracing::trace!(event = ?other, "swarm event"),
        }
    }

    fn on_listening(&mut self, listener: ListenerId, address: Multiaddr, now: Instant) {
        let relayed = is_relayed(&address);
        if let Some(&index) = self.relay_listeners.get(&listener)
            && let Some(relay) = self.relays.target(index).and_then(|t| relay_of(&t.address))
        {
            self.relays.connected(index, relay, now);
        }
        if self.listen_is_external && !relayed {
            self.swarm.add_external_address(address.clone());
        }
        if self.announced.insert(address.clone()) {
            if relayed {
                tracing::info!(%address, "listening through a relay");
            } else {
                tracing::info!(%address, "listening");
            }
            self.emit(Event::Listening { address });
        } else {
            tracing::debug!(%address, "relay reservation renewed");
        }
    }

    fn on_expired(&mut self, address: Multiaddr) {
        if self.listen_is_external {
            self.swarm.remove_external_address(&address);
        }
        if self.announced.remove(&address) {
            tracing::info!(%address, "no longer listening");
            self.emit(Event::ListenExpired { address });
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent, now: Instant) {
        match event {
            BehaviourEvent::Sync(event) => self.on_frames_event(Protocol::Sync, event, now),
            BehaviourEvent::Join(event) => self.on_frames_event(Protocol::Join, event, now),
            BehaviourEvent::Access(event) => self.on_frames_event(Protocol::Access, event, now),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_discovered(found, now),
            BehaviourEvent::Identify(libp2p::identify::Event::Received {
                peer_id, info, ..
            }) => {
                tracing::debug!(
                    peer = %peer_id,
                    agent = %info.agent_version,
                    addresses = info.listen_addrs.len(),
                    "identified"
                );
            }
            other => tracing::trace!(event = ?other, "behaviour event"),
        }
    }

    /// The request-response behaviour of `protocol`.
    fn frames(&mut self, protocol: Protocol) -> &mut request_response::Behaviour<FrameCodec> {
        match protocol {
            Protocol::Sync => &mut self.swarm.behaviour_mut().sync,
            Protocol::Join => &mut self.swarm.behaviour_mut().join,
            Protocol::Access => &mut self.swarm.behaviour_mut().access,
        }
    }

    fn on_frames_event(
        &mut self,
        protocol: Protocol,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
        now: Instant,
    ) {
        use request_response::{Event as RrEvent, Message, OutboundFailure};
        match event {
            RrEvent::Message {
                peer, message: Message::Request { request, channel, .. }, ..
            } => self.on_request(protocol, peer, request, channel, now),
            RrEvent::Message {
                peer, message: Message::Response { request_id, response }, ..
            } => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.bytes_in += response.len() as u64;
                }
                if let Some(reply) = self.outbound.remove(&(protocol, request_id)) {
                    let _ = reply.send(Ok(response));
                }
            }
            RrEvent::OutboundFailure { peer, request_id, error, .. } => {
                tracing::debug!(%peer, ?protocol, %error, "request failed");
                let error = match error {
                    OutboundFailure::DialFailure => RequestError::DialFailure,
                    OutboundFailure::Timeout => RequestError::Timeout,
                    OutboundFailure::ConnectionClosed => RequestError::ConnectionClosed,
                    OutboundFailure::UnsupportedProtocols => RequestError::UnsupportedProtocol,
                    OutboundFailure::Io(e) => RequestError::Io(e),
                };
                if let Some(reply) = self.outbound.remove(&(protocol, request_id)) {
                    let _ = reply.send(Err(error));
                }
            }
            RrEvent::InboundFailure { peer, error, .. } => {
                self.stats.inbound_failures += 1;
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            RrEvent::ResponseSent { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        protocol: Protocol,
        peer: PeerId,
        frame: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
        now: Instant,
    ) {
        let state = self.peers.get_mut(&peer);
        match self.rate.check(peer, now) {
            Verdict::Allow => {}
            verdict => {
                self.stats.requests_rate_limited += 1;
                if let Some(state) = state {
                    state.requests_refused += 1;
                }
                drop(channel);
                if verdict == Verdict::Disconnect {
                    self.ban(peer, now, "kept exceeding the request rate");
                } else {
                    tracing::debug!(%peer, "request over the rate limit dropped");
                }
                return;
            }
        }
        if let Some(state) = state {
            state.requests_in += 1;
            state.bytes_in += frame.len() as u64;
        }
        let (sender, receiver) = oneshot::channel();
        let timeout = self.limits.request_timeout;
        self.answers.push(Box::pin(async move {
            let response = match tokio::time::timeout(timeout, receiver).await {
                Ok(Ok(response)) => Some(response),
                _ => None,
            };
            Answered { peer, protocol, channel, response }
        }));
        self.emit(Event::Request {
            peer,
            protocol,
            frame,
            reply: Responder { sender, max: self.limits.max_response_bytes },
        });
    }

    fn on_answered(&mut self, answered: Answered) {
        let Answered { peer, protocol, channel, response } = answered;
        // Without a response the channel is dropped: the peer sees its
        // stream closed without an answer.
        if let Some(response) = response {
            let len = response.len() as u64;
            match self.frames(protocol).send_response(channel, response) {
                Ok(()) => {
                    if let Some(state) = self.peers.get_mut(&peer) {
                        state.bytes_out += len;
                    }
                }
                Err(_) => tracing::debug!(%peer, "response too late: request gone"),
            }
        }
    }

    fn on_discovered(&mut self, found: Vec<(PeerId, Multiaddr)>, now: Instant) {
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for (peer, address) in found {
            let addresses = by_peer.entry(peer).or_default();
            if addresses.len() < MAX_MDNS_ADDRESSES {
                addresses.push(address);
            }
        }
        for (peer, addresses) in by_peer {
            if peer == *self.swarm.local_peer_id()
                || self.is_banned(&peer)
                || self.swarm.is_connected(&peer)
            {
                continue;
            }
            tracing::debug!(%peer, "discovered on the LAN");
            let dial_first = *self.swarm.local_peer_id() < peer;
            self.lan.found(peer, addresses, dial_first, now);
        }
        self.dial_lan(now);
    }

    /// Dials the peers found on the LAN that are due (see [`LanPeers`]).
    fn dial_lan(&mut self, now: Instant) {
        for (peer, addresses) in self.lan.take_due(now) {
            if self.is_banned(&peer) || self.swarm.is_connected(&peer) {
                self.lan.connected(&peer);
                continue;
            }
            tracing::debug!(%peer, "dialling a peer found on the LAN");
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                tracing::debug!(%peer, %error, "cannot dial discovered peer");
            }
        }
    }

    /// Closes every connection to `peer` and refuses it until the ban ends.
    fn ban(&mut self, peer: PeerId, now: Instant, reason: &str) {
        tracing::warn!(%peer, reason, "banning peer");
        self.stats.peers_banned += 1;
        self.bans.insert(peer, now + self.limits.ban_duration);
        self.rate.remove(&peer);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.bans.contains_key(peer)
    }

    fn housekeeping(&mut self, now: Instant) {
        self.dial_lan(now);
        let expired: Vec<PeerId> =
            self.bans.iter().filter(|(_, until)| **until <= now).map(|(peer, _)| *peer).collect();
        for peer in expired {
            tracing::info!(%peer, "ban ended");
            self.bans.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }

        for index in self.redial.take_due(now) {
            let Some(target) = self.redial.target(index) else {
                continue;
            };
            let address = target.address.clone();
            let opts = match target.peer {
                Some(peer) if self.is_banned(&peer) => {
                    self.redial.failed(index, now);
                    continue;
                }
                Some(peer) if self.swarm.is_connected(&peer) => {
                    self.redial.connected(index, peer, now);
                    continue;
                }
                Some(peer) => DialOpts::peer_id(peer).addresses(vec![address]).build(),
                None => DialOpts::unknown_peer_id().address(address).build(),
            };
            let connection = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%connection, "dialling configured peer");
                    self.dialing.insert(connection, index);
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot dial configured peer");
                    self.redial.failed(index, now);
                }
            }
        }

        for index in self.relays.take_due(now) {
            let Some(relay) = self.relays.target(index).map(|t| t.address.clone()) else {
                continue;
            };
            if relay_of(&relay).is_some_and(|peer| self.is_banned(&peer)) {
                self.relays.failed(index, now);
                continue;
            }
            match self.swarm.listen_on(relay.clone().with(Part::P2pCircuit)) {
                Ok(listener) => {
                    tracing::debug!(%relay, "reserving on relay");
                    self.relay_listeners.insert(listener, index);
                }
                Err(error) => {
                    tracing::warn!(%relay, %error, "cannot reserve on relay");
                    self.relays.failed(index, now);
                }
            }
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        self.peers
            .iter()
            .map(|(peer, state)| PeerInfo {
                peer: *peer,
                addresses: state.connections.values().cloned().collect(),
                connected_since: state.since,
                requests_in: state.requests_in,
                requests_refused: state.requests_refused,
                requests_out: state.requests_out,
                bytes_in: state.bytes_in,
                bytes_out: state.bytes_out,
            })
            .collect()
    }

    /// Queues `event` for the receiver. When the receiver lags by a full
    /// outbox, requests are shed (their sender sees no answer); connection
    /// events are dropped only past twice the capacity.
    fn emit(&mut self, event: Event) {
        if self.outbox.is_empty() && !self.events_closed {
            match self.events.try_send(event) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(event)) => self.outbox.push_back(event),
                Err(mpsc::error::TrySendError::Closed(event)) => {
                    self.close_events();
                    self.shed(event);
                }
            }
            return;
        }
        let capacity = self.limits.event_capacity.max(1);
        let sheddable = matches!(event, Event::Request { .. });
        if self.events_closed
            || (sheddable && self.outbox.len() >= capacity)
            || self.outbox.len() >= 2 * capacity
        {
            self.shed(event);
        } else {
            self.outbox.push_back(event);
        }
    }

    fn shed(&mut self, event: Event) {
        if self.events_closed {
            // Nobody listens: nothing worth counting or warning about.
        } else {
            self.stats.events_dropped += 1;
            let kind = match &event {
                Event::Listening { .. } => "listening",
                Event::ListenExpired { .. } => "listen expired",
                Event::Connected { .. } => "connected",
                Event::Disconnected { .. } => "disconnected",
                Event::Request { .. } => "request",
            };
            tracing::warn!(kind, "event receiver lagging: event dropped");
        }
    }

    fn close_events(&mut self) {
        if !self.events_closed {
            tracing::debug!("event receiver dropped");
            self.events_closed = true;
        }
        while let Some(event) = self.outbox.pop_front() {
            self.shed(event);
        }
    }
}

/// Where the peer of a connection is: its address, or for a connection it
/// made to us through a relay (whose remote address is only `/p2p/<id>`),
/// the relayed address we listen on followed by its id, which says through
/// which relay it came.
fn remote_address(endpoint: &ConnectedPoint, peer: PeerId) -> Multiaddr {
    match endpoint {
        ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => {
            local_addr.clone().with(Part::P2p(peer))
        }
        endpoint => endpoint.get_remote_address().clone(),
    }
}

/// The relay's peer id, if `address` is a relay's: it ends with
/// `/p2p/<relay id>` and is not itself relayed.
fn relay_of(address: &Multiaddr) -> Option<PeerId> {
    if is_relayed(address) {
        return None;
    }
    peer_of(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses_name_the_relay_and_are_not_relayed() {
        let relay = PeerId::random();
        let direct: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}").parse().unwrap();
        assert_eq!(relay_of(&direct), Some(relay));
        assert_eq!(relay_of(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()), None);
        let circuit = direct.with(Part::P2pCircuit).with(Part::P2p(PeerId::random()));
        assert_eq!(relay_of(&circuit), None);
    }
}
