//! Apps asking for access over the network: the frames of the
//! `/basic/access/0` protocol (`protocol-spec/apps.md`) and the access code
//! that tells an app where to ask.
//!
//! An app sends one of the user's devices an [`AccessAsk`] (its name, keys
//! and the scopes it wants, signed by its key for that device and fresh),
//! then [`AccessPoll`]s until the device's [`AccessAnswer`] is no longer
//! [`AccessAnswer::Pending`]. The device side is
//! [`Database::answer_access`](crate::Database::answer_access).
//!
//! Devices tell each other of the asks they receive ([`AccessRelay`]) and
//! of the asks their user denies ([`AccessDenial`]), each signed by the
//! device's own key, so that the user sees and answers a request on any
//! device.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use basic_proto::codec::{self, Fields};
use basic_proto::control::Rights;
use basic_proto::keys::{SIGNATURE_LEN, SigningContext};
use basic_proto::{DatabaseId, Name, Party, PublicKey, SealingKey, SecretKey};
use ciborium::Value as Cbor;
use data_encoding::BASE32_NOPAD;

use crate::flows::apps::{MAX_APP_NAME, MAX_REQUEST_SCOPES, request_fields, rights_of};
use crate::flows::pairing::MAX_ADDRESSES;

/// Largest access frame (ask or poll) a device reads, in bytes.
pub const MAX_ACCESS_FRAME: usize = 8 << 10;
/// How far an ask's or a poll's `issued_ms` may be from the device's clock.
pub const ACCESS_FRESHNESS_MS: u64 = 10 * 60_000;
/// What every access code starts with.
pub const ACCESS_CODE_PREFIX: &str = "basic-access:";
/// Longest refusal detail on the wire, in bytes.
const MAX_DETAIL: usize = 512;
/// Longest transport (libp2p peer id) a relay carries, in bytes.
const MAX_TRANSPORT: usize = 64;

/// Why an access frame, answer or code could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The frame is longer than its cap.
    #[error("an access frame of {len} bytes is over the cap of {max}")]
    Oversized {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not an access frame.
    #[error("not an access frame: {0}")]
    Malformed(String),
    /// Not an answer to an access frame.
    #[error("not an access answer: {0}")]
    BadAnswer(String),
    /// Not an access code.
    #[error("not an access code: {0}")]
    BadCode(String),
}

/// Why a device refused an access frame. Each says, for the app's
/// developer, what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefusal {
    /// The signature is not the app key's over this frame for this device.
    #[error("the signature does not verify: not signed by the app's key for this device")]
    BadSignature,
    /// `issued_ms` is too far from the device's clock.
    #[error(
        "the frame's time is more than 10 minutes from the device's clock: check the clock and ask again"
    )]
    Stale,
    /// This very ask was answered already.
    #[error("this ask was answered already: sign a new one to ask again")]
    Replayed,
    /// The database has no namespace of this name.
    #[error("the database has no namespace {0}")]
    UnknownScope(String),
    /// The app's name is empty, too long, or has control characters.
    #[error("an app name is 1 to {MAX_APP_NAME} printable characters")]
    BadName,
    /// No scope asked for, or too many.
    #[error("an ask names 1 to {MAX_REQUEST_SCOPES} scopes")]
    BadScopes,
    /// Too many asks already wait for the user on this device.
    #[error("too many requests already wait for the user on this device: try later")]
    TooMany,
    /// The frame is over its cap.
    #[error("the frame is over the cap of {MAX_ACCESS_FRAME} bytes")]
    Oversized,
    /// The frame is not an access frame.
    #[error("malformed access frame: {0}")]
    Malformed(String),
    /// The peer is not a device that can answer (a pinning peer, or a
    /// device removed from the database).
    #[error(
        "this peer is not a device of the database (a pinning peer or a removed device): ask another device"
    )]
    NotADevice,
    /// A poll from an app that asked nothing here (or whose answer was
    /// forgotten).
    #[error("this device holds no request of this app: ask first")]
    NoRequest,
    /// The device failed to answer (its storage).
    #[error("the device could not answer: {0}")]
    DeviceError(String),
    /// A relay or denial not signed by a device of the database (a
    /// stranger, a removed device, an app, a pinning peer).
    #[error("the relay is not signed by a device of the database")]
    NotFromADevice,
    /// The app's key was revoked on this namespace: a revocation is
    /// permanent (control-log.md §5.3), so it is never granted again.
    #[error("this app's key was revoked on {0}, for good: make a new app identity and ask with it")]
    Revoked(String),
}

