//! The answering end of a sync session with one peer
//! (`protocol-spec/sync.md` §3–§6).
//!
//! [`Responder::handle`] takes one request frame and returns the response
//! frame. It reveals nothing — not its key, not whether it hosts the
//! database — and serves nothing before the peer has proved membership:
//! a stranger, a removed device and a requester for a database it does not
//! host receive the same frames. It serves only the peer's entitled view
//! (as of each request), takes from an app's push only the app's own
//! commits, bounds every response, and returns a [`Violation`] (answer
//! with its frame, then disconnect) for anything the protocol forbids.

use rand_core::CryptoRng;

use super::message::{ErrorCode, MAX_BATCH_BYTES, MAX_PARTS, MAX_REQUEST_BYTES, Message, Part};
use super::proof::{Side, Transcript, heads_message};
use super::store::{StoreFailure, SyncStore, entitled_view};
use super::summary::{Entry, View, digest};
use crate::commit::Commit;
use crate::control::{ControlOp, OpId};
use crate::keys::{KeyCache, PublicKey, SecretKey, SigningContext};

/// Most control operations a prelude may carry.
pub const MAX_PRELUDE_OPS: usize = 1024;
/// Ranges up to this long are answered with their commits, not split.
pub const SEND_WHOLE_RANGE: u64 = 32;
/// Reconciliation steps a peer may ask for per summary.
pub const MAX_RANGES_PER_ROUND: u32 = 4096;
/// The message of every `not a member` answer: the same whether the
/// responder hosts the database or not, and whoever the requester is.
pub const NOT_MEMBER: &str = "not a member";

/// Why a session was ended by this side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Violation {
    /// The error code sent to the peer.
    pub code: ErrorCode,
    /// Detail, also sent.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        message.truncate(super::message::MAX_MESSAGE_LEN);
        Self { code, message }
    }

    /// The frame that tells the peer.
    pub fn frame(&self) -> Vec<u8> {
        Message::Error { code: self.code, message: self.message.clone() }.encode()
    }
}

/// What answering a request did.
#[derive(Debug)]
pub enum Answer {
    /// Send this frame; the session goes on.
    Reply(Vec<u8>),
    /// Send this frame, then close the session: the peer broke the protocol.
    Close(Vec<u8>, Violation),
}

// One stage per session: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Stage {
    /// Waiting for `hello`.
    Fresh,
    /// `challenge` sent; waiting for `auth`. `hosted`: whether `hello`
    /// named this replica's database (which the answers never show).
    Challenged { transcript: Transcript, hosted: bool, prelude_offered: bool },
    /// The peer proved membership. `theirs`: what its summaries left here.
    Member { peer: PublicKey, view: View, theirs: Kept },
}

/// What a responder keeps of the requester's summaries in a session
/// (sync.md §4 step 2).
#[derive(Debug, Default)]
struct Kept {
    /// Its entries as both sides keep them: the base of its change lists.
    list: Option<Vec<Entry>>,
    /// The control heads of its last summary, which an empty `control` in
    /// a change list stands for.
    heads: Vec<OpId>,
    /// Whether a summary of this session was compared with our holdings
    /// yet (the first one is, sync.md §6).
    compared: bool,
}

/// The answering end of a session with one peer.
#[derive(Debug)]
pub struct Responder {
    key: SecretKey,
    local_transport: Vec<u8>,
    peer_transport: Vec<u8>,
    stage: Stage,
    ranges_this_round: u32,
    /// The principal whose key the peer proved it holds, member or not.
    proved: Option<PublicKey>,
    /// Whether the peer showed what a round of ours should fetch from it.
    pull_wanted: bool,
}

impl Responder {
    /// A responder for the peer known to the transport as `peer_transport`;
    /// `key` is this node's principal.
    pub fn new(key: SecretKey, local_transport: Vec<u8>, peer_transport: Vec<u8>) -> Self {
        Self {
            key,
            local_transport,
            peer_transport,
            stage: Stage::Fresh,
            ranges_this_round: 0,
            proved: None,
            pull_wanted: false,
        }
    }

    /// The principal whose key the peer proved, on this connection, that it
    /// holds (its `auth` verified), whether or not it is a member here: a
    /// removed device, say, which its own side may need to be told.
    pub fn proved(&self) -> Option<PublicKey> {
        self.proved
    }

    /// Whether, since the last call, the peer showed that it holds what
    /// this replica lacks and that its live pushes will not bring: the
    /// first summary of its session lists commits or control operations
    /// missing here (pushed while the session was down, they were
    /// dropped), or a push had items refused (such as a commit that came
    /// before the operation authorising it). Our own session with the peer
    /// should then start a round at once rather than at its interval
    /// (sync.md §6).
    pub fn take_pull_wanted(&mut self) -> bool {
        std::mem::take(&mut self.pull_wanted)
    }

