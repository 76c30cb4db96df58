//! Control operations: their encoding, signing, ids and seal labels.
//!
//! Implements `protocol-spec/control-log.md` §2–§4. An operation is a
//! signed envelope like a commit: a body (the deterministic encoding of
//! `[version, database, author, parents, hlc, kind, payload]`) and the
//! author's signature over it in the control context. Decoding checks the
//! structure, canonical form, keys and signature and nothing else: whether
//! the author may issue the operation is the state's job
//! ([`super::state`]).

use std::collections::BTreeMap;
use std::fmt;

use ciborium::Value as Cbor;
use rand_core::CryptoRng;

use crate::aead::ScopeKey;
use crate::aead::{NONCE_LEN, TAG_LEN};
use crate::codec::{self, Cbor as CborCodec, DecodeError, Fields};
use crate::commit::CommitId;
use crate::hlc::Hlc;
use crate::keys::{
    DatabaseId, KeyCache, PublicKey, SIGNATURE_LEN, SealingKey, SecretKey, SigningContext,
};
use crate::scope::{NamingKey, ScopeId, naming_label};
use crate::seal::{Party, SealError, SealedKey};
use crate::value::{MAX_VALUE_LEN, Name};

/// Largest encoded operation (and body), in bytes (1 MiB).
pub const MAX_OP_BYTES: usize = 1 << 20;
/// Most causal parents an operation names.
pub const MAX_PARENTS: usize = 16;
/// Most sealed keys in one list (one rotation, or one new device's keys).
pub const MAX_SEALS: usize = 4096;
/// Most scopes one device removal rotates.
pub const MAX_ROTATIONS: usize = 1024;
/// Largest schema text, in bytes.
pub const MAX_SCHEMA_BYTES: usize = MAX_VALUE_LEN;
/// The control operation format version.
pub const OP_VERSION: u64 = 0;
/// BLAKE3 context of operation ids.
pub const OP_ID_CONTEXT: &str = "basic/v0 control op id";
/// Prefix of the label a scope key is sealed under (before its `0x00`).
pub const SEAL_LABEL_PREFIX: &str = "basic/v0 scope key";
/// Prefix of a sealed schema's associated data (before its `0x00`).
pub const SCHEMA_AAD_PREFIX: &str = "basic/v0 schema";

/// The hash that names an operation: BLAKE3 (derive-key mode) of its
/// complete encoding. The genesis operation's id is the database id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub [u8; 32]);

impl OpId {
    /// The id of the operation encoded as `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(blake3::derive_key(OP_ID_CONTEXT, bytes))
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpId({self})")
    }
}

/// The label a scope key of (`database`, `scope`, `epoch`) is sealed under
/// for `recipient`:
/// `"basic/v0 scope key" || 0x00 || database || epoch (u32 big-endian) ||
/// recipient || scope id (16)`.
pub fn seal_label(
    database: DatabaseId,
    scope: &ScopeId,
    epoch: u32,
    recipient: &PublicKey,
) -> Vec<u8> {
    let mut label = Vec::with_capacity(SEAL_LABEL_PREFIX.len() + 1 + 32 + 4 + 32 + 16);
    label.extend_from_slice(SEAL_LABEL_PREFIX.as_bytes());
    label.push(0);
    label.extend_from_slice(&database.0);
    label.extend_from_slice(&epoch.to_be_bytes());
    label.extend_from_slice(recipient.as_bytes());
    label.extend_from_slice(&scope.0);
    label
}

/// Seals the naming key of the database rooted at `root`, from `author`
/// to a new `device` (control-log.md §4).
pub fn seal_naming(
    naming: &NamingKey,
    author: &SecretKey,
    root: &PublicKey,
    device: &Party,
    rng: &mut impl CryptoRng,
) -> Result<SealedKey, SealError> {
    SealedKey::seal(&naming.as_payload(), author, device, &naming_label(root, &device.key), rng)
}

/// What an app may do in a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rights {
    /// Read the scope's rows (hold its keys).
    Read,
    /// Read and write.
    ReadWrite,
}

impl Rights {
    fn code(self) -> u64 {
        match self {
            Rights::Read => 1,
            Rights::ReadWrite => 2,
        }
    }
}

/// A scope's new key epoch, sealed to each of its readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The scope whose key changes (or is created, at epoch 0).
    pub scope: ScopeId,
    /// The new epoch.
    pub epoch: u32,
    /// The new key, sealed by the operation's author to each recipient.
    pub seals: BTreeMap<PublicKey, SealedKey>,
}

