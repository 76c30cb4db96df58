//! When to dial the configured peers again.
//!
//! Deterministic: every call takes `now`. Each configured address has a
//! backoff that starts at [`MIN_BACKOFF`] and doubles on every failure or
//! drop up to [`MAX_BACKOFF`]; a connection that lasted at least
//! [`MAX_BACKOFF`] resets it, so a flapping peer does not get redialled in a
//! tight loop.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// First delay before redialling a dropped peer.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Most addresses kept to redial ([`Redialer::add`] refuses more).
pub(crate) const MAX_TARGETS: usize = 256;

/// One configured address and its redial state.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The address as configured.
    pub(crate) address: Multiaddr,
    /// The peer behind it: from a trailing `/p2p/…`, else learnt on connect.
    pub(crate) peer: Option<PeerId>,
    backoff: Duration,
    due: Option<Instant>,
    connected_at: Option<Instant>,
}

/// The configured peers and when each is due.
#[derive(Debug, Default)]
pub(crate) struct Redialer {
    targets: Vec<Target>,
}

impl Redialer {
    /// Targets for `addresses`, all due at once.
    pub(crate) fn new(addresses: Vec<Multiaddr>, now: Instant) -> Self {
        let targets = addresses
            .into_iter()
            .map(|address| Target {
                peer: peer_of(&address),
                address,
                backoff: MIN_BACKOFF,
                due: Some(now),
                connected_at: None,
            })
            .collect();
        Self { targets }
    }

    /// Adds `address`, due at once, unless it is a target already or
    /// [`MAX_TARGETS`] are. Returns whether it was added.
    pub(crate) fn add(&mut self, address: Multiaddr, now: Instant) -> bool {
        if self.targets.len() >= MAX_TARGETS || self.targets.iter().any(|t| t.address == address) {
            return false;
        }
        self.targets.push(Target {
            peer: peer_of(&address),
            address,
            backoff: MIN_BACKOFF,
            due: Some(now),
            connected_at: None,
        });
        true
    }

    /// Indices of targets due at `now`; they are no longer due until
    /// [`Redialer::failed`] or [`Redialer::dropped`] reschedules them.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (index, target) in self.targets.iter_mut().enumerate() {
            if target.due.is_some_and(|at| at <= now) {
                target.due = None;
                due.push(index);
            }
        }
        due
    }

    /// The target at `index`.
    pub(crate) fn target(&self, index: usize) -> Option<&Target> {
        self.targets.get(index)
    }

    /// The dial of target `index` failed, or was skipped: try later.
    pub(crate) fn failed(&mut self, index: usize, now: Instant) {
        if let Some(target) = self.targets.get_mut(index) {
            target.connected_at = None;
            Self::schedule(target, now);
        }
    }

    /// Target `index` connected to `peer`.
    pub(crate) fn connected(&mut self, index: usize, peer: PeerId, now: Instant) {
        if let Some(target) = self.targets.get_mut(index) {
            target.peer = Some(peer);
            target.due = None;
            target.connected_at = Some(now);
        }
    }

    /// Whether target `index` is connected (since [`Redialer::connected`],
    /// until it fails or drops).
    pub(crate) fn was_connected(&self, index: usize) -> bool {
        self.targets.get(index).is_some_and(|target| target.connected_at.is_some())
    }

    /// The last connection to `peer` closed: reschedule its targets.
    pub(crate) fn dropped(&mut self, peer: PeerId, now: Instant) {
        for target in &mut self.targets {
            if target.peer == Some(peer) && target.due.is_none() {
                if target
                    .connected_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= MAX_BACKOFF)
                {
                    target.backoff = MIN_BACKOFF;
                }
                target.connected_at = None;
                Self::schedule(target, now);
            }
        }
    }

    fn schedule(target: &mut Target, now: Instant) {
        target.due = Some(now + target.backoff);
        target.backoff = (target.backoff * 2).min(MAX_BACKOFF);
    }
}

/// The peer id in a trailing `/p2p/…` component, if any.
pub fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Whether `address` runs through a relay (holds `/p2p-circuit`).
pub fn is_relayed(address: &Multiaddr) -> bool {
    address.iter().any(|part| part == Protocol::P2pCircuit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn added_addresses_are_due_at_once_and_kept_once() {
        let now = Instant::now();
        let mut redialer = Redialer::new(Vec::new(), now);
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert!(redialer.add(address.clone(), now));
        assert!(!redialer.add(address, now), "kept once");
        assert_eq!(redialer.take_due(now), vec![0]);
    }

    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn all_due_at_start_then_backoff_doubles_to_the_cap() {
        let t0 = Instant::now();
        let mut redialer = Redialer::new(vec![addr("/ip4/127.0.0.1/tcp/1")], t0);
        assert_eq!(redialer.take_due(t0), [0]);
        assert!(redialer.take_due(t0).is_empty(), "taken once");

        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            redialer.failed(0, now);
            let mut probe = now;
            while redialer.take_due(probe).is_empty() {
                probe += Duration::from_secs(1);
            }
            delays.push((probe - now).as_secs());
            now = probe;
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn drop_of_a_long_connection_resets_backoff() {
        let t0 = Instant::now();
        let peer = PeerId::random();
        let mut redialer = Redialer::new(vec![addr("/ip4/127.0.0.1/tcp/1")], t0);
        redialer.take_due(t0);
        for _ in 0..4 {
            redialer.failed(0, t0);
            redialer.take_due(t0 + MAX_BACKOFF);
        }
        redialer.connected(0, peer, t0);
        // Short-lived connection: backoff keeps growing (16 s now).
        redialer.dropped(peer, t0 + Duration::from_secs(1));
        assert!(redialer.take_due(t0 + Duration::from_secs(16)).is_empty());
        assert_eq!(redialer.take_due(t0 + Duration::from_secs(17)), [0]);

        redialer.connected(0, peer, t0);
        let later = t0 + MAX_BACKOFF;
        redialer.dropped(peer, later);
        assert_eq!(redialer.take_due(later + MIN_BACKOFF), [0]);
    }

    #[test]
    fn drop_only_reschedules_that_peers_targets() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut redialer = Redialer::new(
            vec![addr(&format!("/ip4/127.0.0.1/tcp/1/p2p/{a}")), addr("/ip4/127.0.0.1/tcp/2")],
            t0,
        );
        assert_eq!(redialer.target(0).unwrap().peer, Some(a));
        assert_eq!(redialer.target(1).unwrap().peer, None);
        redialer.take_due(t0);
        redialer.connected(0, a, t0);
        redialer.connected(1, b, t0);
        redialer.dropped(b, t0);
        assert_eq!(redialer.take_due(t0 + MAX_BACKOFF), [1]);
    }
}
