//! The replica as the sync state machine sees it
//! ([`basic_proto::sync::SyncStore`] over a [`Database`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use basic_proto::control::{AuthState, ControlOp, OpId};
use basic_proto::sync::{Entry, Fingerprint, StoreFailure, Stored, SyncStore, View};
use basic_proto::{Commit, CommitId, DatabaseId, KeyCache, PublicKey};

mod feed;
mod link;
mod notice;
mod session;

pub use feed::{ChangeFeed, Fresh, MAX_FRESH_BYTES};
pub use link::{LinkError, LinkRun, LocalLink};
pub use notice::{is_shut_out, shut_out_notice};
pub use session::{Input, Session, Shown, Step};

use crate::database::{Database, IngestError};
use crate::replica::{Outcome, Placed};
use crate::storage::kv::Store;

/// A [`Database`] driven by sync: reads come from the replica, only what
/// is on disk ([`crate::replica::Replica::settled`]); received commits and
/// operations go through the database's checks and writer, so they are
/// durable when a method returns.
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
                // Verified when stored: its header says its scope.
                let header =
                    Commit::header_of(bytes, self.db.key_cache()).map_err(StoreFailure::new)?;
                Ok(view.contains(&header.scope))
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

    fn keys(&self) -> &KeyCache {
        self.db.key_cache()
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
            // An op's id is the hash of its bytes: one the log holds is the
            // very op it verified, so only the others are decoded.
            if log.get(&OpId::of(bytes)).is_some() {
                continue;
            }
            match ControlOp::decode_with(bytes, self.db.key_cache()) {
                Err(_) => stored.invalid += 1,
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
        let _settled = self.db.replica().settled();
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
        let _settled = replica.settled();
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
        let _settled = replica.settled();
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