impl Rotation {
    /// Seals `key` as epoch `epoch` of `scope` from `author` to every
    /// one of `recipients`.
    pub fn seal(
        author: &SecretKey,
        database: DatabaseId,
        scope: ScopeId,
        epoch: u32,
        key: &ScopeKey,
        recipients: &[Party],
        rng: &mut impl CryptoRng,
    ) -> Result<Self, SealError> {
        let mut seals = BTreeMap::new();
        for recipient in recipients {
            let label = seal_label(database, &scope, epoch, &recipient.key);
            seals.insert(recipient.key, SealedKey::seal(key, author, recipient, &label, rng)?);
        }
        Ok(Self { scope, epoch, seals })
    }
}

/// The last commit of a principal's log that stays valid after it is
/// revoked or removed; with the operation's own stamp it bounds what stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cutoff {
    /// The seq of the last kept commit; 0 keeps none.
    pub seq: u64,
    /// Its commit id; `None` exactly when `seq` is 0.
    pub last: Option<CommitId>,
}

impl Cutoff {
    /// Keeps no commit at all.
    pub const NONE: Cutoff = Cutoff { seq: 0, last: None };
}

/// Most bytes of a sealed schema: the namespace, the schema text, their
/// CBOR framing and the tag.
pub const MAX_SEALED_SCHEMA_BYTES: usize = MAX_SCHEMA_BYTES + 128 + TAG_LEN;

/// A namespace's name and schema text, encrypted under a key of its scope
/// (control-log.md §9.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSchema {
    /// The AEAD nonce: 24 random bytes.
    pub nonce: [u8; NONCE_LEN],
    /// `XChaCha20-Poly1305(key, nonce, aad, CBOR [namespace, text])`.
    pub ciphertext: Vec<u8>,
}

/// Why a sealed schema did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaSealError {
    /// Wrong key, or the ciphertext or its context was altered.
    #[error("sealed schema does not open with this key")]
    DoesNotOpen,
    /// It opened, but does not hold `[namespace, text]`.
    #[error("sealed schema holds no valid namespace and text: {0}")]
    Malformed(DecodeError),
}

impl SealedSchema {
    /// Seals `namespace` and its schema `text` for (`database`, `scope`,
    /// `epoch`) under `key`, a key of that epoch.
    pub fn seal(
        key: &ScopeKey,
        database: DatabaseId,
        scope: &ScopeId,
        epoch: u32,
        namespace: &Name,
        text: &str,
        rng: &mut impl CryptoRng,
    ) -> Self {
        let plaintext = codec::encode_value(&Cbor::Array(vec![
            Cbor::Text(namespace.as_str().to_owned()),
            Cbor::Text(text.to_owned()),
        ]));
        let nonce = crate::aead::random_nonce(rng);
        let ciphertext = key.encrypt(&nonce, &schema_aad(database, scope, epoch), &plaintext);
        Self { nonce, ciphertext }
    }

    /// Opens it with `key`: the namespace and the schema text.
    pub fn open(
        &self,
        key: &ScopeKey,
        database: DatabaseId,
        scope: &ScopeId,
        epoch: u32,
    ) -> Result<(Name, String), SchemaSealError> {
        let plaintext = key
            .decrypt(&self.nonce, &schema_aad(database, scope, epoch), &self.ciphertext)
            .ok_or(SchemaSealError::DoesNotOpen)?;
        let value = codec::parse(&plaintext, "schema", MAX_SEALED_SCHEMA_BYTES)
            .map_err(SchemaSealError::Malformed)?;
        let mut f = Fields::new(value, "schema", 2).map_err(SchemaSealError::Malformed)?;
        let namespace = Name::from_cbor(
            f.next("schema.namespace").map_err(SchemaSealError::Malformed)?,
            "schema.namespace",
        )
        .map_err(SchemaSealError::Malformed)?;
        let text =
            f.text("schema.text", 0, MAX_SCHEMA_BYTES).map_err(SchemaSealError::Malformed)?;
        Ok((namespace, text))
    }
}

/// The associated data of a sealed schema:
/// `"basic/v0 schema" || 0x00 || database || scope id || epoch (u32 big-endian)`.
pub fn schema_aad(database: DatabaseId, scope: &ScopeId, epoch: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(SCHEMA_AAD_PREFIX.len() + 1 + 32 + 16 + 4);
    aad.extend_from_slice(SCHEMA_AAD_PREFIX.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&database.0);
    aad.extend_from_slice(&scope.0);
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad
}

