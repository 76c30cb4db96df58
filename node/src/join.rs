//! Joining a database by invite: the exchange with the inviting device on
//! the `/basic/join/0` protocol.
//!
//! The new device sends its [`JoinRequest`] (its keys and the proof that it
//! holds the invite's secret) to the inviting device, whose running node
//! checks it ([`Database::accept_join`]: unexpired, unused), adds the
//! device and answers with every control operation of the database. The
//! new device is sure to talk to the inviting node: the invite names its
//! peer id, which the connection's noise handshake authenticates; the
//! operations themselves are signed and checked by
//! [`Database::finish_join`].
//!
//! ```text
//! request  = JoinRequest::to_bytes()
//! response = [0, ops: [* bstr]]      ; joined: every control operation
//!          / [1, message: tstr]      ; refused, and why
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail};
use basic_net::{Config, Keypair, Limits, Multiaddr, PeerId, Protocol, RequestError, peer_of};
use basic_proto::codec::{self, Fields};
use basic_store::{Database, Invite, JoinRequest};
use ciborium::Value as Cbor;

/// Longest a refusal message may be.
const MAX_MESSAGE_LEN: usize = 512;
/// How long the new device waits for the inviting device's answer.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The answer to a join request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAnswer {
    /// Joined: the database's control operations, encoded.
    Joined(Vec<Vec<u8>>),
    /// Refused, with the reason for people.
    Refused(String),
}

impl JoinAnswer {
    /// The response frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(match self {
            JoinAnswer::Joined(ops) => vec![
                Cbor::Integer(0.into()),
                Cbor::Array(ops.iter().map(|op| Cbor::Bytes(op.clone())).collect()),
            ],
            JoinAnswer::Refused(message) => {
                let mut message = message.clone();
                truncate(&mut message, MAX_MESSAGE_LEN);
                vec![Cbor::Integer(1.into()), Cbor::Text(message)]
            }
        }))
    }

    /// Reads a response frame of at most `max` bytes (untrusted).
    pub fn from_bytes(bytes: &[u8], max: usize) -> anyhow::Result<Self> {
        let mut fields = Fields::new(codec::parse(bytes, "join answer", max)?, "join answer", 2)?;
        match fields.uint("kind")? {
            0 => {
                let ops = codec::as_array(fields.next("ops")?, "ops", 0, usize::MAX)?
                    .into_iter()
                    .map(|op| codec::as_bytes(op, "op", 1, max))
                    .collect::<Result<_, _>>()?;
                Ok(JoinAnswer::Joined(ops))
            }
            1 => Ok(JoinAnswer::Refused(fields.text("message", 0, MAX_MESSAGE_LEN)?)),
            kind => bail!("unknown join answer kind {kind}"),
        }
    }
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The inviting side: answers one join request frame against `db`
/// (blocking: it writes the new device's `add-device`).
pub fn answer_join(db: &Database, frame: &[u8]) -> JoinAnswer {
    let request = match JoinRequest::from_bytes(frame) {
        Ok(request) => request,
        Err(error) => return JoinAnswer::Refused(error.to_string()),
    };
    if let Err(error) = db.accept_join(&request) {
        return JoinAnswer::Refused(error.to_string());
    }
    tracing::info!(
        device = %crate::ids::device_id(&request.device.key),
        "a new device joined with an invite"
    );
    match db.control_ops() {
        Ok(ops) => JoinAnswer::Joined(ops),
        Err(error) => JoinAnswer::Refused(format!("the device was added, but: {error}")),
    }
}

/// The new device's side: sends `request` to the inviting device named in
/// `invite` and returns the database's control operations, which include
/// the inviting device's `add-device` of this one. Starts a network node of
/// its own for the exchange and stops it afterwards.
pub async fn exchange_join(invite: &Invite, request: &JoinRequest) -> anyhow::Result<Vec<Vec<u8>>> {
    let addresses: Vec<Multiaddr> =
        invite.addresses.iter().filter_map(|address| address.parse().ok()).collect();
    let inviters: BTreeSet<PeerId> = addresses.iter().filter_map(peer_of).collect();
    let tried = invite.addresses.join(", ");
    if inviters.is_empty() {
        bail!(
            "the invite carries no address of a running node (tried: {}); run `basic up` on the inviting device and make a new invite there",
            if tried.is_empty() { "none" } else { &tried }
        );
    }
    let mut config = Config::new(Keypair::generate_ed25519());
    config.peers = addresses;
    config.limits = Limits { request_timeout: JOIN_TIMEOUT, ..Limits::default() };
    let max = config.limits.max_response_bytes;
    let (net, _events) = basic_net::start(config).await.context("cannot start the network")?;
    let mut last = None;
    for inviter in inviters {
        match net.request_on(Protocol::Join, inviter, request.to_bytes()).await {
            Ok(frame) => {
                net.shutdown().await;
                return match JoinAnswer::from_bytes(&frame, max)
                    .context("the inviting device sent a malformed answer")?
                {
                    JoinAnswer::Joined(ops) => Ok(ops),
                    JoinAnswer::Refused(reason) => {
                        bail!("the inviting device refused the join: {reason}")
                    }
                };
            }
            Err(error) => last = Some(error),
        }
    }
    net.shutdown().await;
    match last {
        Some(RequestError::DialFailure | RequestError::ConnectionClosed) | None => bail!(
            "cannot reach the inviting device at {tried}; is `basic up` running there, and reachable from here?"
        ),
        Some(error) => bail!("the exchange with the inviting device at {tried} failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_garbage_is_an_error() {
        for answer in [
            JoinAnswer::Joined(vec![vec![1, 2, 3], vec![4]]),
            JoinAnswer::Joined(vec![]),
            JoinAnswer::Refused("the invite expired".into()),
        ] {
            assert_eq!(JoinAnswer::from_bytes(&answer.to_bytes(), 1 << 20).unwrap(), answer);
        }
        let long = JoinAnswer::Refused("é".repeat(400)).to_bytes();
        assert!(
            matches!(JoinAnswer::from_bytes(&long, 1 << 20), Ok(JoinAnswer::Refused(m)) if m.len() <= MAX_MESSAGE_LEN)
        );
        for garbage in [&b""[..], b"\x82\x02\x00", b"\x82\x00\x01", b"\xff"] {
            assert!(JoinAnswer::from_bytes(garbage, 1 << 20).is_err());
        }
        let big = JoinAnswer::Joined(vec![vec![0; 100]]).to_bytes();
        assert!(JoinAnswer::from_bytes(&big, 50).is_err(), "over the cap");
    }
}
