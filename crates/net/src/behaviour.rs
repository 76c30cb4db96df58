//! The composed libp2p behaviour and the settings of each part.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    allow_block_list, connection_limits, dcutr, identify, identity, mdns, memory_connection_limits,
    ping, relay, request_response,
};

use crate::codec::{FrameCodec, JOIN_PROTOCOL, SYNC_PROTOCOL};
use crate::{ACCESS_PROTOCOL, Config, Limits, MAX_ACCESS_REQUEST_BYTES, RelayLimits};

/// Identify protocol version string: tells peers which network this is.
const IDENTIFY_PROTOCOL: &str = "/basic/0";

/// Everything the swarm runs. Limits come first so that they refuse a
/// connection before any other behaviour hears of it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: memory_connection_limits::Behaviour,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) sync: request_response::Behaviour<FrameCodec>,
    pub(crate) join: request_response::Behaviour<FrameCodec>,
    pub(crate) access: request_response::Behaviour<FrameCodec>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Behaviour {
    /// Builds the behaviour for `config`.
    pub(crate) fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        config: &Config,
        oversized: Arc<AtomicU64>,
    ) -> Result<Self, BoxError> {
        let local = key.public().to_peer_id();
        let limits = &config.limits;

        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
        } else {
            None
        };
        let relay_server =
            config.relay_server.then(|| relay::Behaviour::new(local, relay_config(&limits.relay)));

        let frames = |protocol, max_request_bytes| {
            request_response::Behaviour::with_codec(
                FrameCodec {
                    max_request_bytes,
                    max_response_bytes: limits.max_response_bytes,
                    oversized: oversized.clone(),
                },
                [(protocol, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(limits.request_timeout)
                    .with_max_concurrent_streams(limits.max_concurrent_streams),
            )
        };

        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(connection_limits(limits)),
            memory: memory_connection_limits::Behaviour::with_max_bytes(limits.max_memory_bytes),
            relay_client,
            relay_server: relay_server.into(),
            dcutr: dcutr::Behaviour::new(local),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_agent_version(format!("basic/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            mdns: mdns.into(),
            sync: frames(SYNC_PROTOCOL, limits.max_request_bytes),
            join: frames(JOIN_PROTOCOL, limits.max_request_bytes),
            access: frames(ACCESS_PROTOCOL, limits.max_request_bytes.min(MAX_ACCESS_REQUEST_BYTES)),
        })
    }
}

/// The relay server's settings: our caps, libp2p's rate limiters.
fn relay_config(limits: &RelayLimits) -> relay::Config {
    relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: limits.max_reservations_per_peer,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        // libp2p panics past u32::MAX seconds.
        max_circuit_duration: limits
            .max_circuit_duration
            .min(std::time::Duration::from_secs(u64::from(u32::MAX))),
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    }
}

fn connection_limits(limits: &Limits) -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(limits.max_pending))
        .with_max_pending_outgoing(Some(limits.max_pending))
        .with_max_established_incoming(Some(limits.max_established_inbound))
        .with_max_established_per_peer(Some(limits.max_established_per_peer))
}

#[cfg(test)]
mod tests {
    use libp2p::PeerId;

    use super::*;

    #[test]
    fn behaviour_builds_with_defaults() {
        let key = identity::Keypair::generate_ed25519();
        let (_, relay_client) = relay::client::new(PeerId::from(key.public()));
        let config = Config::new(key.clone());
        Behaviour::new(&key, relay_client, &config, Arc::default()).unwrap();
    }

    #[test]
    fn relay_server_builds_with_its_limits() {
        let key = identity::Keypair::generate_ed25519();
        let (_, relay_client) = relay::client::new(PeerId::from(key.public()));
        let mut config = Config::new(key.clone());
        config.relay_server = true;
        config.limits.relay.max_circuit_duration = std::time::Duration::MAX;
        let behaviour = Behaviour::new(&key, relay_client, &config, Arc::default()).unwrap();
        assert!(behaviour.relay_server.is_enabled());
        let relay = relay_config(&config.limits.relay);
        assert_eq!(relay.max_circuit_duration.as_secs(), u64::from(u32::MAX));
        assert_eq!(relay.max_circuit_bytes, RelayLimits::default().max_circuit_bytes);
    }
}
