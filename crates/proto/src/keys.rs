//! Identities, keys, text ids and domain-separated signatures.
//!
//! Implements `protocol-spec/crypto.md` §1–§3. Every principal (the user's
//! root identity, a device, an app, a pinning peer) holds one 32-byte seed.
//! The seed is the principal's ed25519 signing key; its x25519 sealing key is
//! derived from the seed with a separate BLAKE3 context, so the two keys are
//! independent and one seed is all a principal needs to keep.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use sha2::{Digest, Sha512};
use zeroize::Zeroize;

/// BLAKE3 context deriving a principal's x25519 secret from its seed.
pub const SEALING_KEY_CONTEXT: &str = "basic/v0 sealing key from seed";
/// BLAKE3 context of the 4-byte checksum in text ids.
pub const ID_CHECKSUM_CONTEXT: &str = "basic/v0 text id checksum";

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// What a signature is for. The label is prefixed to every signed message,
/// so a signature made for one purpose never verifies for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningContext {
    /// A data commit (`protocol-spec/wire-format.md` §3).
    Commit,
    /// A control-log operation (grants, devices, revocations).
    Control,
    /// A sync session's membership proof (`protocol-spec/sync.md` §3).
    SyncProof,
    /// A sync peer's statement of the heads it holds (`protocol-spec/sync.md` §5).
    SyncHeads,
    /// An app's ask for access (`protocol-spec/apps.md` §2).
    AccessAsk,
    /// An app's poll for the answer to its ask (`protocol-spec/apps.md` §3).
    AccessPoll,
    /// A device relaying an app's ask, or its user's denial, to the other
    /// devices (`protocol-spec/apps.md` §7).
    AccessRelay,
}

impl SigningContext {
    /// The label, without the terminating zero byte.
    pub fn label(self) -> &'static str {
        match self {
            SigningContext::Commit => "basic/v0/commit",
            SigningContext::Control => "basic/v0/control",
            SigningContext::SyncProof => "basic/v0/sync-proof",
            SigningContext::SyncHeads => "basic/v0/sync-heads",
            SigningContext::AccessAsk => "basic/v0/access-ask",
            SigningContext::AccessPoll => "basic/v0/access-poll",
            SigningContext::AccessRelay => "basic/v0/access-relay",
        }
    }

    /// The exact bytes signed for `message`: label, a zero byte, the message.
    pub fn signed_bytes(self, message: &[u8]) -> Vec<u8> {
        let [label, zero] = self.prefix();
        let mut out = Vec::with_capacity(label.len() + 1 + message.len());
        out.extend_from_slice(label);
        out.extend_from_slice(zero);
        out.extend_from_slice(message);
        out
    }

    /// What precedes the message in the signed bytes: the label, then a
    /// zero byte.
    fn prefix(self) -> [&'static [u8]; 2] {
        [self.label().as_bytes(), &[0]]
    }
}

/// Why a public key, signature or text id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The 32 bytes are not the encoding of a curve point.
    #[error("public key is not a valid ed25519 point")]
    InvalidPoint,
    /// The key is a small-order point: anyone could forge its signatures.
    #[error("public key is a weak (small-order) ed25519 point")]
    WeakKey,
    /// The point is valid but not in canonical encoding (y not reduced mod p).
    #[error("public key is not in canonical encoding")]
    NonCanonicalKey,
    /// The point has a small-order component: not a key any honest signer has.
    #[error("public key has a torsion component")]
    MixedOrderKey,
    /// The signature does not verify (strictly) for this key and message.
    #[error("signature does not verify")]
    BadSignature,
    /// A text id without a known `kind_` prefix.
    #[error("id {0:?} does not start with a known prefix")]
    UnknownPrefix(String),
    /// A text id of the wrong kind for where it was used.
    #[error("expected a {expected} id, got a {found} id")]
    WrongKind {
        /// The kind required here.
        expected: &'static str,
        /// The kind of the id given.
        found: &'static str,
    },
    /// A text id whose body is not base32 of the right length.
    #[error("id body is not 58 base32 characters")]
    BadEncoding,
    /// A text id whose checksum does not match: a typo or a truncated copy.
    #[error("id checksum does not match (mistyped or truncated?)")]
    BadChecksum,
}

