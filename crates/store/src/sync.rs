//! The replica as the sync state machine sees it
//! ([`basic_proto::sync::SyncStore`] over a [`Database`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use basic_proto::control::{AuthState, ControlOp, OpId};
use basic_proto::sync::{Entry, Fingerprint, Outgoing, StoreFailure, Stored, SyncStore, View};
use basic_proto::{Commit, CommitId, DatabaseId, PublicKey};

use crate::database::{Database, IngestError};
use crate::kv::Store;
use crate::replica::{Outcome, Placed};

/// A [`Database`] driven by sync: reads come from the replica, received
/// commits and operations go through the database's checks and writer, so
/// they are durable when a method returns.
#[derive(Debug)]
pub struct SyncReplica<'a, S: Store> {
    db: &'a Database<S>,
    /// The rejected commits, read once per instance (until operations are
    /// ingested, which can change them).
    rejected: std::cell::OnceCell<BTreeMap<CommitId, Placed>>,
}

impl<'a, S: Store> SyncReplica<'a, S> {
    /// Sync access to `db`.
    pub fn new(db: &'a Database<S>) -> Self {
        Self { db, rejected: std::cell::OnceCell::new() }
    }

    /// The rejected commits (stored, not authorised by the control log):
    /// sync neither counts nor serves them, so replicas that stored them
    /// before a cut-off reached them agree with replicas that never did.
    fn rejected(&self) -> Result<&BTreeMap<CommitId, Placed>, StoreFailure> {
        if let Some(rejected) = self.rejected.get() {
            return Ok(rejected);
        }
        let read = lift(self.db.replica().rejected_commits())?.into_iter().collect();
        Ok(self.rejected.get_or_init(|| read))
    }

    /// The highest seq at or below `from` where `author` holds a commit in
    /// `view` that is not rejected (0 if none).
    ///
    /// Reads the stored log index in windows going down from `from`, each
    /// twice as wide as the one before: the cost follows the commits held
    /// (and the number of windows, at most 64), never the seq space — an
    /// author may hold a commit at seq 2^40 and little else.
    fn highest_held(
        &self,
        view: &View,
        author: &PublicKey,
        from: u64,
        rejected: &BTreeMap<CommitId, Placed>,
    ) -> Result<u64, StoreFailure> {
        let replica = self.db.replica();
        let mut hi = from;
        let mut width: u64 = 64;
        while hi >= 1 {
            let lo = hi.saturating_sub(width - 1).max(1);
            let mut highest = 0;
            for entry in replica.log_range(author, lo, hi) {
                let (seq, id) = lift(entry)?;
                if seq <= highest || rejected.contains_key(&id) {
                    continue;
                }
                let Some(bytes) = lift(replica.commit_bytes(&id))? else { continue };
                if self.in_view(view, &bytes)? {
                    highest = seq;
                }
            }
            if highest > 0 {
                return Ok(highest);
            }
            hi = lo - 1;
            width = width.saturating_mul(2);
        }
        Ok(0)
    }

    /// Whether a stored commit is in `view` (reads its header).
    fn in_view(&self, view: &View, bytes: &[u8]) -> Result<bool, StoreFailure> {
        match view {
            View::All => Ok(true),
            View::Scopes(_) => {
                let commit = Commit::decode(bytes).map_err(StoreFailure::new)?;
                Ok(view.contains(&commit.header().scope))
            }
        }
    }
}

/// `?` for store and database errors inside the trait methods.
fn lift<T, E: std::error::Error + Send + Sync + 'static>(
    result: Result<T, E>,
) -> Result<T, StoreFailure> {
    result.map_err(StoreFailure::new)
}

