//! The client on the network: one sync session and one responder per
//! connected device or pinning peer, through [`basic_peer`], as on a node.
//! The client dials the addresses it was given and redials them with
//! back-off; it answers no join or access request (it is not a device).

use std::collections::HashMap;
use std::sync::Arc;

use basic_net::{Event, Net, PeerId, Protocol};
use basic_peer::{PeerTasks, Peering};
use basic_store::Store;
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// Runs until `stop` is set or the network ends.
pub(crate) async fn run<S: Store + Send + Sync + 'static>(
    peering: Arc<Peering<S>>,
    net: Net,
    mut events: mpsc::Receiver<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let mut peers: HashMap<PeerId, PeerTasks> = HashMap::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stop.changed() => None,
        };
        let Some(event) = event else { break };
        match event {
            Event::Connected { peer, dialled, .. } => {
                debug!(%peer, "connected");
                peers.entry(peer).or_insert_with(|| peering.start_peer(peer, dialled));
            }
            Event::Disconnected { peer } => {
                debug!(%peer, "disconnected");
                if let Some(tasks) = peers.remove(&peer) {
                    tasks.abort();
                }
            }
            Event::Request { peer, protocol: Protocol::Sync, frame, reply } => {
                let tasks = peers.entry(peer).or_insert_with(|| peering.start_peer(peer, false));
                if !tasks.offer(frame, reply) {
                    debug!(%peer, "sync request dropped: the peer's queue is full");
                }
            }
            // Not a device: no join or access request is ours to answer
            // (the reply dropped, the asker's request fails).
            Event::Request { .. } | Event::Listening { .. } | Event::ListenExpired { .. } => {}
        }
    }
    for (_, tasks) in peers.drain() {
        tasks.abort();
    }
    net.shutdown().await;
}
