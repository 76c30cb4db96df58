//! Sync frames and their deterministic CBOR encoding
//! (`protocol-spec/sync.md` §2 and §7).
//!
//! Every frame is `[version, kind, fields…]`. A request is answered by
//! exactly one response on the same exchange; which response kinds may
//! answer which request is part of the protocol, checked by the session.

use ciborium::Value as Cbor;

use super::summary::{DIGEST_LEN, Entry, Fingerprint, View, invalid};
use crate::codec::{self, DecodeError, Fields};
use crate::commit::MAX_COMMIT_BYTES;
use crate::control::OpId;
use crate::control::op::MAX_OP_BYTES;
use crate::keys::{DatabaseId, KeyCache, PublicKey, SIGNATURE_LEN};

/// The sync protocol version.
pub const SYNC_VERSION: u64 = 0;
/// Largest frame, either direction.
pub const MAX_FRAME_BYTES: usize = 4 * MAX_COMMIT_BYTES + 64 * 1024;
/// Largest request frame: a push carries at most one batch.
pub const MAX_REQUEST_BYTES: usize = MAX_COMMIT_BYTES + 64 * 1024;
/// Commit bytes a response carries before it stops and says `more` (one
/// commit more may go over it: a commit is never split).
pub const MAX_BATCH_BYTES: usize = MAX_COMMIT_BYTES;
/// Most commits or operations in one frame.
pub const MAX_BATCH_ITEMS: usize = 16_384;
/// Most authors a summary or reply lists.
pub const MAX_AUTHORS: usize = 4096;
/// Most control heads a frame lists.
pub const MAX_HEADS: usize = 256;
/// Most ranges in one reconciliation step.
pub const MAX_PARTS: usize = 16;
/// Longest error message.
pub const MAX_MESSAGE_LEN: usize = 256;

/// Why a peer ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A frame could not be decoded or broke a limit.
    Malformed = 1,
    /// The frame came out of order (e.g. data before the proof).
    Unexpected = 2,
    /// The peer is for another database or protocol version.
    Incompatible = 3,
    /// The membership proof did not verify.
    BadProof = 4,
    /// The peer is not a member here (even after its prelude).
    NotMember = 5,
    /// A commit or operation the peer sent failed verification.
    BadData = 6,
    /// The peer asked for more work than its budget allows.
    Busy = 7,
    /// The peer sent what it may not send: a push with a commit outside
    /// its entitled view, or, from an app, anything but its own commits.
    Forbidden = 8,
}

impl ErrorCode {
    fn from_u64(code: u64) -> Result<Self, DecodeError> {
        Ok(match code {
            1 => Self::Malformed,
            2 => Self::Unexpected,
            3 => Self::Incompatible,
            4 => Self::BadProof,
            5 => Self::NotMember,
            6 => Self::BadData,
            7 => Self::Busy,
            8 => Self::Forbidden,
            _ => return Err(invalid("error.code", "unknown error code")),
        })
    }
}

/// One range of one author's log and the fingerprint of what a side holds in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// First seq of the range.
    pub lo: u64,
    /// Last seq of the range (inclusive).
    pub hi: u64,
    /// What the sender holds in it.
    pub held: Fingerprint,
}