/// A validated ed25519 public key: a canonical, non-weak, torsion-free
/// curve point, kept decompressed (and negated, as verification uses it)
/// so verifying costs no decompression.
#[derive(Clone, Copy)]
pub struct PublicKey {
    bytes: [u8; 32],
    minus_point: EdwardsPoint,
}

impl PublicKey {
    /// Validates 32 bytes as a public key: a curve point in canonical
    /// encoding, not of small order, with no torsion component. This costs
    /// about as much as verifying a signature; see [`KeyCache`].
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        let point = key.to_edwards();
        if point.compress().to_bytes() != bytes {
            return Err(KeyError::NonCanonicalKey);
        }
        if !point.is_torsion_free() {
            return Err(KeyError::MixedOrderKey);
        }
        Ok(Self { bytes, minus_point: -point })
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Checks `signature` over `message` in `context`, strictly: small-order
    /// keys and nonces and non-canonical scalars are rejected.
    pub fn verify(
        &self,
        context: SigningContext,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), KeyError> {
        self.verify_parts(context, &[message], signature)
    }

    /// [`PublicKey::verify`] of a message given in parts, one after the
    /// other (hashed where they lie, not copied).
    ///
    /// This is `crypto.md` §3.3 without decoding R: the key is torsion-free
    /// (§3.2), so the point P = [S]B − [k]A lies in the prime-order
    /// subgroup, where the only point of small order is the identity.
    /// When P's canonical encoding equals R, R decodes to P; so "R decodes
    /// and is not of small order, and P encodes to R" is "P is not the
    /// identity, and P encodes to R". The signatures accepted are exactly
    /// ed25519-dalek's `verify_strict`'s (tested against it), for the cost
    /// of an identity check instead of a point decompression.
    pub(crate) fn verify_parts(
        &self,
        context: SigningContext,
        parts: &[&[u8]],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), KeyError> {
        let signed = self.signed_point(context, parts, signature)?;
        match signed.encodes_to_r(&signed.point.compress()) {
            true => Ok(()),
            false => Err(KeyError::BadSignature),
        }
    }

    /// [`PublicKey::verify`] of several signatures, each accepted or
    /// refused as alone, with one field inversion for all of them instead
    /// of one each: the points P are encoded together for their comparison
    /// with R (`crypto.md` §3.3). Each entry is a key, the message in
    /// parts and the signature; each result says whether it verifies.
    pub fn verify_each<'a>(
        context: SigningContext,
        signed: impl IntoIterator<Item = (&'a PublicKey, &'a [&'a [u8]], &'a [u8; SIGNATURE_LEN])>,
    ) -> Vec<bool> {
        let mut points = Vec::new();
        let computed: Vec<bool> = signed
            .into_iter()
            .map(|(key, parts, signature)| {
                let signed = key.signed_point(context, parts, signature);
                signed.map(|point| points.push(point)).is_ok()
            })
            .collect();
        let mut holds = SignedPoint::check_all(&points).into_iter();
        computed.into_iter().map(|computed| computed && holds.next() == Some(true)).collect()
    }

    /// [`PublicKey::verify_parts`] up to its last step, the comparison of
    /// P with R by P's encoding (which takes a field inversion).
    fn signed_point(
        &self,
        context: SigningContext,
        parts: &[&[u8]],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<SignedPoint, KeyError> {
        let (mut r, mut s) = ([0; 32], [0; 32]);
        r.copy_from_slice(&signature[..32]);
        s.copy_from_slice(&signature[32..]);
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))
            .ok_or(KeyError::BadSignature)?;
        let mut hash = Sha512::new();
        hash.update(r);
        hash.update(self.bytes);
        for part in context.prefix().iter().chain(parts) {
            hash.update(part);
        }
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let point = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_point, &s);
        Ok(SignedPoint { point, r })
    }
}

