//! Symmetric encryption: XChaCha20-Poly1305 under 32-byte keys.
//!
//! Implements `protocol-spec/crypto.md` §4. Nonces are 192 random bits from
//! the caller's RNG, never counters, so writers need no shared state.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// A symmetric key: one epoch of one scope.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ScopeKey([u8; 32]);

impl ScopeKey {
    /// The key with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new random key.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = [0; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key bytes. Keep them secret.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts `plaintext`, authenticating `associated` with it.
    pub fn encrypt(&self, nonce: &[u8; NONCE_LEN], associated: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(&self.0.into());
        let nonce = XNonce::from(*nonce);
        // Invariant: XChaCha20-Poly1305 only fails on inputs over 2^38 bytes,
        // and every caller bounds its plaintext far below that.
        #[allow(clippy::expect_used)]
        cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: associated })
            .expect("plaintext within XChaCha20-Poly1305 limits")
    }

    /// Decrypts and authenticates `ciphertext`; `None` if it, the nonce or
    /// the associated data was altered, or the key is wrong.
    pub fn decrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        associated: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        let cipher = XChaCha20Poly1305::new(&self.0.into());
        cipher.decrypt(&XNonce::from(*nonce), Payload { msg: ciphertext, aad: associated }).ok()
    }
}

impl std::fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScopeKey(…)")
    }
}

/// 24 random bytes from `rng`.
pub fn random_nonce(rng: &mut impl CryptoRng) -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = ScopeKey::from_bytes([7; 32]);
        let nonce = [1; NONCE_LEN];
        let ct = key.encrypt(&nonce, b"ad", b"secret");
        assert_eq!(ct.len(), 6 + TAG_LEN);
        assert_eq!(key.decrypt(&nonce, b"ad", &ct).as_deref(), Some(&b"secret"[..]));
        assert_eq!(key.decrypt(&nonce, b"ae", &ct), None);
        assert_eq!(key.decrypt(&[2; NONCE_LEN], b"ad", &ct), None);
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(key.decrypt(&nonce, b"ad", &bad), None);
        assert_eq!(ScopeKey::from_bytes([8; 32]).decrypt(&nonce, b"ad", &ct), None);
    }
}
