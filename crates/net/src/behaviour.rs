//! The composed libp2p behaviour and the settings of each part.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use libp2p::gossipsub::{self, IdentTopic, PeerScoreParams, PeerScoreThresholds, TopicScoreParams};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    allow_block_list, connection_limits, dcutr, identify, identity, mdns, memory_connection_limits,
    ping, relay, request_response,
};

use crate::codec::{FrameCodec, JOIN_PROTOCOL, SYNC_PROTOCOL};
use crate::{Config, Limits};

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
    pub(crate) gossip: gossipsub::Behaviour,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Behaviour {
    /// Builds the behaviour for `config`; subscribes to its topic.
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
            config.relay_server.then(|| relay::Behaviour::new(local, relay::Config::default()));

        let frames = |protocol| {
            request_response::Behaviour::with_codec(
                FrameCodec {
                    max_request_bytes: limits.max_request_bytes,
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
            sync: frames(SYNC_PROTOCOL),
            join: frames(JOIN_PROTOCOL),
            gossip: gossip(key, &config.topic, limits)?,
        })
    }
}

fn connection_limits(limits: &Limits) -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(limits.max_pending))
        .with_max_pending_outgoing(Some(limits.max_pending))
        .with_max_established_incoming(Some(limits.max_established_inbound))
        .with_max_established_per_peer(Some(limits.max_established_per_peer))
}

/// Gossipsub for live pushes: signed messages, validated by the application
/// before they are forwarded, with peer scoring.
///
/// The mesh parameters suit a small network (a user's devices and a few
/// pinning peers): one mesh peer is enough, and publishes are flooded to
/// every subscribed peer so that two nodes need no mesh at all.
fn gossip(
    key: &identity::Keypair,
    topic: &str,
    limits: &Limits,
) -> Result<gossipsub::Behaviour, BoxError> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(limits.max_gossip_bytes)
        .flood_publish(true)
        .mesh_n_low(1)
        .mesh_n(3)
        .mesh_n_high(6)
        .mesh_outbound_min(1)
        .heartbeat_interval(Duration::from_secs(1))
        .build()?;
    let mut behaviour =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)?;

    let topic = IdentTopic::new(topic);
    let (params, thresholds) = scoring(&topic);
    behaviour.with_peer_score(params, thresholds)?;
    behaviour.subscribe(&topic)?;
    Ok(behaviour)
}

/// Peer scoring tuned for a low-traffic topic: no penalty for delivering
/// few messages (P3/P3b off: silence is normal), a small reward for time in
/// the mesh and first deliveries (capped at 100 in all), and a steep,
/// quadratic penalty for messages the application rejects: one rejection
/// (−20) stops gossip to the peer, three (−180) graylist it.
fn scoring(topic: &IdentTopic) -> (PeerScoreParams, PeerScoreThresholds) {
    let topic_params = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.99,
        ..TopicScoreParams::default()
    };
    let mut params = PeerScoreParams::default();
    params.topics.insert(topic.hash(), topic_params);
    params.topic_score_cap = 100.0;
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}

#[cfg(test)]
mod tests {
    use libp2p::PeerId;

    use super::*;

    #[test]
    fn scoring_params_are_valid() {
        let (params, thresholds) = scoring(&IdentTopic::new("t"));
        params.validate().unwrap();
        thresholds.validate().unwrap();
    }

    #[test]
    fn behaviour_builds_with_defaults() {
        let key = identity::Keypair::generate_ed25519();
        let (_, relay_client) = relay::client::new(PeerId::from(key.public()));
        let config = Config::new(key.clone(), "topic");
        Behaviour::new(&key, relay_client, &config, Arc::default()).unwrap();
    }
}
