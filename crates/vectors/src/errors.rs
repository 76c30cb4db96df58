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
        CommitError::WrongAuthor => "wrong-author".into(),
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

/// Code of a control-op decoding error.
pub fn op(error: &basic_proto::control::OpError) -> String {
    use basic_proto::control::OpError;
    match error {
        OpError::Decode(e) => decode(e),
        OpError::BadSignature => "bad-signature".into(),
        OpError::TooLarge { .. } => "too-large".into(),
    }
}

/// Code of a refusal to admit a control op.
pub fn insert(error: &basic_proto::control::InsertError) -> &'static str {
    use basic_proto::control::InsertError;
    match error {
        InsertError::WrongDatabase { .. } => "wrong-database",
        InsertError::ForeignGenesis(_) => "foreign-genesis",
        InsertError::RefusedParent(_) => "refused-parent",
        InsertError::StampNotAfterParents => "stamp-not-after-parents",
        InsertError::Unauthorised { .. } => "unauthorised",
        InsertError::Ahead(_) => "ahead",
    }
}

/// Code of a commit authorisation failure.
pub fn auth(error: &basic_proto::AuthError) -> &'static str {
    use basic_proto::AuthError;
    match error {
        AuthError::WrongDatabase => "wrong-database",
        AuthError::UnknownScope(_) => "unknown-scope",
        AuthError::UnknownEpoch { .. } => "unknown-epoch",
        AuthError::NoGrant(_) => "no-grant",
        AuthError::ReadOnly(_) => "read-only",
        AuthError::EpochNotGiven { .. } => "epoch-not-given",
        AuthError::AfterCutoff { .. } => "after-cutoff",
        AuthError::NotTheCutoffCommit { .. } => "not-the-cutoff-commit",
        AuthError::StampAfterEnd { .. } => "stamp-after-end",
    }
}
