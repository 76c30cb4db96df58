//! The asking end of a sync session with one peer
//! (`protocol-spec/sync.md` §3–§6).
//!
//! A [`Requester`] pulls what this replica lacks from one peer and pushes
//! new local changes to it. It has at most one request outstanding. Drive
//! it like this, with `now` in milliseconds:
//!
//! 1. after any input, call [`Requester::poll_request`] and send the frame
//!    it returns, if any;
//! 2. feed the answer to [`Requester::handle_response`], or report a lost
//!    exchange (timeout, closed stream) with [`Requester::handle_failure`];
//! 3. drain [`Requester::poll_event`]; when [`Requester::is_closed`], drop
//!    the connection;
//! 4. when nothing is outstanding, wake up at [`Requester::poll_timeout`]
//!    and call `poll_request` again.

use std::collections::{BTreeMap, VecDeque};

use super::message::{ErrorCode, MAX_BATCH_BYTES, MAX_FRAME_BYTES, MAX_PARTS, Message, Part};
use super::proof::{Side, Transcript, heads_message};
use super::responder::{MAX_PRELUDE_OPS, Violation, apply_changes, find};
use super::store::{StoreFailure, SyncStore, entitled_view};
use super::summary::{Entry, View, digest};
use crate::control::{AuthState, OpId};
use crate::keys::{DatabaseId, PublicKey, SecretKey, SigningContext};
use crate::scope::ScopeId;

/// Summaries with at most this many authors carry their entries (one
/// round trip); larger ones send the digest first.
pub const INLINE_ENTRIES: usize = 64;
/// Bytes of live pushes queued for one peer; beyond, pushes are dropped and
/// left to the next summary.
pub const MAX_PUSH_QUEUE_BYTES: usize = 4 * MAX_BATCH_BYTES;
/// Reconciliation ranges queued at once.
pub const MAX_RANGE_QUEUE: usize = 4096;
/// Replies in a row that say `more` but bring nothing new before the peer
/// is cut off.
pub const MAX_FRUITLESS_REPLIES: u32 = 3;
/// Control exchanges per round before giving up on the peer's heads.
pub const MAX_CONTROL_EXCHANGES: u32 = 64;
/// BLAKE3 context deriving each handshake attempt's nonce.
pub const NONCE_CONTEXT: &str = "basic/v0 sync handshake nonce";
/// First retry delay after a failed exchange; doubles up to the resync interval.
pub const RETRY_MS: u64 = 1_000;

/// How a requester behaves.
#[derive(Debug, Clone)]
pub struct RequesterConfig {
    /// This node's principal.
    pub key: SecretKey,
    /// The database.
    pub database: DatabaseId,
    /// Our transport identity (libp2p peer id bytes).
    pub local_transport: Vec<u8>,
    /// The peer's transport identity.
    pub peer_transport: Vec<u8>,
    /// The scopes to replicate: [`View::All`] for devices and pinning peers.
    pub view: View,
    /// Time between summaries once in sync.
    pub resync_ms: u64,
    /// 32 bytes of fresh randomness, from which each handshake attempt's
    /// nonce is derived.
    pub nonce: [u8; 32],
    /// The principal the peer's transport identity proved in an earlier
    /// session, or on this connection to our responder
    /// ([`Requester::peer_proved`]), if any. The
    /// responder reveals nothing before we proved ourselves, so this is
    /// all we know of it when it says it does not know us: our control
    /// log goes to it as a prelude only if this principal is a member in
    /// our log (`protocol-spec/sync.md` §3).
    pub known_peer: Option<PublicKey>,
}

