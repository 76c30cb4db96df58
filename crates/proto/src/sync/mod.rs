//! The sync protocol (`protocol-spec/sync.md`), with no I/O.
//!
//! Two peers each run a [`Requester`] towards the other (pulling what
//! their own replica lacks, pushing live changes) and a [`Responder`]
//! answering the other's requests. Both read and write the replica through
//! [`SyncStore`]; frames, time and randomness are passed in.

pub mod message;
pub mod proof;
pub mod requester;
pub mod responder;
pub mod store;
pub mod summary;

pub use message::{ErrorCode, Message};
pub use requester::{Event, Outgoing, Requester, RequesterConfig};
pub use responder::{Answer, Responder, Violation};
pub use store::{StoreFailure, Stored, SyncStore, admit_ops, entitled_view};
pub use summary::{Entry, Fingerprint, View};

#[cfg(test)]
mod tests;
