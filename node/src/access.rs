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

use basic_proto::keys::{Principal, Role};
use basic_store::{AccessAnswer, AccessFrame, AccessRefusal, Database};
use tokio::sync::{Semaphore, SemaphorePermit};

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
pub fn answer_access(db: &Database, frame: &[u8], local: &[u8]) -> AccessAnswer {
    let answer = db.answer_access(frame, local);
    match (&answer, AccessFrame::from_bytes(frame)) {
        (AccessAnswer::Pending, Ok(AccessFrame::Ask(ask))) => tracing::info!(
            app = %Principal { role: Role::App, key: ask.app.key },
            name = %ask.name,
            "an app asks for access over the network (see `basic app requests`)"
        ),
        (AccessAnswer::Refused(refusal), _) => {
            tracing::debug!(%refusal, "access frame refused");
        }
        _ => {}
    }
    answer
}