impl AccessRefusal {
    /// The refusal's code and detail on the wire.
    fn code(&self) -> (u64, Option<&str>) {
        match self {
            AccessRefusal::BadSignature => (1, None),
            AccessRefusal::Stale => (2, None),
            AccessRefusal::Replayed => (3, None),
            AccessRefusal::UnknownScope(scope) => (4, Some(scope)),
            AccessRefusal::BadName => (5, None),
            AccessRefusal::BadScopes => (6, None),
            AccessRefusal::TooMany => (7, None),
            AccessRefusal::Oversized => (8, None),
            AccessRefusal::Malformed(reason) => (9, Some(reason)),
            AccessRefusal::NotADevice => (10, None),
            AccessRefusal::NoRequest => (11, None),
            AccessRefusal::DeviceError(reason) => (12, Some(reason)),
            AccessRefusal::NotFromADevice => (13, None),
            AccessRefusal::Revoked(scope) => (14, Some(scope)),
        }
    }

    fn from_code(code: u64, detail: Option<String>) -> Result<Self, AccessError> {
        let text = || {
            detail
                .clone()
                .ok_or_else(|| AccessError::BadAnswer(format!("refusal {code} needs its detail")))
        };
        Ok(match code {
            1 => AccessRefusal::BadSignature,
            2 => AccessRefusal::Stale,
            3 => AccessRefusal::Replayed,
            4 => AccessRefusal::UnknownScope(text()?),
            5 => AccessRefusal::BadName,
            6 => AccessRefusal::BadScopes,
            7 => AccessRefusal::TooMany,
            8 => AccessRefusal::Oversized,
            9 => AccessRefusal::Malformed(text()?),
            10 => AccessRefusal::NotADevice,
            11 => AccessRefusal::NoRequest,
            12 => AccessRefusal::DeviceError(text()?),
            13 => AccessRefusal::NotFromADevice,
            14 => AccessRefusal::Revoked(text()?),
            code => return Err(AccessError::BadAnswer(format!("unknown refusal code {code}"))),
        })
    }
}

impl From<AccessError> for AccessRefusal {
    fn from(error: AccessError) -> Self {
        match error {
            AccessError::Oversized { .. } => AccessRefusal::Oversized,
            AccessError::Malformed(reason)
            | AccessError::BadAnswer(reason)
            | AccessError::BadCode(reason) => AccessRefusal::Malformed(reason),
        }
    }
}

/// An app's signed ask for access, sent on `/basic/access/0` to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessAsk {
    /// The name the app shows the user.
    pub name: String,
    /// The app's keys.
    pub app: Party,
    /// The scopes (namespaces) it asks for, with the rights it wants on each.
    pub scopes: BTreeMap<Name, Rights>,
    /// When the app signed it (ms since 1970, the app's clock).
    pub issued_ms: u64,
    signature: [u8; SIGNATURE_LEN],
}

impl AccessAsk {
    /// Signs an ask by `app` addressed to the device whose libp2p peer id
    /// bytes are `device_transport`.
    pub fn sign(
        app: &SecretKey,
        device_transport: &[u8],
        name: String,
        scopes: BTreeMap<Name, Rights>,
        issued_ms: u64,
    ) -> Self {
        let mut ask = Self { name, app: Party::of(app), scopes, issued_ms, signature: [0; 64] };
        ask.signature =
            app.sign(SigningContext::AccessAsk, &signed_message(device_transport, &ask.body()));
        ask
    }

    /// The signed body: `[name, app key, app sealing key, [* [scope,
    /// rights]], issued_ms]` in deterministic CBOR.
    fn body(&self) -> Vec<u8> {
        let mut fields = request_fields(&self.name, &self.app, &self.scopes);
        fields.push(Cbor::Integer(self.issued_ms.into()));
        codec::encode_value(&Cbor::Array(fields))
    }

