//! Sealing a scope key to one recipient.
//!
//! Implements `protocol-spec/crypto.md` §6. The construction is HPKE's
//! authenticated mode built from our primitives: an ephemeral x25519 key
//! agrees with the recipient's x25519 key, the sender's static x25519 key
//! agrees with it too, and BLAKE3 in derive-key mode turns both shared
//! secrets, both ephemeral and static public keys and both principals'
//! ed25519 keys into a one-time XChaCha20-Poly1305 key. A seal therefore
//! opens only for its recipient, only when attributed to its real sender,
//! and only under the label (database, scope, epoch) it was made for.

use ciborium::Value as Cbor;
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

use crate::aead::{self, NONCE_LEN, ScopeKey, TAG_LEN};
use crate::codec::{Cbor as CborCodec, DecodeError, Fields};
use crate::keys::{PublicKey, SealingKey, SecretKey};

/// BLAKE3 context deriving the one-time key of a seal.
pub const SEAL_KEY_CONTEXT: &str = "basic/v0 seal key";

/// Length of a sealed scope key's ciphertext: 32 key bytes and the tag.
pub const SEALED_CIPHERTEXT_LEN: usize = 32 + TAG_LEN;

/// A scope key sealed to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// The sender's ephemeral x25519 public key.
    pub ephemeral: [u8; 32],
    /// The AEAD nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The encrypted scope key and its tag.
    pub ciphertext: [u8; SEALED_CIPHERTEXT_LEN],
}

/// One side of a seal: a principal's signing key and its sealing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party {
    /// The principal's ed25519 key.
    pub key: PublicKey,
    /// The principal's x25519 key.
    pub sealing: SealingKey,
}

impl Party {
    /// The public side of `secret`.
    pub fn of(secret: &SecretKey) -> Self {
        Self { key: secret.public(), sealing: secret.sealing_key() }
    }
}

/// Why a seal did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A public key is a low-order point, so the agreement is not secret.
    #[error("sealed key uses a low-order x25519 point")]
    LowOrderPoint,
    /// Wrong recipient, wrong sender, wrong label, or tampered.
    #[error("sealed key does not open: wrong recipient, sender or label, or tampered")]
    DoesNotOpen,
}

/// Inputs of the one-time key, in the order they are hashed.
struct Transcript<'a> {
    ephemeral_shared: [u8; 32],
    static_shared: [u8; 32],
    ephemeral: &'a [u8; 32],
    sender: &'a Party,
    recipient: &'a Party,
}

impl Transcript<'_> {
    fn key(&self) -> ScopeKey {
        let mut hasher = blake3::Hasher::new_derive_key(SEAL_KEY_CONTEXT);
        hasher.update(&self.ephemeral_shared);
        hasher.update(&self.static_shared);
        hasher.update(self.ephemeral);
        hasher.update(&self.sender.sealing.0);
        hasher.update(&self.recipient.sealing.0);
        hasher.update(self.sender.key.as_bytes());
        hasher.update(self.recipient.key.as_bytes());
        ScopeKey::from_bytes(*hasher.finalize().as_bytes())
    }
}

fn agree(secret: &StaticSecret, public: &[u8; 32]) -> Result<[u8; 32], SealError> {
    let shared = secret.diffie_hellman(&XPublic::from(*public));
    if !shared.was_contributory() {
        return Err(SealError::LowOrderPoint);
    }
    Ok(shared.to_bytes())
}