/// A strict verification short of its last step: the point P = [S]B − [k]A
/// and the R it must encode to.
struct SignedPoint {
    point: EdwardsPoint,
    r: [u8; 32],
}

impl SignedPoint {
    /// Whether the signature holds, given P's encoding.
    fn encodes_to_r(&self, encoded: &CompressedEdwardsY) -> bool {
        !self.point.is_identity() && encoded.to_bytes() == self.r
    }

    /// Whether each signature holds, the points encoded together, with one
    /// field inversion (Montgomery's trick).
    fn check_all(signed: &[SignedPoint]) -> Vec<bool> {
        if signed.is_empty() {
            return Vec::new();
        }
        let points: Vec<EdwardsPoint> = signed.iter().map(|s| s.point).collect();
        let encoded = EdwardsPoint::compress_batch_alloc(&points);
        signed.iter().zip(&encoded).map(|(s, e)| s.encodes_to_r(e)).collect()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

/// A public key's 32 bytes, as merge order and storage use them: cheap to
/// copy and compare, and never used to verify anything.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthorId(pub [u8; 32]);

impl AuthorId {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<PublicKey> for AuthorId {
    fn from(key: PublicKey) -> Self {
        AuthorId(key.bytes)
    }
}

impl fmt::Debug for AuthorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorId({})", data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// Keys already validated, so that a peer's many commits by the same few
/// authors pay for key validation once. Shareable between threads;
/// bounded: when full it starts over.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: std::sync::Mutex<std::collections::HashMap<[u8; 32], PublicKey>>,
}

impl KeyCache {
    /// Most keys kept.
    pub const CAPACITY: usize = 4096;

    /// The validated key with these bytes ([`PublicKey::from_bytes`]).
    pub fn get(&self, bytes: [u8; 32]) -> Result<PublicKey, KeyError> {
        let lock = || self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(key) = lock().get(&bytes) {
            return Ok(*key);
        }
        let key = PublicKey::from_bytes(bytes)?;
        let mut keys = lock();
        if keys.len() >= Self::CAPACITY {
            keys.clear();
        }
        keys.insert(bytes, key);
        Ok(key)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", data_encoding::HEXLOWER.encode(&self.bytes))
    }
}

/// An x25519 public key used to seal keys to a principal.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealingKey(pub [u8; 32]);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealingKey({})", data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// A principal's secret: one seed, from which its signing and sealing keys
/// come. The signing key (and its public key) is derived once, on creation.
#[derive(Clone)]
pub struct SecretKey {
    signing: SigningKey,
}

impl SecretKey {
    /// The secret with this seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { signing: SigningKey::from_bytes(&seed) }
    }

    /// A new secret from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut seed = [0; 32];
        rng.fill_bytes(&mut seed);
        let secret = Self::from_seed(seed);
        seed.zeroize();
        secret
    }

    /// The seed. Keep it secret.
    pub fn seed(&self) -> &[u8; 32] {
        self.signing.as_bytes()
    }

    /// The ed25519 public key.
    pub fn public(&self) -> PublicKey {
        let key = self.signing.verifying_key();
        PublicKey { bytes: key.to_bytes(), minus_point: -key.to_edwards() }
    }

    /// Signs `message` in `context`.
    pub fn sign(&self, context: SigningContext, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(&context.signed_bytes(message)).to_bytes()
    }

    /// The x25519 secret used to open keys sealed to this principal.
    pub fn sealing_secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(blake3::derive_key(SEALING_KEY_CONTEXT, self.seed()))
    }

    /// The x25519 public key others seal to.
    pub fn sealing_key(&self) -> SealingKey {
        SealingKey(x25519_dalek::PublicKey::from(&self.sealing_secret()).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {:?})", self.public())
    }
}