    fn decode(body: &[u8], signature: [u8; SIGNATURE_LEN]) -> Result<Self, AccessError> {
        let mut fields =
            Fields::new(codec::parse(body, "ask", MAX_ACCESS_FRAME).map_err(malformed)?, "ask", 5)
                .map_err(malformed)?;
        let name = fields.text("name", 0, MAX_ACCESS_FRAME).map_err(malformed)?;
        let key = public_key(fields.fixed("app").map_err(malformed)?)?;
        let sealing = SealingKey(fields.fixed("sealing").map_err(malformed)?);
        let mut scopes = BTreeMap::new();
        let items = codec::as_array(fields.next("scopes").map_err(malformed)?, "scopes", 0, 1024)
            .map_err(malformed)?;
        for item in items {
            let mut pair = Fields::new(item, "scope", 2).map_err(malformed)?;
            let scope = Name::new(pair.text("scope", 1, 64).map_err(malformed)?)
                .map_err(|e| AccessError::Malformed(e.to_string()))?;
            let rights = rights_of(pair.uint("rights").map_err(malformed)?).ok_or_else(|| {
                AccessError::Malformed("rights are 1 (read) or 2 (read-write)".into())
            })?;
            scopes.insert(scope, rights);
        }
        let issued_ms = fields.uint("issued").map_err(malformed)?;
        let ask = Self { name, app: Party { key, sealing }, scopes, issued_ms, signature };
        canonical(&ask.body(), body)?;
        Ok(ask)
    }

    /// Whether the app's key signed this ask for the device `device_transport`.
    pub(crate) fn verifies(&self, device_transport: &[u8]) -> bool {
        let message = signed_message(device_transport, &self.body());
        self.app.key.verify(SigningContext::AccessAsk, &message, &self.signature).is_ok()
    }

    /// The ask's id: what a device remembers to refuse it replayed, and
    /// what a relayed denial names.
    pub fn id(&self) -> [u8; 32] {
        blake3::derive_key("basic/v0 access ask id", &self.body())
    }
}

/// An app asking what became of its ask (signed, fresh, bound to the
/// device too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoll {
    /// The app's key.
    pub app: PublicKey,
    /// When the app signed it (ms since 1970, the app's clock).
    pub issued_ms: u64,
    signature: [u8; SIGNATURE_LEN],
}

impl AccessPoll {
    /// Signs a poll by `app` addressed to the device whose libp2p peer id
    /// bytes are `device_transport`.
    pub fn sign(app: &SecretKey, device_transport: &[u8], issued_ms: u64) -> Self {
        let mut poll = Self { app: app.public(), issued_ms, signature: [0; 64] };
        poll.signature =
            app.sign(SigningContext::AccessPoll, &signed_message(device_transport, &poll.body()));
        poll
    }

    /// The signed body: `[app key, issued_ms]` in deterministic CBOR.
    fn body(&self) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(self.app.as_bytes().to_vec()),
            Cbor::Integer(self.issued_ms.into()),
        ]))
    }

    fn decode(body: &[u8], signature: [u8; SIGNATURE_LEN]) -> Result<Self, AccessError> {
        let mut fields = Fields::new(
            codec::parse(body, "poll", MAX_ACCESS_FRAME).map_err(malformed)?,
            "poll",
            2,
        )
        .map_err(malformed)?;
        let app = public_key(fields.fixed("app").map_err(malformed)?)?;
        let issued_ms = fields.uint("issued").map_err(malformed)?;
        let poll = Self { app, issued_ms, signature };
        canonical(&poll.body(), body)?;
        Ok(poll)
    }

    /// Whether the app's key signed this poll for the device `device_transport`.
    pub(crate) fn verifies(&self, device_transport: &[u8]) -> bool {
        let message = signed_message(device_transport, &self.body());
        self.app.verify(SigningContext::AccessPoll, &message, &self.signature).is_ok()
    }
}

/// A device telling another of an app's ask it received (frame kind 2):
/// the ask as the app signed it, with the transport id it was addressed
/// to, signed by the relaying device's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRelay {
    /// The relaying device's key (its principal in the control log).
    pub device: PublicKey,
    /// The libp2p peer id bytes of the device the app addressed, which
    /// the app's signature binds.
    pub transport: Vec<u8>,
    /// The app's ask, with its signature.
    pub ask: AccessAsk,
    /// When the device signed the relay (ms since 1970, its clock).
    pub issued_ms: u64,
    signature: [u8; SIGNATURE_LEN],
}

