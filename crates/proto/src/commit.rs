//! Commits: the signed, encrypted unit of change.
//!
//! Implements `protocol-spec/wire-format.md` §3 and `protocol-spec/crypto.md`
//! §5. A commit is a header, the XChaCha20-Poly1305 ciphertext of its
//! [`Changes`] under the header's scope key (the header is the associated
//! data), and an ed25519 signature by the author over header and ciphertext.
//! Anyone can check authorship without the key; only key holders can read.

use std::fmt;
use std::ops::Range;

use ciborium::Value as Cbor;
use rand_core::CryptoRng;

use crate::aead::{self, NONCE_LEN, ScopeKey, TAG_LEN};
use crate::change::Changes;
use crate::codec::{self, Cbor as CborCodec, DecodeError, Fields, MAJOR_UINT, NULL, read_head};
use crate::hlc::Hlc;
use crate::keys::{
    DatabaseId, KeyCache, KeyError, PublicKey, SIGNATURE_LEN, SecretKey, SigningContext,
};
use crate::scope::ScopeId;

/// Largest encoded commit, in bytes (1 MiB).
pub const MAX_COMMIT_BYTES: usize = 1 << 20;
/// Largest encoded commit header, in bytes.
pub const MAX_HEADER_BYTES: usize = 512;
/// The commit format version this implementation writes and reads.
pub const COMMIT_VERSION: u64 = 0;
/// BLAKE3 context of commit ids.
pub const COMMIT_ID_CONTEXT: &str = "basic/v0 commit id";

/// The hash that names a commit: BLAKE3 (derive-key mode) of the message
/// its author signs, the encoded header then the ciphertext (D49).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(pub [u8; 32]);

impl CommitId {
    /// The id of the commit with this encoded header and ciphertext.
    pub fn of(header: &[u8], ciphertext: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(COMMIT_ID_CONTEXT);
        hasher.update(header);
        hasher.update(ciphertext);
        Self(*hasher.finalize().as_bytes())
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitId({self})")
    }
}

/// Everything about a commit except its content; signed, and the AEAD's
/// associated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitHeader {
    /// The database the commit belongs to.
    pub database: DatabaseId,
    /// The author's key.
    pub author: PublicKey,
    /// Position in the author's log, from 1.
    pub seq: u64,
    /// Id of the author's commit at `seq - 1`; `None` exactly when `seq` is 1.
    pub prev: Option<CommitId>,
    /// The write's clock stamp.
    pub hlc: Hlc,
    /// The scope whose key encrypts the content, by its opaque id.
    pub scope: ScopeId,
    /// The epoch of that scope's key.
    pub epoch: u32,
    /// The AEAD nonce: 24 random bytes.
    pub nonce: [u8; NONCE_LEN],
}

impl CborCodec for CommitHeader {
    const WHAT: &'static str = "commit header";
    const MAX_BYTES: usize = MAX_HEADER_BYTES;

    fn to_cbor(&self) -> Cbor {
        let int = |n: u64| Cbor::Integer(n.into());
        Cbor::Array(vec![
            int(COMMIT_VERSION),
            Cbor::Bytes(self.database.0.to_vec()),
            Cbor::Bytes(self.author.as_bytes().to_vec()),
            int(self.seq),
            self.prev.map_or(Cbor::Null, |prev| Cbor::Bytes(prev.0.to_vec())),
            Cbor::Array(vec![int(self.hlc.wall_ms), int(self.hlc.counter.into())]),
            Cbor::Bytes(self.scope.0.to_vec()),
            int(self.epoch.into()),
            Cbor::Bytes(self.nonce.to_vec()),
        ])
    }

    fn from_cbor(value: Cbor) -> Result<Self, DecodeError> {
        Self::parse(value, &KeyCache::default())
    }
}

impl CommitHeader {
    /// Decodes `bytes` as a header in canonical form, validating the author
    /// key through `keys`.
    fn read(bytes: &[u8], keys: &KeyCache) -> Result<Self, DecodeError> {
        match Self::read_in_place(bytes, keys) {
            Some(header) => Ok(header),
            None => Self::read_in_general(bytes, keys),
        }
    }

    /// The header `bytes` hold, read in place (no CBOR values built, nothing
    /// encoded again), if they are a valid header in canonical form: nine
    /// items, each with the shortest head for its value, and nothing after.
    /// `None` for anything else, which [`CommitHeader::read_in_general`]
    /// then refuses with its reason.
    fn read_in_place(bytes: &[u8], keys: &KeyCache) -> Option<Self> {
        let rest = bytes.strip_prefix(&[0x89])?;
        let (version, rest) = read_head(rest, MAJOR_UINT)?;
        let (database, rest) = fixed(rest)?;
        let (author, rest) = fixed(rest)?;
        let (seq, rest) = read_head(rest, MAJOR_UINT)?;
        let (prev, rest) = match rest.strip_prefix(&[NULL]) {
            Some(rest) => (None, rest),
            None => fixed(rest).map(|(prev, rest)| (Some(CommitId(prev)), rest))?,
        };
        let rest = rest.strip_prefix(&[0x82])?;
        let (wall_ms, rest) = read_head(rest, MAJOR_UINT)?;
        let (counter, rest) = read_head(rest, MAJOR_UINT)?;
        let (scope, rest) = fixed(rest)?;
        let (epoch, rest) = read_head(rest, MAJOR_UINT)?;
        let (nonce, rest) = fixed(rest)?;
        let valid = rest.is_empty()
            && version == COMMIT_VERSION
            && seq != 0
            && prev.is_none() == (seq == 1);
        if !valid {
            return None;
        }
        Some(Self {
            database: DatabaseId(database),
            author: keys.get(author).ok()?,
            seq,
            prev,
            hlc: Hlc { wall_ms, counter: u32::try_from(counter).ok()? },
            scope: ScopeId(scope),
            epoch: u32::try_from(epoch).ok()?,
            nonce,
        })
    }

    /// [`CommitHeader::read`] through CBOR values: parsed, read field by
    /// field, then encoded again and compared with `bytes`.
    fn read_in_general(bytes: &[u8], keys: &KeyCache) -> Result<Self, DecodeError> {
        let header = Self::parse(codec::parse(bytes, Self::WHAT, MAX_HEADER_BYTES)?, keys)?;
        if header.encode() != bytes {
            return Err(DecodeError::NonCanonical { what: Self::WHAT });
        }
        Ok(header)
    }