impl SealedKey {
    /// Seals `payload` from `sender` to `recipient` under `label`.
    pub fn seal(
        payload: &ScopeKey,
        sender: &SecretKey,
        recipient: &Party,
        label: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<Self, SealError> {
        let ephemeral_secret = StaticSecret::from({
            let mut bytes = [0; 32];
            rng.fill_bytes(&mut bytes);
            bytes
        });
        let ephemeral = XPublic::from(&ephemeral_secret).to_bytes();
        let transcript = Transcript {
            ephemeral_shared: agree(&ephemeral_secret, &recipient.sealing.0)?,
            static_shared: agree(&sender.sealing_secret(), &recipient.sealing.0)?,
            ephemeral: &ephemeral,
            sender: &Party::of(sender),
            recipient,
        };
        let nonce = aead::random_nonce(rng);
        let sealed = transcript.key().encrypt(&nonce, label, payload.as_bytes());
        let mut ciphertext = [0; SEALED_CIPHERTEXT_LEN];
        ciphertext.copy_from_slice(&sealed);
        Ok(Self { ephemeral, nonce, ciphertext })
    }

    /// Opens a seal addressed to `recipient`, attributed to `sender`.
    pub fn open(
        &self,
        recipient: &SecretKey,
        sender: &Party,
        label: &[u8],
    ) -> Result<ScopeKey, SealError> {
        let secret = recipient.sealing_secret();
        let transcript = Transcript {
            ephemeral_shared: agree(&secret, &self.ephemeral)?,
            static_shared: agree(&secret, &sender.sealing.0)?,
            ephemeral: &self.ephemeral,
            sender,
            recipient: &Party::of(recipient),
        };
        let payload = transcript
            .key()
            .decrypt(&self.nonce, label, &self.ciphertext)
            .ok_or(SealError::DoesNotOpen)?;
        let mut bytes = [0; 32];
        bytes.copy_from_slice(&payload);
        Ok(ScopeKey::from_bytes(bytes))
    }
}

impl CborCodec for SealedKey {
    const WHAT: &'static str = "sealed key";
    const MAX_BYTES: usize = 128;

    fn to_cbor(&self) -> Cbor {
        Cbor::Array(vec![
            Cbor::Bytes(self.ephemeral.to_vec()),
            Cbor::Bytes(self.nonce.to_vec()),
            Cbor::Bytes(self.ciphertext.to_vec()),
        ])
    }

    fn from_cbor(value: Cbor) -> Result<Self, DecodeError> {
        let mut fields = Fields::new(value, "sealed", 3)?;
        Ok(Self {
            ephemeral: fields.fixed("sealed.ephemeral")?,
            nonce: fields.fixed("sealed.nonce")?,
            ciphertext: fields.fixed("sealed.ciphertext")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn seal_binds_recipient_sender_and_label() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (device, app, other) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let key = ScopeKey::from_bytes([42; 32]);
        let sealed = SealedKey::seal(&key, &device, &Party::of(&app), b"label", &mut rng).unwrap();
        assert_eq!(SealedKey::decode(&sealed.encode()).unwrap(), sealed);
        assert_eq!(sealed.open(&app, &Party::of(&device), b"label").unwrap(), key);
        // Another recipient, another claimed sender, another label: refused.
        assert_eq!(sealed.open(&other, &Party::of(&device), b"label"), Err(SealError::DoesNotOpen));
        assert_eq!(sealed.open(&app, &Party::of(&other), b"label"), Err(SealError::DoesNotOpen));
        assert_eq!(sealed.open(&app, &Party::of(&device), b"other"), Err(SealError::DoesNotOpen));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(tampered.open(&app, &Party::of(&device), b"label"), Err(SealError::DoesNotOpen));
    }

    #[test]
    fn low_order_points_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let device = SecretKey::from_seed([1; 32]);
        let bad = Party { key: device.public(), sealing: SealingKey([0; 32]) };
        let key = ScopeKey::from_bytes([42; 32]);
        assert_eq!(
            SealedKey::seal(&key, &device, &bad, b"l", &mut rng),
            Err(SealError::LowOrderPoint)
        );
        let mut sealed =
            SealedKey::seal(&key, &device, &Party::of(&device), b"l", &mut rng).unwrap();
        sealed.ephemeral = [0; 32];
        assert_eq!(sealed.open(&device, &Party::of(&device), b"l"), Err(SealError::LowOrderPoint));
    }
}