impl AccessRelay {
    /// Relays `ask`, received as addressed to `transport`, signed by
    /// `device`.
    pub fn sign(device: &SecretKey, transport: Vec<u8>, ask: AccessAsk, issued_ms: u64) -> Self {
        let mut relay =
            Self { device: device.public(), transport, ask, issued_ms, signature: [0; 64] };
        relay.signature =
            device.sign(SigningContext::AccessRelay, &relay_message(2, &relay.body()));
        relay
    }

    /// The signed body: `[device key, transport, ask body, ask signature,
    /// issued_ms]` in deterministic CBOR.
    fn body(&self) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(self.device.as_bytes().to_vec()),
            Cbor::Bytes(self.transport.clone()),
            Cbor::Bytes(self.ask.body()),
            Cbor::Bytes(self.ask.signature.to_vec()),
            Cbor::Integer(self.issued_ms.into()),
        ]))
    }

    fn decode(body: &[u8], signature: [u8; SIGNATURE_LEN]) -> Result<Self, AccessError> {
        let mut fields = Fields::new(
            codec::parse(body, "relay", MAX_ACCESS_FRAME).map_err(malformed)?,
            "relay",
            5,
        )
        .map_err(malformed)?;
        let device = public_key(fields.fixed("device").map_err(malformed)?)?;
        let transport = fields.bytes("transport", 1, MAX_TRANSPORT).map_err(malformed)?;
        let ask_body = fields.bytes("ask", 1, MAX_ACCESS_FRAME).map_err(malformed)?;
        let ask_signature = fields.fixed("ask signature").map_err(malformed)?;
        let ask = AccessAsk::decode(&ask_body, ask_signature)?;
        let issued_ms = fields.uint("issued").map_err(malformed)?;
        let relay = Self { device, transport, ask, issued_ms, signature };
        canonical(&relay.body(), body)?;
        Ok(relay)
    }

    /// Whether `device` signed this relay.
    pub(crate) fn verifies(&self) -> bool {
        let message = relay_message(2, &self.body());
        self.device.verify(SigningContext::AccessRelay, &message, &self.signature).is_ok()
    }
}

/// A device telling another that its user denied an app's ask (frame
/// kind 3), signed by the device's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDenial {
    /// The denying device's key (its principal in the control log).
    pub device: PublicKey,
    /// The app whose ask was denied.
    pub app: PublicKey,
    /// The id of the denied ask ([`AccessAsk::id`]).
    pub ask: [u8; 32],
    /// When the device signed it (ms since 1970, its clock).
    pub issued_ms: u64,
    signature: [u8; SIGNATURE_LEN],
}

impl AccessDenial {
    /// The denial of `app`'s ask `ask`, signed by `device`.
    pub fn sign(device: &SecretKey, app: PublicKey, ask: [u8; 32], issued_ms: u64) -> Self {
        let mut denial = Self { device: device.public(), app, ask, issued_ms, signature: [0; 64] };
        denial.signature =
            device.sign(SigningContext::AccessRelay, &relay_message(3, &denial.body()));
        denial
    }

    /// The signed body: `[device key, app key, ask id, issued_ms]` in
    /// deterministic CBOR.
    fn body(&self) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(self.device.as_bytes().to_vec()),
            Cbor::Bytes(self.app.as_bytes().to_vec()),
            Cbor::Bytes(self.ask.to_vec()),
            Cbor::Integer(self.issued_ms.into()),
        ]))
    }

    fn decode(body: &[u8], signature: [u8; SIGNATURE_LEN]) -> Result<Self, AccessError> {
        let mut fields = Fields::new(
            codec::parse(body, "denial", MAX_ACCESS_FRAME).map_err(malformed)?,
            "denial",
            4,
        )
        .map_err(malformed)?;
        let device = public_key(fields.fixed("device").map_err(malformed)?)?;
        let app = public_key(fields.fixed("app").map_err(malformed)?)?;
        let ask = fields.fixed("ask").map_err(malformed)?;
        let issued_ms = fields.uint("issued").map_err(malformed)?;
        let denial = Self { device, app, ask, issued_ms, signature };
        canonical(&denial.body(), body)?;
        Ok(denial)
    }

    /// Whether `device` signed this denial.
    pub(crate) fn verifies(&self) -> bool {
        let message = relay_message(3, &self.body());
        self.device.verify(SigningContext::AccessRelay, &message, &self.signature).is_ok()
    }
}