    /// Reads a header, validating the author key through `keys`.
    fn parse(value: Cbor, keys: &KeyCache) -> Result<Self, DecodeError> {
        // The version comes first, so a future header of another shape is
        // reported as an unsupported version, not as a malformed one.
        let version = match &value {
            Cbor::Array(items) => match items.first() {
                Some(first) => codec::as_uint(first.clone(), "header.version")?,
                None => {
                    return Err(DecodeError::BadLength { field: "header", len: 0, min: 9, max: 9 });
                }
            },
            _ => return Err(DecodeError::WrongType { field: "header", expected: "array" }),
        };
        if version != COMMIT_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: Self::WHAT, version });
        }
        let mut fields = Fields::new(value, "header", 9)?;
        fields.uint("header.version")?;
        let database = DatabaseId(fields.fixed("header.database")?);
        let author = keys
            .get(fields.fixed("header.author")?)
            .map_err(|error| DecodeError::BadKey { field: "header.author", error })?;
        let seq = fields.uint("header.seq")?;
        if seq == 0 {
            return Err(DecodeError::InvalidValue {
                field: "header.seq",
                reason: "starts at 1".into(),
            });
        }
        let prev = match fields.next("header.prev")? {
            Cbor::Null => None,
            value => Some(CommitId(codec::as_fixed(value, "header.prev")?)),
        };
        if prev.is_none() != (seq == 1) {
            return Err(DecodeError::InvalidValue {
                field: "header.prev",
                reason: "must be null exactly when seq is 1".into(),
            });
        }
        let mut hlc = Fields::new(fields.next("header.hlc")?, "header.hlc", 2)?;
        let wall_ms = hlc.uint("header.hlc.wall_ms")?;
        let counter = u32::try_from(hlc.uint("header.hlc.counter")?).map_err(|_| {
            DecodeError::InvalidValue { field: "header.hlc.counter", reason: "over 2^32-1".into() }
        })?;
        let scope = ScopeId(fields.fixed("header.scope")?);
        let epoch = u32::try_from(fields.uint("header.epoch")?).map_err(|_| {
            DecodeError::InvalidValue { field: "header.epoch", reason: "over 2^32-1".into() }
        })?;
        let nonce = fields.fixed("header.nonce")?;
        Ok(Self { database, author, seq, prev, hlc: Hlc { wall_ms, counter }, scope, epoch, nonce })
    }
}

/// The outer CBOR array of a commit.
struct Envelope {
    header: Vec<u8>,
    ciphertext: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl CborCodec for Envelope {
    const WHAT: &'static str = "commit";
    const MAX_BYTES: usize = MAX_COMMIT_BYTES;

    fn to_cbor(&self) -> Cbor {
        Cbor::Array(vec![
            Cbor::Bytes(self.header.clone()),
            Cbor::Bytes(self.ciphertext.clone()),
            Cbor::Bytes(self.signature.to_vec()),
        ])
    }

    fn from_cbor(value: Cbor) -> Result<Self, DecodeError> {
        let mut fields = Fields::new(value, "commit", 3)?;
        Ok(Self {
            header: fields.bytes("commit.header", 1, MAX_HEADER_BYTES)?,
            ciphertext: fields.bytes("commit.ciphertext", TAG_LEN, MAX_COMMIT_BYTES)?,
            signature: fields.fixed("commit.signature")?,
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match Self::parts(bytes) {
            Some((header, ciphertext, signature)) => Ok(Self {
                header: header.to_vec(),
                ciphertext: ciphertext.to_vec(),
                signature: *signature,
            }),
            None => codec::decode_canonical(bytes),
        }
    }
}

impl Envelope {
    /// The header, ciphertext and signature of `bytes`, read in place, if
    /// `bytes` are an envelope the general decoder accepts: a 3-item array
    /// of byte strings, each with the shortest head for its length, within
    /// the limits, and nothing after.
    fn parts(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8; SIGNATURE_LEN])> {
        if bytes.len() > MAX_COMMIT_BYTES {
            return None;
        }
        let rest = bytes.strip_prefix(&[0x83])?;
        let (header, rest) = codec::byte_string(rest)?;
        let (ciphertext, rest) = codec::byte_string(rest)?;
        let (signature, rest) = codec::byte_string(rest)?;
        let within = (1..=MAX_HEADER_BYTES).contains(&header.len())
            && ciphertext.len() >= TAG_LEN
            && rest.is_empty();
        within.then_some((header, ciphertext, signature.try_into().ok()?))
    }
}

/// What a writer fixes before its changes are sealed into a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitDraft {
    /// The database written.
    pub database: DatabaseId,
    /// Position in the author's log, from 1.
    pub seq: u64,
    /// Id of the author's previous commit; `None` exactly when `seq` is 1.
    pub prev: Option<CommitId>,
    /// The write's clock stamp.
    pub hlc: Hlc,
    /// The scope written, by its opaque id.
    pub scope: ScopeId,
    /// The epoch of the scope key used.
    pub epoch: u32,
}

/// Why a commit could not be made, decoded or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The bytes are not a well-formed commit.
    #[error("malformed commit: {0}")]
    Decode(#[from] DecodeError),
    /// The signature does not verify strictly for the author and content.
    #[error("commit signature does not verify for its author")]
    BadSignature,
    /// `seq` and `prev` disagree in a draft.
    #[error("prev must be given exactly when seq is above 1 (seq {seq})")]
    BadChain {
        /// The draft's seq.
        seq: u64,
    },
    /// The encoded commit would exceed [`MAX_COMMIT_BYTES`]: split the changes.
    #[error("commit would be {len} bytes, over the limit of {MAX_COMMIT_BYTES}: split the changes")]
    TooLarge {
        /// The size the commit would have.
        len: usize,
    },
    /// An unsigned commit was given a key other than its header's author.
    #[error("the signing key is not the commit's author")]
    WrongAuthor,
    /// Decryption failed: wrong key, or ciphertext and header do not belong together.
    #[error("commit cannot be decrypted with this key (wrong key or tampered ciphertext)")]
    Undecryptable,
    /// Decrypted, but the plaintext is not a valid change set.
    #[error("decrypted changes are malformed: {0}")]
    BadChanges(DecodeError),
}

/// A commit whose structure and signature have been verified.
///
/// The only ways to get one are [`Commit::create`], [`UnsignedCommit::sign`]
/// and [`Commit::decode`], so holding a `Commit` means its author really
/// signed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Commit {
    header: CommitHeader,
    /// The complete encoding, which holds the encoded header and the
    /// ciphertext at [`spans`] of their lengths.
    bytes: Vec<u8>,
    header_len: usize,
    ciphertext_len: usize,
    signature: [u8; SIGNATURE_LEN],
    id: CommitId,
}

