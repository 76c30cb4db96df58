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
//! The frames are [`JoinRequest`] and [`JoinAnswer`] (basic-store's
//! pairing flow).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail};
use basic_net::{Config, Keypair, Limits, Multiaddr, PeerId, Protocol, RequestError, peer_of};
use basic_store::{Database, Invite, JoinAnswer, JoinRequest};

/// How long the new device waits for the inviting device's answer.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

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
