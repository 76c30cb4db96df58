//! The simulated network: per-message delay, loss, duplication and
//! reordering, and partitions, over one queue ordered by delivery time.

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha20Rng;

use crate::world::{below, chance};

/// A node's index in the world.
pub type NodeId = usize;

/// How the network misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub dup: f64,
    /// Probability that a message is held back (so later ones overtake it).
    pub reorder: f64,
    /// Largest one-way delay in ms (at least 1).
    pub delay_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self { loss: 0.02, dup: 0.02, reorder: 0.05, delay_ms: 50 }
    }
}

/// Which half of an exchange a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request of the session `from -> to`.
    Request,
    /// The response, travelling `to -> from` of the session.
    Response,
}

/// One message in flight.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The session's requesting node.
    pub from: NodeId,
    /// The session's responding node.
    pub to: NodeId,
    /// Request or response.
    pub kind: Kind,
    /// The session generation it belongs to (stale ones are dropped).
    pub generation: u64,
    /// The exchange it belongs to.
    pub exchange: u64,
    /// The frame.
    pub frame: Vec<u8>,
}

impl Packet {
    /// A request of session `from → to`, generation `generation`.
    pub fn request(
        from: NodeId,
        to: NodeId,
        generation: u64,
        exchange: u64,
        frame: Vec<u8>,
    ) -> Self {
        Self { from, to, kind: Kind::Request, generation, exchange, frame }
    }
}

/// The network: a queue keyed by `(deliver_at, seq)` and the links that are down.
#[derive(Debug, Default)]
pub struct Net {
    queue: BTreeMap<(u64, u64), Packet>,
    seq: u64,
    down: BTreeSet<(NodeId, NodeId)>,
    /// Fault rates.
    pub faults: Faults,
    /// Messages handed to the network.
    pub sent: u64,
    /// Bytes handed to the network.
    pub bytes: u64,
    /// Messages lost (by chance or partition).
    pub lost: u64,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Net {
    /// A network with these faults, every link up.
    pub fn new(faults: Faults) -> Self {
        Self { faults, ..Self::default() }
    }

    /// Whether `a` and `b` can reach each other.
    pub fn is_up(&self, a: NodeId, b: NodeId) -> bool {
        !self.down.contains(&pair(a, b))
    }

    /// Cuts or restores the link between `a` and `b`.
    pub fn set_link(&mut self, a: NodeId, b: NodeId, up: bool) {
        if up {
            self.down.remove(&pair(a, b));
        } else {
            self.down.insert(pair(a, b));
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.down.clear();
    }

    /// Whether any link is down.
    pub fn partitioned(&self) -> bool {
        !self.down.is_empty()
    }

    /// Sends a packet between `src` and `dst` at `now`.
    pub fn send(
        &mut self,
        rng: &mut ChaCha20Rng,
        now: u64,
        src: NodeId,
        dst: NodeId,
        packet: Packet,
    ) {
        self.sent += 1;
        self.bytes += packet.frame.len() as u64;
        if !self.is_up(src, dst) || chance(rng, self.faults.loss) {
            self.lost += 1;
            return;
        }
        let copies = if chance(rng, self.faults.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = 1 + below(rng, self.faults.delay_ms.max(1));
            if chance(rng, self.faults.reorder) {
                delay += below(rng, 4 * self.faults.delay_ms.max(1));
            }
            self.seq += 1;
            self.queue.insert((now + delay, self.seq), packet.clone());
        }
    }

    /// When the next packet is due.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// The next packet due at or before `now`, unless its link went down
    /// meanwhile (then it is lost and `Some(None)` is returned).
    pub fn pop_due(&mut self, now: u64) -> Option<Option<Packet>> {
        let (&key, _) = self.queue.iter().next()?;
        if key.0 > now {
            return None;
        }
        let packet = self.queue.remove(&key)?;
        let (src, dst) = match packet.kind {
            Kind::Request => (packet.from, packet.to),
            Kind::Response => (packet.to, packet.from),
        };
        if !self.is_up(src, dst) {
            self.lost += 1;
            return Some(None);
        }
        Some(Some(packet))
    }

    /// Drops everything in flight to or from `node` (it crashed).
    pub fn drop_node(&mut self, node: NodeId) {
        self.queue.retain(|_, p| p.from != node && p.to != node);
    }
}
