//! The world: nodes, their sync sessions, the network and the agenda of
//! scenario actions, advanced event by event on virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use basic_proto::control::{AuthState, OpId, Rights};
use basic_proto::sync::message::frame_name;
use basic_proto::sync::{Answer, Event, RequesterConfig, Responder};
use basic_proto::{CommitId, DatabaseId, NamingKey, Party, PublicKey, ScopeId, SecretKey, Value};
use basic_store::sync::{Input, Session as Driver, is_shut_out, shut_out_notice};
use basic_store::{Executed, SyncReplica};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::adversary::{self, Attack};
use crate::alarms::Alarms;
use crate::invariants::{self, Failure};
use crate::net::{Faults, Kind, Net, NodeId, Packet};
use crate::node::{Node, Role};
use crate::trace::Trace;

/// How long a request waits for its response before it fails (as
/// libp2p request-response's timeout does).
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Time between summaries once in sync, by default.
pub const RESYNC_MS: u64 = 3_000;
/// Wait before redialling a peer after a session closed.
pub const RECONNECT_MS: u64 = 2_000;
/// How often convergence is probed once the network healed for good.
pub const PROBE_MS: u64 = 1_000;
/// Convergence must come within this much simulated time after the final heal.
pub const LIVENESS_MS: u64 = 120_000;
/// Most events one run may take (a livelock guard).
pub const MAX_EVENTS: u64 = 3_000_000;
/// Virtual time zero, as wall-clock ms (in the past, so no stamp is "ahead").
pub const T0: u64 = 1_600_000_000_000;

/// 32 random bytes, to seed a node's randomness.
fn seed(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut seed = [0; 32];
    rng.fill_bytes(&mut seed);
    seed
}

/// A uniform draw in `0..n` (0 when `n` is 0).
pub fn below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    if n == 0 { 0 } else { rng.next_u64() % n }
}

/// True with probability `p`.
pub fn chance(rng: &mut ChaCha20Rng, p: f64) -> bool {
    p > 0.0 && ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
}

/// What a run is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed of every random choice.
    pub seed: u64,
    /// Device nodes.
    pub nodes: usize,
    /// App nodes.
    pub apps: usize,
    /// Pinning peers.
    pub pinners: usize,
    /// Writes in the run.
    pub steps: u64,
    /// Network faults.
    pub faults: Faults,
    /// Time between a session's summaries once in sync; `u64::MAX` turns
    /// periodic resync off, so that after a session's first round only
    /// live pushes carry new commits and operations.
    pub resync_ms: u64,
    /// Print every trace line.
    pub echo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0,
            nodes: 3,
            apps: 1,
            pinners: 1,
            steps: 40,
            faults: Faults::default(),
            resync_ms: RESYNC_MS,
            echo: false,
        }
    }
}

/// Something the scenario makes happen at a time.
#[derive(Debug, Clone)]
pub enum Action {
    /// A write on this node, or on a random writer.
    Write(Option<NodeId>),
    /// Cuts every link between the two groups.
    Partition(Vec<NodeId>, Vec<NodeId>),
    /// Restores every link.
    Heal,
    /// Crashes a node (keeping what it flushed).
    Crash(NodeId),
    /// Restarts a crashed node.
    Restart(NodeId),
    /// Loses a device for good; the first device removes it.
    LoseDevice(NodeId),
    /// The first device adds a new device, which joins and syncs.
    AddDevice,
    /// The first up device revokes an app on its scope.
    Revoke(NodeId),
    /// An adversary attacks an honest node.
    Attack(Attack, NodeId),
    /// Writes stop; the network heals for good and convergence is awaited.
    Settle,
}

/// One direction of sync between two nodes: `from`'s session (stepped by
/// the same driver as the node's) and `to`'s responder for it.
#[derive(Debug)]
pub struct Session {
    driver: Driver,
    /// What the next step feeds in: the answer or failure of the request
    /// that was outstanding.
    input: Option<Input>,
    /// When the driver asked to be stepped again.
    wake_at: Option<u64>,
    /// Whether the database changed since the last step: the session is
    /// stepped now, as a node's session wakes on the change signal.
    changed: bool,
    responder: Responder,
    generation: u64,
    outstanding: Option<(u64, u64)>,
    reconnect_at: Option<u64>,
    /// Whether the peer was told that our log shut it out.
    told: bool,
}

