//! Peers found on the LAN by mDNS, dialled until a connection is up.
//!
//! Both ends of a LAN usually find each other at the same moment; if both
//! dial then, both handshakes can fail, and mDNS does not announce the
//! peer again for minutes. So the end with the lower peer id dials at
//! once, the other only after [`YIELD`] if no connection came up, and a
//! failed dial is tried again with a doubling pause, [`MAX_ATTEMPTS`]
//! times in all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// How long the end with the higher peer id leaves the first dial to the other.
pub(crate) const YIELD: Duration = Duration::from_secs(2);
/// Dials of one discovered peer before it is left to the next discovery.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// The peers found on the LAN that are not connected yet.
#[derive(Debug, Default)]
pub(crate) struct LanPeers {
    peers: HashMap<PeerId, LanPeer>,
}

#[derive(Debug)]
struct LanPeer {
    addresses: Vec<Multiaddr>,
    due: Instant,
    attempts: u32,
}

impl LanPeers {
    /// `peer` was found at `addresses`; `dial_first`: whether this end has
    /// the lower peer id. A peer found again keeps its schedule.
    pub(crate) fn found(
        &mut self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        dial_first: bool,
        now: Instant,
    ) {
        let due = if dial_first { now } else { now + YIELD };
        let entry =
            self.peers.entry(peer).or_insert(LanPeer { addresses: Vec::new(), due, attempts: 0 });
        entry.addresses = addresses;
    }

    /// The peers due for a dial at `now`, with their addresses; each is
    /// scheduled again after a doubling pause, or forgotten after
    /// [`MAX_ATTEMPTS`].
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut due = Vec::new();
        self.peers.retain(|peer, entry| {
            if entry.due > now {
                return true;
            }
            due.push((*peer, entry.addresses.clone()));
            entry.attempts += 1;
            entry.due = now + YIELD * 2u32.pow(entry.attempts);
            entry.attempts < MAX_ATTEMPTS
        });
        due
    }

    /// A connection to `peer` is up: no more dials.
    pub(crate) fn connected(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn the_lower_id_dials_at_once_the_other_after_a_pause() {
        let (now, a, b) = (Instant::now(), peer(), peer());
        let mut lan = LanPeers::default();
        lan.found(a, vec![], true, now);
        lan.found(b, vec![], false, now);
        assert_eq!(lan.take_due(now).into_iter().map(|(p, _)| p).collect::<Vec<_>>(), [a]);
        assert!(lan.take_due(now + YIELD - Duration::from_millis(1)).is_empty());
        assert_eq!(lan.take_due(now + YIELD).into_iter().map(|(p, _)| p).collect::<Vec<_>>(), [b]);
    }

    #[test]
    fn failed_dials_are_retried_with_doubling_pauses_then_dropped() {
        let (start, a) = (Instant::now(), peer());
        let mut lan = LanPeers::default();
        lan.found(a, vec![], true, start);
        let mut now = start;
        let mut dials = 0;
        for _ in 0..1_000 {
            dials += lan.take_due(now).len();
            now += Duration::from_millis(500);
        }
        assert_eq!(dials as u32, MAX_ATTEMPTS);
        // Found again later: dialled again.
        lan.found(a, vec![], true, now);
        assert_eq!(lan.take_due(now).len(), 1);
    }

    #[test]
    fn a_connected_peer_is_not_dialled() {
        let (now, a) = (Instant::now(), peer());
        let mut lan = LanPeers::default();
        lan.found(a, vec![], false, now);
        lan.connected(&a);
        assert!(lan.take_due(now + YIELD * 100).is_empty());
    }
}