/// The kind of an operation and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Creates the database: signed by the root key, no parents, database
    /// field all zero; its id becomes the database id.
    Genesis {
        /// The root identity's x25519 key, for seals the root makes.
        root_sealing: SealingKey,
        /// The first device.
        device: PublicKey,
        /// Its x25519 key.
        device_sealing: SealingKey,
        /// The naming key, sealed by the root to the device.
        naming: SealedKey,
    },
    /// Adds a device and hands it existing scope keys.
    AddDevice {
        /// The new device.
        device: PublicKey,
        /// Its x25519 key.
        sealing: SealingKey,
        /// The naming key, sealed to it.
        naming: SealedKey,
        /// Scope keys sealed to it, by (scope, epoch).
        keys: BTreeMap<(ScopeId, u32), SealedKey>,
    },
    /// Removes a device for good and rotates the scopes it could read.
    RemoveDevice {
        /// The removed device.
        device: PublicKey,
        /// Last commit of its log that stays.
        cutoff: Cutoff,
        /// New epochs, one per scope.
        rotations: BTreeMap<ScopeId, Rotation>,
    },
    /// Grants an app rights on a scope, with the scope's current key.
    Grant {
        /// The app.
        app: PublicKey,
        /// Its x25519 key.
        sealing: SealingKey,
        /// The scope.
        scope: ScopeId,
        /// What it may do.
        rights: Rights,
        /// The epoch of the key handed over.
        epoch: u32,
        /// That key, sealed to the app.
        key: SealedKey,
    },
    /// Ends an app's grant on a scope for good and rotates the scope's key.
    Revoke {
        /// The app.
        app: PublicKey,
        /// Last commit of its log that stays.
        cutoff: Cutoff,
        /// The scope's new epoch, sealed to every remaining reader.
        rotation: Rotation,
    },
    /// Creates a scope (epoch 0) or rotates its key.
    RotateKey(Rotation),
    /// Lets a pinning peer store, verify and serve the ciphertext.
    AddPinner {
        /// The pinning peer.
        pinner: PublicKey,
    },
    /// Ends a pinning peer's authorisation for good.
    RemovePinner {
        /// The pinning peer.
        pinner: PublicKey,
    },
    /// Applies a schema to a scope's namespace: its name and text travel
    /// sealed under a key of the scope, so only its readers learn them.
    Schema {
        /// The scope.
        scope: ScopeId,
        /// The epoch whose key seals it.
        epoch: u32,
        /// The namespace name and schema text, sealed.
        sealed: SealedSchema,
    },
}

impl Payload {
    /// The genesis of a database whose root is `root` and whose first
    /// device is `device`: the root seals the naming key to the device.
    pub fn genesis(
        root: &SecretKey,
        device: &Party,
        rng: &mut impl CryptoRng,
    ) -> Result<Payload, SealError> {
        let naming = seal_naming(&NamingKey::of_root(root), root, &root.public(), device, rng)?;
        Ok(Payload::Genesis {
            root_sealing: root.sealing_key(),
            device: device.key,
            device_sealing: device.sealing,
            naming,
        })
    }

    /// The kind number on the wire.
    pub fn kind(&self) -> u64 {
        match self {
            Payload::Genesis { .. } => 0,
            Payload::AddDevice { .. } => 1,
            Payload::RemoveDevice { .. } => 2,
            Payload::Grant { .. } => 3,
            Payload::Revoke { .. } => 4,
            Payload::RotateKey(_) => 5,
            Payload::AddPinner { .. } => 6,
            Payload::RemovePinner { .. } => 7,
            Payload::Schema { .. } => 8,
        }
    }

