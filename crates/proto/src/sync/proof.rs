//! Membership proofs bound to one session, and signed head statements
//! (`protocol-spec/sync.md` §3 and §5).

use ciborium::Value as Cbor;

use super::message::entries_bytes;
use super::summary::{DIGEST_LEN, Entry};
use crate::codec;
use crate::keys::{DatabaseId, PublicKey, SIGNATURE_LEN, SecretKey, SigningContext};

/// Which end of the session signs: the proofs differ, so one end's proof is
/// never accepted as the other's.
// Built on the spot for one call: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that sent `hello`. It proves first, before it knows who
    /// answers.
    Requester,
    /// The end that answered it, with its principal key: it proves only
    /// once the requester's proof verified and the requester is a member.
    Responder(PublicKey),
}

/// The public facts of one session that both proofs cover. The responder's
/// key is not among them: it is revealed, with the responder's proof, only
/// to a requester that proved it is a member (`protocol-spec/sync.md` §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// The database.
    pub database: DatabaseId,
    /// The requester's principal key.
    pub requester: PublicKey,
    /// The requester's nonce.
    pub requester_nonce: [u8; 32],
    /// The requester's transport identity (its libp2p peer id bytes).
    pub requester_transport: Vec<u8>,
    /// The responder's nonce.
    pub responder_nonce: [u8; 32],
    /// The responder's transport identity.
    pub responder_transport: Vec<u8>,
}

impl Transcript {
    /// The signed message for `side`: the deterministic CBOR array
    /// `[0, database, requester, requester nonce, requester transport,
    /// responder nonce, responder transport]` for the requester, and
    /// `[1, database, requester, requester nonce, requester transport,
    /// responder, responder nonce, responder transport]` for the responder.
    pub fn message(&self, side: Side) -> Vec<u8> {
        let bytes = |b: &[u8]| Cbor::Bytes(b.to_vec());
        let mut items = vec![
            Cbor::Integer(match side {
                Side::Requester => 0.into(),
                Side::Responder(_) => 1.into(),
            }),
            bytes(&self.database.0),
            bytes(self.requester.as_bytes()),
            bytes(&self.requester_nonce),
            bytes(&self.requester_transport),
        ];
        if let Side::Responder(responder) = side {
            items.push(bytes(responder.as_bytes()));
        }
        items.push(bytes(&self.responder_nonce));
        items.push(bytes(&self.responder_transport));
        codec::encode_value(&Cbor::Array(items))
    }

    /// `key`'s proof as `side` (for [`Side::Responder`], `key` is the
    /// responder's principal).
    pub fn prove(&self, side: Side, key: &SecretKey) -> [u8; SIGNATURE_LEN] {
        key.sign(SigningContext::SyncProof, &self.message(side))
    }

    /// Whether `proof` is `side`'s valid proof.
    pub fn verify(&self, side: Side, proof: &[u8; SIGNATURE_LEN]) -> bool {
        let key = match side {
            Side::Requester => self.requester,
            Side::Responder(responder) => responder,
        };
        key.verify(SigningContext::SyncProof, &self.message(side), proof).is_ok()
    }
}

/// The message a reply's signature covers: `[database, requester key,
/// digest, entries]`. Kept by the requester, it proves what the responder
/// claimed to hold.
pub fn heads_message(
    database: DatabaseId,
    requester: &PublicKey,
    digest: &[u8; DIGEST_LEN],
    entries: &[Entry],
) -> Vec<u8> {
    let mut out = codec::encode_value(&Cbor::Array(vec![
        Cbor::Bytes(database.0.to_vec()),
        Cbor::Bytes(requester.as_bytes().to_vec()),
        Cbor::Bytes(digest.to_vec()),
    ]));
    // An array of three items followed by the entries array: the signed
    // bytes are a CBOR sequence, with the entries exactly as sent.
    out.extend_from_slice(&entries_bytes(entries));
    out
}