impl Commit {
    /// The commit encoded as `bytes`, which hold `header_bytes` and
    /// `ciphertext` in canonical form (as any decoded or created commit
    /// does).
    fn new(
        header: CommitHeader,
        bytes: Vec<u8>,
        header_bytes: &[u8],
        ciphertext: &[u8],
        signature: [u8; SIGNATURE_LEN],
        id: CommitId,
    ) -> Self {
        let commit = Commit {
            header,
            bytes,
            header_len: header_bytes.len(),
            ciphertext_len: ciphertext.len(),
            signature,
            id,
        };
        debug_assert!(commit.header_bytes() == header_bytes && commit.ciphertext() == ciphertext);
        commit
    }

    /// Encrypts `changes` under `key`, signs as `author` and encodes.
    pub fn create(
        author: &SecretKey,
        draft: CommitDraft,
        changes: &Changes,
        key: &ScopeKey,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, CommitError> {
        UnsignedCommit::seal(&author.public(), draft, changes, key, rng)?.sign(author)
    }

    /// Decodes `bytes` and verifies the author's signature, in this order:
    /// size, CBOR structure and canonical form, header fields and author key,
    /// then the signature. Nothing is decrypted.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommitError> {
        Self::decode_with(bytes, &KeyCache::default())
    }

    /// [`Commit::decode`], validating author keys through `keys`, so that
    /// many commits by the same authors validate each key once.
    pub fn decode_with(bytes: &[u8], keys: &KeyCache) -> Result<Self, CommitError> {
        if let Some(located) = Self::locate(bytes, keys) {
            return located.verify();
        }
        let (header, envelope) = Self::parse(bytes, keys)?;
        Located::new(bytes, &envelope.header, &envelope.ciphertext, &envelope.signature, header)
            .verify()
    }

    /// The header of `bytes`, checked as [`Commit::decode`] checks it but
    /// without verifying the signature: for reading back a commit that was
    /// verified when it was stored (to route it by scope, say). Anything
    /// that decides on a commit decodes it in full.
    pub fn header_of(bytes: &[u8], keys: &KeyCache) -> Result<CommitHeader, CommitError> {
        Ok(Self::parse(bytes, keys)?.0)
    }

    /// The envelope of `bytes` and its header, parsed and in canonical form.
    fn parse(bytes: &[u8], keys: &KeyCache) -> Result<(CommitHeader, Envelope), CommitError> {
        let envelope = Envelope::decode(bytes)?;
        let header = CommitHeader::read(&envelope.header, keys)?;
        Ok((header, envelope))
    }

    /// Decrypts and decodes the changes with the scope key the header names.
    pub fn open(&self, key: &ScopeKey) -> Result<Changes, CommitError> {
        let plaintext = key
            .decrypt(&self.header.nonce, self.header_bytes(), self.ciphertext())
            .ok_or(CommitError::Undecryptable)?;
        Changes::decode(&plaintext).map_err(CommitError::BadChanges)
    }

    /// The id `bytes` have if they are a commit, read without decoding or
    /// verifying anything: for recognising a copy of a commit held already.
    /// `None` unless `bytes` are a commit's envelope in canonical form (its
    /// header is not read); a copy whose signature is not the author's has
    /// the id of the commit it copies, so this never decides whether a
    /// commit is accepted.
    pub fn id_of(bytes: &[u8]) -> Option<CommitId> {
        let (header, ciphertext, _) = Envelope::parts(bytes)?;
        Some(CommitId::of(header, ciphertext))
    }

    /// The id and header of `bytes` if they are a commit in canonical form
    /// with a valid header, read in place and not verified yet: for placing
    /// a received commit in its author's log before deciding to verify it
    /// ([`Located::verify`]). A copy with another signature is located as
    /// the commit it copies.
    pub fn locate<'a>(bytes: &'a [u8], keys: &KeyCache) -> Option<Located<'a>> {
        let (header_bytes, ciphertext, signature) = Envelope::parts(bytes)?;
        let header = CommitHeader::read_in_place(header_bytes, keys)?;
        Some(Located::new(bytes, header_bytes, ciphertext, signature, header))
    }

    /// The verified header.
    pub fn header(&self) -> &CommitHeader {
        &self.header
    }

    /// The commit's id.
    pub fn id(&self) -> CommitId {
        self.id
    }

    /// The complete encoding, as sent and stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The id, the header and the complete encoding, taken apart without a
    /// copy: for storing a commit that is not needed whole afterwards.
    pub fn into_parts(self) -> (CommitId, CommitHeader, Vec<u8>) {
        (self.id, self.header, self.bytes)
    }

    /// The encoded header: the AEAD's associated data.
    pub fn header_bytes(&self) -> &[u8] {
        &self.bytes[spans(self.header_len, self.ciphertext_len).0]
    }

    /// The encrypted changes, tag included.
    pub fn ciphertext(&self) -> &[u8] {
        &self.bytes[spans(self.header_len, self.ciphertext_len).1]
    }

    /// The author's signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// The message the signature covers (before the context label).
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(self.header_bytes(), self.ciphertext())
    }
}

/// A commit's parts, id and header, read from its bytes before its
/// signature is verified ([`Commit::locate`]).
#[derive(Debug)]
pub struct Located<'a> {
    bytes: &'a [u8],
    header_bytes: &'a [u8],
    ciphertext: &'a [u8],
    signature: &'a [u8; SIGNATURE_LEN],
    header: CommitHeader,
    id: CommitId,
}