    /// The kind's name, as the spec and vectors write it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Payload::Genesis { .. } => "genesis",
            Payload::AddDevice { .. } => "add-device",
            Payload::RemoveDevice { .. } => "remove-device",
            Payload::Grant { .. } => "grant",
            Payload::Revoke { .. } => "revoke",
            Payload::RotateKey(_) => "rotate-key",
            Payload::AddPinner { .. } => "add-pinner",
            Payload::RemovePinner { .. } => "remove-pinner",
            Payload::Schema { .. } => "schema",
        }
    }

    /// Whether the operation only takes authority away (removals,
    /// revocations). Such operations stay in force even when their author
    /// is cut off by a concurrent removal (control-log.md §5.3).
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Payload::RemoveDevice { .. } | Payload::Revoke { .. } | Payload::RemovePinner { .. }
        )
    }

    fn to_cbor(&self) -> Cbor {
        let key = |k: &PublicKey| Cbor::Bytes(k.as_bytes().to_vec());
        let x = |k: &SealingKey| Cbor::Bytes(k.0.to_vec());
        let scope = |s: &ScopeId| Cbor::Bytes(s.0.to_vec());
        let int = |n: u64| Cbor::Integer(n.into());
        let seals = |r: &Rotation| {
            Cbor::Array(
                r.seals.iter().map(|(k, s)| Cbor::Array(vec![key(k), s.to_cbor()])).collect(),
            )
        };
        let cutoff = |c: &Cutoff| {
            Cbor::Array(vec![
                int(c.seq),
                c.last.map_or(Cbor::Null, |id| Cbor::Bytes(id.0.to_vec())),
            ])
        };
        Cbor::Array(match self {
            Payload::Genesis { root_sealing, device, device_sealing, naming } => {
                vec![x(root_sealing), key(device), x(device_sealing), naming.to_cbor()]
            }
            Payload::AddDevice { device, sealing, naming, keys } => vec![
                key(device),
                x(sealing),
                naming.to_cbor(),
                Cbor::Array(
                    keys.iter()
                        .map(|((id, epoch), sealed)| {
                            Cbor::Array(vec![scope(id), int((*epoch).into()), sealed.to_cbor()])
                        })
                        .collect(),
                ),
            ],
            Payload::RemoveDevice { device, cutoff: c, rotations } => vec![
                key(device),
                cutoff(c),
                Cbor::Array(
                    rotations
                        .values()
                        .map(|r| Cbor::Array(vec![scope(&r.scope), int(r.epoch.into()), seals(r)]))
                        .collect(),
                ),
            ],
            Payload::Grant { app, sealing, scope: id, rights, epoch, key: sealed } => vec![
                key(app),
                x(sealing),
                scope(id),
                int(rights.code()),
                int((*epoch).into()),
                sealed.to_cbor(),
            ],
            Payload::Revoke { app, cutoff: c, rotation } => vec![
                key(app),
                cutoff(c),
                scope(&rotation.scope),
                int(rotation.epoch.into()),
                seals(rotation),
            ],
            Payload::RotateKey(r) => vec![scope(&r.scope), int(r.epoch.into()), seals(r)],
            Payload::AddPinner { pinner } | Payload::RemovePinner { pinner } => vec![key(pinner)],
            Payload::Schema { scope: id, epoch, sealed } => vec![
                scope(id),
                int((*epoch).into()),
                Cbor::Bytes(sealed.nonce.to_vec()),
                Cbor::Bytes(sealed.ciphertext.clone()),
            ],
        })
    }

    fn from_cbor(kind: u64, value: Cbor, keys: &KeyCache) -> Result<Self, DecodeError> {
        let arity = match kind {
            0 => 4,
            1 => 4,
            2 => 3,
            3 => 6,
            4 => 5,
            5 => 3,
            6 | 7 => 1,
            8 => 4,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "op.kind",
                    reason: format!("unknown kind {kind}"),
                });
            }
        };
        let mut f = Fields::new(value, "op.payload", arity)?;
        Ok(match kind {
            0 => Payload::Genesis {
                root_sealing: SealingKey(f.fixed("genesis.root_sealing")?),
                device: key(&mut f, "genesis.device", keys)?,
                device_sealing: SealingKey(f.fixed("genesis.device_sealing")?),
                naming: SealedKey::from_cbor(f.next("genesis.naming")?)?,
            },
            1 => {
                let device = key(&mut f, "add-device.device", keys)?;
                let sealing = SealingKey(f.fixed("add-device.sealing")?);
                let naming = SealedKey::from_cbor(f.next("add-device.naming")?)?;
                let items =
                    codec::as_array(f.next("add-device.keys")?, "add-device.keys", 0, MAX_SEALS)?;
                let mut sealed_keys = BTreeMap::new();
                let mut last: Option<(ScopeId, u32)> = None;
                for item in items {
                    let mut e = Fields::new(item, "add-device.keys.item", 3)?;
                    let scope = ScopeId(e.fixed("add-device.keys.scope")?);
                    let epoch = epoch(e.uint("add-device.keys.epoch")?, "add-device.keys.epoch")?;
                    let sealed = SealedKey::from_cbor(e.next("add-device.keys.sealed")?)?;
                    let at = (scope, epoch);
                    if last.as_ref().is_some_and(|l| *l >= at) {
                        return Err(unsorted("add-device.keys"));
                    }
                    last = Some(at);
                    sealed_keys.insert(at, sealed);
                }
                Payload::AddDevice { device, sealing, naming, keys: sealed_keys }
            }
            2 => {
                let device = key(&mut f, "remove-device.device", keys)?;
                let cutoff = cutoff(f.next("remove-device.cutoff")?, "remove-device.cutoff")?;
                let items = codec::as_array(
                    f.next("remove-device.rotations")?,
                    "remove-device.rotations",
                    0,
                    MAX_ROTATIONS,
                )?;
                let mut rotations: BTreeMap<ScopeId, Rotation> = BTreeMap::new();
                for item in items {
                    let mut r = Fields::new(item, "remove-device.rotations.item", 3)?;
                    let scope = ScopeId(r.fixed("remove-device.rotations.scope")?);
                    let epoch = epoch(
                        r.uint("remove-device.rotations.epoch")?,
                        "remove-device.rotations.epoch",
                    )?;
                    let seals = seals(
                        r.next("remove-device.rotations.seals")?,
                        "remove-device.rotations.seals",
                        keys,
                    )?;
                    if rotations.last_key_value().is_some_and(|(last, _)| *last >= scope) {
                        return Err(unsorted("remove-device.rotations"));
                    }
                    rotations.insert(scope, Rotation { scope, epoch, seals });
                }
                Payload::RemoveDevice { device, cutoff, rotations }
            }
            3 => Payload::Grant {
                app: key(&mut f, "grant.app", keys)?,
                sealing: SealingKey(f.fixed("grant.sealing")?),
                scope: ScopeId(f.fixed("grant.scope")?),
                rights: match f.uint("grant.rights")? {
                    1 => Rights::Read,
                    2 => Rights::ReadWrite,
                    other => {
                        return Err(DecodeError::InvalidValue {
                            field: "grant.rights",
                            reason: format!("{other} is neither 1 (read) nor 2 (read-write)"),
                        });
                    }
                },
                epoch: epoch(f.uint("grant.epoch")?, "grant.epoch")?,
                key: SealedKey::from_cbor(f.next("grant.key")?)?,
            },
            4 => {
                let app = key(&mut f, "revoke.app", keys)?;
                let cutoff = cutoff(f.next("revoke.cutoff")?, "revoke.cutoff")?;
                let scope = ScopeId(f.fixed("revoke.scope")?);
                let epoch = epoch(f.uint("revoke.epoch")?, "revoke.epoch")?;
                let seals = seals(f.next("revoke.seals")?, "revoke.seals", keys)?;
                Payload::Revoke { app, cutoff, rotation: Rotation { scope, epoch, seals } }
            }
            5 => {
                let scope = ScopeId(f.fixed("rotate-key.scope")?);
                let epoch = epoch(f.uint("rotate-key.epoch")?, "rotate-key.epoch")?;
                let seals = seals(f.next("rotate-key.seals")?, "rotate-key.seals", keys)?;
                Payload::RotateKey(Rotation { scope, epoch, seals })
            }
            6 => Payload::AddPinner { pinner: key(&mut f, "add-pinner.pinner", keys)? },
            7 => Payload::RemovePinner { pinner: key(&mut f, "remove-pinner.pinner", keys)? },
            _ => Payload::Schema {
                scope: ScopeId(f.fixed("schema.scope")?),
                epoch: epoch(f.uint("schema.epoch")?, "schema.epoch")?,
                sealed: SealedSchema {
                    nonce: f.fixed("schema.nonce")?,
                    ciphertext: f.bytes("schema.sealed", TAG_LEN, MAX_SEALED_SCHEMA_BYTES)?,
                },
            },
        })
    }
}

