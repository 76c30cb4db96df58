//! Stable error codes for negative vectors: the error class, then the
//! field or reason, so another implementation can compare results.

use basic_proto::{ClockAhead, CommitError, DecodeError, KeyError, SealError};

/// Code of a decoding error, e.g. `bad-length header.scope`.
pub fn decode(error: &DecodeError) -> String {
    match error {
        DecodeError::TooLarge { .. } => "too-large".into(),
        DecodeError::Malformed { .. } => "malformed".into(),
        DecodeError::TrailingBytes { .. } => "trailing-bytes".into(),
        DecodeError::NonCanonical { .. } => "non-canonical".into(),
        DecodeError::WrongType { field, .. } => format!("wrong-type {field}"),
        DecodeError::BadLength { field, .. } => format!("bad-length {field}"),
        DecodeError::InvalidValue { field, .. } => format!("invalid-value {field}"),
        DecodeError::BadKey { field, error } => format!("bad-key {field} {}", key(error)),
        DecodeError::UnsupportedVersion { .. } => "unsupported-version".into(),
    }
}

/// Code of a key, signature or text id error.
pub fn key(error: &KeyError) -> &'static str {
    match error {
        KeyError::InvalidPoint => "invalid-point",
        KeyError::WeakKey => "weak-key",
        KeyError::NonCanonicalKey => "non-canonical-key",
        KeyError::MixedOrderKey => "mixed-order-key",
        KeyError::BadSignature => "bad-signature",
        KeyError::UnknownPrefix(_) => "unknown-prefix",
        KeyError::WrongKind { .. } => "wrong-kind",
        KeyError::BadEncoding => "bad-encoding",
        KeyError::BadChecksum => "bad-checksum",
    }
}

/// Code of a commit error.
pub fn commit(error: &CommitError) -> String {
    match error {
        CommitError::Decode(e) => decode(e),
        CommitError::BadSignature => "bad-signature".into(),
        CommitError::BadChain { .. } => "bad-chain".into(),
        CommitError::TooLarge { .. } => "too-large".into(),
        CommitError::Undecryptable => "undecryptable".into(),
        CommitError::BadChanges(e) => format!("bad-changes {}", decode(e)),
    }
}

/// Code of a seal error.
pub fn seal(error: &SealError) -> &'static str {
    match error {
        SealError::LowOrderPoint => "low-order-point",
        SealError::DoesNotOpen => "does-not-open",
    }
}

/// Code of a clock hold-back.
pub fn clock(_: &ClockAhead) -> &'static str {
    "clock-ahead"
}