/// What a device signs for a relay or a denial: the CBOR array `[kind,
/// body]`.
fn relay_message(kind: u64, body: &[u8]) -> Vec<u8> {
    codec::encode_value(&Cbor::Array(vec![Cbor::Integer(kind.into()), Cbor::Bytes(body.to_vec())]))
}

/// What the app signs: the CBOR array `[device transport id, body]`.
fn signed_message(device_transport: &[u8], body: &[u8]) -> Vec<u8> {
    codec::encode_value(&Cbor::Array(vec![
        Cbor::Bytes(device_transport.to_vec()),
        Cbor::Bytes(body.to_vec()),
    ]))
}

fn malformed(error: codec::DecodeError) -> AccessError {
    AccessError::Malformed(error.to_string())
}

fn public_key(bytes: [u8; 32]) -> Result<PublicKey, AccessError> {
    PublicKey::from_bytes(bytes).map_err(|e| AccessError::Malformed(format!("app key: {e}")))
}

/// A body must be the deterministic encoding of what it holds, so that one
/// ask has one id.
fn canonical(encoded: &[u8], received: &[u8]) -> Result<(), AccessError> {
    if encoded != received {
        return Err(AccessError::Malformed("the body is not in deterministic encoding".into()));
    }
    Ok(())
}

/// Any frame, as the device decodes it:
///
/// ```text
/// frame = [0, body: bstr, signature: bstr]   ; ask (from an app)
///       / [1, body: bstr, signature: bstr]   ; poll (from an app)
///       / [2, body: bstr, signature: bstr]   ; relay (from a device)
///       / [3, body: bstr, signature: bstr]   ; denial (from a device)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessFrame {
    /// An ask for access.
    Ask(AccessAsk),
    /// A poll for the answer.
    Poll(AccessPoll),
    /// Another device's relay of an ask it received.
    Relay(AccessRelay),
    /// Another device's word that its user denied an ask.
    Denial(AccessDenial),
}

impl AccessFrame {
    /// The frame as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (kind, body, signature) = match self {
            AccessFrame::Ask(ask) => (0, ask.body(), ask.signature),
            AccessFrame::Poll(poll) => (1, poll.body(), poll.signature),
            AccessFrame::Relay(relay) => (2, relay.body(), relay.signature),
            AccessFrame::Denial(denial) => (3, denial.body(), denial.signature),
        };
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Integer(kind.into()),
            Cbor::Bytes(body),
            Cbor::Bytes(signature.to_vec()),
        ]))
    }

    /// Reads a frame received from an app or a device (untrusted bytes).
    /// No signature is checked here: an app's is bound to the device that
    /// reads it, a device's must be checked against its control log.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AccessError> {
        if bytes.len() > MAX_ACCESS_FRAME {
            return Err(AccessError::Oversized { len: bytes.len(), max: MAX_ACCESS_FRAME });
        }
        let value = codec::parse(bytes, "access frame", MAX_ACCESS_FRAME).map_err(malformed)?;
        let mut fields = Fields::new(value, "access frame", 3).map_err(malformed)?;
        let kind = fields.uint("kind").map_err(malformed)?;
        let body = fields.bytes("body", 1, MAX_ACCESS_FRAME).map_err(malformed)?;
        let signature = fields.fixed("signature").map_err(malformed)?;
        match kind {
            0 => Ok(AccessFrame::Ask(AccessAsk::decode(&body, signature)?)),
            1 => Ok(AccessFrame::Poll(AccessPoll::decode(&body, signature)?)),
            2 => Ok(AccessFrame::Relay(AccessRelay::decode(&body, signature)?)),
            3 => Ok(AccessFrame::Denial(AccessDenial::decode(&body, signature)?)),
            kind => Err(AccessError::Malformed(format!("unknown access frame kind {kind}"))),
        }
    }
}