fn key(f: &mut Fields, field: &'static str, keys: &KeyCache) -> Result<PublicKey, DecodeError> {
    keys.get(f.fixed(field)?).map_err(|error| DecodeError::BadKey { field, error })
}

fn epoch(n: u64, field: &'static str) -> Result<u32, DecodeError> {
    u32::try_from(n).map_err(|_| DecodeError::InvalidValue { field, reason: "over 2^32-1".into() })
}

fn unsorted(field: &'static str) -> DecodeError {
    DecodeError::InvalidValue { field, reason: "not in strictly ascending order".into() }
}

fn cutoff(value: Cbor, field: &'static str) -> Result<Cutoff, DecodeError> {
    let mut f = Fields::new(value, field, 2)?;
    let seq = f.uint(field)?;
    let last = match f.next(field)? {
        Cbor::Null => None,
        value => Some(CommitId(codec::as_fixed(value, field)?)),
    };
    if last.is_none() != (seq == 0) {
        return Err(DecodeError::InvalidValue {
            field,
            reason: "last commit must be null exactly when seq is 0".into(),
        });
    }
    Ok(Cutoff { seq, last })
}

fn seals(
    value: Cbor,
    field: &'static str,
    keys: &KeyCache,
) -> Result<BTreeMap<PublicKey, SealedKey>, DecodeError> {
    let mut out: BTreeMap<PublicKey, SealedKey> = BTreeMap::new();
    for item in codec::as_array(value, field, 0, MAX_SEALS)? {
        let mut f = Fields::new(item, field, 2)?;
        let recipient = key(&mut f, field, keys)?;
        let sealed = SealedKey::from_cbor(f.next(field)?)?;
        if out.last_key_value().is_some_and(|(last, _)| *last >= recipient) {
            return Err(unsorted(field));
        }
        out.insert(recipient, sealed);
    }
    Ok(out)
}

/// The signed content of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpBody {
    /// The database: the genesis operation's id; all zero in the genesis.
    pub database: DatabaseId,
    /// The signer.
    pub author: PublicKey,
    /// Causal parents: the heads of the log the author had seen, sorted
    /// and without duplicates; empty exactly in the genesis.
    pub parents: Vec<OpId>,
    /// The author's clock stamp, above every parent's.
    pub hlc: Hlc,
    /// What the operation does.
    pub payload: Payload,
}

impl OpBody {
    fn to_cbor(&self) -> Cbor {
        let int = |n: u64| Cbor::Integer(n.into());
        Cbor::Array(vec![
            int(OP_VERSION),
            Cbor::Bytes(self.database.0.to_vec()),
            Cbor::Bytes(self.author.as_bytes().to_vec()),
            Cbor::Array(self.parents.iter().map(|p| Cbor::Bytes(p.0.to_vec())).collect()),
            Cbor::Array(vec![int(self.hlc.wall_ms), int(self.hlc.counter.into())]),
            int(self.payload.kind()),
            self.payload.to_cbor(),
        ])
    }

