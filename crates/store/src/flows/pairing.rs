//! Adding a device by invitation.
//!
//! An existing device makes an [`Invite`]: one line of text with the
//! database, the inviting device, where to reach it, a one-time secret and
//! an expiry. The new device makes its keys and answers with a
//! [`JoinRequest`] that proves it holds the invite; the inviting device
//! checks it (unexpired, not used before), adds the new device with a
//! signed operation that seals it every scope key, and forgets the invite.
//! The new device then takes the control operations (from the inviting
//! device, by sync) and is a member.

use std::path::Path;

use basic_proto::codec::{self, Fields};
use basic_proto::control::{AuthState, ControlLog, ControlOp, Inserted};
use basic_proto::sync::entitled_view;
use basic_proto::{DatabaseId, KeyCache, Party, PublicKey, SealingKey, SecretKey};
use ciborium::Value as Cbor;
use data_encoding::BASE32_NOPAD;
use rand_core::Rng;

use crate::control_error::ControlError;
use crate::database::{
    self, CACHE_BYTES, Database, DbError, lock_dir, read_identity, write_identity,
};
use crate::environment::Environment;
use crate::replica::{Replica, Txn};
use crate::storage::device::{self, DeviceStore};
use crate::storage::kv::{Batch, Store, StoreError, scan_prefix};
use crate::storage::layout;

/// What every invite starts with.
pub(crate) const INVITE_PREFIX: &str = "basic-invite-";
/// Most addresses an invite carries, and the longest one.
pub const MAX_ADDRESSES: (usize, usize) = (16, 256);

/// Why an invite or a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// Not the text of an invite.
    #[error("not an invite: {0}")]
    Malformed(String),
    /// The invite's time is over.
    #[error("the invite expired")]
    Expired,
    /// No unused invite of this device matches the request.
    #[error("no unused invite matches this request (already used, expired or never made here)")]
    NoSuchInvite,
    /// The request is for another database.
    #[error("the request is for another database")]
    OtherDatabase,
    /// The inviting device's answer is not one.
    #[error("not a join answer: {0}")]
    BadAnswer(String),
}

/// An invitation for one new device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The database to join.
    pub database: DatabaseId,
    /// The inviting device.
    pub inviter: PublicKey,
    /// Where to reach the inviting device (node addresses).
    pub addresses: Vec<String>,
    /// The one-time secret that proves the invitation.
    pub token: [u8; 32],
    /// Wall time (ms) after which the invite is refused.
    pub expires_at_ms: u64,
}

impl Invite {
    /// The invite as one line of text.
    pub fn to_text(&self) -> String {
        let value = Cbor::Array(vec![
            Cbor::Bytes(self.database.0.to_vec()),
            Cbor::Bytes(self.inviter.as_bytes().to_vec()),
            Cbor::Array(self.addresses.iter().map(|a| Cbor::Text(a.clone())).collect()),
            Cbor::Bytes(self.token.to_vec()),
            Cbor::Integer(self.expires_at_ms.into()),
        ]);
        format!(
            "{INVITE_PREFIX}{}",
            BASE32_NOPAD.encode(&codec::encode_value(&value)).to_ascii_lowercase()
        )
    }

    /// Reads an invite's text.
    pub fn parse(text: &str) -> Result<Self, PairingError> {
        let bad = |reason: &str| PairingError::Malformed(reason.to_owned());
        let body = text
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .ok_or_else(|| bad("it must start with basic-invite-"))?;
        let bytes = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad("the text after the prefix is not base32 (cut or mistyped?)"))?;
        let e = |e: codec::DecodeError| PairingError::Malformed(e.to_string());
        let mut fields =
            Fields::new(codec::parse(&bytes, "invite", 8 << 10).map_err(e)?, "invite", 5)
                .map_err(e)?;
        let database = DatabaseId(fields.fixed("database").map_err(e)?);
        let inviter = PublicKey::from_bytes(fields.fixed("inviter").map_err(e)?)
            .map_err(|k| bad(&k.to_string()))?;
        let addresses =
            codec::as_array(fields.next("addresses").map_err(e)?, "addresses", 0, MAX_ADDRESSES.0)
                .map_err(e)?
                .into_iter()
                .map(|a| codec::as_text(a, "address", 1, MAX_ADDRESSES.1))
                .collect::<Result<_, _>>()
                .map_err(e)?;
        let token = fields.fixed("token").map_err(e)?;
        let expires_at_ms = fields.uint("expires").map_err(e)?;
        Ok(Self { database, inviter, addresses, token, expires_at_ms })
    }
}