/// A sync frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Request: opens a session. The nonce binds the responder's proof.
    /// Whether or not the responder hosts `database`, it answers with a
    /// bare [`Message::Challenge`].
    Hello {
        /// The database.
        database: DatabaseId,
        /// The requester's principal key.
        key: PublicKey,
        /// 32 fresh random bytes.
        nonce: [u8; 32],
    },
    /// Response to `Hello`: the responder's nonce only. It says nothing of
    /// the responder (not its key, not whether it hosts the database).
    Challenge {
        /// 32 fresh random bytes.
        nonce: [u8; 32],
    },
    /// Request: the requester's proof, which comes first, with its control
    /// log when the responder said it does not know the requester.
    Auth {
        /// The requester's proof over the session transcript.
        proof: [u8; SIGNATURE_LEN],
        /// Encoded control operations, in causal order (usually none).
        prelude: Vec<Vec<u8>>,
    },
    /// Response to `Auth`: the requester proved it is a member; the
    /// responder's key, its proof and its control heads.
    Ready {
        /// The responder's principal key.
        key: PublicKey,
        /// The responder's proof over the session transcript.
        proof: [u8; SIGNATURE_LEN],
        /// The responder's control heads.
        heads: Vec<OpId>,
    },
    /// Request: the control operations not in the past of these heads.
    ControlWant {
        /// The requester's control heads.
        heads: Vec<OpId>,
    },
    /// Response to `ControlWant`: operations in causal order.
    Ops {
        /// Encoded control operations.
        ops: Vec<Vec<u8>>,
        /// Whether more remain.
        more: bool,
    },
    /// Request: what the requester holds in `view`.
    Summary {
        /// The scopes asked for.
        view: View,
        /// Digest of the requester's entries in the view.
        digest: [u8; DIGEST_LEN],
        /// The entries themselves, unless there are many; with `delta`,
        /// only those that changed since the last summary the responder
        /// answered in this session.
        entries: Option<Vec<Entry>>,
        /// Whether `entries` is a change list rather than the full list.
        delta: bool,
        /// The requester's control heads.
        control: Vec<OpId>,
        /// Whether the reply must be signed even if its digest equals
        /// ours: set when such a reply would show a rollback (§5).
        sign: bool,
    },
    /// Response to `Summary`: the responder's entries where they differ,
    /// and a first batch of the commits the requester lacks.
    Reply {
        /// Digest of the responder's entries in the view.
        digest: [u8; DIGEST_LEN],
        /// The responder's entries that differ from the requester's (all
        /// of them when the summary had none).
        entries: Vec<Entry>,
        /// Encoded commits the requester lacks, by author and seq.
        commits: Vec<Vec<u8>>,
        /// Whether the responder has more to send.
        more: bool,
        /// The responder's control heads, when they differ from the requester's.
        control: Vec<OpId>,
        /// The responder's signature over what it showed (§5): present
        /// when the digests differ or the summary asked for it.
        signature: Option<[u8; SIGNATURE_LEN]>,
    },
    /// Request: one reconciliation step over ranges of one author's log.
    Ranges {
        /// The scopes asked for.
        view: View,
        /// The author.
        author: PublicKey,
        /// The ranges and what the requester holds in each.
        parts: Vec<Part>,
    },
    /// Response to `Ranges`: ranges that differ and are too long to send
    /// whole, and every commit of the short ranges that differ.
    RangesReply {
        /// Ranges to split further.
        split: Vec<(u64, u64)>,
        /// The responder's commits in the short differing ranges.
        commits: Vec<Vec<u8>>,
    },
    /// Request: new commits and operations, pushed live.
    Push {
        /// Encoded control operations.
        ops: Vec<Vec<u8>>,
        /// Encoded commits.
        commits: Vec<Vec<u8>>,
    },
    /// Response to `Push`: stored (durably) before this was sent.
    Ack {
        /// How many items were new.
        stored: u64,
    },
    /// Response to anything: the session is over.
    Error {
        /// Why.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

impl Message {
    /// Whether this kind of frame is a request (else a response).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Message::Hello { .. }
                | Message::Auth { .. }
                | Message::ControlWant { .. }
                | Message::Summary { .. }
                | Message::Ranges { .. }
                | Message::Push { .. }
        )
    }

    /// The frame's kind on the wire: the second item of its array.
    fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => 1,
            Message::Challenge { .. } => 2,
            Message::Auth { .. } => 3,
            Message::Ready { .. } => 4,
            Message::ControlWant { .. } => 5,
            Message::Ops { .. } => 6,
            Message::Summary { .. } => 7,
            Message::Reply { .. } => 8,
            Message::Ranges { .. } => 9,
            Message::RangesReply { .. } => 10,
            Message::Push { .. } => 11,
            Message::Ack { .. } => 12,
            Message::Error { .. } => 13,
        }
    }

    /// The frame's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        // `kind` is 1 to 13 by its match above, every one named.
        kind_name(self.kind()).unwrap_or("garbage")
    }

    /// The frame's encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_value(&self.to_cbor())
    }

    fn to_cbor(&self) -> Cbor {
        let uint = |n: u64| Cbor::Integer(n.into());
        let bytes = |b: &[u8]| Cbor::Bytes(b.to_vec());
        let list = |items: &[Vec<u8>]| Cbor::Array(items.iter().map(|b| bytes(b)).collect());
        let heads = |ids: &[OpId]| Cbor::Array(ids.iter().map(|id| bytes(&id.0)).collect());
        let entries = |es: &[Entry]| Cbor::Array(es.iter().map(|e| e.to_cbor()).collect());
        let fields = match self {
            Message::Hello { database, key, nonce } => {
                vec![bytes(&database.0), bytes(key.as_bytes()), bytes(nonce)]
            }
            Message::Challenge { nonce } => vec![bytes(nonce)],
            Message::Auth { proof, prelude } => vec![bytes(proof), list(prelude)],
            Message::Ready { key, proof, heads: ids } => {
                vec![bytes(key.as_bytes()), bytes(proof), heads(ids)]
            }
            Message::ControlWant { heads: ids } => vec![heads(ids)],
            Message::Ops { ops, more } => vec![list(ops), Cbor::Bool(*more)],
            Message::Summary { view, digest, entries: es, delta, control, sign } => vec![
                view.to_cbor(),
                bytes(digest),
                es.as_deref().map_or(Cbor::Null, entries),
                Cbor::Bool(*delta),
                heads(control),
                Cbor::Bool(*sign),
            ],
            Message::Reply { digest, entries: es, commits, more, control, signature } => vec![
                bytes(digest),
                entries(es),
                list(commits),
                Cbor::Bool(*more),
                heads(control),
                signature.as_ref().map_or(Cbor::Null, |s| bytes(s)),
            ],
            Message::Ranges { view, author, parts } => vec![
                view.to_cbor(),
                bytes(author.as_bytes()),
                Cbor::Array(
                    parts
                        .iter()
                        .map(|p| {
                            Cbor::Array(vec![
                                uint(p.lo),
                                uint(p.hi),
                                uint(p.held.count),
                                bytes(&p.held.sum_bytes()),
                            ])
                        })
                        .collect(),
                ),
            ],
            Message::RangesReply { split, commits } => vec![
                Cbor::Array(
                    split.iter().map(|(lo, hi)| Cbor::Array(vec![uint(*lo), uint(*hi)])).collect(),
                ),
                list(commits),
            ],
            Message::Push { ops, commits } => vec![list(ops), list(commits)],
            Message::Ack { stored } => vec![uint(*stored)],
            Message::Error { code, message } => {
                vec![uint(*code as u64), Cbor::Text(message.clone())]
            }
        };
        let mut items = vec![uint(SYNC_VERSION), uint(self.kind().into())];
        items.extend(fields);
        Cbor::Array(items)
    }

    /// Decodes a frame of at most `max` bytes, which must be in
    /// deterministic form, checking every field and limit.
    pub fn decode(bytes: &[u8], max: usize, keys: &KeyCache) -> Result<Self, DecodeError> {
        let value = codec::parse(bytes, "sync frame", max.min(MAX_FRAME_BYTES))?;
        let mut f = Fields::between(value, "sync frame", 2, 8)?;
        let version = f.uint("frame.version")?;
        if version != SYNC_VERSION {
            return Err(DecodeError::UnsupportedVersion { what: "sync frame", version });
        }
        let kind = f.uint("frame.kind")?;
        let message = Self::fields(kind, &mut f, keys)?;
        if f.remaining() != 0 {
            return Err(DecodeError::BadLength {
                field: "sync frame",
                len: f.remaining(),
                min: 0,
                max: 0,
            });
        }
        if message.encode() != bytes {
            return Err(DecodeError::NonCanonical { what: "sync frame" });
        }
        Ok(message)
    }

    fn fields(kind: u64, f: &mut Fields, keys: &KeyCache) -> Result<Self, DecodeError> {
        let key = |f: &mut Fields, field| {
            keys.get(f.fixed(field)?).map_err(|error| DecodeError::BadKey { field, error })
        };
        Ok(match kind {
            1 => Message::Hello {
                database: DatabaseId(f.fixed("hello.database")?),
                key: key(f, "hello.key")?,
                nonce: f.fixed("hello.nonce")?,
            },
            2 => Message::Challenge { nonce: f.fixed("challenge.nonce")? },
            3 => Message::Auth {
                proof: f.fixed("auth.proof")?,
                prelude: byte_list(f.next("auth.prelude")?, "auth.prelude", MAX_OP_BYTES)?,
            },
            4 => Message::Ready {
                key: key(f, "ready.key")?,
                proof: f.fixed("ready.proof")?,
                heads: op_ids(f.next("ready.heads")?)?,
            },
            5 => Message::ControlWant { heads: op_ids(f.next("control-want.heads")?)? },
            6 => Message::Ops {
                ops: byte_list(f.next("ops.ops")?, "ops.ops", MAX_OP_BYTES)?,
                more: boolean(f.next("ops.more")?, "ops.more")?,
            },
            7 => Message::Summary {
                view: View::from_cbor(f.next("summary.view")?)?,
                digest: f.fixed("summary.digest")?,
                entries: match f.next("summary.entries")? {
                    Cbor::Null => None,
                    value => Some(entry_list(value, keys)?),
                },
                delta: boolean(f.next("summary.delta")?, "summary.delta")?,
                control: op_ids(f.next("summary.control")?)?,
                sign: boolean(f.next("summary.sign")?, "summary.sign")?,
            },
            8 => Message::Reply {
                digest: f.fixed("reply.digest")?,
                entries: entry_list(f.next("reply.entries")?, keys)?,
                commits: byte_list(f.next("reply.commits")?, "reply.commits", MAX_COMMIT_BYTES)?,
                more: boolean(f.next("reply.more")?, "reply.more")?,
                control: op_ids(f.next("reply.control")?)?,
                signature: match f.next("reply.signature")? {
                    Cbor::Null => None,
                    value => Some(codec::as_fixed(value, "reply.signature")?),
                },
            },
            9 => Message::Ranges {
                view: View::from_cbor(f.next("ranges.view")?)?,
                author: key(f, "ranges.author")?,
                parts: codec::as_array(f.next("ranges.parts")?, "ranges.parts", 1, MAX_PARTS)?
                    .into_iter()
                    .map(part)
                    .collect::<Result<_, _>>()?,
            },
            10 => Message::RangesReply {
                split: codec::as_array(
                    f.next("ranges-reply.split")?,
                    "ranges-reply.split",
                    0,
                    MAX_PARTS,
                )?
                .into_iter()
                .map(|value| {
                    let mut r = Fields::new(value, "range", 2)?;
                    range(r.uint("range.lo")?, r.uint("range.hi")?)
                })
                .collect::<Result<_, _>>()?,
                commits: byte_list(
                    f.next("ranges-reply.commits")?,
                    "ranges-reply.commits",
                    MAX_COMMIT_BYTES,
                )?,
            },
            11 => Message::Push {
                ops: byte_list(f.next("push.ops")?, "push.ops", MAX_OP_BYTES)?,
                commits: byte_list(f.next("push.commits")?, "push.commits", MAX_COMMIT_BYTES)?,
            },
            12 => Message::Ack { stored: f.uint("ack.stored")? },
            13 => Message::Error {
                code: ErrorCode::from_u64(f.uint("error.code")?)?,
                message: f.text("error.message", 0, MAX_MESSAGE_LEN)?,
            },
            _ => return Err(invalid("frame.kind", "unknown frame kind")),
        })
    }
}

