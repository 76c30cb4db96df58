//! Errors returned by [`crate::start`] and the [`crate::Net`] handle.

use std::io;

use libp2p::core::transport::TransportError;
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId};

/// A failure to start the network or to carry out a command on it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The swarm could not be built (transport, behaviour or config).
    #[error("cannot build the swarm: {0}")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Listening on a configured address failed.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address that was refused.
        address: Multiaddr,
        /// Why.
        #[source]
        source: TransportError<io::Error>,
    },
    /// A relay address does not end with the relay's `/p2p/<peer id>`, or
    /// is itself relayed.
    #[error(
        "{0} is not a relay address: it must end with /p2p/<relay peer id>, without /p2p-circuit"
    )]
    NotARelay(Multiaddr),
    /// Dialling failed before any connection attempt.
    #[error("cannot dial: {0}")]
    Dial(#[source] DialError),
    /// The peer was disconnected for a protocol violation and is refused
    /// until its cool-down ends.
    #[error("peer {0} is in its cool-down period")]
    Banned(PeerId),
    /// The swarm task has stopped (after [`crate::Net::shutdown`] or a crash).
    #[error("the network task has stopped")]
    Closed,
}

/// A failure of [`crate::Net::request`]. Nothing can be assumed about
/// whether the peer processed the request unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request exceeds our own `max_request_bytes`; nothing was sent.
    #[error("request of {len} bytes exceeds the cap of {max}")]
    TooLarge {
        /// Size of the request.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Too many of our requests are in flight; nothing was sent.
    #[error("too many requests in flight")]
    Busy,
    /// The peer is in its cool-down period; nothing was sent.
    #[error("peer {0} is in its cool-down period")]
    Banned(PeerId),
    /// The peer could not be reached.
    #[error("cannot reach the peer")]
    DialFailure,
    /// No response within the request timeout.
    #[error("timed out waiting for the response")]
    Timeout,
    /// The connection closed before the response arrived.
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The peer does not speak the protocol asked for.
    #[error("the peer does not support the protocol")]
    UnsupportedProtocol,
    /// The stream failed: the peer dropped it (for example because the
    /// request was over its cap or it chose not to answer), or sent a
    /// malformed or oversized response.
    #[error("stream error: {0}")]
    Io(#[source] io::Error),
    /// The swarm task has stopped.
    #[error("the network task has stopped")]
    Closed,
}

/// A failure of [`crate::Responder::send`].
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// The response exceeds `max_response_bytes`; nothing was sent and the
    /// requester sees the stream dropped.
    #[error("response of {len} bytes exceeds the cap of {max}")]
    TooLarge {
        /// Size of the response.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The request is gone (timed out, connection closed, network stopped).
    #[error("the request is no longer awaiting a response")]
    Closed,
}