impl Session {
    /// When the session next needs attention, at `now` or later: its
    /// redial, the deadline of its outstanding request, at once for an
    /// answer or a change to take, else its driver's timer; never once
    /// closed and not redialling.
    fn due(&self, now: u64) -> Option<u64> {
        if let Some(at) = self.reconnect_at {
            Some(at)
        } else if let Some((_, deadline)) = self.outstanding {
            Some(deadline)
        } else if self.input.is_some() || self.changed {
            Some(now)
        } else if self.driver.requester().is_closed() {
            None
        } else {
            self.wake_at.map(|at| at.max(now + 1))
        }
    }
}

/// A write acknowledged to its writer.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The writer.
    pub node: NodeId,
    /// The commit carrying it.
    pub id: CommitId,
    /// Its scope.
    pub scope: ScopeId,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: String,
    /// Events processed.
    pub events: u64,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Messages lost.
    pub lost: u64,
    /// Acknowledged commits.
    pub commits: u64,
    /// Sessions closed by a violation or an error.
    pub closed: u64,
    /// Attacks made, all refused.
    pub attacks: u64,
    /// Simulated ms from the final heal to convergence.
    pub convergence_ms: u64,
    /// Simulated time at the end.
    pub end_ms: u64,
    /// BLAKE3 of the trace.
    pub hash: String,
}

/// The simulated world.
#[derive(Debug)]
pub struct World {
    /// The configuration.
    pub config: Config,
    /// Virtual time, ms since [`T0`].
    pub now: u64,
    /// The same time as a wall clock (ms since the Unix epoch), which every
    /// node's database reads.
    clock: Arc<AtomicU64>,
    /// The one source of randomness.
    pub rng: ChaCha20Rng,
    /// Every node ever made.
    pub nodes: Vec<Node>,
    /// The network.
    pub net: Net,
    /// Sessions by `(from, to)`.
    pub sessions: BTreeMap<(NodeId, NodeId), Session>,
    /// When each session is next due ([`Session::due`]).
    alarms: Alarms,
    /// Pairs that connect when both are up (`(low, high)`).
    pub topology: BTreeSet<(NodeId, NodeId)>,
    agenda: BTreeMap<(u64, u64), Action>,
    agenda_seq: u64,
    /// The trace.
    pub trace: Trace,
    /// The database.
    pub database: DatabaseId,
    /// Acknowledged writes.
    pub acked: Vec<Acked>,
    /// Commit ids that must never be applied anywhere (made by adversaries).
    pub forbidden: Vec<(CommitId, String)>,
    /// What adversaries learned that they must not have (keys, whether a
    /// node hosts a database): any entry is a privacy failure.
    pub leaks: Vec<String>,
    /// Apps revoked: node, scope, the epoch current before the revocation.
    pub revoked: Vec<(NodeId, ScopeId, u32)>,
    /// Names scopes as the devices do.
    naming: NamingKey,
    /// Row ids written so far.
    row_ids: Vec<String>,
    generation: u64,
    exchange: u64,
    /// Events processed.
    pub events: u64,
    settle_at: Option<u64>,
    next_probe: u64,
    converged_at: Option<u64>,
    closed: u64,
    attacks: u64,
    shown: BTreeMap<(NodeId, NodeId), BTreeMap<PublicKey, (u64, u64)>>,
}

/// The schema every run uses.
pub const SCHEMA: &str = r#"
namespace = "todo"
[tables.lists]
primary_key = ["id"]
columns = { id = "text", name = "text", n = { type = "integer", default = 0 } }
"#;