/// The kind of an encoded frame, by name, read from its header alone
/// (`"garbage"` when it has none): for logs and traces.
pub fn frame_name(frame: &[u8]) -> &'static str {
    // Every frame is a CBOR array [version, kind, ...]: the kind is the
    // third byte when both are small integers.
    frame.get(2).and_then(|&kind| kind_name(kind)).unwrap_or("garbage")
}

/// The names of the frame kinds, kind 1 first.
const KIND_NAMES: [&str; 13] = [
    "hello",
    "challenge",
    "auth",
    "ready",
    "control-want",
    "ops",
    "summary",
    "reply",
    "ranges",
    "ranges-reply",
    "push",
    "ack",
    "error",
];

/// The name of frame kind `kind`, if there is one.
fn kind_name(kind: u8) -> Option<&'static str> {
    KIND_NAMES.get(usize::from(kind).checked_sub(1)?).copied()
}

fn range(lo: u64, hi: u64) -> Result<(u64, u64), DecodeError> {
    if lo == 0 || lo > hi {
        return Err(invalid("range", "must satisfy 1 <= lo <= hi"));
    }
    Ok((lo, hi))
}

fn part(value: Cbor) -> Result<Part, DecodeError> {
    let mut f = Fields::new(value, "part", 4)?;
    let (lo, hi) = range(f.uint("part.lo")?, f.uint("part.hi")?)?;
    let count = f.uint("part.count")?;
    let sum = u128::from_le_bytes(f.fixed("part.sum")?);
    Ok(Part { lo, hi, held: Fingerprint { count, sum } })
}