impl<'a> Located<'a> {
    fn new(
        bytes: &'a [u8],
        header_bytes: &'a [u8],
        ciphertext: &'a [u8],
        signature: &'a [u8; SIGNATURE_LEN],
        header: CommitHeader,
    ) -> Self {
        let id = CommitId::of(header_bytes, ciphertext);
        Self { bytes, header_bytes, ciphertext, signature, header, id }
    }

    /// The id the commit has if its signature verifies.
    pub fn id(&self) -> CommitId {
        self.id
    }

    /// The header, not verified yet.
    pub fn header(&self) -> &CommitHeader {
        &self.header
    }

    /// Verifies the author's signature: the commit, as [`Commit::decode`]
    /// gives it.
    pub fn verify(self) -> Result<Commit, CommitError> {
        (self.header.author)
            .verify_parts(SigningContext::Commit, &self.signed_parts(), self.signature)
            .map_err(|_: KeyError| CommitError::BadSignature)?;
        Ok(self.into_commit())
    }

    /// Verifies several commits' signatures: each result is what
    /// [`Located::verify`] gives for that commit, for less work (the last
    /// step of every verification, a field inversion, is shared between
    /// them: `crypto.md` §3.3).
    pub fn verify_all(located: Vec<Located<'a>>) -> Vec<Result<Commit, CommitError>> {
        let parts: Vec<[&[u8]; 2]> = located.iter().map(Located::signed_parts).collect();
        let signed = located.iter().zip(&parts);
        let holds = PublicKey::verify_each(
            SigningContext::Commit,
            signed.map(|(commit, parts)| (&commit.header.author, &parts[..], commit.signature)),
        );
        located
            .into_iter()
            .zip(holds)
            .map(|(commit, holds)| match holds {
                true => Ok(commit.into_commit()),
                false => Err(CommitError::BadSignature),
            })
            .collect()
    }

    /// What the signature covers, after its context's label.
    fn signed_parts(&self) -> [&'a [u8]; 2] {
        [self.header_bytes, self.ciphertext]
    }

    fn into_commit(self) -> Commit {
        Commit::new(
            self.header,
            self.bytes.to_vec(),
            self.header_bytes,
            self.ciphertext,
            *self.signature,
            self.id,
        )
    }
}

/// A commit encrypted and named but not signed yet: its id is known (it
/// does not cover the signature, D49), so the next commit of the log can
/// be chained to it while this one is signed elsewhere.
#[derive(Clone)]
pub struct UnsignedCommit {
    header: CommitHeader,
    header_bytes: Vec<u8>,
    ciphertext: Vec<u8>,
    id: CommitId,
}

impl UnsignedCommit {
    /// Encrypts `changes` under `key` into the next commit of `author`'s
    /// log. Fails with [`CommitError::TooLarge`] when the signed commit
    /// would exceed [`MAX_COMMIT_BYTES`].
    pub fn seal(
        author: &PublicKey,
        draft: CommitDraft,
        changes: &Changes,
        key: &ScopeKey,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, CommitError> {
        if draft.prev.is_none() != (draft.seq == 1) || draft.seq == 0 {
            return Err(CommitError::BadChain { seq: draft.seq });
        }
        let header = CommitHeader {
            database: draft.database,
            author: *author,
            seq: draft.seq,
            prev: draft.prev,
            hlc: draft.hlc,
            scope: draft.scope,
            epoch: draft.epoch,
            nonce: aead::random_nonce(rng),
        };
        let header_bytes = header.encode();
        let plaintext = changes.encode();
        // Fail before encrypting when the result is sure to be too large.
        let len = envelope_len(header_bytes.len(), plaintext.len() + TAG_LEN);
        if len > MAX_COMMIT_BYTES {
            return Err(CommitError::TooLarge { len });
        }
        let ciphertext = key.encrypt(&header.nonce, &header_bytes, &plaintext);
        let id = CommitId::of(&header_bytes, &ciphertext);
        Ok(Self { header, header_bytes, ciphertext, id })
    }

    /// The commit's id, the same once signed.
    pub fn id(&self) -> CommitId {
        self.id
    }

    /// The header.
    pub fn header(&self) -> &CommitHeader {
        &self.header
    }

    /// Signs as `author`, who must be the header's author.
    pub fn sign(self, author: &SecretKey) -> Result<Commit, CommitError> {
        if author.public() != self.header.author {
            return Err(CommitError::WrongAuthor);
        }
        let Self { header, header_bytes, ciphertext, id } = self;
        let signature =
            author.sign(SigningContext::Commit, &signed_message(&header_bytes, &ciphertext));
        let envelope = Envelope { header: header_bytes, ciphertext, signature };
        let bytes = envelope.encode();
        debug_assert_eq!(
            bytes.len(),
            envelope_len(envelope.header.len(), envelope.ciphertext.len())
        );
        let Envelope { header: header_bytes, ciphertext, signature } = envelope;
        Ok(Commit::new(header, bytes, &header_bytes, &ciphertext, signature, id))
    }
}

impl fmt::Debug for UnsignedCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_commit(f, "UnsignedCommit", self.id, &self.header, &self.ciphertext)
    }
}

/// A commit's id, header and ciphertext length (not the ciphertext).
fn debug_commit(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    id: CommitId,
    header: &CommitHeader,
    ciphertext: &[u8],
) -> fmt::Result {
    f.debug_struct(name)
        .field("id", &id)
        .field("header", header)
        .field("ciphertext_len", &ciphertext.len())
        .finish()
}

/// A CBOR byte string of exactly `N` bytes, and what follows it.
fn fixed<const N: usize>(bytes: &[u8]) -> Option<([u8; N], &[u8])> {
    let (item, rest) = codec::byte_string(bytes)?;
    Some((item.try_into().ok()?, rest))
}

/// The length of an encoded commit whose header and ciphertext have these
/// lengths: a 3-item array of byte strings, the last the signature.
fn envelope_len(header: usize, ciphertext: usize) -> usize {
    let (_, ciphertext_at) = spans(header, ciphertext);
    ciphertext_at.end + codec::head_len(SIGNATURE_LEN as u64) + SIGNATURE_LEN
}

