//! Keeps [`NetworkStatus`] (what `basic status` shows) up to date.

use std::sync::{Arc, PoisonError, RwLock};

use basic_net::{Multiaddr, PeerId, PeerInfo};
use basic_proto::control::AuthState;
use basic_proto::keys::Principal;

use crate::status::{NetworkStatus, PeerStatus};

/// Peers remembered after they disconnect, at most.
const MAX_PEERS: usize = 256;

/// The shared status, with one method per thing that happens.
#[derive(Debug, Clone)]
pub(super) struct Status(Arc<RwLock<NetworkStatus>>);

/// Wall time in ms since 1970.
fn wall_ms() -> u64 {
    basic_store::now_ms()
}

impl Status {
    pub(super) fn new(status: Arc<RwLock<NetworkStatus>>) -> Self {
        Self(status)
    }

    fn update(&self, f: impl FnOnce(&mut NetworkStatus)) {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner));
    }

    fn peer(&self, peer: PeerId, f: impl FnOnce(&mut PeerStatus)) {
        let id = peer.to_string();
        self.update(|status| {
            let index = match status.peers.iter().position(|p| p.id == id) {
                Some(index) => index,
                None => {
                    if status.peers.len() >= MAX_PEERS {
                        // Forget the oldest disconnected peer.
                        if let Some(gone) = status.peers.iter().position(|p| p.address.is_none()) {
                            status.peers.remove(gone);
                        }
                    }
                    status.peers.push(PeerStatus {
                        id,
                        address: None,
                        principal: None,
                        sync: "connecting".into(),
                        last_sync_ms: None,
                        bytes_in: 0,
                        bytes_out: 0,
                    });
                    status.peers.len() - 1
                }
            };
            if let Some(entry) = status.peers.get_mut(index) {
                f(entry);
            }
        });
    }

    /// The addresses we listen on, at start.
    pub(super) fn listening(&self, addresses: Vec<String>) {
        self.update(|status| status.listening = addresses);
    }

    /// One more address we listen on; whether it is new.
    pub(super) fn listen_on(&self, address: String) -> bool {
        let mut new = false;
        self.update(|status| {
            if !status.listening.contains(&address) {
                status.listening.push(address);
                new = true;
            }
        });
        new
    }

    /// An address we no longer listen on; whether we did.
    pub(super) fn stop_listening(&self, address: &str) -> bool {
        let mut removed = false;
        self.update(|status| {
            let before = status.listening.len();
            status.listening.retain(|a| a != address);
            removed = status.listening.len() != before;
        });
        removed
    }

    /// The addresses we listen on now.
    pub(super) fn listen_addresses(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).listening.clone()
    }

    pub(super) fn connected(&self, peer: PeerId, address: &Multiaddr) {
        self.peer(peer, |p| {
            p.address = Some(address.to_string());
            // A removed device stays so (control-log.md §9.5).
            if p.sync != "removed" {
                p.sync = "connecting".into();
            }
        });
    }

    /// A peer that never proved membership (a joining device's short-lived
    /// node, a stranger) is forgotten; a member stays listed as disconnected.
    pub(super) fn disconnected(&self, peer: PeerId) {
        let id = peer.to_string();
        self.update(|status| {
            status.peers.retain(|p| p.id != id || p.principal.is_some());
            if let Some(p) = status.peers.iter_mut().find(|p| p.id == id) {
                p.address = None;
                if p.sync != "removed" {
                    p.sync = "disconnected".into();
                }
            }
        });
    }

    pub(super) fn authenticated(&self, peer: PeerId, principal: String) {
        self.peer(peer, |p| {
            p.principal = Some(principal);
            p.sync = "syncing".into();
        });
    }

    pub(super) fn synced(&self, peer: PeerId, principal: Option<String>) {
        self.peer(peer, |p| {
            p.principal = principal.or(p.principal.take());
            p.sync = "in sync".into();
            p.last_sync_ms = Some(wall_ms());
        });
    }

    pub(super) fn failed(&self, peer: PeerId, reason: &str) {
        self.peer(peer, |p| p.sync = reason.to_owned());
    }

    /// The peers connected now whose sync session proved a device of
    /// `auth` that is not removed.
    pub(super) fn device_peers(&self, auth: &AuthState) -> Vec<PeerId> {
        device_peers(&self.0.read().unwrap_or_else(PoisonError::into_inner), auth)
    }

    /// Copies the transport's byte counters.
    pub(super) fn traffic(&self, infos: &[PeerInfo]) {
        self.update(|status| {
            for info in infos {
                let id = info.peer.to_string();
                if let Some(entry) = status.peers.iter_mut().find(|p| p.id == id) {
                    entry.bytes_in = info.bytes_in;
                    entry.bytes_out = info.bytes_out;
                }
            }
        });
    }
}

/// The peers of `status` connected now whose sync session proved a device
/// of `auth` that is not removed: where a device relays what apps ask
/// (`protocol-spec/apps.md` §7).
pub(crate) fn device_peers(status: &NetworkStatus, auth: &AuthState) -> Vec<PeerId> {
    status
        .peers
        .iter()
        .filter(|peer| peer.address.is_some())
        .filter(|peer| {
            let principal = peer.principal.as_deref().and_then(|p| p.parse::<Principal>().ok());
            principal.is_some_and(|principal| auth.is_device(&principal.key))
        })
        .filter_map(|peer| peer.id.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use basic_proto::keys::Role;
    use basic_proto::{Party, SecretKey};
    use basic_store::Database;

    use super::*;

    fn peer(principal: Option<String>, connected: bool) -> (PeerId, PeerStatus) {
        let id = PeerId::random();
        let status = PeerStatus {
            id: id.to_string(),
            address: connected.then(|| "/ip4/127.0.0.1/tcp/1".to_owned()),
            principal,
            sync: "in sync".into(),
            last_sync_ms: None,
            bytes_in: 0,
            bytes_out: 0,
        };
        (id, status)
    }

    #[test]
    fn relays_go_only_to_connected_peers_that_proved_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let other = SecretKey::from_seed([1; 32]);
        db.add_device(Party::of(&other)).unwrap();
        let removed = SecretKey::from_seed([2; 32]);
        db.add_device(Party::of(&removed)).unwrap();
        db.remove_device(removed.public()).unwrap();
        let pinner = SecretKey::from_seed([3; 32]);
        db.add_pinner(pinner.public()).unwrap();
        let id = |role, key: &SecretKey| Some(Principal { role, key: key.public() }.to_string());
        let stranger = SecretKey::from_seed([4; 32]);

        let (device, connected) = peer(id(Role::Device, &other), true);
        let peers = vec![
            connected,
            peer(id(Role::Device, &other), false).1,
            peer(id(Role::Device, &removed), true).1,
            peer(id(Role::Pinner, &pinner), true).1,
            peer(id(Role::Device, &stranger), true).1,
            peer(None, true).1,
            peer(Some("garbage".into()), true).1,
        ];
        let status = NetworkStatus { listening: vec![], peers };
        assert_eq!(device_peers(&status, &db.auth_state()), vec![device]);
    }
}