impl<S: Store> SyncStore for SyncReplica<'_, S> {
    fn database(&self) -> DatabaseId {
        self.db.id()
    }

    fn auth(&self) -> Arc<AuthState> {
        self.db.auth_state()
    }

    fn control_heads(&self) -> Result<Vec<OpId>, StoreFailure> {
        Ok(self.db.control_log().heads())
    }

    fn has_op(&self, id: &OpId) -> Result<bool, StoreFailure> {
        Ok(self.db.control_log().get(id).is_some())
    }

    fn ops_since(&self, heads: &[OpId]) -> Result<Vec<Vec<u8>>, StoreFailure> {
        Ok(self.db.control_log().since(heads).iter().map(|op| op.as_bytes().to_vec()).collect())
    }

    fn ingest_ops(&mut self, ops: &[Vec<u8>]) -> Result<Stored, StoreFailure> {
        // A control change can reject (or admit) stored commits.
        self.rejected.take();
        let mut stored = Stored::default();
        let log = self.db.control_log();
        let mut fresh = Vec::new();
        for bytes in ops {
            match ControlOp::decode(bytes) {
                Err(_) => stored.invalid += 1,
                Ok(op) if log.get(&op.id()).is_some() => {}
                Ok(_) => fresh.push(bytes.clone()),
            }
        }
        if fresh.is_empty() {
            return Ok(stored);
        }
        for outcome in lift(self.db.ingest_ops(&fresh))? {
            match outcome {
                Ok(_) => stored.new += 1,
                Err(_) => stored.refused += 1,
            }
        }
        Ok(stored)
    }

    fn entries(&self, view: &View) -> Result<Vec<Entry>, StoreFailure> {
        let mut by_author: BTreeMap<[u8; 32], Entry> = BTreeMap::new();
        for summary in self.db.replica().summaries() {
            let (author, scope, summary) = lift(summary)?;
            if !view.contains(&scope) {
                continue;
            }
            let entry = by_author.entry(*author.as_bytes()).or_insert(Entry {
                author,
                max: 0,
                held: Fingerprint::default(),
            });
            entry.max = entry.max.max(summary.max);
            entry.held.merge(summary.held);
        }
        let rejected = self.rejected()?;
        let mut touched = BTreeSet::new();
        for (id, placed) in rejected {
            if let Some(entry) = by_author.get_mut(placed.author.as_bytes())
                && view.contains(&placed.scope)
            {
                entry.held.remove(id);
                touched.insert(*placed.author.as_bytes());
            }
        }
        for author in touched {
            if let Some(entry) = by_author.get_mut(&author) {
                entry.max = self.highest_held(view, &entry.author, entry.max, rejected)?;
            }
        }
        Ok(by_author.into_values().filter(|e| e.held.count > 0 && e.max > 0).collect())
    }

    fn fingerprint(
        &self,
        view: &View,
        author: &PublicKey,
        lo: u64,
        hi: u64,
    ) -> Result<Fingerprint, StoreFailure> {
        let replica = self.db.replica();
        let rejected = self.rejected()?;
        let mut held = Fingerprint::default();
        for entry in replica.log_range(author, lo, hi) {
            let (_, id) = lift(entry)?;
            if rejected.contains_key(&id) {
                continue;
            }
            if let View::Scopes(_) = view {
                let Some(bytes) = lift(replica.commit_bytes(&id))? else { continue };
                if !self.in_view(view, &bytes)? {
                    continue;
                }
            }
            held.add(&id);
        }
        Ok(held)
    }

    fn commits(
        &self,
        view: &View,
        author: &PublicKey,
        lo: u64,
        hi: u64,
        budget: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<bool, StoreFailure> {
        let replica = self.db.replica();
        let rejected = self.rejected()?;
        let mut used = 0;
        for entry in replica.log_range(author, lo, hi) {
            let (_, id) = lift(entry)?;
            if rejected.contains_key(&id) {
                continue;
            }
            let Some(bytes) = lift(replica.commit_bytes(&id))? else { continue };
            if !self.in_view(view, &bytes)? {
                continue;
            }
            if used >= budget {
                return Ok(false);
            }
            used += bytes.len();
            out.push(bytes);
        }
        Ok(true)
    }

    fn ingest_commits(&mut self, commits: &[Vec<u8>]) -> Result<Stored, StoreFailure> {
        let mut stored = Stored::default();
        if commits.is_empty() {
            return Ok(stored);
        }
        for outcome in lift(self.db.ingest(commits))? {
            match outcome {
                Ok(inserted) if inserted.outcome == Outcome::Duplicate => {}
                Ok(_) => stored.new += 1,
                Err(IngestError::Commit(_) | IngestError::OtherDatabase(_)) => stored.invalid += 1,
                Err(
                    IngestError::ClockAhead(_)
                    | IngestError::Unauthorised(_)
                    | IngestError::ForkBelowCutoff { .. }
                    | IngestError::ChainNotHeld { .. },
                ) => stored.refused += 1,
            }
        }
        Ok(stored)
    }
}