/// A new device's answer to an invite: its keys and the proof that it
/// holds the invite's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The database it joins.
    pub database: DatabaseId,
    /// The new device.
    pub device: Party,
    /// BLAKE3 keyed by the invite's token over the device's keys.
    pub proof: [u8; 32],
}

/// Encoded size of a [`JoinRequest`]: a CBOR array of four 32-byte strings.
pub const JOIN_REQUEST_BYTES: usize = 1 + 4 * (2 + 32);

impl JoinRequest {
    /// The request as sent to the inviting device: the CBOR array
    /// `[database, device key, device sealing key, proof]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bytes = |b: &[u8]| Cbor::Bytes(b.to_vec());
        codec::encode_value(&Cbor::Array(vec![
            bytes(&self.database.0),
            bytes(self.device.key.as_bytes()),
            bytes(&self.device.sealing.0),
            bytes(&self.proof),
        ]))
    }

    /// Reads a request received from a peer (untrusted bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PairingError> {
        let e = |e: codec::DecodeError| PairingError::Malformed(e.to_string());
        let value = codec::parse(bytes, "join request", JOIN_REQUEST_BYTES).map_err(e)?;
        let mut fields = Fields::new(value, "join request", 4).map_err(e)?;
        let database = DatabaseId(fields.fixed("database").map_err(e)?);
        let key = PublicKey::from_bytes(fields.fixed("device").map_err(e)?)
            .map_err(|k| PairingError::Malformed(k.to_string()))?;
        let sealing = SealingKey(fields.fixed("sealing").map_err(e)?);
        let proof = fields.fixed("proof").map_err(e)?;
        Ok(Self { database, device: Party { key, sealing }, proof })
    }
}

/// Longest a join refusal's message may be, in bytes.
pub const MAX_REFUSAL_LEN: usize = 512;

/// The inviting device's answer to a [`JoinRequest`]:
///
/// ```text
/// answer = [0, ops: [* bstr]]      ; joined: every control operation
///        / [1, message: tstr]      ; refused, and why
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAnswer {
    /// Joined: the database's control operations, encoded.
    Joined(Vec<Vec<u8>>),
    /// Refused, with the reason for people (cut to [`MAX_REFUSAL_LEN`]).
    Refused(String),
}

impl JoinAnswer {
    /// The answer frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(match self {
            JoinAnswer::Joined(ops) => vec![
                Cbor::Integer(0.into()),
                Cbor::Array(ops.iter().map(|op| Cbor::Bytes(op.clone())).collect()),
            ],
            JoinAnswer::Refused(message) => {
                let mut end = message.len().min(MAX_REFUSAL_LEN);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                vec![Cbor::Integer(1.into()), Cbor::Text(message[..end].to_owned())]
            }
        }))
    }

    /// Reads an answer frame of at most `max` bytes received from a peer
    /// (untrusted bytes).
    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Self, PairingError> {
        let e = |e: codec::DecodeError| PairingError::BadAnswer(e.to_string());
        let mut fields =
            Fields::new(codec::parse(bytes, "join answer", max).map_err(e)?, "join answer", 2)
                .map_err(e)?;
        match fields.uint("kind").map_err(e)? {
            0 => {
                let ops = codec::as_array(fields.next("ops").map_err(e)?, "ops", 0, usize::MAX)
                    .map_err(e)?
                    .into_iter()
                    .map(|op| codec::as_bytes(op, "op", 1, max).map_err(e))
                    .collect::<Result<_, _>>()?;
                Ok(JoinAnswer::Joined(ops))
            }
            1 => Ok(JoinAnswer::Refused(fields.text("message", 0, MAX_REFUSAL_LEN).map_err(e)?)),
            kind => Err(PairingError::BadAnswer(format!("unknown join answer kind {kind}"))),
        }
    }
}