/// The role a key plays, shown as the prefix of its text id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The user's root identity (`usr_`).
    User,
    /// One of the user's devices (`dev_`).
    Device,
    /// An app holding a grant (`app_`).
    App,
    /// A pinning peer (`pin_`).
    Pinner,
}

impl Role {
    const ALL: [Role; 4] = [Role::User, Role::Device, Role::App, Role::Pinner];

    /// The text-id prefix, including the underscore.
    pub fn prefix(self) -> &'static str {
        match self {
            Role::User => "usr_",
            Role::Device => "dev_",
            Role::App => "app_",
            Role::Pinner => "pin_",
        }
    }

    /// The role's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Device => "device",
            Role::App => "app",
            Role::Pinner => "pinning peer",
        }
    }
}

/// A public key together with its role: what users see and paste.
///
/// Text form: the role prefix, then unpadded lowercase RFC 4648 base32 of the
/// 32 key bytes followed by a 4-byte checksum (`protocol-spec/crypto.md` §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    /// What the key is.
    pub role: Role,
    /// The key.
    pub key: PublicKey,
}

impl Principal {
    /// Parses a text id that must be of `role`.
    pub fn parse_as(role: Role, text: &str) -> Result<PublicKey, KeyError> {
        let principal: Principal = text.parse()?;
        if principal.role != role {
            return Err(KeyError::WrongKind {
                expected: role.name(),
                found: principal.role.name(),
            });
        }
        Ok(principal.key)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_id(self.role.prefix(), self.key.as_bytes()))
    }
}

impl FromStr for Principal {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        let role = Role::ALL
            .into_iter()
            .find(|role| text.starts_with(role.prefix()))
            .ok_or_else(|| KeyError::UnknownPrefix(text.chars().take(8).collect()))?;
        let bytes = decode_id(role.prefix(), text)?;
        Ok(Principal { role, key: PublicKey::from_bytes(bytes)? })
    }
}

/// The id of one user database: 32 bytes, text form `db_…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatabaseId(pub [u8; 32]);

impl DatabaseId {
    const PREFIX: &'static str = "db_";
}

impl fmt::Display for DatabaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_id(Self::PREFIX, &self.0))
    }
}

impl fmt::Debug for DatabaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseId({self})")
    }
}

impl FromStr for DatabaseId {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        if !text.starts_with(Self::PREFIX) {
            return Err(KeyError::UnknownPrefix(text.chars().take(8).collect()));
        }
        decode_id(Self::PREFIX, text).map(DatabaseId)
    }
}

fn id_checksum(prefix: &str, bytes: &[u8; 32]) -> [u8; 4] {
    let mut hasher = blake3::Hasher::new_derive_key(ID_CHECKSUM_CONTEXT);
    hasher.update(prefix.as_bytes());
    hasher.update(bytes);
    let hash = hasher.finalize();
    let mut out = [0; 4];
    out.copy_from_slice(&hash.as_bytes()[..4]);
    out
}

fn encode_id(prefix: &str, bytes: &[u8; 32]) -> String {
    let mut body = [0u8; 36];
    body[..32].copy_from_slice(bytes);
    body[32..].copy_from_slice(&id_checksum(prefix, bytes));
    let mut text = String::from(prefix);
    text.push_str(&BASE32_NOPAD.encode(&body).to_ascii_lowercase());
    text
}