/// What happened in a session, for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer proved it is this member.
    Authenticated {
        /// Its principal key.
        peer: PublicKey,
    },
    /// A round ended: this replica holds everything the peer showed in the view.
    Synced {
        /// Commits and operations stored in the round.
        received: u64,
        /// Exchanges the round took.
        round_trips: u32,
    },
    /// The peer showed less of an author's log than it showed before: it
    /// withholds or rolled back. `evidence` is its signed reply.
    RolledBack {
        /// The author.
        author: PublicKey,
        /// Highest seq and count shown before.
        before: (u64, u64),
        /// What it shows now.
        now: (u64, u64),
        /// The reply frame, signed by the peer.
        evidence: Vec<u8>,
    },
    /// The session is over.
    Closed {
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
enum Sent {
    Hello {
        nonce: [u8; 32],
    },
    Auth {
        prelude: bool,
    },
    ControlWant,
    /// `listed`: the peer received our full list (whole or as changes);
    /// `sign`: we asked for the reply to be signed.
    Summary {
        ours: Vec<Entry>,
        heads: Vec<OpId>,
        listed: bool,
        delta: bool,
        sign: bool,
    },
    Ranges {
        author: PublicKey,
    },
    /// A push, kept until acknowledged so that a lost one is sent again.
    Push(Batch),
}

/// Our summary as the peer keeps it: the base of our change lists.
#[derive(Debug)]
struct Acked {
    /// Our entries, with those of its reply in place.
    entries: Vec<Entry>,
    /// Our control heads as that summary sent them.
    heads: Vec<OpId>,
}

#[derive(Debug, Default)]
struct Round {
    control: bool,
    summary: bool,
    inline: bool,
    ranges: VecDeque<(PublicKey, u64, u64)>,
    control_exchanges: u32,
    /// Replies in a row that said `more` and brought nothing new.
    fruitless: u32,
    received: u64,
    round_trips: u32,
}

/// Encoded control operations and commits, pushed together.
type Batch = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// A new commit to push, with what decides who gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its scope: only peers entitled to it receive it.
    pub scope: ScopeId,
    /// Its author: never pushed back to the author itself.
    pub author: PublicKey,
    /// The encoded commit.
    pub bytes: Vec<u8>,
}

/// One queued item of a live push.
#[derive(Debug)]
enum Queued {
    Op(Vec<u8>),
    Commit(Vec<u8>),
}

impl Queued {
    fn len(&self) -> usize {
        match self {
            Queued::Op(bytes) | Queued::Commit(bytes) => bytes.len(),
        }
    }
}

/// The asking end of a session with one peer.
#[derive(Debug)]
pub struct Requester {
    config: RequesterConfig,
    transcript: Option<Transcript>,
    /// Handshakes started.
    attempts: u64,
    auth: Option<(Message, bool)>,
    peer: Option<PublicKey>,
    outstanding: Option<Sent>,
    round: Option<Round>,
    next_round_at: u64,
    retry_ms: u64,
    pushes: VecDeque<Queued>,
    push_bytes: usize,
    /// No push before this time (after a failed one).
    push_after: u64,
    shown: BTreeMap<PublicKey, (u64, u64)>,
    /// Our summary as the peer keeps it (sync.md §4 step 2), once it
    /// answered one that listed our entries.
    acked: Option<Acked>,
    reconciled: BTreeMap<PublicKey, Entry>,
    events: VecDeque<Event>,
    closed: bool,
}

impl Requester {
    /// A requester that starts its handshake at the first poll. `shown` is
    /// what this peer showed in earlier sessions (see [`Requester::shown`]).
    pub fn new(config: RequesterConfig, shown: BTreeMap<PublicKey, (u64, u64)>) -> Self {
        Self {
            config,
            transcript: None,
            attempts: 0,
            auth: None,
            peer: None,
            outstanding: None,
            round: None,
            next_round_at: 0,
            retry_ms: RETRY_MS,
            pushes: VecDeque::new(),
            push_bytes: 0,
            push_after: 0,
            shown,
            acked: None,
            reconciled: BTreeMap::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// The peer's principal, once it proved membership.
    pub fn peer(&self) -> Option<PublicKey> {
        self.peer
    }

    /// The highest seq and count the peer has shown for each author.
    pub fn shown(&self) -> &BTreeMap<PublicKey, (u64, u64)> {
        &self.shown
    }

    /// Whether the session is over (drop the connection).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the last round completed and no request is outstanding.
    pub fn is_idle(&self) -> bool {
        self.peer.is_some() && self.round.is_none() && self.outstanding.is_none()
    }

    /// The peer proved it holds `principal` on this connection (to our
    /// responder, answering its requests): our control log may go to it as
    /// a prelude if our log lists `principal` as a member, as for a
    /// [`RequesterConfig::known_peer`].
    pub fn peer_proved(&mut self, principal: PublicKey) {
        self.config.known_peer = Some(principal);
    }

    /// Starts a round at the next poll instead of waiting for the interval.
    pub fn resync_now(&mut self) {
        self.next_round_at = 0;
    }

    /// Queues new operations and commits for a live push. Commits outside
    /// the peer's view, and the peer's own, are never pushed; an app
    /// pushes only its own commits and no operations (all a responder
    /// takes from it); what does not fit the queue, or comes before the
    /// peer proved membership, is dropped and left to the peer's next
    /// summary.
    pub fn push(&mut self, store: &impl SyncStore, ops: Vec<Vec<u8>>, commits: Vec<Outgoing>) {
        let Some(peer) = self.peer else { return };
        let auth = store.auth();
        let Some(view) = entitled_view(&auth, &peer) else { return };
        let me = self.config.key.public();
        let Some(mine) = entitled_view(&auth, &me) else { return };
        let app = matches!(mine, View::Scopes(_));
        let ops = ops.into_iter().filter(|_| !app).map(Queued::Op);
        let commits = commits
            .into_iter()
            .filter(|c| c.author != peer && view.contains(&c.scope))
            .filter(|c| !app || (c.author == me && mine.contains(&c.scope)))
            .map(|c| Queued::Commit(c.bytes));
        for item in ops.chain(commits) {
            if self.push_bytes + item.len() > MAX_PUSH_QUEUE_BYTES {
                return;
            }
            self.push_bytes += item.len();
            self.pushes.push_back(item);
        }
    }

    /// When to call [`Requester::poll_request`] next, if nothing else happens.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closed || self.outstanding.is_some() {
            return None;
        }
        match self.pushes.is_empty() {
            true => Some(self.next_round_at),
            false => Some(self.next_round_at.min(self.push_after)),
        }
    }