fn proof(token: &[u8; 32], device: &Party) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(token);
    hasher.update(b"basic/v0 join");
    hasher.update(device.key.as_bytes());
    hasher.update(&device.sealing.0);
    *hasher.finalize().as_bytes()
}

impl<S: Store> Database<S> {
    /// Makes an invite for one new device, valid for `valid_for_ms`, that
    /// tells it to reach this device at `addresses`.
    pub fn invite(&self, addresses: Vec<String>, valid_for_ms: u64) -> Result<Invite, DbError> {
        let mut token = [0; 32];
        self.environment().rng().fill_bytes(&mut token);
        let invite = Invite {
            database: self.id(),
            inviter: self.device(),
            addresses,
            token,
            expires_at_ms: self.environment().now_ms().saturating_add(valid_for_ms),
        };
        let mut batch = Batch::default();
        batch.put(layout::invite(&token), invite.expires_at_ms.to_be_bytes().to_vec());
        self.replica().store().apply(batch)?;
        self.replica().store().flush()?;
        Ok(invite)
    }

    /// Checks a join request against this device's unused invites and, if
    /// one matches and has not expired, adds the device (sealing it every
    /// scope key) and forgets the invite: an invite is used once.
    pub fn accept_join(
        &self,
        request: &JoinRequest,
    ) -> Result<basic_proto::control::OpId, DbError> {
        if request.database != self.id() {
            return Err(DbError::Pairing(PairingError::OtherDatabase));
        }
        let store = self.replica().store();
        let mut found = None;
        for entry in scan_prefix(store, &[layout::INVITE]) {
            let (key, expires) = entry?;
            let token: [u8; 32] = key
                .get(1..33)
                .and_then(|t| t.try_into().ok())
                .ok_or(StoreError::Corrupt { what: "invite", reason: "short key".into() })?;
            if proof(&token, &request.device) == request.proof {
                let expires: [u8; 8] = expires.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt { what: "invite", reason: "bad expiry".into() }
                })?;
                found = Some((key, u64::from_be_bytes(expires)));
                break;
            }
        }
        let (key, expires_at_ms) = found.ok_or(DbError::Pairing(PairingError::NoSuchInvite))?;
        let mut batch = Batch::default();
        batch.delete(key);
        store.apply(batch)?;
        store.flush()?;
        if self.environment().now_ms() > expires_at_ms {
            return Err(DbError::Pairing(PairingError::Expired));
        }
        self.add_device(request.device)
    }
}

impl Database<DeviceStore> {
    /// Starts joining the database of `invite` from the empty directory
    /// `dir`: makes this device's keys and the request to send the inviting
    /// device.
    pub fn prepare_join(dir: &Path, invite: &Invite) -> Result<JoinRequest, DbError> {
        let environment = Environment::system();
        if environment.now_ms() > invite.expires_at_ms {
            return Err(DbError::Pairing(PairingError::Expired));
        }
        let _lock = lock_dir(dir)?;
        let replica = Replica::new(device::open(&dir.join("replica"), CACHE_BYTES)?);
        if read_identity(&replica)?.is_some() {
            return Err(ControlError::HoldsDatabase(dir.to_owned()).into());
        }
        let device = SecretKey::generate(&mut environment.rng());
        let party = Party::of(&device);
        let mut txn = replica.begin();
        database::write_joining(&mut txn, invite.database, &device);
        txn.commit()?;
        Ok(JoinRequest {
            database: invite.database,
            device: party,
            proof: proof(&invite.token, &party),
        })
    }