    fn parse(value: Cbor, keys: &KeyCache) -> Result<Self, DecodeError> {
        let version = match &value {
            Cbor::Array(items) => match items.first() {
                Some(first) => codec::as_uint(first.clone(), "op.version")?,
                None => return Err(DecodeError::BadLength { field: "op", len: 0, min: 7, max: 7 }),
            },
            _ => return Err(DecodeError::WrongType { field: "op", expected: "array" }),
        };
        if version != OP_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "control op", version });
        }
        let mut f = Fields::new(value, "op", 7)?;
        f.uint("op.version")?;
        let database = DatabaseId(f.fixed("op.database")?);
        let author = key(&mut f, "op.author", keys)?;
        let mut parents = Vec::new();
        for parent in codec::as_array(f.next("op.parents")?, "op.parents", 0, MAX_PARENTS)? {
            let parent = OpId(codec::as_fixed(parent, "op.parents")?);
            if parents.last().is_some_and(|last| *last >= parent) {
                return Err(unsorted("op.parents"));
            }
            parents.push(parent);
        }
        let mut hlc = Fields::new(f.next("op.hlc")?, "op.hlc", 2)?;
        let wall_ms = hlc.uint("op.hlc.wall_ms")?;
        let counter = u32::try_from(hlc.uint("op.hlc.counter")?).map_err(|_| {
            DecodeError::InvalidValue { field: "op.hlc.counter", reason: "over 2^32-1".into() }
        })?;
        let kind = f.uint("op.kind")?;
        let payload = Payload::from_cbor(kind, f.next("op.payload")?, keys)?;
        let genesis = kind == 0;
        if genesis != parents.is_empty() {
            return Err(DecodeError::InvalidValue {
                field: "op.parents",
                reason: "empty exactly in the genesis operation".into(),
            });
        }
        if genesis != (database.0 == [0; 32]) {
            return Err(DecodeError::InvalidValue {
                field: "op.database",
                reason: "all zero exactly in the genesis operation".into(),
            });
        }
        Ok(Self { database, author, parents, hlc: Hlc { wall_ms, counter }, payload })
    }
}

/// The outer array of an operation.
struct Envelope {
    body: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl CborCodec for Envelope {
    const WHAT: &'static str = "control op";
    const MAX_BYTES: usize = MAX_OP_BYTES;

    fn to_cbor(&self) -> Cbor {
        Cbor::Array(vec![Cbor::Bytes(self.body.clone()), Cbor::Bytes(self.signature.to_vec())])
    }

    fn from_cbor(value: Cbor) -> Result<Self, DecodeError> {
        let mut f = Fields::new(value, "op-envelope", 2)?;
        Ok(Self {
            body: f.bytes("op-envelope.body", 1, MAX_OP_BYTES)?,
            signature: f.fixed("op-envelope.signature")?,
        })
    }
}

/// Why an operation could not be made or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The bytes are not a well-formed operation.
    #[error("malformed control op: {0}")]
    Decode(#[from] DecodeError),
    /// The signature does not verify strictly for the author and body.
    #[error("control op signature does not verify for its author")]
    BadSignature,
    /// The encoded operation would exceed [`MAX_OP_BYTES`].
    #[error("control op would be {len} bytes, over the limit of {MAX_OP_BYTES}")]
    TooLarge {
        /// The size it would have.
        len: usize,
    },
}

/// An operation whose structure and signature have been verified. Holding
/// one means its author signed it; not that the author was allowed to.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlOp {
    body: OpBody,
    signature: [u8; SIGNATURE_LEN],
    bytes: Vec<u8>,
    id: OpId,
}

impl ControlOp {
    /// Signs `body` as `author` and encodes it. `body.author` is replaced
    /// by `author`'s key; parents are sorted and deduplicated.
    pub fn create(author: &SecretKey, mut body: OpBody) -> Result<Self, OpError> {
        body.author = author.public();
        body.parents.sort();
        body.parents.dedup();
        let body_bytes = codec::encode_value(&body.to_cbor());
        // Refuse here what decoding would refuse (genesis shape, lengths).
        OpBody::parse(body.to_cbor(), &KeyCache::default())?;
        let signature = author.sign(SigningContext::Control, &body_bytes);
        let bytes = Envelope { body: body_bytes, signature }.encode();
        if bytes.len() > MAX_OP_BYTES {
            return Err(OpError::TooLarge { len: bytes.len() });
        }
        Ok(Self { id: OpId::of(&bytes), body, signature, bytes })
    }

