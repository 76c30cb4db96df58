//! Basic's protocol core: everything two Basic peers must agree on, with no
//! I/O. No sockets, no files, no clock and no OS randomness: time comes in as
//! `now_ms` arguments and randomness from an RNG the caller seeds, so the
//! node, the light client and the deterministic simulator all drive the same
//! code.
//!
//! The normative description is `protocol-spec/` in the repository; each
//! module names the section it implements.
//!
//! ```
//! use basic_proto::*;
//! use rand_core::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let device = SecretKey::generate(&mut rng);
//! let scope_key = ScopeKey::generate(&mut rng);
//! let mut clock = Clock::default();
//!
//! // A device writes one row...
//! let changes = Changes::new(vec![RowOp::Upsert {
//!     table: Name::new("todo.items")?,
//!     key: RowKey::single(KeyPart::Text("milk".into())),
//!     generation: 1,
//!     cells: LiteMap::from_iter([(Name::new("done")?, Value::Bool(false))]),
//! }])?;
//! let draft = CommitDraft {
//!     database: DatabaseId([7; 32]),
//!     seq: 1,
//!     prev: None,
//!     hlc: clock.tick(1_700_000_000_000),
//!     scope: ScopeId([1; 16]),
//!     epoch: 0,
//! };
//! let commit = Commit::create(&device, draft, &changes, &scope_key, &mut rng)?;
//!
//! // ...and another peer verifies it without the key, then opens it with the key.
//! let received = Commit::decode(commit.as_bytes())?;
//! assert_eq!(received.header().author, device.public());
//! let opened = received.open(&scope_key)?;
//!
//! let mut tables = Tables::default();
//! tables.apply(Stamp::of(received.header()), &opened);
//! assert_eq!(tables.live_rows().count(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![deny(missing_docs)]

pub mod aead;
pub mod change;
pub mod codec;
pub mod commit;
pub mod control;
pub mod hlc;
pub mod json;
pub mod keys;
#[cfg(test)]
mod mangle;
pub mod merge;
pub mod scope;
pub mod seal;
pub mod sync;
pub mod value;

pub use aead::ScopeKey;
pub use change::{Changes, ChangesError, RowOp};
pub use codec::{Cbor, DecodeError};
pub use commit::{
    Commit, CommitDraft, CommitError, CommitHeader, CommitId, Located, UnsignedCommit,
};
pub use control::{AuthError, AuthState, ControlLog, ControlOp, OpId};
pub use hlc::{Clock, ClockAhead, Hlc};
pub use keys::{
    AuthorId, DatabaseId, KeyCache, KeyError, Principal, PublicKey, Role, SealingKey, SecretKey,
    SigningContext,
};
/// The sorted-vector map of a row's cells ([`Cells`], [`RowOp::Upsert`]).
pub use litemap::LiteMap;
pub use merge::{Cell, Cells, RowState, Stamp, Tables};
pub use scope::{NamingKey, ScopeId};
pub use seal::{Party, SealError, SealedKey};
pub use value::{ColumnDef, ColumnType, KeyPart, Name, RowKey, TypeError, Value};