/// What one run of a [`LocalLink`] exchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkRun {
    /// Request/response exchanges, both directions.
    pub exchanges: u64,
    /// Exchanges made by the first database's requester (its pulls and pushes).
    pub exchanges_a: u64,
    /// Frame bytes of those exchanges.
    pub bytes_a: u64,
    /// Frame bytes, both directions.
    pub bytes: u64,
    /// Commits and operations newly stored, both sides.
    pub received: u64,
}

/// Why a local sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A replica failed.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// A database error (reading its key).
    #[error(transparent)]
    Database(#[from] crate::database::DbError),
    /// One side ended the session.
    #[error("session closed: {0}")]
    Closed(String),
}

/// A sync session between two databases open in one process, each pulling
/// from the other through the real protocol: replication to a second disk,
/// tests and benchmarks. Sessions persist across [`LocalLink::run`]s.
#[derive(Debug)]
pub struct LocalLink {
    a: (basic_proto::sync::Requester, basic_proto::sync::Responder),
    b: (basic_proto::sync::Requester, basic_proto::sync::Responder),
    rng: rand::rngs::StdRng,
}

impl LocalLink {
    /// A link between `a` and `b`, both replicating every scope they may.
    pub fn new<S: Store, T: Store>(a: &Database<S>, b: &Database<T>) -> Result<Self, LinkError> {
        use basic_proto::sync::{Requester, RequesterConfig, Responder};
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        let (a_key, b_key) = (a.member_key()?, b.member_key()?);
        // Both ends are in this process: each knows the other's principal.
        let side = |key: &basic_proto::SecretKey,
                    known: PublicKey,
                    me: u8,
                    peer: u8,
                    rng: &mut rand::rngs::StdRng| {
            let config = RequesterConfig {
                key: key.clone(),
                database: a.id(),
                local_transport: vec![me],
                peer_transport: vec![peer],
                view: View::All,
                resync_ms: u64::MAX,
                nonce: rng.random(),
                known_peer: Some(known),
            };
            (
                Requester::new(config, BTreeMap::new()),
                Responder::new(key.clone(), vec![me], vec![peer]),
            )
        };
        let a_side = side(&a_key, b_key.public(), 1, 2, &mut rng);
        let b_side = side(&b_key, a_key.public(), 2, 1, &mut rng);
        Ok(Self { a: a_side, b: b_side, rng })
    }

    /// Runs rounds until neither side has anything to ask: afterwards each
    /// holds everything the other showed.
    pub fn run<S: Store, T: Store>(
        &mut self,
        a: &Database<S>,
        b: &Database<T>,
        now_ms: u64,
    ) -> Result<LinkRun, LinkError> {
        let mut run = LinkRun::default();
        self.a.0.resync_now();
        self.b.0.resync_now();
        loop {
            let bytes = run.bytes;
            let moved_a =
                exchange(&mut self.a.0, a, &mut self.b.1, b, now_ms, &mut self.rng, &mut run)?;
            run.exchanges_a += u64::from(moved_a);
            run.bytes_a += run.bytes - bytes;
            let moved_b =
                exchange(&mut self.b.0, b, &mut self.a.1, a, now_ms, &mut self.rng, &mut run)?;
            if !moved_a && !moved_b {
                return Ok(run);
            }
        }
    }
}

