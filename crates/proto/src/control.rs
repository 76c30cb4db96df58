//! The control log: devices, app grants, pinning peers, scope keys and
//! schemas, as signed operations whose outcome is the same on every node.
//!
//! Implements `protocol-spec/control-log.md`. Three parts, one job each:
//!
//! - [`op`]: the operations, their encoding, signatures, ids and the label
//!   scope keys are sealed under;
//! - [`log`]: the set of operations of one database, which of them are
//!   admitted (their author was a member in their own causal past), and
//!   their deterministic order;
//! - [`state`]: the authorisation state computed from the admitted set,
//!   and the check that a commit is authorised, without decrypting it.
//!
//! ```
//! use basic_proto::control::*;
//! use basic_proto::{DatabaseId, Hlc, Name, Party, ScopeKey, SecretKey};
//! use rand_core::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let (root, laptop) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
//!
//! // The root identity creates the database; its genesis id is the database id.
//! let genesis = ControlOp::create(&root, OpBody {
//!     database: DatabaseId([0; 32]),
//!     author: root.public(),
//!     parents: vec![],
//!     hlc: Hlc { wall_ms: 1_700_000_000_000, counter: 0 },
//!     payload: Payload::genesis(&root, &Party::of(&laptop), &mut rng)?,
//! })?;
//! let database = genesis.database();
//! let mut log = ControlLog::new(database);
//! log.insert(genesis, 1_700_000_000_000)?;
//!
//! // The laptop creates scope `todo` (epoch 0), sealing its key to itself.
//! // The wire names the scope by an id only devices can compute.
//! let naming = log.state().naming_key(&laptop).expect("sealed to the laptop");
//! let todo = naming.scope_id(&Name::new("todo")?);
//! let key = ScopeKey::generate(&mut rng);
//! let rotation =
//!     Rotation::seal(&laptop, database, todo, 0, &key, &[Party::of(&laptop)], &mut rng)?;
//! let op = ControlOp::create(&laptop, OpBody {
//!     database,
//!     author: laptop.public(),
//!     parents: log.heads(),
//!     hlc: Hlc { wall_ms: 1_700_000_000_001, counter: 0 },
//!     payload: Payload::RotateKey(rotation),
//! })?;
//! log.insert(op, 1_700_000_000_001)?;
//!
//! let state = log.state();
//! assert!(state.is_device(&laptop.public()));
//! assert_eq!(state.scope_keys(&laptop, &todo, 0), vec![key]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod evaluate;
pub mod log;
pub mod op;
pub mod state;

pub use log::{ControlLog, InsertError, Inserted, RestoreError};
pub use op::{
    ControlOp, Cutoff, OpBody, OpError, OpId, Payload, Rights, Rotation, SchemaSealError,
    SealedSchema, schema_aad, seal_label, seal_naming,
};
pub use state::{App, AuthError, AuthState, Device, End, EpochKey, Grant, SchemaOp, Scope, Seal};

#[cfg(test)]
pub(crate) mod testkit;