    /// Decodes `bytes` and verifies the signature: size, envelope, body
    /// fields and keys, canonical form, then the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, OpError> {
        Self::decode_with(bytes, &KeyCache::default())
    }

    /// [`ControlOp::decode`], validating keys through `keys`.
    pub fn decode_with(bytes: &[u8], keys: &KeyCache) -> Result<Self, OpError> {
        let Envelope { body: body_bytes, signature } = Envelope::decode(bytes)?;
        let value = codec::parse(&body_bytes, "control op body", MAX_OP_BYTES)?;
        let body = OpBody::parse(value, keys)?;
        if codec::encode_value(&body.to_cbor()) != body_bytes {
            return Err(DecodeError::NonCanonical { what: "control op body" }.into());
        }
        body.author
            .verify(SigningContext::Control, &body_bytes, &signature)
            .map_err(|_| OpError::BadSignature)?;
        Ok(Self { id: OpId::of(bytes), body, signature, bytes: bytes.to_vec() })
    }

    /// The verified body.
    pub fn body(&self) -> &OpBody {
        &self.body
    }

    /// The operation's id.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// The complete encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded body: the signed message.
    pub fn body_bytes(&self) -> Vec<u8> {
        codec::encode_value(&self.body.to_cbor())
    }

    /// The author's signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// The database this operation belongs to: its own id for the genesis.
    pub fn database(&self) -> DatabaseId {
        match self.body.payload {
            Payload::Genesis { .. } => DatabaseId(self.id.0),
            _ => self.body.database,
        }
    }
}