    /// Finishes joining with the database's control operations (which must
    /// include the inviting device's `add-device` of this one), then opens
    /// the database.
    pub fn finish_join(dir: &Path, ops: &[Vec<u8>]) -> Result<Self, DbError> {
        let lock = lock_dir(dir)?;
        let replica = Replica::new(device::open(&dir.join("replica"), CACHE_BYTES)?);
        let (database, device) = database::read_joining(&replica)?
            .ok_or_else(|| DbError::from(ControlError::NotJoining(dir.to_owned())))?;
        let mut txn = replica.begin();
        let now = Environment::system().now_ms();
        admit_as_member(&mut txn, database, &device, ops, now, |state, key| state.is_device(key))?;
        database::clear_joining(&mut txn);
        txn.commit()?;
        drop((replica, lock));
        Database::open(dir)
    }
}

/// Stores `ops` (those the log admits) and `member`'s identity in `txn`,
/// if the operations make `member` what `is_member` asks for.
pub(crate) fn admit_as_member<S: Store>(
    txn: &mut Txn<'_, S>,
    database: DatabaseId,
    member: &SecretKey,
    ops: &[Vec<u8>],
    now: u64,
    is_member: impl Fn(&AuthState, &PublicKey) -> bool,
) -> Result<(), DbError> {
    let authors = KeyCache::default();
    let mut log = ControlLog::new(database);
    for bytes in ops {
        let op = ControlOp::decode_with(bytes, &authors).map_err(ControlError::from)?;
        if let Ok(Inserted::Admitted(ids)) = log.insert(op, now) {
            for id in ids {
                if let Some(op) = log.get(&id) {
                    txn.insert_op(op);
                }
            }
        }
    }
    if !is_member(&log.state(), &member.public()) {
        return Err(ControlError::NotAdded.into());
    }
    write_identity(txn, database, member, None)?;
    Ok(())
}

impl Database<DeviceStore> {
    /// Makes the empty directory `dir` a replica of the database `database`
    /// held by `member` (see [`Database::replicate_with_store`]), laid out
    /// as [`Database::open`] expects, and opens it with [`Database::open`]
    /// (which holds the directory's lock from then on).
    pub fn replicate(
        dir: &Path,
        database: DatabaseId,
        member: &SecretKey,
        ops: &[Vec<u8>],
    ) -> Result<Self, DbError> {
        let lock = lock_dir(dir)?;
        let store = device::open(&dir.join("replica"), CACHE_BYTES)?;
        let db = Self::replicate_with_store(
            store,
            &dir.join("view.sqlite"),
            database,
            member,
            ops,
            Environment::system(),
        )?;
        drop((db, lock));
        Database::open(dir)
    }
}

impl<S: Store> Database<S> {
    /// Opens `store` (empty) as a replica of the database `database`, held by
    /// `member`: a device or a pinning peer that the control operations
    /// `ops` add, or an app they grant scopes to. A pinning peer's replica
    /// stores ciphertext only: no seal is addressed to it, so it holds no
    /// key; an app's holds the keys of its grants. Time and randomness come
    /// from `environment`, from then on too.
    pub fn replicate_with_store(
        store: S,
        view_path: &Path,
        database: DatabaseId,
        member: &SecretKey,
        ops: &[Vec<u8>],
        environment: Environment,
    ) -> Result<Self, DbError> {
        let replica = Replica::new(store);
        if read_identity(&replica)?.is_some() {
            return Err(ControlError::StoreHoldsDatabase.into());
        }
        let mut txn = replica.begin();
        admit_as_member(&mut txn, database, member, ops, environment.now_ms(), |state, key| {
            entitled_view(state, key).is_some()
        })?;
        txn.commit()?;
        Database::with_environment(replica.into_store(), view_path, environment)
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
            matches!(JoinAnswer::from_bytes(&long, 1 << 20), Ok(JoinAnswer::Refused(m)) if m.len() <= MAX_REFUSAL_LEN)
        );
        for garbage in [&b""[..], b"\x82\x02\x00", b"\x82\x00\x01", b"\xff"] {
            assert!(JoinAnswer::from_bytes(garbage, 1 << 20).is_err());
        }
        let big = JoinAnswer::Joined(vec![vec![0; 100]]).to_bytes();
        assert!(JoinAnswer::from_bytes(&big, 50).is_err(), "over the cap");
    }
}