impl World {
    /// A world with one device holding a fresh database with [`SCHEMA`].
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
        let clock = Arc::new(AtomicU64::new(T0));
        // The first device creates the database, as a first `basic up` does.
        let first = Node::found("d0".into(), seed(&mut rng), clock.clone())?;
        let db = first.db.as_ref().context("d0 is up")?;
        let database = db.id();
        let root = db.root_secret()?.context("the creating device holds the root secret")?;
        let schema = basic_store::Schema::parse(SCHEMA, basic_store::Format::Toml)?;
        first.db.as_ref().context("d0 is up")?.apply_schema(schema)?;
        let echo = config.echo;
        Ok(Self {
            net: Net::new(config.faults),
            config,
            now: 0,
            clock,
            rng,
            nodes: vec![first],
            sessions: BTreeMap::new(),
            alarms: Alarms::default(),
            topology: BTreeSet::new(),
            agenda: BTreeMap::new(),
            agenda_seq: 0,
            trace: Trace::new(echo),
            database,
            acked: Vec::new(),
            forbidden: Vec::new(),
            leaks: Vec::new(),
            revoked: Vec::new(),
            naming: NamingKey::of_root(&root),
            row_ids: Vec::new(),
            generation: 0,
            exchange: 0,
            events: 0,
            settle_at: None,
            next_probe: 0,
            converged_at: None,
            closed: 0,
            attacks: 0,
            shown: BTreeMap::new(),
        })
    }

    /// The first device, which adds the others and grants apps.
    fn admin(&self) -> anyhow::Result<&basic_store::Database<crate::node::SharedMem>> {
        self.nodes
            .iter()
            .find(|n| n.role == Role::Device && n.is_up() && !n.lost)
            .and_then(|n| n.db.as_ref())
            .context("no device is up to administer")
    }

    /// The first up device's database (the one that administers).
    pub fn admin_db(&self) -> anyhow::Result<&basic_store::Database<crate::node::SharedMem>> {
        self.admin()
    }

    /// The first up device (the one that administers).
    pub fn admin_index(&self) -> anyhow::Result<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.role == Role::Device && n.is_up() && !n.lost)
            .context("no device is up to administer")
    }

    /// Adds a node of `role`, authorised by the first device, connected to
    /// every node in `peers`.
    pub fn add_node(&mut self, role: Role, peers: &[NodeId]) -> anyhow::Result<NodeId> {
        let secret = key(&mut self.rng);
        let admin = self.admin()?;
        let party = Party::of(&secret);
        let prefix = match &role {
            Role::Device => {
                admin.add_device(party)?;
                "d"
            }
            Role::Pinner => {
                admin.add_pinner(party.key)?;
                "p"
            }
            Role::App { namespace, .. } => {
                admin.grant(party, namespace.clone(), Rights::ReadWrite)?;
                "a"
            }
        };
        let ops = admin.control_ops()?;
        let count = self.nodes.iter().filter(|n| n.name.starts_with(prefix)).count();
        let name = format!("{prefix}{count}");
        let seed = seed(&mut self.rng);
        let node = Node::create(
            name.clone(),
            role,
            secret,
            self.database,
            &ops,
            self.clock.clone(),
            seed,
        )?;
        self.nodes.push(node);
        let id = self.nodes.len() - 1;
        for &peer in peers {
            self.topology.insert((peer.min(id), peer.max(id)));
        }
        self.trace.record(self.now, format!("join {name} peers={peers:?}"));
        Ok(id)
    }

    /// Schedules an action.
    pub fn at(&mut self, time: u64, action: Action) {
        self.agenda_seq += 1;
        self.agenda.insert((time, self.agenda_seq), action);
    }

    /// Runs until the world converged after [`Action::Settle`], then checks
    /// every invariant.
    pub fn run(&mut self, scenario: &str) -> Result<Summary, Failure> {
        self.connect();
        loop {
            self.pump();
            invariants::check_during(self)?;
            if let Some(settle) = self.settle_at
                && self.now >= self.next_probe
            {
                {
                    self.next_probe = self.now + PROBE_MS;
                    if invariants::settled(self).is_ok() {
                        self.converged_at = Some(self.now);
                        self.trace
                            .record(self.now, format!("converged after {}ms", self.now - settle));
                        break;
                    }
                    if self.now > settle + LIVENESS_MS {
                        let why = invariants::settled(self).err().unwrap_or_default();
                        return Err(self.fail(
                            "liveness",
                            format!("not converged {LIVENESS_MS}ms after the final heal: {why}"),
                        ));
                    }
                }
            }
            if self.events >= MAX_EVENTS {
                return Err(self.fail("liveness", "event budget exhausted (livelock?)".into()));
            }
            let Some(next) = self.next_wake() else {
                return Err(self.fail("liveness", "nothing left to do".into()));
            };
            self.now = self.now.max(next);
            self.clock.store(T0 + self.now, Ordering::Relaxed);
            self.events += 1;
            self.step().map_err(|e| self.fail("harness", format!("{e:#}")))?;
        }
        invariants::check_final(self)?;
        Ok(Summary {
            seed: self.config.seed,
            scenario: scenario.to_owned(),
            events: self.events,
            messages: self.net.sent,
            bytes: self.net.bytes,
            lost: self.net.lost,
            commits: self.acked.len() as u64,
            closed: self.closed,
            attacks: self.attacks,
            convergence_ms: self.converged_at.unwrap_or(0) - self.settle_at.unwrap_or(0),
            end_ms: self.now,
            hash: self.trace.hash(),
        })
    }

    /// A failure at this point of the run.
    pub fn fail(&self, invariant: &str, detail: String) -> Failure {
        Failure {
            seed: self.config.seed,
            step: self.events,
            now: self.now,
            invariant: invariant.to_owned(),
            detail,
            tail: self.trace.tail().cloned().collect(),
        }
    }

    fn next_wake(&self) -> Option<u64> {
        let probe = self.settle_at.map(|_| self.next_probe);
        [self.net.next_at(), self.agenda.keys().next().map(|k| k.0), self.alarms.next(), probe]
            .into_iter()
            .flatten()
            .min()
    }

    /// Processes one thing due now: a packet or an action (sessions that
    /// are due are stepped by [`World::pump`]).
    fn step(&mut self) -> anyhow::Result<()> {
        if let Some(packet) = self.net.pop_due(self.now) {
            if let Some(packet) = packet {
                self.deliver(packet)?;
            }
            return Ok(());
        }
        if let Some((&key, _)) = self.agenda.iter().next()
            && key.0 <= self.now
            && let Some(action) = self.agenda.remove(&key)
        {
            return self.act(action);
        }
        Ok(())
    }

    /// Sets the alarm of the session `key` from its state.
    fn rearm(&mut self, key: (NodeId, NodeId)) {
        let due = self.sessions.get(&key).and_then(|session| session.due(self.now));
        self.alarms.set(key, due);
    }

    /// Has `from`'s session with `to` start a round now (sync.md §6).
    fn pull_from(&mut self, from: NodeId, to: NodeId) {
        let Some(session) = self.sessions.get_mut(&(from, to)) else { return };
        self.trace.record(self.now, format!("pull {from}->{to}"));
        session.driver.resync_now();
        session.wake_at = Some(self.now);
        self.rearm((from, to));
    }

    /// Opens every session the topology allows between up nodes.
    fn connect(&mut self) {
        let pairs: Vec<_> = self.topology.iter().copied().collect();
        for (a, b) in pairs {
            for (from, to) in [(a, b), (b, a)] {
                if self.nodes[from].is_up()
                    && self.nodes[to].is_up()
                    && !self.sessions.contains_key(&(from, to))
                {
                    self.open_session(from, to);
                }
            }
        }
    }

    fn open_session(&mut self, from: NodeId, to: NodeId) {
        if let Some(old) = self.sessions.remove(&(from, to)) {
            self.shown.insert((from, to), old.driver.requester().shown().clone());
        }
        self.alarms.set((from, to), None);
        let mut nonce = [0; 32];
        self.rng.fill_bytes(&mut nonce);
        let (a, b) = (&self.nodes[from], &self.nodes[to]);
        let config = RequesterConfig {
            key: a.key.clone(),
            database: self.database,
            local_transport: vec![from as u8],
            peer_transport: vec![to as u8],
            view: a.view(),
            resync_ms: self.config.resync_ms,
            nonce,
            // Sessions follow the configured topology: each end knows whom
            // it dialled.
            known_peer: Some(b.key.public()),
        };
        let shown = self.shown.get(&(from, to)).cloned().unwrap_or_default();
        let Some(db) = a.db.as_ref() else { return };
        let driver = match Driver::open(db, config, shown) {
            Ok(driver) => driver,
            Err(failure) => {
                self.trace
                    .record(self.now, format!("store-failure opening {from}->{to}: {failure}"));
                return;
            }
        };
        self.generation += 1;
        let session = Session {
            driver,
            input: None,
            wake_at: Some(0),
            changed: false,
            responder: Responder::new(b.key.clone(), vec![to as u8], vec![from as u8]),
            generation: self.generation,
            outstanding: None,
            reconnect_at: None,
            told: false,
        };
        self.trace.record(self.now, format!("dial {}->{}", a.name, b.name));
        self.sessions.insert((from, to), session);
        self.rearm((from, to));
    }

    /// Attends to every session that is due, as a node's session tasks
    /// do: a redial, a request timed out, or a step that takes the answer
    /// or failure that came, pushes what its node stored since, and sends
    /// its next request. What a step stores (the answer it ingested) wakes
    /// the node's other sessions at once, as the change signal does.
    fn pump(&mut self) {
        self.wake_changed();
        while let Some(key) = self.alarms.pop_due(self.now) {
            self.attend(key);
            self.wake_changed();
        }
    }

    /// Marks the sessions of every node whose database changed since the
    /// last call.
    fn wake_changed(&mut self) {
        for node in 0..self.nodes.len() {
            if !self.nodes[node].take_changed() {
                continue;
            }
            let keys: Vec<_> =
                self.sessions.range((node, 0)..(node + 1, 0)).map(|(&key, _)| key).collect();
            for key in keys {
                if let Some(session) = self.sessions.get_mut(&key) {
                    session.driver.changed();
                    session.changed = true;
                }
                self.rearm(key);
            }
        }
    }

    /// Redials, times out or steps the session `key`, which is due.
    fn attend(&mut self, key: (NodeId, NodeId)) {
        let now = self.now;
        let (from, to) = key;
        let Some(session) = self.sessions.get_mut(&key) else { return };
        let waiting = session.reconnect_at.is_some_and(|at| at > now)
            || session.outstanding.is_some_and(|(_, deadline)| deadline > now);
        if waiting {
            // Its redial or deadline is still to come.
            self.rearm(key);
            return;
        }
        if session.reconnect_at.is_some() {
            self.open_session(from, to);
            return;
        }
        if let Some((exchange, _)) = session.outstanding {
            session.outstanding = None;
            session.input = Some(Input::Failure);
            self.trace.record(now, format!("timeout {from}->{to} #{exchange}"));
        }
        self.step_session(key);
        self.rearm(key);
    }

    /// Steps the session `key` once and sends what it asks to.
    fn step_session(&mut self, (from, to): (NodeId, NodeId)) {
        let now = self.now;
        let Some(session) = self.sessions.get_mut(&(from, to)) else { return };
        session.changed = false;
        let Some(db) = self.nodes[from].db.as_ref() else {
            session.input = None;
            return;
        };
        if session.driver.requester().is_closed() {
            return;
        }
        let input = session.input.take().unwrap_or(Input::Idle);
        let step = match session.driver.step(db, input, T0 + now) {
            Ok(step) => step,
            Err(failure) => {
                self.trace.record(now, format!("store-failure {from}->{to}: {failure}"));
                session.reconnect_at = Some(now + RECONNECT_MS);
                return;
            }
        };
        session.wake_at = step.wake_at.map(|at| at.saturating_sub(T0));
        let sent = step.request.map(|frame| {
            self.exchange += 1;
            session.outstanding = Some((self.exchange, now + REQUEST_TIMEOUT_MS));
            Packet::request(from, to, session.generation, self.exchange, frame)
        });
        // A peer our log shut out is told so, over the session it
        // answers us on, as a node's session does (control-log.md §9.5).
        let mut notice = Vec::new();
        if !session.told
            && let Some(peer) = session.driver.requester().peer()
            && is_shut_out(&db.auth_state(), &peer)
        {
            session.told = true;
            notice = shut_out_notice(db, &peer);
        }
        let notice: Vec<Packet> = notice
            .into_iter()
            .map(|frame| {
                self.exchange += 1;
                Packet::request(from, to, session.generation, self.exchange, frame)
            })
            .collect();
        if session.driver.requester().is_closed() && session.reconnect_at.is_none() {
            session.reconnect_at = Some(now + RECONNECT_MS);
            self.closed += 1;
        }
        for event in &step.events {
            self.trace.record(now, format!("event {from}->{to} {}", describe(event)));
        }
        if let Some(packet) = sent {
            self.trace.record(
                now,
                format!(
                    "send {from}->{to} #{} {} {}B",
                    packet.exchange,
                    frame_name(&packet.frame),
                    packet.frame.len()
                ),
            );
            self.net.send(&mut self.rng, now, from, to, packet);
        }
        for packet in notice {
            self.trace.record(now, format!("tell {from}->{to} #{} shut out", packet.exchange));
            self.net.send(&mut self.rng, now, from, to, packet);
        }
    }

    fn deliver(&mut self, packet: Packet) -> anyhow::Result<()> {
        let now = self.now;
        let (from, to) = (packet.from, packet.to);
        let Some(session) = self.sessions.get_mut(&(from, to)) else { return Ok(()) };
        if session.generation != packet.generation {
            return Ok(());
        }
        let name = frame_name(&packet.frame);
        self.trace.absorb(&packet.frame);
        match packet.kind {
            Kind::Request => {
                let Some(db) = self.nodes[to].db.as_ref() else { return Ok(()) };
                let mut store = SyncReplica::new(db);
                self.trace.record(
                    now,
                    format!(
                        "recv {from}->{to} #{} {name} {}B",
                        packet.exchange,
                        packet.frame.len()
                    ),
                );
                let frame = match session.responder.handle(&mut store, &packet.frame, &mut self.rng)
                {
                    Ok(Answer::Reply(frame)) => frame,
                    Ok(Answer::Close(frame, violation)) => {
                        self.trace.record(
                            now,
                            format!("responder {to} closes {from}: {:?}", violation.code),
                        );
                        frame
                    }
                    Err(failure) => {
                        self.trace.record(now, format!("responder {to} store failure: {failure}"));
                        return Ok(());
                    }
                };
                // The peer holds what its pushes will not bring: our own
                // session with it starts a round now, as a node's does.
                if session.responder.take_pull_wanted() {
                    self.pull_from(to, from);
                }
                let response = Packet { kind: Kind::Response, frame, ..packet };
                self.trace.record(
                    now,
                    format!(
                        "answer {to}->{from} #{} {} {}B",
                        response.exchange,
                        frame_name(&response.frame),
                        response.frame.len()
                    ),
                );
                self.net.send(&mut self.rng, now, to, from, response);
            }
            Kind::Response => {
                if session.outstanding.map(|(id, _)| id) != Some(packet.exchange) {
                    self.trace
                        .record(now, format!("stale {to}->{from} #{} {name}", packet.exchange));
                    return Ok(());
                }
                if self.nodes[from].db.is_none() {
                    return Ok(());
                }
                session.outstanding = None;
                self.trace.record(
                    now,
                    format!(
                        "reply {to}->{from} #{} {name} {}B",
                        packet.exchange,
                        packet.frame.len()
                    ),
                );
                session.input = Some(Input::Answer(packet.frame));
                self.rearm((from, to));
            }
        }
        Ok(())
    }

    fn act(&mut self, action: Action) -> anyhow::Result<()> {
        let now = self.now;
        match action {
            Action::Write(node) => self.write(node)?,
            Action::Partition(a, b) => {
                for &x in &a {
                    for &y in &b {
                        self.net.set_link(x, y, false);
                    }
                }
                self.trace.record(now, format!("partition {a:?} | {b:?}"));
            }
            Action::Heal => {
                self.net.heal();
                self.trace.record(now, "heal");
            }
            Action::Crash(node) => self.crash(node),
            Action::Restart(node) => {
                if !self.nodes[node].lost && !self.nodes[node].is_up() {
                    self.nodes[node].start()?;
                    self.trace.record(now, format!("restart {}", self.nodes[node].name));
                    self.connect();
                }
            }
            Action::LoseDevice(node) => {
                self.crash(node);
                self.nodes[node].lost = true;
                let key = self.nodes[node].key.public();
                self.admin()?.remove_device(key)?;
                self.trace.record(now, format!("lost {}; removed", self.nodes[node].name));
            }
            Action::AddDevice => {
                let peers: Vec<NodeId> = (0..self.nodes.len())
                    .filter(|&i| {
                        !self.nodes[i].lost && !matches!(self.nodes[i].role, Role::App { .. })
                    })
                    .collect();
                let id = self.add_node(Role::Device, &peers)?;
                // Apps reach the new device too.
                for i in 0..self.nodes.len() {
                    if matches!(self.nodes[i].role, Role::App { .. }) {
                        self.topology.insert((i, id));
                    }
                }
                self.connect();
            }
            Action::Revoke(app) => {
                let Role::App { namespace, scope } = self.nodes[app].role.clone() else {
                    anyhow::bail!("revoke of a non-app");
                };
                let admin = self.admin()?;
                let epoch = admin
                    .auth_state()
                    .scopes()
                    .get(&scope)
                    .and_then(|s| s.current())
                    .context("scope has an epoch")?;
                admin.revoke(self.nodes[app].key.public(), namespace)?;
                self.revoked.push((app, scope, epoch));
                self.trace.record(now, format!("revoke {}", self.nodes[app].name));
            }
            Action::Attack(attack, target) => {
                if self.nodes[target].is_up() {
                    let outcome = match adversary::attack(self, attack, target)? {
                        adversary::Outcome::Reached(what) => {
                            self.attacks += 1;
                            what
                        }
                        adversary::Outcome::Missed(why) => format!("missed: {why}"),
                    };
                    self.trace.record(now, format!("attack {attack:?} on {target}: {outcome}"));
                }
            }
            Action::Settle => {
                self.net.heal();
                self.settle_at = Some(now);
                self.next_probe = now;
                self.trace.record(now, "settle");
            }
        }
        Ok(())
    }

    fn crash(&mut self, node: NodeId) {
        if !self.nodes[node].is_up() {
            return;
        }
        self.nodes[node].crash();
        self.net.drop_node(node);
        let gone: Vec<_> =
            self.sessions.keys().filter(|(a, b)| *a == node || *b == node).copied().collect();
        for key in gone {
            self.alarms.set(key, None);
            if let Some(old) = self.sessions.remove(&key) {
                // The peer remembers what this one showed; the crashed side forgets.
                if key.1 == node {
                    self.shown.insert(key, old.driver.requester().shown().clone());
                } else {
                    self.shown.remove(&key);
                }
            }
        }
        self.trace.record(self.now, format!("crash {}", self.nodes[node].name));
    }

    fn write(&mut self, node: Option<NodeId>) -> anyhow::Result<()> {
        let writers: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                n.is_up()
                    && !n.lost
                    && match &n.role {
                        Role::Device => true,
                        Role::App { .. } => !self.revoked.iter().any(|(a, _, _)| *a == i),
                        Role::Pinner => false,
                    }
            })
            .collect();
        let node = match node {
            Some(n) if writers.contains(&n) => n,
            Some(_) => return Ok(()),
            None if writers.is_empty() => return Ok(()),
            None => writers[below(&mut self.rng, writers.len() as u64) as usize],
        };
        let roll = below(&mut self.rng, 10);
        let (sql, params) = if roll < 6 || self.row_ids.is_empty() {
            let id = format!("r{}", self.row_ids.len());
            self.row_ids.push(id.clone());
            (
                "INSERT INTO todo.lists (id, name, n) VALUES (?, ?, ?)",
                vec![
                    Value::Text(id),
                    Value::Text(format!("by {}", self.nodes[node].name)),
                    Value::Integer(self.now as i64),
                ],
            )
        } else {
            let id = self.row_ids[below(&mut self.rng, self.row_ids.len() as u64) as usize].clone();
            if roll < 9 {
                (
                    "UPDATE todo.lists SET name = ?, n = ? WHERE id = ?",
                    vec![
                        Value::Text(format!("{} at {}", self.nodes[node].name, self.now)),
                        Value::Integer(self.now as i64),
                        Value::Text(id),
                    ],
                )
            } else {
                ("DELETE FROM todo.lists WHERE id = ?", vec![Value::Text(id)])
            }
        };
        let Some(db) = self.nodes[node].db.as_ref() else { return Ok(()) };
        let name = self.nodes[node].name.clone();
        // An app writes as the light client does: within its grants.
        let executed = match self.nodes[node].role {
            Role::App { .. } => basic_client::AppView::new(db)
                .and_then(|app| app.execute(sql, &params))
                .map_err(|e| e.to_string()),
            Role::Device | Role::Pinner => {
                db.execute(sql, &params, None).map_err(|e| e.to_string())
            }
        };
        let commits = match executed {
            Ok(Executed::Written(outcome)) => outcome.commits,
            Ok(Executed::Rows(_)) => Vec::new(),
            Err(error) => {
                self.trace.record(self.now, format!("write {name} refused: {}", kind_of(&error)));
                return Ok(());
            }
        };
        self.trace
            .record(self.now, format!("write {name} {} commits={}", &sql[..6], commits.len()));
        // Its sessions push the commits live, from the change feed.
        for id in commits {
            let commit = db.replica().commit(&id)?.context("acknowledged commit is stored")?;
            self.acked.push(Acked { node, id, scope: commit.header().scope });
        }
        Ok(())
    }

    /// The final authorisation state most nodes agree on (the first up device's).
    pub fn reference(&self) -> Option<(NodeId, std::sync::Arc<AuthState>)> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.role == Role::Device && n.is_up() && !n.lost)
            .and_then(|(i, n)| n.db.as_ref().map(|db| (i, db.auth_state())))
    }

    /// The scope id of `namespace`, as the devices compute it.
    pub fn scope_of(&self, namespace: &str) -> anyhow::Result<ScopeId> {
        Ok(self.naming.scope_id(&basic_proto::Name::new(namespace)?))
    }

    /// Ids of ops admitted by the reference node, for reports.
    pub fn control_heads(&self, node: NodeId) -> Vec<OpId> {
        self.nodes[node].db.as_ref().map(|db| db.control_log().heads()).unwrap_or_default()
    }
}

/// A seeded secret key.
pub fn key(rng: &mut ChaCha20Rng) -> SecretKey {
    let mut seed = [0; 32];
    rng.fill_bytes(&mut seed);
    SecretKey::from_seed(seed)
}

fn describe(event: &Event) -> String {
    match event {
        Event::Authenticated { .. } => "authenticated".into(),
        Event::Synced { received, round_trips } => {
            format!("synced received={received} trips={round_trips}")
        }
        Event::RolledBack { before, now, .. } => format!("rolled-back {before:?}->{now:?}"),
        Event::Closed { reason } => format!("closed: {}", kind_of(reason)),
    }
}

/// The stable head of an error message (before any detail that may carry
/// nondeterministic values).
fn kind_of(reason: &str) -> String {
    reason.chars().take(60).collect()
}