fn decode_id(prefix: &str, text: &str) -> Result<[u8; 32], KeyError> {
    let body = &text[prefix.len()..];
    if body.len() != 58 {
        return Err(KeyError::BadEncoding);
    }
    let decoded = BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|_| KeyError::BadEncoding)?;
    let (key, checksum) = decoded.split_at(32);
    let mut bytes = [0; 32];
    bytes.copy_from_slice(key);
    if checksum != id_checksum(prefix, &bytes) {
        return Err(KeyError::BadChecksum);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn signatures_are_bound_to_their_context() {
        let key = secret(1);
        let sig = key.sign(SigningContext::Commit, b"hello");
        assert_eq!(key.public().verify(SigningContext::Commit, b"hello", &sig), Ok(()));
        assert_eq!(
            key.public().verify(SigningContext::Control, b"hello", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn unreduced_signature_scalar_is_rejected() {
        let key = secret(2);
        let mut sig = key.sign(SigningContext::Commit, b"m");
        // S must be below the group order L (about 2^252): set its top bits.
        sig[63] |= 0xf0;
        assert_eq!(
            key.public().verify(SigningContext::Commit, b"m", &sig),
            Err(KeyError::BadSignature)
        );
    }

    /// ed25519-dalek's `verify_strict`, the rule of `crypto.md` §3.3.
    fn strict(key: &PublicKey, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let reference = VerifyingKey::from_bytes(key.as_bytes()).expect("a valid key");
        let signed = SigningContext::Commit.signed_bytes(message);
        reference.verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
    }

    /// `S + L`: the same scalar, unreduced (still below 2^256).
    fn plus_order(s: &[u8]) -> [u8; 32] {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut out = [0; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(s[i]) + u16::from(L[i]) + carry;
            out[i] = sum as u8;
            carry = sum >> 8;
        }
        out
    }

    /// The signature whose point [S]B − [k]A is the identity, with R the
    /// identity's encoding: the equation holds, but R is of small order,
    /// so strict verification refuses it.
    fn identity_signature(secret: Scalar, message: &[u8]) -> (PublicKey, [u8; SIGNATURE_LEN]) {
        let public = EdwardsPoint::mul_base(&secret).compress().to_bytes();
        let key = PublicKey::from_bytes(public).expect("a multiple of B is a valid key");
        let mut r = [0; 32];
        r[0] = 1;
        let signed = SigningContext::Commit.signed_bytes(message);
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r)
                .chain_update(public)
                .chain_update(signed)
                .finalize()
                .into(),
        );
        let mut signature = [0; SIGNATURE_LEN];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice((k * secret).as_bytes());
        (key, signature)
    }

    #[test]
    fn a_signature_whose_point_is_the_identity_is_refused() {
        let (key, signature) = identity_signature(Scalar::from(7u64), b"m");
        assert!(!strict(&key, b"m", &signature));
        assert_eq!(
            key.verify(SigningContext::Commit, b"m", &signature),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn a_scalar_above_the_order_by_the_order_is_refused() {
        let key = secret(3);
        let mut signature = key.sign(SigningContext::Commit, b"m");
        let unreduced = plus_order(&signature[32..]);
        signature[32..].copy_from_slice(&unreduced);
        assert!(!strict(&key.public(), b"m", &signature));
        assert_eq!(
            key.public().verify(SigningContext::Commit, b"m", &signature),
            Err(KeyError::BadSignature)
        );
    }

    /// A signed message as strict verification may meet it: a good
    /// signature, or one with a bit flipped, R replaced by a small-order
    /// point or random bytes, S unreduced, the point at the identity, or
    /// the wrong message.
    fn signature_case() -> impl Strategy<Value = (PublicKey, Vec<u8>, [u8; SIGNATURE_LEN])> {
        let weighted = |p| proptest::bool::weighted(p);
        (
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::option::weighted(0.2, 0..512usize),
            proptest::option::weighted(0.2, 0..8usize),
            proptest::option::weighted(0.2, any::<[u8; 32]>()),
            (weighted(0.2), weighted(0.2), weighted(0.2)),
        )
            .prop_map(
                |(
                    seed,
                    mut message,
                    flip,
                    small_order_r,
                    random_r,
                    (unreduced, identity, other),
                )| {
                    let secret = SecretKey::from_seed(seed);
                    let (key, mut signature) = if identity {
                        // Never zero, for a seed of zeros too (a zero secret's key is refused).
                        let secret = Scalar::from_bytes_mod_order(seed) + Scalar::ONE;
                        identity_signature(secret, &message)
                    } else {
                        (secret.public(), secret.sign(SigningContext::Commit, &message))
                    };
                    if let Some(order) = small_order_r {
                        let point = curve25519_dalek::constants::EIGHT_TORSION[order];
                        signature[..32].copy_from_slice(point.compress().as_bytes());
                    }
                    if let Some(r) = random_r {
                        signature[..32].copy_from_slice(&r);
                    }
                    if unreduced {
                        let s = plus_order(&signature[32..]);
                        signature[32..].copy_from_slice(&s);
                    }
                    if let Some(bit) = flip {
                        signature[bit / 8] ^= 1 << (bit % 8);
                    }
                    if other {
                        message.push(0);
                    }
                    (key, message, signature)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Verification accepts and refuses exactly what `verify_strict`
        /// does.
        #[test]
        fn verification_is_verify_strict((key, message, signature) in signature_case()) {
            let ours = key.verify(SigningContext::Commit, &message, &signature).is_ok();
            prop_assert_eq!(ours, strict(&key, &message, &signature));
        }

        /// Checked together, with one inversion, each signature is accepted
        /// or refused as `verify_strict` decides it alone.
        #[test]
        fn checked_together_each_is_verify_strict(
            cases in proptest::collection::vec(signature_case(), 1..24),
        ) {
            let parts: Vec<[&[u8]; 1]> = cases.iter().map(|(_, message, _)| [&message[..]]).collect();
            let together = PublicKey::verify_each(
                SigningContext::Commit,
                cases.iter().zip(&parts).map(|((key, _, signature), parts)| (key, &parts[..], signature)),
            );
            prop_assert_eq!(together.len(), cases.len());
            for ((key, message, signature), together) in cases.iter().zip(together) {
                prop_assert_eq!(together, strict(key, message, signature));
            }
        }
    }

    #[test]
    fn the_cache_validates_once_and_refuses_the_same_keys() {
        let cache = KeyCache::default();
        let key = secret(4).public();
        assert_eq!(cache.get(*key.as_bytes()), Ok(key));
        assert_eq!(cache.get(*key.as_bytes()), Ok(key));
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(cache.get(weak), Err(KeyError::WeakKey));
    }

    #[test]
    fn weak_and_invalid_keys_are_rejected() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::WeakKey));
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(PublicKey::from_bytes(off_curve), Err(KeyError::InvalidPoint));
    }

    #[test]
    fn text_ids_catch_typos_and_wrong_kinds() {
        let principal = Principal { role: Role::App, key: secret(3).public() };
        let text = principal.to_string();
        assert!(text.starts_with("app_"));
        assert_eq!(text.len(), 4 + 58);
        assert_eq!(text.parse::<Principal>(), Ok(principal));
        assert_eq!(text.to_uppercase().replacen("APP_", "app_", 1).parse(), Ok(principal));
        let mut typo = text.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(typo.parse::<Principal>(), Err(KeyError::BadChecksum));
        assert_eq!(text[..40].parse::<Principal>(), Err(KeyError::BadEncoding));
        assert_eq!(
            Principal::parse_as(Role::Device, &text),
            Err(KeyError::WrongKind { expected: "device", found: "app" })
        );
        assert!(matches!("xyz_abc".parse::<Principal>(), Err(KeyError::UnknownPrefix(_))));
    }

    proptest! {
        #[test]
        fn principal_text_round_trips(seed in any::<[u8; 32]>(), role in 0usize..4) {
            let principal = Principal { role: Role::ALL[role], key: SecretKey::from_seed(seed).public() };
            prop_assert_eq!(principal.to_string().parse::<Principal>(), Ok(principal));
        }

        #[test]
        fn database_id_text_round_trips(bytes in any::<[u8; 32]>()) {
            let id = DatabaseId(bytes);
            prop_assert_eq!(id.to_string().parse::<DatabaseId>(), Ok(id));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,80}") {
            let _ = text.parse::<Principal>();
            let _ = text.parse::<DatabaseId>();
        }
    }
}