/// The device's answer to an access frame:
///
/// ```text
/// answer = [0]                          ; pending: waiting for the user
///        / [1, ops: [* bstr]]           ; granted: every control operation
///        / [2]                          ; denied
///        / [3]                          ; expired: ask again
///        / [4, code: uint, detail: tstr / null]   ; refused
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessAnswer {
    /// Waiting for the user.
    Pending,
    /// Approved: every control operation of the database (as
    /// [`JoinAnswer::Joined`](crate::JoinAnswer::Joined) carries), from
    /// which the app builds its replica.
    Granted(Vec<Vec<u8>>),
    /// The user denied the request.
    Denied,
    /// Not answered in time; ask again.
    Expired,
    /// The frame was refused.
    Refused(AccessRefusal),
}

impl AccessAnswer {
    /// The answer frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let kind = |k: u64| Cbor::Integer(k.into());
        codec::encode_value(&Cbor::Array(match self {
            AccessAnswer::Pending => vec![kind(0)],
            AccessAnswer::Granted(ops) => {
                vec![kind(1), Cbor::Array(ops.iter().map(|op| Cbor::Bytes(op.clone())).collect())]
            }
            AccessAnswer::Denied => vec![kind(2)],
            AccessAnswer::Expired => vec![kind(3)],
            AccessAnswer::Refused(refusal) => {
                let (code, detail) = refusal.code();
                let detail = match detail {
                    Some(detail) => Cbor::Text(cut(detail, MAX_DETAIL).to_owned()),
                    None => Cbor::Null,
                };
                vec![kind(4), kind(code), detail]
            }
        }))
    }

    /// Reads an answer of at most `max` bytes received from a device
    /// (untrusted bytes).
    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Self, AccessError> {
        let bad = |e: codec::DecodeError| AccessError::BadAnswer(e.to_string());
        let value = codec::parse(bytes, "access answer", max).map_err(bad)?;
        let mut fields = Fields::between(value, "access answer", 1, 3).map_err(bad)?;
        let kind = fields.uint("kind").map_err(bad)?;
        let count = fields.remaining();
        let answer = match (kind, count) {
            (0, 0) => AccessAnswer::Pending,
            (1, 1) => AccessAnswer::Granted(
                codec::as_array(fields.next("ops").map_err(bad)?, "ops", 0, usize::MAX)
                    .map_err(bad)?
                    .into_iter()
                    .map(|op| codec::as_bytes(op, "op", 1, max).map_err(bad))
                    .collect::<Result<_, _>>()?,
            ),
            (2, 0) => AccessAnswer::Denied,
            (3, 0) => AccessAnswer::Expired,
            (4, 2) => {
                let code = fields.uint("code").map_err(bad)?;
                let detail = match fields.next("detail").map_err(bad)? {
                    Cbor::Null => None,
                    text => Some(codec::as_text(text, "detail", 0, MAX_DETAIL).map_err(bad)?),
                };
                AccessAnswer::Refused(AccessRefusal::from_code(code, detail)?)
            }
            (kind, _) => {
                return Err(AccessError::BadAnswer(format!(
                    "answer kind {kind} with {count} more items"
                )));
            }
        };
        Ok(answer)
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Where an app asks for access: the database and addresses of one of the
/// user's devices, as the one line `basic app connect` prints
/// (`basic-access:` and the lowercase base32 of the CBOR array
/// `[database id, [* address]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCode {
    /// The database.
    pub database: DatabaseId,
    /// The device's network addresses, each ending in `/p2p/<peer id>`.
    pub addresses: Vec<String>,
}

impl fmt::Display for AccessCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = Cbor::Array(vec![
            Cbor::Bytes(self.database.0.to_vec()),
            Cbor::Array(self.addresses.iter().map(|a| Cbor::Text(a.clone())).collect()),
        ]);
        let body = BASE32_NOPAD.encode(&codec::encode_value(&value)).to_ascii_lowercase();
        write!(f, "{ACCESS_CODE_PREFIX}{body}")
    }
}

impl FromStr for AccessCode {
    type Err = AccessError;