/// Where the header and the ciphertext lie in a commit whose header and
/// ciphertext have these lengths (its canonical encoding: each after the
/// shortest head for its length).
fn spans(header: usize, ciphertext: usize) -> (Range<usize>, Range<usize>) {
    let header_at = 1 + codec::head_len(header as u64);
    let ciphertext_at = header_at + header + codec::head_len(ciphertext as u64);
    (header_at..header_at + header, ciphertext_at..ciphertext_at + ciphertext)
}

impl fmt::Debug for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_commit(f, "Commit", self.id, &self.header, self.ciphertext())
    }
}

/// Header then ciphertext. The header is one self-delimiting CBOR item, so
/// the split between the two is unambiguous.
fn signed_message(header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(header.len() + ciphertext.len());
    message.extend_from_slice(header);
    message.extend_from_slice(ciphertext);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RowOp;
    use crate::codec::MAJOR_BYTES;
    use crate::value::{KeyPart, RowKey, Value};
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn fixture() -> (SecretKey, CommitDraft, Changes, ScopeKey, ChaCha20Rng) {
        let author = SecretKey::from_seed([3; 32]);
        let draft = CommitDraft {
            database: DatabaseId([9; 32]),
            seq: 1,
            prev: None,
            hlc: Hlc { wall_ms: 1_700_000_000_000, counter: 0 },
            scope: crate::scope::ScopeId([1; 16]),
            epoch: 0,
        };
        let changes = Changes::new(vec![RowOp::Upsert {
            table: crate::Name::new("todo.items").unwrap(),
            key: RowKey::single(KeyPart::Text("a".into())),
            generation: 1,
            cells: crate::LiteMap::from_iter([(
                crate::Name::new("title").unwrap(),
                Value::Text("milk".into()),
            )]),
        }])
        .unwrap();
        (author, draft, changes, ScopeKey::from_bytes([5; 32]), ChaCha20Rng::seed_from_u64(1))
    }

    #[test]
    fn create_decode_open() {
        let (author, draft, changes, key, mut rng) = fixture();
        let commit = Commit::create(&author, draft, &changes, &key, &mut rng).unwrap();
        let decoded = Commit::decode(commit.as_bytes()).unwrap();
        assert_eq!(decoded, commit);
        assert_eq!(decoded.open(&key).unwrap(), changes);
        assert_eq!(decoded.open(&ScopeKey::from_bytes([6; 32])), Err(CommitError::Undecryptable));
    }

    #[test]
    fn tampering_anywhere_is_caught() {
        let (author, draft, changes, key, mut rng) = fixture();
        let commit = Commit::create(&author, draft, &changes, &key, &mut rng).unwrap();
        for i in 0..commit.as_bytes().len() {
            let mut bytes = commit.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            assert!(Commit::decode(&bytes).is_err(), "flip at byte {i} accepted");
        }
    }

    /// `header_of` reads what `decode` reads, except the signature: a
    /// stored commit is routed by it, never accepted by it.
    #[test]
    fn header_of_checks_everything_but_the_signature() {
        let (author, draft, changes, key, mut rng) = fixture();
        let commit = Commit::create(&author, draft, &changes, &key, &mut rng).unwrap();
        let keys = KeyCache::default();
        assert_eq!(&Commit::header_of(commit.as_bytes(), &keys).unwrap(), commit.header());
        let mut bad_signature = commit.as_bytes().to_vec();
        let last = bad_signature.len() - 1;
        bad_signature[last] ^= 0x01;
        assert_eq!(Commit::decode(&bad_signature), Err(CommitError::BadSignature));
        assert_eq!(&Commit::header_of(&bad_signature, &keys).unwrap(), commit.header());
        assert!(Commit::header_of(&commit.as_bytes()[..last], &keys).is_err(), "truncated");
        assert!(Commit::header_of(b"not a commit", &keys).is_err());
    }

    #[test]
    fn nonces_differ_between_commits() {
        let (author, draft, changes, key, mut rng) = fixture();
        let a = Commit::create(&author, draft.clone(), &changes, &key, &mut rng).unwrap();
        let b = Commit::create(&author, draft, &changes, &key, &mut rng).unwrap();
        assert_ne!(a.header().nonce, b.header().nonce);
        assert_ne!(a.id(), b.id());
    }

    /// Signs `ciphertext` under `header` as `author`, as an attacker who
    /// holds the scope key and may write would.
    fn re_signed(author: &SecretKey, header: &CommitHeader, ciphertext: &[u8]) -> Vec<u8> {
        let header = header.encode();
        let signature = author.sign(SigningContext::Commit, &signed_message(&header, ciphertext));
        Envelope { header, ciphertext: ciphertext.to_vec(), signature }.encode()
    }

    #[test]
    fn a_ciphertext_moved_under_another_header_does_not_open() {
        let (victim, draft, changes, key, mut rng) = fixture();
        let stolen = Commit::create(&victim, draft.clone(), &changes, &key, &mut rng).unwrap();
        let attacker = SecretKey::from_seed([4; 32]);
        let own = Commit::create(&attacker, draft, &changes, &key, &mut rng).unwrap();
        // Under the attacker's own header, and under one that copies every
        // field of the victim's but the author: each signature is the
        // attacker's own and verifies, but the header is the ciphertext's
        // associated data, so neither opens.
        let copied = CommitHeader { author: attacker.public(), ..stolen.header().clone() };
        for header in [own.header(), &copied] {
            let swapped = Commit::decode(&re_signed(&attacker, header, stolen.ciphertext()))
                .expect("the attacker's signature verifies");
            assert_eq!(swapped.open(&key), Err(CommitError::Undecryptable));
        }
        // Without re-signing, the victim's signature does not cover it.
        let mut bytes = Envelope {
            header: own.header_bytes().to_vec(),
            ciphertext: stolen.ciphertext().to_vec(),
            signature: stolen.signature,
        }
        .encode();
        assert!(Commit::decode(&bytes).is_err());
        bytes = re_signed(&attacker, stolen.header(), stolen.ciphertext());
        assert!(Commit::decode(&bytes).is_err(), "the header names the victim as author");
    }

    /// The id covers what the author signs, not the signature: it is known
    /// before signing, and the same on every copy that verifies (D49).
    #[test]
    fn an_id_names_the_signed_message_not_the_signature() {
        let (author, draft, changes, key, mut rng) = fixture();
        let unsigned =
            UnsignedCommit::seal(&author.public(), draft, &changes, &key, &mut rng).expect("seals");
        let id = unsigned.id();
        let commit = unsigned.sign(&author).expect("the author signs");
        assert_eq!(commit.id(), id);
        assert_eq!(id, CommitId::of(commit.header_bytes(), commit.ciphertext()));
        assert_eq!(Commit::decode(commit.as_bytes()).expect("verifies").id(), id);
        // Not the hash of the whole encoding, as before D49.
        let mut whole = blake3::Hasher::new_derive_key(COMMIT_ID_CONTEXT);
        whole.update(commit.as_bytes());
        assert_ne!(id.0, *whole.finalize().as_bytes());
    }

    /// `id_of` reads the id of a canonical envelope only; anything else is
    /// left to `decode` to refuse.
    #[test]
    fn id_of_and_locate_read_canonical_envelopes_only() {
        let (author, draft, changes, key, mut rng) = fixture();
        let commit = Commit::create(&author, draft, &changes, &key, &mut rng).unwrap();
        let bytes = commit.as_bytes();
        let keys = KeyCache::default();
        let located = Some((commit.id(), commit.header().clone()));
        assert_eq!(Commit::id_of(bytes), Some(commit.id()));
        assert_eq!(Commit::locate(bytes, &keys).map(|l| (l.id(), l.header().clone())), located);
        // A copy with another signature has the id and place of what it copies.
        let mut resigned = bytes.to_vec();
        *resigned.last_mut().unwrap() ^= 1;
        assert_eq!(Commit::id_of(&resigned), Some(commit.id()));
        let relocated = Commit::locate(&resigned, &keys);
        assert_eq!(relocated.map(|l| (l.id(), l.header().clone())), located);
        assert_eq!(Commit::decode(&resigned), Err(CommitError::BadSignature));
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        let short_signature = re_encoded(&commit, &commit.signature[..63]);
        // The header's head (a 1-byte length) written in the 2-byte form.
        let mut long_head = vec![0x83, 0x59, 0];
        long_head.extend_from_slice(&bytes[2..]);
        for bad in [&bytes[..bytes.len() - 1], &trailing, &short_signature, &long_head, b"\x83"] {
            assert_eq!(Commit::id_of(bad), None);
            assert!(Commit::locate(bad, &keys).is_none());
            assert!(Commit::decode(bad).is_err());
        }
    }

    /// Verified together, each commit of a batch gets what it gets alone:
    /// good ones from several authors, a signature bit flipped, a header
    /// re-signed by another key, a body bit flipped.
    #[test]
    fn verified_together_each_commit_is_verified_as_alone() {
        let (_, draft, changes, key, mut rng) = fixture();
        let keys = KeyCache::default();
        let attacker = SecretKey::from_seed([4; 32]);
        let mut batch = Vec::new();
        for n in 0..12u8 {
            let author = SecretKey::from_seed([n % 3 + 10; 32]);
            let commit = Commit::create(&author, draft.clone(), &changes, &key, &mut rng).unwrap();
            let mut bytes = commit.as_bytes().to_vec();
            let last = bytes.len() - 1;
            match n % 4 {
                1 => bytes[last] ^= 0x40,
                2 => bytes = re_signed(&attacker, commit.header(), commit.ciphertext()),
                3 => bytes[last - 70] ^= 0x01,
                _ => {}
            }
            batch.push(bytes);
        }
        let alone: Vec<_> =
            batch.iter().map(|bytes| Commit::locate(bytes, &keys).map(Located::verify)).collect();
        let located: Vec<_> =
            batch.iter().filter_map(|bytes| Commit::locate(bytes, &keys)).collect();
        let together = Located::verify_all(located);
        assert_eq!(together, alone.iter().flatten().cloned().collect::<Vec<_>>());
        let good = alone.iter().filter(|r| matches!(r, Some(Ok(_)))).count();
        assert_eq!(good, 3, "the unaltered commits verify: {alone:?}");
    }

    /// A CBOR byte string of `len` bytes of `fill`, its length written in
    /// `width` bytes (0: in the first byte) if that can hold it.
    fn byte_string_in(len: usize, width: u8, fill: u8) -> Vec<u8> {
        let mut out = match width {
            0 if len < 24 => vec![0x40 + len as u8],
            0 | 1 if len < 256 => vec![0x58, len as u8],
            0..=2 if len < 65_536 => [&[0x59][..], &(len as u16).to_be_bytes()].concat(),
            _ => [&[0x5a][..], &(len as u32).to_be_bytes()].concat(),
        };
        out.resize(out.len() + len, fill);
        out
    }

    /// An envelope's header, ciphertext and signature.
    type Parts = (Vec<u8>, Vec<u8>, [u8; SIGNATURE_LEN]);

    /// An envelope as the general decoder reads it.
    fn decoded_in_general(bytes: &[u8]) -> Result<Parts, DecodeError> {
        codec::decode_canonical::<Envelope>(bytes).map(|e| (e.header, e.ciphertext, e.signature))
    }

    /// Envelopes around every limit and head width, mostly well formed
    /// but for one part, so each rule decides often.
    fn any_envelope() -> impl Strategy<Value = Vec<u8>> {
        let width = || prop_oneof![6 => Just(0u8), 1 => 1..4u8];
        let header = prop_oneof![
            0..=3usize,
            20..=30usize,
            250..=260usize,
            MAX_HEADER_BYTES - 3..=MAX_HEADER_BYTES + 3
        ];
        (
            prop_oneof![8 => Just(0x83u8), 1 => any::<u8>()],
            (header, width()),
            (0..=40usize, width()),
            (prop_oneof![6 => Just(SIGNATURE_LEN), 1 => 60..=68usize], width()),
            prop_oneof![6 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..3)],
        )
            .prop_map(
                |(first, (header, hw), (ciphertext, cw), (signature, sw), trailing)| {
                    let mut out = vec![first];
                    out.extend(byte_string_in(header, hw, 0xa1));
                    out.extend(byte_string_in(ciphertext, cw, 0xc2));
                    out.extend(byte_string_in(signature, sw, 0x5e));
                    out.extend(trailing);
                    out
                },
            )
    }

    /// Up to three edits: where, which (0 changes a byte, 1 cuts one, 2
    /// adds one) and the byte.
    type Edits = Vec<(prop::sample::Index, u8, u8)>;

    fn any_edits() -> impl Strategy<Value = Edits> {
        prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, any::<u8>()), 0..3)
    }

    /// `bytes` with `edits` made.
    fn edited(bytes: &[u8], edits: Edits) -> Vec<u8> {
        let mut edited = bytes.to_vec();
        for (at, edit, byte) in edits {
            let at = at.index(edited.len() + 1);
            match edit {
                0 if at < edited.len() => edited[at] = byte,
                1 if at < edited.len() => {
                    edited.remove(at);
                }
                _ => edited.insert(at, byte),
            }
        }
        edited
    }

    proptest::proptest! {
        /// The direct read of an envelope accepts exactly what the general
        /// decoder accepts, with the same parts, and refuses with its error:
        /// for envelopes of every length and head width around the limits,
        /// and for a real commit with bytes changed, cut or added.
        #[test]
        fn an_envelope_is_read_directly_as_the_general_decoder_reads_it(
            built in any_envelope(),
            edits in any_edits(),
        ) {
            let (author, draft, changes, key, mut rng) = fixture();
            let commit = Commit::create(&author, draft, &changes, &key, &mut rng).unwrap();
            let edited = edited(commit.as_bytes(), edits);
            for bytes in [built, edited] {
                let direct = Envelope::decode(&bytes).map(|e| (e.header, e.ciphertext, e.signature));
                proptest::prop_assert_eq!(direct, decoded_in_general(&bytes));
            }
        }
    }

    /// A CBOR head of `major` type carrying `value`, `wider` forms wider
    /// than its shortest one (0: the shortest).
    fn head_in(major: u8, value: u64, wider: u8) -> Vec<u8> {
        const WIDTHS: [usize; 5] = [0, 1, 2, 4, 8];
        let shortest = match value {
            0..=23 => 0,
            24..=0xff => 1,
            0x100..=0xffff => 2,
            0x1_0000..=0xffff_ffff => 3,
            _ => 4,
        };
        codec::head_of_width(major, value, WIDTHS[(shortest + usize::from(wider)).min(4)])
    }

    /// What is done to one item of a header (see `any_header`).
    #[derive(Debug, Clone)]
    enum Fault {
        /// Another item in its place.
        Replace(Vec<u8>),
        /// Its head one form wider than the shortest.
        Widen,
        /// An unsigned integer of this value in its place.
        Value(u64),
        /// Left out.
        Drop,
        /// Another item before it.
        Insert(Vec<u8>),
    }

    /// Items of any type, some of a header's item lengths.
    fn any_item() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (any::<u64>(), 0..2u8).prop_map(|(n, w)| head_in(MAJOR_UINT, n, w)),
            prop::sample::select(vec![0usize, 15, 16, 17, 23, 24, 25, 31, 32, 33])
                .prop_map(|len| [head_in(MAJOR_BYTES, len as u64, 0), vec![1; len]].concat()),
            Just(vec![NULL]),
            (0..4u8).prop_map(|n| vec![0x80 | n]),
            Just(vec![0x61, b'a']),
        ]
    }

    /// Encoded headers, each item in canonical form with values across
    /// their range, and at most one item faulty, so that each rule of the
    /// format decides often.
    fn any_header() -> impl Strategy<Value = Vec<u8>> {
        let u32s = || prop_oneof![Just(0u64), Just(u64::from(u32::MAX)), 0..=u64::from(u32::MAX)];
        let seq = prop_oneof![Just(1u64), Just(2u64), Just(u64::MAX), 1..=u64::MAX];
        let author =
            any::<u8>().prop_map(|seed| *SecretKey::from_seed([seed; 32]).public().as_bytes());
        let fault = prop_oneof![
            1 => any_item().prop_map(Fault::Replace),
            1 => Just(Fault::Widen),
            2 => prop::sample::select(vec![0, 1, u64::from(u32::MAX) + 1]).prop_map(Fault::Value),
            1 => Just(Fault::Drop),
            1 => any_item().prop_map(Fault::Insert),
        ];
        (seq, any::<u64>(), u32s(), u32s(), author, any::<[u8; 32]>(), 0..15usize, fault).prop_map(
            |(seq, wall_ms, counter, epoch, author, prev, at, fault)| {
                let uint = |n: u64| head_in(MAJOR_UINT, n, 0);
                let bytes =
                    |b: &[u8]| [head_in(MAJOR_BYTES, b.len() as u64, 0), b.to_vec()].concat();
                let prev = if seq == 1 { vec![NULL] } else { bytes(&prev) };
                let mut items = vec![
                    vec![0x89],
                    uint(COMMIT_VERSION),
                    bytes(&[9; 32]),
                    bytes(&author),
                    uint(seq),
                    prev,
                    vec![0x82],
                    uint(wall_ms),
                    uint(counter),
                    bytes(&[4; crate::scope::SCOPE_ID_LEN]),
                    uint(epoch),
                    bytes(&[6; NONCE_LEN]),
                ];
                if at < items.len() {
                    match fault {
                        Fault::Replace(item) => items[at] = item,
                        Fault::Widen => {
                            let (value, rest) = read_head(&items[at], items[at][0] >> 5).unwrap();
                            items[at] =
                                [head_in(items[at][0] >> 5, value, 1), rest.to_vec()].concat();
                        }
                        Fault::Value(n) => items[at] = uint(n),
                        Fault::Drop => drop(items.remove(at)),
                        Fault::Insert(item) => items.insert(at, item),
                    }
                }
                items.concat()
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// A header is read in place exactly when the general decoder
        /// accepts it, and as that decoder reads it: for headers with every
        /// field across its range and one item faulty in each way, and for
        /// a real commit's header with bytes changed, cut or added.
        #[test]
        fn a_header_is_read_in_place_as_the_general_decoder_reads_it(
            built in any_header(),
            edits in any_edits(),
        ) {
            let (author, draft, changes, key, mut rng) = fixture();
            let commit = Commit::create(&author, draft, &changes, &key, &mut rng).unwrap();
            let edited = edited(commit.header_bytes(), edits);
            let keys = KeyCache::default();
            for bytes in [built, edited] {
                let in_place = CommitHeader::read_in_place(&bytes, &keys);
                proptest::prop_assert_eq!(in_place, CommitHeader::read_in_general(&bytes, &keys).ok());
            }
        }
    }

    #[test]
    fn a_real_header_is_read_in_place() {
        let (author, mut draft, changes, key, mut rng) = fixture();
        for (seq, prev) in [(1, None), (u64::MAX, Some(CommitId([7; 32])))] {
            (draft.seq, draft.prev) = (seq, prev);
            draft.hlc = Hlc { wall_ms: u64::MAX, counter: u32::MAX };
            let commit = Commit::create(&author, draft.clone(), &changes, &key, &mut rng).unwrap();
            let keys = KeyCache::default();
            let in_place = CommitHeader::read_in_place(commit.header_bytes(), &keys);
            assert_eq!(in_place.as_ref(), Some(commit.header()));
        }
    }

    #[test]
    fn an_envelope_at_the_size_limit_is_read_directly_and_one_byte_over_is_refused() {
        for (len, accepted) in [(MAX_COMMIT_BYTES, true), (MAX_COMMIT_BYTES + 1, false)] {
            // Header 100 bytes and signature 64 with 2-byte heads, the
            // ciphertext's head 5 bytes: the rest of `len` is ciphertext.
            let ciphertext = len - 1 - 2 - 100 - 2 - SIGNATURE_LEN - 5;
            let bytes = [
                vec![0x83],
                byte_string_in(100, 0, 1),
                byte_string_in(ciphertext, 0, 2),
                byte_string_in(SIGNATURE_LEN, 0, 3),
            ]
            .concat();
            assert_eq!(bytes.len(), len);
            let direct = Envelope::decode(&bytes).map(|e| (e.header, e.ciphertext, e.signature));
            assert_eq!(direct.is_ok(), accepted);
            assert_eq!(direct, decoded_in_general(&bytes));
        }
    }

    /// `commit`, signed and decoded, gives back the encoded header and the
    /// ciphertext it was sealed with.
    fn assert_read_back(commit: &Commit, (header, ciphertext): &(Vec<u8>, Vec<u8>)) {
        let decoded = Commit::decode(commit.as_bytes()).expect("decodes");
        for commit in [commit, &decoded] {
            assert_eq!(
                (commit.header_bytes(), commit.ciphertext()),
                (&header[..], &ciphertext[..])
            );
        }
        assert_eq!(&decoded, commit);
    }

    /// `commit` encoded again with `signature` in place of its own.
    fn re_encoded(commit: &Commit, signature: &[u8]) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(commit.header_bytes().to_vec()),
            Cbor::Bytes(commit.ciphertext().to_vec()),
            Cbor::Bytes(signature.to_vec()),
        ]))
    }

    #[test]
    fn only_the_header_author_signs_an_unsigned_commit() {
        let (author, draft, changes, key, mut rng) = fixture();
        let unsigned =
            UnsignedCommit::seal(&author.public(), draft, &changes, &key, &mut rng).expect("seals");
        let other = SecretKey::from_seed([4; 32]);
        assert_eq!(unsigned.sign(&other).map(|c| c.id()), Err(CommitError::WrongAuthor));
    }

    /// The size limit is decided before signing: a commit that seals signs
    /// within the limit, and its length is the one foreseen, across every
    /// length of CBOR head. Its header and ciphertext are read back from
    /// where they lie in its bytes, signed and decoded.
    #[test]
    fn the_size_limit_is_known_before_signing() {
        let (author, draft, _, key, mut rng) = fixture();
        let with_title = |len: usize| {
            Changes::new(vec![RowOp::Upsert {
                table: crate::Name::new("todo.items").unwrap(),
                key: RowKey::single(KeyPart::Text("a".into())),
                generation: 1,
                cells: crate::LiteMap::from_iter([(
                    crate::Name::new("title").unwrap(),
                    Value::Bytes(vec![7; len]),
                )]),
            }])
            .unwrap()
        };
        let mut seal = |len: usize| {
            UnsignedCommit::seal(&author.public(), draft.clone(), &with_title(len), &key, &mut rng)
        };
        for len in (0..300).chain(65_400..65_600) {
            let unsigned = seal(len).expect("well under the limit");
            let foreseen = envelope_len(unsigned.header_bytes.len(), unsigned.ciphertext.len());
            let parts = (unsigned.header_bytes.clone(), unsigned.ciphertext.clone());
            let commit = unsigned.sign(&author).unwrap();
            assert_eq!(commit.as_bytes().len(), foreseen, "len {len}");
            assert_eq!(Commit::id_of(commit.as_bytes()), Some(commit.id()), "len {len}");
            assert_read_back(&commit, &parts);
        }
        // The largest value that fits, found by bisection, signs to at most
        // the limit; one byte more is refused before signing (plaintexts are
        // padded, so the limit is not met exactly).
        let (mut fits, mut over) = (0, MAX_COMMIT_BYTES);
        while over - fits > 1 {
            let mid = (fits + over) / 2;
            if seal(mid).is_ok() { fits = mid } else { over = mid }
        }
        let largest = seal(fits).unwrap();
        let parts = (largest.header_bytes.clone(), largest.ciphertext.clone());
        let largest = largest.sign(&author).unwrap();
        assert!(largest.as_bytes().len() <= MAX_COMMIT_BYTES);
        assert_read_back(&largest, &parts);
        assert!(
            matches!(seal(fits + 1), Err(CommitError::TooLarge { len }) if len > MAX_COMMIT_BYTES)
        );
    }

    #[test]
    fn drafts_must_chain() {
        let (author, mut draft, changes, key, mut rng) = fixture();
        draft.seq = 2;
        assert_eq!(
            Commit::create(&author, draft, &changes, &key, &mut rng),
            Err(CommitError::BadChain { seq: 2 })
        );
    }
}