    /// The peer's principal, once it has proved membership.
    pub fn peer(&self) -> Option<PublicKey> {
        match &self.stage {
            Stage::Member { peer, .. } => Some(*peer),
            _ => None,
        }
    }

    /// Answers one request frame. A store failure is returned as an error:
    /// the session ends without blaming the peer.
    pub fn handle(
        &mut self,
        store: &mut impl SyncStore,
        frame: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<Answer, StoreFailure> {
        match self.answer(store, frame, rng) {
            Ok(message) => Ok(Answer::Reply(message.encode())),
            Err(Failure::Store(failure)) => Err(failure),
            Err(Failure::Peer(violation)) => {
                self.stage = Stage::Fresh;
                Ok(Answer::Close(violation.frame(), violation))
            }
        }
    }

    fn answer(
        &mut self,
        store: &mut impl SyncStore,
        frame: &[u8],
        rng: &mut impl CryptoRng,
    ) -> Result<Message, Failure> {
        let request = Message::decode(frame, MAX_REQUEST_BYTES, store.keys())
            .map_err(|e| Violation::new(ErrorCode::Malformed, e.to_string()))?;
        match (request, &mut self.stage) {
            (Message::Hello { database, key, nonce }, _) => {
                // The same answer whether or not this replica hosts the
                // database: a nonce drawn either way, and nothing else.
                let hosted = database == store.database();
                let mut responder_nonce = [0; 32];
                rng.fill_bytes(&mut responder_nonce);
                let transcript = Transcript {
                    database,
                    requester: key,
                    requester_nonce: nonce,
                    requester_transport: self.peer_transport.clone(),
                    responder_nonce,
                    responder_transport: self.local_transport.clone(),
                };
                self.stage = Stage::Challenged { transcript, hosted, prelude_offered: false };
                Ok(Message::Challenge { nonce: responder_nonce })
            }
            (
                Message::Auth { proof, prelude },
                Stage::Challenged { transcript, hosted, prelude_offered },
            ) => {
                if !transcript.verify(Side::Requester, &proof) {
                    return Err(Violation::new(ErrorCode::BadProof, "membership proof").into());
                }
                if *hosted {
                    self.proved = Some(transcript.requester);
                }
                if !prelude.is_empty() {
                    if *prelude_offered || prelude.len() > MAX_PRELUDE_OPS {
                        return Err(Violation::new(ErrorCode::Unexpected, "prelude").into());
                    }
                    *prelude_offered = true;
                    let invalid = if *hosted {
                        store.ingest_ops(&prelude)?.invalid
                    } else {
                        // Checked as a host would, so that the answer
                        // does not tell.
                        prelude.iter().filter(|op| ControlOp::decode(op).is_err()).count() as u64
                    };
                    if invalid > 0 {
                        return Err(Violation::new(ErrorCode::BadData, "invalid prelude op").into());
                    }
                }
                let peer = transcript.requester;
                let entitled = match hosted {
                    true => entitled_view(&store.auth(), &peer),
                    false => None,
                };
                match entitled {
                    Some(view) => {
                        let me = self.key.public();
                        let proof = transcript.prove(Side::Responder(me), &self.key);
                        self.stage = Stage::Member { peer, view, theirs: Kept::default() };
                        Ok(Message::Ready { key: me, proof, heads: store.control_heads()? })
                    }
                    // Not a member here (yet): the peer may retry once with
                    // its control log as a prelude.
                    None if !*prelude_offered => Ok(Message::Error {
                        code: ErrorCode::NotMember,
                        message: NOT_MEMBER.into(),
                    }),
                    None => Err(Violation::new(ErrorCode::NotMember, NOT_MEMBER).into()),
                }
            }
            (request, Stage::Member { peer, view, theirs }) => {
                // What the peer is entitled to now: a revocation or a
                // removal that arrived during the session applies at once.
                let Some(now) = entitled_view(&store.auth(), peer) else {
                    return Err(Violation::new(ErrorCode::NotMember, NOT_MEMBER).into());
                };
                *view = now;
                let (peer, view) = (*peer, view.clone());
                let mut kept = std::mem::take(theirs);
                let answer = self.serve(store, request, peer, &view, &mut kept);
                if let Stage::Member { theirs, .. } = &mut self.stage {
                    *theirs = kept;
                }
                answer
            }
            (request, _) => Err(Violation::new(
                ErrorCode::Unexpected,
                format!("{} before the membership proof", request.name()),
            )
            .into()),
        }
    }

    fn serve(
        &mut self,
        store: &mut impl SyncStore,
        request: Message,
        peer: PublicKey,
        entitled: &View,
        kept: &mut Kept,
    ) -> Result<Message, Failure> {
        match request {
            Message::ControlWant { heads } => {
                let mut ops = Vec::new();
                let mut bytes = 0;
                let mut more = false;
                for op in store.ops_since(&heads)? {
                    if bytes >= MAX_BATCH_BYTES {
                        more = true;
                        break;
                    }
                    bytes += op.len();
                    ops.push(op);
                }
                Ok(Message::Ops { ops, more })
            }
            Message::Summary { view, digest: theirs, entries, delta, control, sign } => {
                self.ranges_this_round = 0;
                let view = view.intersect(entitled);
                let ours = store.entries(&view)?;
                let our_digest = digest(&ours);
                // In a change list, no heads stand for the last summary's.
                let control = if delta && control.is_empty() {
                    std::mem::take(&mut kept.heads)
                } else {
                    control
                };
                kept.heads = control.clone();
                let listed = match (entries, delta) {
                    (Some(changes), true) => kept
                        .list
                        .take()
                        .map(|base| apply_changes(base, changes))
                        .filter(|merged| digest(merged) == theirs),
                    (entries, _) => entries,
                };
                kept.list = listed.clone();
                // A change list it could not apply is compared when the
                // full list comes.
                let readable = listed.is_some() || !delta;
                if readable && !kept.compared {
                    kept.compared = true;
                    // Without a list, any difference may be theirs.
                    let more_commits = our_digest != theirs
                        && listed.as_deref().is_none_or(|list| shows_more(&ours, list));
                    self.pull_wanted |= more_commits || lacks_op(store, &kept.heads)?;
                }
                let (shown, commits, more) = if our_digest == theirs {
                    (Vec::new(), Vec::new(), false)
                } else {
                    match listed {
                        // A change list we cannot apply: ask for the full list.
                        None if delta => (Vec::new(), Vec::new(), true),
                        None => (ours, Vec::new(), false),
                        Some(theirs) => {
                            let shown = differing(&ours, &theirs);
                            let (commits, more) = tails(store, &view, &shown, &theirs)?;
                            (shown, commits, more)
                        }
                    }
                };
                // The requester's list as both sides keep it from now on:
                // what it listed, with the entries this reply shows in place
                // once the reply brings all we have (sync.md §4 step 2).
                // After a partial one an author it sent nothing of yet
                // would be kept as held, and no change list takes one out.
                if !more {
                    kept.list = kept.list.take().map(|base| apply_changes(base, shown.clone()));
                }
                let heads = store.control_heads()?;
                let control = if heads == control { Vec::new() } else { heads };
                // Signed when the digests differ or the requester asks: an
                // equal reply it did not ask to be signed can show it no
                // rollback, so a signature there would be evidence of nothing
                // (sync.md §5).
                let signature = (sign || our_digest != theirs).then(|| {
                    self.key.sign(
                        SigningContext::SyncHeads,
                        &heads_message(store.database(), &peer, &our_digest, &shown),
                    )
                });
                Ok(Message::Reply {
                    digest: our_digest,
                    entries: shown,
                    commits,
                    more,
                    control,
                    signature,
                })
            }
            Message::Ranges { view, author, parts } => {
                self.ranges_this_round += 1;
                if self.ranges_this_round > MAX_RANGES_PER_ROUND {
                    return Err(
                        Violation::new(ErrorCode::Busy, "too many ranges this round").into()
                    );
                }
                let view = view.intersect(entitled);
                let mut split = Vec::new();
                let mut commits = Vec::new();
                let mut budget = MAX_BATCH_BYTES;
                for Part { lo, hi, held } in parts {
                    if store.fingerprint(&view, &author, lo, hi)? == held {
                        continue;
                    }
                    if hi - lo < SEND_WHOLE_RANGE && budget > 0 {
                        let before: usize = commits.iter().map(Vec::len).sum();
                        store.commits(&view, &author, lo, hi, budget, &mut commits)?;
                        let after: usize = commits.iter().map(Vec::len).sum();
                        budget = budget.saturating_sub(after - before);
                    } else if split.len() < MAX_PARTS {
                        split.push((lo, hi));
                    }
                }
                Ok(Message::RangesReply { split, commits })
            }
            Message::Push { ops, commits } => {
                check_push(store.keys(), peer, entitled, &ops, &commits)?;
                let mut stored = store.ingest_ops(&ops)?;
                stored.add(store.ingest_commits(&commits)?);
                if stored.invalid > 0 {
                    return Err(Violation::new(ErrorCode::BadData, "invalid commit or op").into());
                }
                self.pull_wanted |= stored.refused > 0;
                Ok(Message::Ack { stored: stored.new })
            }
            request => Err(Violation::new(
                ErrorCode::Unexpected,
                format!("{} is not a request here", request.name()),
            )
            .into()),
        }
    }
}

/// What `peer` may push (`protocol-spec/sync.md` §6): commits in its
/// entitled view only; and an app (entitled to some scopes, not all)
/// only its own commits and no operations, since it issues none and
/// has nothing to relay. Devices, the root and pinning peers relay
/// anything they hold.
fn check_push(
    keys: &KeyCache,
    peer: PublicKey,
    entitled: &View,
    ops: &[Vec<u8>],
    commits: &[Vec<u8>],
) -> Result<(), Violation> {
    let View::Scopes(_) = entitled else { return Ok(()) };
    if !ops.is_empty() {
        return Err(Violation::new(ErrorCode::Forbidden, "an app pushed control operations"));
    }
    for bytes in commits {
        let commit = Commit::decode_with(bytes, keys)
            .map_err(|e| Violation::new(ErrorCode::BadData, format!("invalid commit: {e}")))?;
        let header = commit.header();
        if header.author != peer {
            return Err(Violation::new(ErrorCode::Forbidden, "an app pushed another's commit"));
        }
        if !entitled.contains(&header.scope) {
            return Err(Violation::new(
                ErrorCode::Forbidden,
                "a push outside the pusher's entitled view",
            ));
        }
    }
    Ok(())
}

/// Our entries that the requester's list does not match.
fn differing(ours: &[Entry], theirs: &[Entry]) -> Vec<Entry> {
    ours.iter().filter(|e| find(theirs, &e.author) != Some(**e)).copied().collect()
}

/// Whether the entries `theirs` show commits missing from `ours`: an
/// author above ours, or more of its commits.
fn shows_more(ours: &[Entry], theirs: &[Entry]) -> bool {
    theirs
        .iter()
        .any(|t| find(ours, &t.author).is_none_or(|o| t.max > o.max || t.held.count > o.held.count))
}

/// Whether one of the control heads `heads` is not admitted here.
fn lacks_op(store: &impl SyncStore, heads: &[OpId]) -> Result<bool, StoreFailure> {
    for head in heads {
        if !store.has_op(head)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `base` with the entries of `changes` put in place of (or beside) the
/// entries of the same authors, sorted by author.
pub(crate) fn apply_changes(base: Vec<Entry>, changes: Vec<Entry>) -> Vec<Entry> {
    let mut merged: std::collections::BTreeMap<[u8; 32], Entry> =
        base.into_iter().map(|e| (*e.author.as_bytes(), e)).collect();
    merged.extend(changes.into_iter().map(|e| (*e.author.as_bytes(), e)));
    merged.into_values().collect()
}

/// The entry of `author` in a list sorted by author.
pub(crate) fn find(entries: &[Entry], author: &PublicKey) -> Option<Entry> {
    entries
        .binary_search_by(|e| e.author.as_bytes().cmp(author.as_bytes()))
        .ok()
        .map(|i| entries[i])
}

/// The commits above what the requester holds of each differing author,
/// at most one batch.
fn tails(
    store: &impl SyncStore,
    view: &View,
    shown: &[Entry],
    theirs: &[Entry],
) -> Result<(Vec<Vec<u8>>, bool), StoreFailure> {
    let mut commits = Vec::new();
    let mut sent = 0usize;
    for entry in shown {
        let from = find(theirs, &entry.author).map_or(1, |t| t.max.saturating_add(1));
        if from > entry.max {
            continue;
        }
        if sent >= MAX_BATCH_BYTES {
            return Ok((commits, true));
        }
        let start = commits.len();
        let whole = store.commits(
            view,
            &entry.author,
            from,
            entry.max,
            MAX_BATCH_BYTES - sent,
            &mut commits,
        )?;
        sent += commits[start..].iter().map(Vec::len).sum::<usize>();
        if !whole {
            return Ok((commits, true));
        }
    }
    Ok((commits, false))
}

enum Failure {
    Store(StoreFailure),
    Peer(Violation),
}

impl From<StoreFailure> for Failure {
    fn from(failure: StoreFailure) -> Self {
        Failure::Store(failure)
    }
}

impl From<Violation> for Failure {
    fn from(violation: Violation) -> Self {
        Failure::Peer(violation)
    }
}