    fn from_str(text: &str) -> Result<Self, AccessError> {
        let bad = |reason: &str| AccessError::BadCode(reason.to_owned());
        let body = text
            .trim()
            .strip_prefix(ACCESS_CODE_PREFIX)
            .ok_or_else(|| bad("it must start with basic-access:"))?;
        let bytes = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad("the text after the prefix is not base32 (cut or mistyped?)"))?;
        let e = |e: codec::DecodeError| AccessError::BadCode(e.to_string());
        let mut fields =
            Fields::new(codec::parse(&bytes, "access code", 8 << 10).map_err(e)?, "access code", 2)
                .map_err(e)?;
        let database = DatabaseId(fields.fixed("database").map_err(e)?);
        let addresses =
            codec::as_array(fields.next("addresses").map_err(e)?, "addresses", 1, MAX_ADDRESSES.0)
                .map_err(e)?
                .into_iter()
                .map(|a| codec::as_text(a, "address", 1, MAX_ADDRESSES.1))
                .collect::<Result<_, _>>()
                .map_err(e)?;
        Ok(Self { database, addresses })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Decoding arbitrary bytes never panics, and what decodes encodes
        /// back to itself.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(frame) = AccessFrame::from_bytes(&bytes) {
                prop_assert_eq!(AccessFrame::from_bytes(&frame.to_bytes()), Ok(frame));
            }
            if let Ok(answer) = AccessAnswer::from_bytes(&bytes, 1 << 20) {
                prop_assert_eq!(AccessAnswer::from_bytes(&answer.to_bytes(), 1 << 20), Ok(answer));
            }
            let _ = String::from_utf8_lossy(&bytes).parse::<AccessCode>();
        }

        /// Every signed ask round-trips and verifies for its device only.
        #[test]
        fn signed_asks_round_trip(
            name in ".{0,80}",
            scopes in proptest::collection::btree_map("[a-z][a-z0-9_]{0,20}", any::<bool>(), 0..40),
            issued_ms in any::<u64>(),
            seed in any::<[u8; 32]>(),
        ) {
            let app = SecretKey::from_seed(seed);
            let scopes = scopes
                .into_iter()
                .map(|(s, rw)| (Name::new(s).unwrap(), if rw { Rights::ReadWrite } else { Rights::Read }))
                .collect();
            let ask = AccessAsk::sign(&app, b"device", name, scopes, issued_ms);
            let frame = AccessFrame::Ask(ask.clone());
            prop_assert_eq!(AccessFrame::from_bytes(&frame.to_bytes()), Ok(frame));
            prop_assert!(ask.verifies(b"device") && !ask.verifies(b"devicf"));
        }
    }

    fn todo() -> BTreeMap<Name, Rights> {
        BTreeMap::from([(Name::new("todo").unwrap(), Rights::ReadWrite)])
    }

    #[test]
    fn frames_round_trip_and_verify_only_for_their_device() {
        let app = SecretKey::from_seed([7; 32]);
        let ask = AccessAsk::sign(&app, b"device", "Todo".into(), todo(), 1_000);
        let frame = AccessFrame::Ask(ask.clone());
        assert_eq!(AccessFrame::from_bytes(&frame.to_bytes()).unwrap(), frame);
        assert!(ask.verifies(b"device"));
        assert!(!ask.verifies(b"another device"));
        let poll = AccessPoll::sign(&app, b"device", 2_000);
        let frame = AccessFrame::Poll(poll.clone());
        assert_eq!(AccessFrame::from_bytes(&frame.to_bytes()).unwrap(), frame);
        assert!(poll.verifies(b"device") && !poll.verifies(b"other"));
        // An ask's signature is no poll's, and tampering breaks it.
        let mut tampered = ask.clone();
        tampered.name = "Bank".into();
        assert!(!tampered.verifies(b"device"));
    }

    #[test]
    fn relays_and_denials_round_trip_and_verify_only_as_signed() {
        let app = SecretKey::from_seed([7; 32]);
        let device = SecretKey::from_seed([8; 32]);
        let ask = AccessAsk::sign(&app, b"device", "Todo".into(), todo(), 1_000);
        let relay = AccessRelay::sign(&device, b"device".to_vec(), ask.clone(), 2_000);
        let frame = AccessFrame::Relay(relay.clone());
        assert_eq!(AccessFrame::from_bytes(&frame.to_bytes()).unwrap(), frame);
        assert!(relay.verifies() && relay.ask.verifies(&relay.transport));
        let mut moved = relay.clone();
        moved.transport = b"devicf".to_vec();
        assert!(!moved.verifies(), "the transport is signed by the device too");
        let denial = AccessDenial::sign(&device, app.public(), ask.id(), 3_000);
        let frame = AccessFrame::Denial(denial.clone());
        assert_eq!(AccessFrame::from_bytes(&frame.to_bytes()).unwrap(), frame);
        assert!(denial.verifies());
        let mut other = denial;
        other.ask = [0; 32];
        assert!(!other.verifies());
        // A relay's signature is no denial's: the kind is signed.
        let reframed = codec::encode_value(&Cbor::Array(vec![
            Cbor::Integer(3.into()),
            Cbor::Bytes(relay.body()),
            Cbor::Bytes(relay.signature.to_vec()),
        ]));
        assert!(AccessFrame::from_bytes(&reframed).is_err());
        assert_eq!(
            AccessAnswer::from_bytes(
                &AccessAnswer::Refused(AccessRefusal::NotFromADevice).to_bytes(),
                64
            ),
            Ok(AccessAnswer::Refused(AccessRefusal::NotFromADevice))
        );
    }

    #[test]
    fn answers_round_trip_and_garbage_is_an_error() {
        for answer in [
            AccessAnswer::Pending,
            AccessAnswer::Granted(vec![vec![1, 2], vec![3]]),
            AccessAnswer::Denied,
            AccessAnswer::Expired,
            AccessAnswer::Refused(AccessRefusal::UnknownScope("mail".into())),
            AccessAnswer::Refused(AccessRefusal::Malformed("why".into())),
            AccessAnswer::Refused(AccessRefusal::NoRequest),
        ] {
            assert_eq!(AccessAnswer::from_bytes(&answer.to_bytes(), 1 << 20).unwrap(), answer);
        }
        for garbage in [&b""[..], b"\x81\x05", b"\x82\x00\x00", b"\x83\x04\x04\xf6", b"\xff"] {
            assert!(AccessAnswer::from_bytes(garbage, 1 << 20).is_err(), "{garbage:?}");
        }
        let big = AccessAnswer::Granted(vec![vec![0; 100]]).to_bytes();
        assert!(AccessAnswer::from_bytes(&big, 50).is_err(), "over the cap");
    }

    #[test]
    fn non_canonical_and_oversized_frames_are_refused() {
        let app = SecretKey::from_seed([7; 32]);
        let poll = AccessPoll::sign(&app, b"d", 5);
        // The same poll with issued_ms as a 2-byte integer: not canonical.
        let mut body = poll.body();
        let last = body.len() - 1;
        body.splice(last.., [0x19, 0x00, 0x05]);
        let frame = codec::encode_value(&Cbor::Array(vec![
            Cbor::Integer(1.into()),
            Cbor::Bytes(body),
            Cbor::Bytes(poll.signature.to_vec()),
        ]));
        assert!(matches!(AccessFrame::from_bytes(&frame), Err(AccessError::Malformed(_))));
        let huge = vec![0; MAX_ACCESS_FRAME + 1];
        assert!(matches!(AccessFrame::from_bytes(&huge), Err(AccessError::Oversized { .. })));
    }

    #[test]
    fn access_codes_round_trip_and_bad_ones_say_why() {
        let code = AccessCode {
            database: DatabaseId([9; 32]),
            addresses: vec!["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW".into()],
        };
        let text = code.to_string();
        assert!(text.starts_with("basic-access:"));
        assert_eq!(text.parse::<AccessCode>().unwrap(), code);
        assert_eq!(format!("  {text}\n").parse::<AccessCode>().unwrap(), code);
        for bad in ["", "basic-invite-aaaa", "basic-access:!!", "basic-access:aaaa", &text[..30]] {
            assert!(matches!(bad.parse::<AccessCode>(), Err(AccessError::BadCode(_))), "{bad}");
        }
        let empty = AccessCode { addresses: vec![], ..code }.to_string();
        assert!(empty.parse::<AccessCode>().is_err(), "a code names at least one address");
    }
}