impl fmt::Debug for ControlOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlOp")
            .field("id", &self.id)
            .field("kind", &self.body.payload.kind_name())
            .field("author", &self.body.author)
            .field("parents", &self.body.parents)
            .field("hlc", &self.body.hlc)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn genesis() -> (SecretKey, ControlOp) {
        let root = SecretKey::from_seed([1; 32]);
        let device = SecretKey::from_seed([2; 32]);
        let op = ControlOp::create(
            &root,
            OpBody {
                database: DatabaseId([0; 32]),
                author: root.public(),
                parents: vec![],
                hlc: Hlc { wall_ms: 1_700_000_000_000, counter: 0 },
                payload: Payload::genesis(
                    &root,
                    &Party::of(&device),
                    &mut ChaCha20Rng::seed_from_u64(2),
                )
                .unwrap(),
            },
        )
        .unwrap();
        (device, op)
    }

    fn every_kind() -> Vec<OpBody> {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (device, g) = genesis();
        let app = SecretKey::from_seed([4; 32]);
        let db = g.database();
        let naming = NamingKey::of_root(&SecretKey::from_seed([1; 32]));
        let todo = Name::new("todo").unwrap();
        let scope = naming.scope_id(&todo);
        let key = ScopeKey::from_bytes([9; 32]);
        let rotation = Rotation::seal(
            &device,
            db,
            scope,
            1,
            &key,
            &[Party::of(&device), Party::of(&app)],
            &mut rng,
        )
        .unwrap();
        let sealed = rotation.seals[&app.public()].clone();
        let payloads = vec![
            Payload::AddDevice {
                device: app.public(),
                sealing: app.sealing_key(),
                naming: sealed.clone(),
                keys: BTreeMap::from([((scope, 0), sealed.clone())]),
            },
            Payload::RemoveDevice {
                device: app.public(),
                cutoff: Cutoff { seq: 3, last: Some(CommitId([5; 32])) },
                rotations: BTreeMap::from([(scope, rotation.clone())]),
            },
            Payload::Grant {
                app: app.public(),
                sealing: app.sealing_key(),
                scope,
                rights: Rights::ReadWrite,
                epoch: 0,
                key: sealed,
            },
            Payload::Revoke { app: app.public(), cutoff: Cutoff::NONE, rotation: rotation.clone() },
            Payload::RotateKey(rotation),
            Payload::AddPinner { pinner: app.public() },
            Payload::RemovePinner { pinner: app.public() },
            Payload::Schema {
                scope,
                epoch: 1,
                sealed: SealedSchema::seal(&key, db, &scope, 1, &todo, "{}", &mut rng),
            },
        ];
        payloads
            .into_iter()
            .map(|payload| OpBody {
                database: db,
                author: device.public(),
                parents: vec![g.id()],
                hlc: Hlc { wall_ms: 1_700_000_000_001, counter: 0 },
                payload,
            })
            .collect()
    }

    #[test]
    fn every_kind_round_trips_and_verifies() {
        let (device, g) = genesis();
        assert_eq!(ControlOp::decode(g.as_bytes()).unwrap(), g);
        assert_eq!(g.database(), DatabaseId(g.id().0));
        for body in every_kind() {
            let op = ControlOp::create(&device, body.clone()).unwrap();
            let decoded = ControlOp::decode(op.as_bytes()).unwrap();
            assert_eq!(decoded, op);
            assert_eq!(decoded.body(), &body);
            assert_eq!(decoded.id(), OpId::of(op.as_bytes()));
        }
    }

    #[test]
    fn tampering_anywhere_is_caught() {
        let (device, _) = genesis();
        let op = ControlOp::create(&device, every_kind().remove(2)).unwrap();
        for i in 0..op.as_bytes().len() {
            let mut bytes = op.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            assert!(ControlOp::decode(&bytes).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn genesis_shape_is_enforced() {
        let (device, g) = genesis();
        let mut body = g.body().clone();
        body.parents = vec![OpId([1; 32])];
        assert!(matches!(
            ControlOp::create(&device, body),
            Err(OpError::Decode(DecodeError::InvalidValue { field: "op.parents", .. }))
        ));
        let mut body = every_kind().remove(0);
        body.database = DatabaseId([0; 32]);
        assert!(matches!(
            ControlOp::create(&device, body),
            Err(OpError::Decode(DecodeError::InvalidValue { field: "op.database", .. }))
        ));
    }

    #[test]
    fn unsorted_parents_are_refused() {
        let (device, _) = genesis();
        let mut body = every_kind().remove(5);
        body.parents = vec![OpId([1; 32]), OpId([2; 32])];
        let op = ControlOp::create(&device, body.clone()).unwrap();
        // Swap the two parents in the body and re-sign: decoding refuses.
        let mut value = body.to_cbor();
        if let Cbor::Array(items) = &mut value {
            items[3] = Cbor::Array(vec![Cbor::Bytes(vec![2; 32]), Cbor::Bytes(vec![1; 32])]);
        }
        let body_bytes = codec::encode_value(&value);
        let signature = device.sign(SigningContext::Control, &body_bytes);
        let bytes = Envelope { body: body_bytes, signature }.encode();
        assert_eq!(ControlOp::decode(&bytes), Err(OpError::Decode(unsorted("op.parents"))));
        assert!(ControlOp::decode(op.as_bytes()).is_ok());
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let (device, g) = genesis();
        let body_bytes = codec::encode_value(&g.body().to_cbor());
        let signature = device.sign(SigningContext::Control, &body_bytes);
        let bytes = Envelope { body: body_bytes.clone(), signature }.encode();
        assert_eq!(ControlOp::decode(&bytes), Err(OpError::BadSignature));
        // The commit context does not verify as a control op either.
        let root = SecretKey::from_seed([1; 32]);
        let signature = root.sign(SigningContext::Commit, &body_bytes);
        let bytes = Envelope { body: body_bytes, signature }.encode();
        assert_eq!(ControlOp::decode(&bytes), Err(OpError::BadSignature));
    }

    #[test]
    fn seal_labels_bind_database_scope_epoch_and_recipient() {
        let a = SecretKey::from_seed([7; 32]).public();
        let b = SecretKey::from_seed([8; 32]).public();
        let s = ScopeId([3; 16]);
        let t = ScopeId([4; 16]);
        let base = seal_label(DatabaseId([1; 32]), &s, 1, &a);
        assert_eq!(base.len(), 18 + 1 + 32 + 4 + 32 + 16);
        assert_eq!(&base[..19], b"basic/v0 scope key\0");
        for other in [
            seal_label(DatabaseId([2; 32]), &s, 1, &a),
            seal_label(DatabaseId([1; 32]), &t, 1, &a),
            seal_label(DatabaseId([1; 32]), &s, 2, &a),
            seal_label(DatabaseId([1; 32]), &s, 1, &b),
        ] {
            assert_ne!(other, base);
        }
    }

    /// One signed op of each kind but the genesis, made once.
    fn signed() -> &'static [ControlOp] {
        static OPS: std::sync::OnceLock<Vec<ControlOp>> = std::sync::OnceLock::new();
        OPS.get_or_init(|| {
            let (device, _) = genesis();
            every_kind().into_iter().map(|b| ControlOp::create(&device, b).unwrap()).collect()
        })
    }

    proptest! {
        /// Signed ops of every kind, mangled (the envelope, or the body
        /// re-wrapped so that the mangled body reaches the body parser):
        /// decoding never panics, and only the op itself decodes.
        #[test]
        fn decoding_mangled_ops_never_panics(
            which in 0usize..8,
            body in any::<bool>(),
            edits in crate::mangle::edits(),
        ) {
            let op = &signed()[which];
            let bytes = if body {
                let mut body = codec::encode_value(&op.body().to_cbor());
                crate::mangle::apply(&mut body, &edits);
                Envelope { body, signature: op.signature }.encode()
            } else {
                let mut bytes = op.as_bytes().to_vec();
                crate::mangle::apply(&mut bytes, &edits);
                bytes
            };
            if let Ok(decoded) = ControlOp::decode(&bytes) {
                prop_assert_eq!(decoded.as_bytes(), op.as_bytes());
            }
        }
    }
}