fn boolean(value: Cbor, field: &'static str) -> Result<bool, DecodeError> {
    match value {
        Cbor::Bool(b) => Ok(b),
        _ => Err(DecodeError::WrongType { field, expected: "bool" }),
    }
}

fn byte_list(value: Cbor, field: &'static str, max: usize) -> Result<Vec<Vec<u8>>, DecodeError> {
    codec::as_array(value, field, 0, MAX_BATCH_ITEMS)?
        .into_iter()
        .map(|item| codec::as_bytes(item, field, 1, max))
        .collect()
}

fn op_ids(value: Cbor) -> Result<Vec<OpId>, DecodeError> {
    codec::as_array(value, "heads", 0, MAX_HEADS)?
        .into_iter()
        .map(|item| codec::as_fixed(item, "heads.id").map(OpId))
        .collect()
}

fn entry_list(value: Cbor, keys: &KeyCache) -> Result<Vec<Entry>, DecodeError> {
    let entries: Vec<Entry> = codec::as_array(value, "entries", 0, MAX_AUTHORS)?
        .into_iter()
        .map(|item| Entry::from_cbor(item, keys))
        .collect::<Result<_, _>>()?;
    if entries.windows(2).any(|w| w[0].author.as_bytes() >= w[1].author.as_bytes()) {
        return Err(invalid("entries", "must be sorted by author, each once"));
    }
    Ok(entries)
}