/// One request of `requester` (on `mine`) answered by `responder` (on
/// `theirs`); false when the requester had nothing to ask.
fn exchange<S: Store, T: Store>(
    requester: &mut basic_proto::sync::Requester,
    mine: &Database<S>,
    responder: &mut basic_proto::sync::Responder,
    theirs: &Database<T>,
    now_ms: u64,
    rng: &mut rand::rngs::StdRng,
    run: &mut LinkRun,
) -> Result<bool, LinkError> {
    use basic_proto::sync::Answer;
    let mut my_store = SyncReplica::new(mine);
    let mut their_store = SyncReplica::new(theirs);
    let Some(request) = requester.poll_request(&mut my_store, now_ms)? else {
        drain_events(requester, run)?;
        return Ok(false);
    };
    let response = match responder.handle(&mut their_store, &request, rng)? {
        Answer::Reply(frame) => frame,
        Answer::Close(_, violation) => return Err(LinkError::Closed(violation.to_string())),
    };
    run.exchanges += 1;
    run.bytes += (request.len() + response.len()) as u64;
    requester.handle_response(&mut my_store, &response, now_ms)?;
    drain_events(requester, run)?;
    Ok(true)
}

fn drain_events(
    requester: &mut basic_proto::sync::Requester,
    run: &mut LinkRun,
) -> Result<(), LinkError> {
    use basic_proto::sync::Event;
    while let Some(event) = requester.poll_event() {
        match event {
            Event::Closed { reason } => return Err(LinkError::Closed(reason)),
            Event::Synced { received, .. } => run.received += received,
            _ => {}
        }
    }
    Ok(())
}

/// New commits and control operations, as a live push carries them.
#[derive(Debug, Default)]
pub struct Fresh {
    /// Encoded control operations, in causal order.
    pub ops: Vec<Vec<u8>>,
    /// Commits, by author and seq.
    pub commits: Vec<Outgoing>,
}

/// Follows what a database stores (local writes and what peers sent), so a
/// node can push it live: each [`ChangeFeed::poll`] returns what is new
/// since the previous one. Commits below an author's last seen head (late
/// fork branches, filled holes) are left to the next sync round.
#[derive(Debug)]
pub struct ChangeFeed {
    heads: Vec<OpId>,
    seen: BTreeMap<[u8; 32], u64>,
}

/// Most bytes one poll returns; the rest waits for the next sync round.
pub const MAX_FRESH_BYTES: usize = 4 << 20;

impl ChangeFeed {
    /// A feed whose first poll returns what `db` stores after now.
    pub fn new<S: Store>(db: &Database<S>) -> Result<Self, StoreFailure> {
        let replica = SyncReplica::new(db);
        Ok(Self {
            heads: replica.control_heads()?,
            seen: replica
                .entries(&View::All)?
                .into_iter()
                .map(|e| (*e.author.as_bytes(), e.max))
                .collect(),
        })
    }

    /// What `db` stored since the last poll.
    pub fn poll<S: Store>(&mut self, db: &Database<S>) -> Result<Fresh, StoreFailure> {
        let replica = SyncReplica::new(db);
        let mut fresh = Fresh::default();
        let heads = replica.control_heads()?;
        if heads != self.heads {
            fresh.ops = replica.ops_since(&self.heads)?;
            self.heads = heads;
        }
        let mut budget = MAX_FRESH_BYTES;
        for entry in replica.entries(&View::All)? {
            let seen = self.seen.entry(*entry.author.as_bytes()).or_insert(0);
            if entry.max <= *seen || budget == 0 {
                continue;
            }
            let mut commits = Vec::new();
            replica.commits(
                &View::All,
                &entry.author,
                *seen + 1,
                entry.max,
                budget,
                &mut commits,
            )?;
            *seen = entry.max;
            for bytes in commits {
                budget = budget.saturating_sub(bytes.len());
                let commit = Commit::decode(&bytes).map_err(StoreFailure::new)?;
                fresh.commits.push(Outgoing {
                    scope: commit.header().scope,
                    author: entry.author,
                    bytes,
                });
            }
        }
        Ok(fresh)
    }
}
