//! Apps asking for access over the network: the device's side of the
//! `/basic/access/0` protocol (`protocol-spec/apps.md`).
//!
//! An app (the light client) sends one of the user's devices a signed
//! [`AccessAsk`](basic_store::AccessAsk), then polls; the running node
//! answers each frame with [`Database::answer_access`] on the blocking
//! pool, a few at a time. The ask waits in the same store as the API's
//! requests: `basic app requests` lists it, `basic app approve` grants it.
//! Pinning peers and removed devices refuse every frame
//! ([`AccessRefusal::NotADevice`]).
//!
//! A device relays each new ask it records, and each denial of a network
//! ask by its user, to every device it is connected to (peers whose sync
//! session proved a device of the control log), best effort: a device
//! that is off learns nothing of it, and the app still learns its answer
//! from the device it asked. Those devices take the relays through the
//! same [`Database::answer_access`].

use basic_net::{Net, PeerId, Protocol};
use basic_proto::keys::{Principal, Role};
use basic_store::{AccessAnswer, AccessFrame, AccessRefusal, Answered, Database};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::node::Node;

/// Access frames answered at once; more are dropped (the app retries).
static SLOTS: Semaphore = Semaphore::const_new(2);

/// A slot to answer one access frame, if one is free.
pub fn slot() -> Option<SemaphorePermit<'static>> {
    SLOTS.try_acquire().ok()
}

/// What a peer that is not a device answers (a pinning peer, or a device
/// removed from the database).
pub fn not_a_device() -> Vec<u8> {
    AccessAnswer::Refused(AccessRefusal::NotADevice).to_bytes()
}

/// Answers one access frame against `db` (blocking: an ask is written to
/// disk). `local` is this node's peer id bytes, which the app signed.
pub fn answer_access(db: &Database, frame: &[u8], local: &[u8]) -> Answered {
    let answered = db.answer_access(frame, local);
    match (&answered.answer, AccessFrame::from_bytes(frame)) {
        (AccessAnswer::Pending, Ok(AccessFrame::Ask(ask))) => tracing::info!(
            app = %Principal { role: Role::App, key: ask.app.key },
            name = %ask.name,
            "an app asks for access over the network (see `basic app requests`)"
        ),
        (AccessAnswer::Pending, Ok(AccessFrame::Relay(relay))) => tracing::info!(
            app = %Principal { role: Role::App, key: relay.ask.app.key },
            name = %relay.ask.name,
            device = %Principal { role: Role::Device, key: relay.device },
            "an app asked another device for access (see `basic app requests`)"
        ),
        (AccessAnswer::Pending, Ok(AccessFrame::Denial(denial))) => tracing::info!(
            app = %Principal { role: Role::App, key: denial.app },
            device = %Principal { role: Role::Device, key: denial.device },
            "the user denied an app's request on another device"
        ),
        (AccessAnswer::Refused(refusal), _) => {
            tracing::debug!(%refusal, "access frame refused");
        }
        _ => {}
    }
    answered
}

/// Sends `frame` (a relay or a denial this device signed) to each of
/// `devices`, in the background; what they answer is only logged.
pub fn relay(net: &Net, devices: Vec<PeerId>, frame: Vec<u8>) {
    for device in devices {
        let (net, frame) = (net.clone(), frame.clone());
        tokio::spawn(async move {
            match net.request_on(Protocol::Access, device, frame).await {
                Ok(bytes) => match AccessAnswer::from_bytes(&bytes, 1 << 10) {
                    Ok(AccessAnswer::Pending) => {
                        tracing::debug!(%device, "the device took the relay");
                    }
                    answer => {
                        tracing::debug!(%device, ?answer, "the device did not take the relay")
                    }
                },
                Err(error) => tracing::debug!(%device, %error, "cannot relay to the device"),
            }
        });
    }
}

/// Sends `frame` to every device the running node is connected to, if
/// this process runs the network (`basic up`); otherwise there is no one
/// to tell.
pub fn relay_from(node: &Node, frame: Vec<u8>) {
    let (Some(net), Some(status), Ok(runtime)) =
        (node.net(), node.network.as_ref(), tokio::runtime::Handle::try_current())
    else {
        return;
    };
    let devices = {
        let status = status.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::network::device_peers(&status, &node.db.auth_state())
    };
    let _entered = runtime.enter();
    relay(net, devices, frame);
}
