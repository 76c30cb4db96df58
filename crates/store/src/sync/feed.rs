//! The change feed: what a database stored since the last look, for live
//! pushes (sync.md §6).

use std::collections::BTreeMap;

use basic_proto::Commit;
use basic_proto::control::OpId;
use basic_proto::sync::{Outgoing, StoreFailure, SyncStore, View};

use super::SyncReplica;
use crate::database::Database;
use crate::storage::kv::Store;

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
                // Verified when stored: the header is enough to route it.
                let header =
                    Commit::header_of(&bytes, db.key_cache()).map_err(StoreFailure::new)?;
                fresh.commits.push(Outgoing { scope: header.scope, author: entry.author, bytes });
            }
        }
        Ok(fresh)
    }
}