    /// The next request to send, if any.
    pub fn poll_request(
        &mut self,
        store: &mut impl SyncStore,
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreFailure> {
        if self.closed || self.outstanding.is_some() {
            return Ok(None);
        }
        if self.peer.is_none() {
            if let Some((frame, prelude)) = self.auth.take() {
                return Ok(Some(self.send(frame, Sent::Auth { prelude })));
            }
            if self.transcript.is_some() || now < self.next_round_at {
                return Ok(None);
            }
            // A fresh nonce for every attempt, derived from the configured one.
            self.attempts += 1;
            let mut hasher = blake3::Hasher::new_derive_key(NONCE_CONTEXT);
            hasher.update(&self.config.nonce);
            hasher.update(&self.attempts.to_le_bytes());
            let nonce = *hasher.finalize().as_bytes();
            let frame = Message::Hello {
                database: self.config.database,
                key: self.config.key.public(),
                nonce,
            };
            return Ok(Some(self.send(frame, Sent::Hello { nonce })));
        }
        // After a failed push, pushes wait for `push_after`; rounds go on.
        if now >= self.push_after && !self.pushes.is_empty() {
            // Queued items go out together, up to one batch (a lone item
            // larger than that goes alone).
            let (mut ops, mut commits, mut bytes) = (Vec::new(), Vec::new(), 0);
            while let Some(item) = self.pushes.front() {
                if bytes > 0 && bytes + item.len() > MAX_BATCH_BYTES {
                    break;
                }
                bytes += item.len();
                match self.pushes.pop_front() {
                    Some(Queued::Op(op)) => ops.push(op),
                    Some(Queued::Commit(commit)) => commits.push(commit),
                    None => break,
                }
            }
            self.push_bytes -= bytes;
            let frame = Message::Push { ops: ops.clone(), commits: commits.clone() };
            return Ok(Some(self.send(frame, Sent::Push((ops, commits)))));
        }
        if self.round.is_none() {
            if now < self.next_round_at {
                return Ok(None);
            }
            self.round = Some(Round::default());
        }
        let view = self.config.view.clone();
        let Some(round) = self.round.as_mut() else { return Ok(None) };
        round.round_trips += 1;
        if round.control {
            round.control = false;
            let heads = store.control_heads()?;
            return Ok(Some(self.send(Message::ControlWant { heads }, Sent::ControlWant)));
        }
        if !round.summary {
            round.summary = true;
            let ours = store.entries(&view)?;
            let heads = store.control_heads()?;
            let (entries, delta) = match &self.acked {
                // Only what changed since the peer last saw our list.
                Some(acked) if !round.inline => (
                    Some(
                        ours.iter()
                            .filter(|e| find(&acked.entries, &e.author) != Some(**e))
                            .copied()
                            .collect(),
                    ),
                    true,
                ),
                _ => {
                    let inline = round.inline || ours.len() <= INLINE_ENTRIES;
                    (inline.then(|| ours.clone()), false)
                }
            };
            let sign = self.equal_would_roll_back(&ours, &store.auth());
            let frame = Message::Summary {
                view,
                digest: digest(&ours),
                entries,
                delta,
                // Unchanged heads go as none in a change list.
                control: match &self.acked {
                    Some(acked) if delta && acked.heads == heads => Vec::new(),
                    _ => heads.clone(),
                },
                sign,
            };
            let listed = matches!(&frame, Message::Summary { entries: Some(_), .. });
            return Ok(Some(self.send(frame, Sent::Summary { ours, heads, listed, delta, sign })));
        }
        if let Some((author, lo, hi)) = round.ranges.pop_front() {
            let mut parts = Vec::with_capacity(MAX_PARTS);
            let width = (hi - lo) / MAX_PARTS as u64 + 1;
            let mut start = lo;
            while start <= hi {
                let end = start.saturating_add(width - 1).min(hi);
                let held = store.fingerprint(&view, &author, start, end)?;
                parts.push(Part { lo: start, hi: end, held });
                // `hi` comes from the peer and may be u64::MAX.
                match end.checked_add(1) {
                    Some(next) => start = next,
                    None => break,
                }
            }
            let frame = Message::Ranges { view, author, parts };
            return Ok(Some(self.send(frame, Sent::Ranges { author })));
        }
        // Nothing left: the round is over.
        round.round_trips -= 1;
        let (received, round_trips) = (round.received, round.round_trips);
        self.round = None;
        self.next_round_at = now.saturating_add(self.config.resync_ms);
        self.retry_ms = RETRY_MS;
        self.events.push_back(Event::Synced { received, round_trips });
        Ok(None)
    }

    fn send(&mut self, message: Message, sent: Sent) -> Vec<u8> {
        self.outstanding = Some(sent);
        message.encode()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The outstanding request failed (timeout, stream closed): start again
    /// from the handshake or the summary after a back-off.
    pub fn handle_failure(&mut self, now: u64) {
        match self.outstanding.take() {
            None => {}
            Some(Sent::Push((ops, commits))) => {
                // Sent again first, if the queue has room for it.
                let bytes: usize = ops.iter().chain(&commits).map(Vec::len).sum();
                if self.push_bytes + bytes <= MAX_PUSH_QUEUE_BYTES {
                    self.push_bytes += bytes;
                    let items = ops
                        .into_iter()
                        .map(Queued::Op)
                        .chain(commits.into_iter().map(Queued::Commit));
                    for item in items.rev() {
                        self.pushes.push_front(item);
                    }
                }
                self.push_after = now.saturating_add(self.retry_ms);
            }
            Some(Sent::Hello { .. } | Sent::Auth { .. }) => {
                self.transcript = None;
                self.auth = None;
                self.retry_later(now);
            }
            Some(_) => {
                self.round = None;
                // Ranges queued in the lost round were never compared.
                self.reconciled.clear();
                self.retry_later(now);
            }
        }
    }

    fn retry_later(&mut self, now: u64) {
        self.next_round_at = now.saturating_add(self.retry_ms);
        self.retry_ms = (self.retry_ms * 2).min(self.config.resync_ms.max(RETRY_MS));
    }

    /// Takes the answer to the outstanding request.
    pub fn handle_response(
        &mut self,
        store: &mut impl SyncStore,
        frame: &[u8],
        now: u64,
    ) -> Result<(), StoreFailure> {
        let Some(sent) = self.outstanding.take() else {
            self.close("an answer with no request outstanding".into());
            return Ok(());
        };
        let message = match Message::decode(frame, MAX_FRAME_BYTES, store.keys()) {
            Ok(message) => message,
            Err(error) => {
                self.close(format!("malformed answer: {error}"));
                return Ok(());
            }
        };
        if let Err(violation) = self.take(store, sent, message, frame, now)? {
            self.close(violation.to_string());
        }
        Ok(())
    }

    fn close(&mut self, reason: String) {
        self.closed = true;
        self.round = None;
        self.events.push_back(Event::Closed { reason });
    }

    fn take(
        &mut self,
        store: &mut impl SyncStore,
        sent: Sent,
        message: Message,
        frame: &[u8],
        now: u64,
    ) -> Result<Result<(), Violation>, StoreFailure> {
        let unexpected = |what: &str| Violation::new(ErrorCode::Unexpected, what.to_owned());
        match (sent, message) {
            (
                Sent::Auth { prelude: false },
                Message::Error { code: ErrorCode::NotMember, message },
            ) => {
                // The peer does not know us (or is no member, or hosts no
                // such database: it does not say which). Our control log
                // goes only to a peer whose transport identity proved a
                // principal that our log lists as a member; else the
                // session ends as the peer's refusal (the driver may ask
                // again later, once the peer may have learnt of us).
                let Some(transcript) = &self.transcript else {
                    return Ok(Err(unexpected("not-member before challenge")));
                };
                let known = self.config.known_peer;
                if known.is_none_or(|peer| entitled_view(&store.auth(), &peer).is_none()) {
                    return Ok(Err(Violation::new(
                        ErrorCode::NotMember,
                        format!("peer ended the session: {message}"),
                    )));
                }
                let mut prelude = store.ops_since(&[])?;
                prelude.truncate(MAX_PRELUDE_OPS);
                let proof = transcript.prove(Side::Requester, &self.config.key);
                self.auth = Some((Message::Auth { proof, prelude }, true));
                Ok(Ok(()))
            }
            (_, Message::Error { code, message }) => {
                Ok(Err(Violation::new(code, format!("peer ended the session: {message}"))))
            }
            (Sent::Hello { nonce }, Message::Challenge { nonce: theirs }) => {
                // We prove first: the responder reveals itself only to a member.
                let transcript = Transcript {
                    database: self.config.database,
                    requester: self.config.key.public(),
                    requester_nonce: nonce,
                    requester_transport: self.config.local_transport.clone(),
                    responder_nonce: theirs,
                    responder_transport: self.config.peer_transport.clone(),
                };
                let proof = transcript.prove(Side::Requester, &self.config.key);
                self.transcript = Some(transcript);
                self.auth = Some((Message::Auth { proof, prelude: Vec::new() }, false));
                Ok(Ok(()))
            }
            (Sent::Auth { .. }, Message::Ready { key: peer, proof, heads }) => {
                let Some(transcript) = &self.transcript else {
                    return Ok(Err(unexpected("ready before challenge")));
                };
                if !transcript.verify(Side::Responder(peer), &proof) {
                    return Ok(Err(Violation::new(ErrorCode::BadProof, "peer's proof")));
                }
                self.peer = Some(peer);
                self.acked = None;
                self.next_round_at = now;
                // The peer's membership is checked once we hold its
                // operations: now, or after the control exchange.
                let control = self.lacks_ops(store, &heads)?;
                self.round = Some(Round { control, ..Round::default() });
                if !control && entitled_view(&store.auth(), &peer).is_none() {
                    return Ok(Err(Violation::new(ErrorCode::NotMember, "peer is not a member")));
                }
                self.events.push_back(Event::Authenticated { peer });
                Ok(Ok(()))
            }
            (Sent::ControlWant, Message::Ops { ops, more }) => {
                let stored = store.ingest_ops(&ops)?;
                if stored.invalid > 0 {
                    return Ok(Err(Violation::new(ErrorCode::BadData, "invalid control op")));
                }
                let Some(round) = self.round.as_mut() else { return Ok(Ok(())) };
                round.received += stored.new;
                round.control_exchanges += 1;
                round.control =
                    more && stored.new > 0 && round.control_exchanges < MAX_CONTROL_EXCHANGES;
                let peer = self.peer;
                if peer.is_some_and(|p| entitled_view(&store.auth(), &p).is_none()) {
                    return Ok(Err(Violation::new(ErrorCode::NotMember, "peer is not a member")));
                }
                Ok(Ok(()))
            }
            (
                Sent::Summary { ours: sent, heads, listed, delta, sign },
                Message::Reply { digest: their_digest, entries, commits, more, control, signature },
            ) => {
                let Some(peer) = self.peer else { return Ok(Err(unexpected("reply"))) };
                let equal = their_digest == digest(&sent);
                match signature {
                    Some(signature) => {
                        let signed = heads_message(
                            self.config.database,
                            &self.config.key.public(),
                            &their_digest,
                            &entries,
                        );
                        if peer.verify(SigningContext::SyncHeads, &signed, &signature).is_err() {
                            return Ok(Err(Violation::new(ErrorCode::BadProof, "reply signature")));
                        }
                    }
                    // Unsigned only when it claims to hold exactly what we
                    // hold, lists nothing, and we did not ask (sync.md §5).
                    None if sign || !equal || !entries.is_empty() => {
                        return Ok(Err(Violation::new(
                            ErrorCode::BadProof,
                            "reply without the signature it needs",
                        )));
                    }
                    None => {}
                }
                let lacks_ops = !control.is_empty() && self.lacks_ops(store, &control)?;
                // A peer holding operations we lack may show less of an
                // author they ended: it is judged after we fetched them,
                // when this round summarises again (sync.md §5).
                let fetched = self.round.as_ref().is_some_and(|r| r.control_exchanges > 0);
                if (!lacks_ops || fetched)
                    && let Err(violation) = self.check_rollback(
                        &entries,
                        &sent,
                        equal || (listed && !(more && commits.is_empty() && delta)),
                        &their_digest,
                        signature.is_some().then_some(frame),
                        &store.auth(),
                    )
                {
                    return Ok(Err(violation));
                }
                let stored = store.ingest_commits(&commits)?;
                if stored.invalid > 0 {
                    return Ok(Err(Violation::new(ErrorCode::BadData, "invalid commit")));
                }
                // `more` with nothing sent after a change list: the peer
                // could not apply it and asks for the full list.
                let refused_changes = delta && more && commits.is_empty();
                // Our list as the peer keeps it: what we listed, with the
                // entries its reply showed in place once the reply brought
                // all it has (sync.md §4 step 2).
                self.acked = (listed && !refused_changes).then(|| Acked {
                    entries: match more {
                        true => sent.clone(),
                        false => apply_changes(sent.clone(), entries.clone()),
                    },
                    heads,
                });
                let view = self.config.view.clone();
                let Some(round) = self.round.as_mut() else { return Ok(Ok(())) };
                round.received += stored.new;
                if lacks_ops && round.control_exchanges < MAX_CONTROL_EXCHANGES {
                    // Operations first; then summarise again.
                    round.control = true;
                    round.summary = false;
                    return Ok(Ok(()));
                }
                if more {
                    round.fruitless = match stored.new {
                        0 => round.fruitless + 1,
                        _ => 0,
                    };
                    if round.fruitless >= MAX_FRUITLESS_REPLIES {
                        return Ok(Err(Violation::new(
                            ErrorCode::Busy,
                            "peer keeps offering commits that bring nothing",
                        )));
                    }
                    round.summary = false;
                    return Ok(Ok(()));
                }
                if !listed && their_digest != digest(&sent) {
                    // The digest differed and the peer listed its entries:
                    // now send ours in full.
                    round.inline = true;
                    round.summary = false;
                    return Ok(Ok(()));
                }
                let ours = store.entries(&view)?;
                for theirs in &entries {
                    if find(&ours, &theirs.author) == Some(*theirs)
                        || self.reconciled.get(&theirs.author) == Some(theirs)
                    {
                        continue;
                    }
                    let held = store.fingerprint(&view, &theirs.author, 1, theirs.max)?;
                    if held != theirs.held && round.ranges.len() < MAX_RANGE_QUEUE {
                        round.ranges.push_back((theirs.author, 1, theirs.max));
                        self.reconciled.insert(theirs.author, *theirs);
                    }
                }
                Ok(Ok(()))
            }
            (Sent::Ranges { author }, Message::RangesReply { split, commits }) => {
                let stored = store.ingest_commits(&commits)?;
                if stored.invalid > 0 {
                    return Ok(Err(Violation::new(ErrorCode::BadData, "invalid commit")));
                }
                let Some(round) = self.round.as_mut() else { return Ok(Ok(())) };
                round.received += stored.new;
                for (lo, hi) in split {
                    if round.ranges.len() < MAX_RANGE_QUEUE {
                        round.ranges.push_back((author, lo, hi));
                    }
                }
                Ok(Ok(()))
            }
            (Sent::Push(_), Message::Ack { .. }) => Ok(Ok(())),
            (_, message) => {
                Ok(Err(unexpected(&format!("{} was not the expected answer", message.name()))))
            }
        }
    }

    /// Whether any of `heads` is not admitted here.
    fn lacks_ops(&self, store: &impl SyncStore, heads: &[OpId]) -> Result<bool, StoreFailure> {
        for head in heads {
            if !store.has_op(head)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a reply with our own digest would show a rollback, by
    /// [`Requester::check_rollback`]'s rules: the peer claims then every
    /// author at our entry (none for an author we lack), so this is
    /// whether it showed more of some author before. We then ask it to
    /// sign such a reply (`sign`, sync.md §5); otherwise it may omit the
    /// signature, which would be evidence of nothing.
    fn equal_would_roll_back(&self, ours: &[Entry], auth: &AuthState) -> bool {
        self.shown.keys().any(|author| {
            let now = held(ours, author);
            shows_less(now, self.expected(author, ours, auth))
        })
    }

    /// The least the peer may show of `author` without rolling back: what
    /// it showed before; for an author our control log ended (a removed
    /// device, an app revoked on a scope), at most what we hold of it now,
    /// as its commits past the end stop counting on every replica that
    /// learns of the end (sync.md §5).
    fn expected(&self, author: &PublicKey, ours: &[Entry], auth: &AuthState) -> (u64, u64) {
        let before = self.shown.get(author).copied().unwrap_or((0, 0));
        if !is_ended(auth, author) {
            return before;
        }
        let now = held(ours, author);
        (before.0.min(now.0), before.1.min(now.1))
    }

    /// Records what the peer shows and reports any author it now shows
    /// less of, with `evidence`, the signed reply frame (`None` when the
    /// reply was not signed). Authors absent from `entries` are claimed
    /// equal to `ours` when `complete` (the peer compared against our full
    /// list) and that accounts for the peer's digest: a peer lists only
    /// what it holds, so an author it holds nothing of is absent too
    /// (sync.md §5). A rollback shown by an unsigned reply is refused, not
    /// reported: the caller lets one through only when it claims our own
    /// digest and we did not ask for a signature, which by
    /// [`Requester::equal_would_roll_back`] shows none.
    fn check_rollback(
        &mut self,
        entries: &[Entry],
        ours: &[Entry],
        complete: bool,
        their_digest: &[u8; 16],
        evidence: Option<&[u8]>,
        auth: &AuthState,
    ) -> Result<(), Violation> {
        let mut claims: Vec<(PublicKey, (u64, u64))> =
            entries.iter().map(|e| (e.author, (e.max, e.held.count))).collect();
        let accounted = || digest(&apply_changes(ours.to_vec(), entries.to_vec())) == *their_digest;
        if complete && accounted() {
            claims.extend(
                ours.iter()
                    .filter(|o| find(entries, &o.author).is_none())
                    .map(|o| (o.author, (o.max, o.held.count))),
            );
            // An author shown before that the peer no longer lists and we
            // do not hold at all: the peer claims to hold nothing of it.
            claims.extend(
                self.shown
                    .keys()
                    .filter(|a| find(entries, a).is_none() && find(ours, a).is_none())
                    .map(|a| (*a, (0, 0))),
            );
        }
        let rolled_back: Vec<_> = claims
            .iter()
            .map(|(author, now)| (*author, self.expected(author, ours, auth), *now))
            .filter(|(_, before, now)| shows_less(*now, *before))
            .collect();
        match evidence {
            Some(frame) => {
                self.events.extend(rolled_back.into_iter().map(|(author, before, now)| {
                    Event::RolledBack { author, before, now, evidence: frame.to_vec() }
                }))
            }
            None if !rolled_back.is_empty() => {
                return Err(Violation::new(ErrorCode::BadProof, "an unsigned reply shows less"));
            }
            None => {}
        }
        for (author, now) in claims {
            let before = self.shown.get(&author).copied().unwrap_or((0, 0));
            self.shown.insert(author, (before.0.max(now.0), before.1.max(now.1)));
        }
        Ok(())
    }
}

/// The highest seq and count of `author` in `entries`.
fn held(entries: &[Entry], author: &PublicKey) -> (u64, u64) {
    find(entries, author).map_or((0, 0), |e| (e.max, e.held.count))
}

/// Whether the control log ended `author` anywhere: a removed device, or
/// an app revoked on some scope.
fn is_ended(auth: &AuthState, author: &PublicKey) -> bool {
    auth.devices().get(author).is_some_and(|device| device.removed.is_some())
        || auth
            .apps()
            .get(author)
            .is_some_and(|app| app.scopes.values().any(|grant| grant.revoked.is_some()))
}

/// Whether a peer showing `now` (max, count) of an author shows less than
/// the `before` it showed: a rollback (sync.md §5).
fn shows_less(now: (u64, u64), before: (u64, u64)) -> bool {
    now.0 < before.0 || now.1 < before.1
}