/// The encoded entries, as signed in a reply.
pub(crate) fn entries_bytes(entries: &[Entry]) -> Vec<u8> {
    codec::encode_value(&Cbor::Array(entries.iter().map(|e| e.to_cbor()).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_named_by_its_header_as_by_its_message() {
        let messages = [
            Message::Challenge { nonce: [7; 32] },
            Message::ControlWant { heads: Vec::new() },
            Message::Push { ops: Vec::new(), commits: Vec::new() },
            Message::Ack { stored: 3 },
            Message::Error { code: ErrorCode::Busy, message: "later".into() },
        ];
        for message in messages {
            assert_eq!(frame_name(&message.encode()), message.name());
        }
        assert_eq!(frame_name(&[0x83, 0x01, 0x0e]), "garbage");
        assert_eq!(frame_name(&[0x83, 0x01, 0x00]), "garbage");
        assert_eq!(frame_name(&[0x83]), "garbage");
    }

    /// A summary's `sign` is a bool, and a reply's signature 64 bytes or
    /// null: each round-trips, and anything else is refused.
    #[test]
    fn sign_and_an_absent_signature_round_trip_and_nothing_else_decodes() {
        let keys = KeyCache::default();
        let decode = |bytes: &[u8]| Message::decode(bytes, MAX_FRAME_BYTES, &keys);
        for sign in [false, true] {
            let summary = Message::Summary {
                view: View::All,
                digest: [1; DIGEST_LEN],
                entries: Some(Vec::new()),
                delta: true,
                control: Vec::new(),
                sign,
            };
            let bytes = summary.encode();
            assert_eq!(decode(&bytes).unwrap(), summary);
            // `sign` is the last byte: an integer, or null, is no bool.
            for not_bool in [0x00, 0x01, 0xf6] {
                let mut wrong = bytes.clone();
                *wrong.last_mut().unwrap() = not_bool;
                assert!(
                    matches!(
                        decode(&wrong),
                        Err(DecodeError::WrongType { field: "summary.sign", .. })
                    ),
                    "{not_bool:#x}"
                );
            }
            // Without it (the frame one item shorter): refused.
            let mut short = bytes[..bytes.len() - 1].to_vec();
            short[0] -= 1;
            assert!(decode(&short).is_err());
        }
        let reply = |signature| Message::Reply {
            digest: [2; DIGEST_LEN],
            entries: Vec::new(),
            commits: Vec::new(),
            more: false,
            control: Vec::new(),
            signature,
        };
        for signature in [None, Some([9; SIGNATURE_LEN])] {
            assert_eq!(decode(&reply(signature).encode()).unwrap(), reply(signature));
        }
        // The signature is the last field: `58 40` and 64 bytes, or `f6`.
        let signed = reply(Some([9; SIGNATURE_LEN])).encode();
        let head = &signed[..signed.len() - 66];
        for (len, prefix) in [(63, vec![0x58, 0x3f]), (65, vec![0x58, 0x41]), (0, vec![0x40])] {
            let mut wrong = head.to_vec();
            wrong.extend_from_slice(&prefix);
            wrong.extend(std::iter::repeat_n(9, len));
            assert!(
                matches!(
                    decode(&wrong),
                    Err(DecodeError::BadLength { field: "reply.signature", .. })
                ),
                "{len} bytes"
            );
        }
        let mut not_bytes = head.to_vec();
        not_bytes.push(0xf5);
        assert!(decode(&not_bytes).is_err(), "true is no signature");
    }
}
