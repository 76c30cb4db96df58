//! The replica: commit logs and the merged tables, kept together.
//!
//! A [`Txn`] stages commits, checks them against the log (duplicates,
//! forks, heads), merges their row operations into the stored row states
//! by the protocol's rules, and writes all of it as one atomic batch. The
//! logs are the source of truth: row states can be recomputed from them,
//! row by row, when commits become invalid later.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use basic_proto::codec::{self, Fields};
use basic_proto::control::{AuthState, ControlLog, ControlOp, Cutoff, End};
use basic_proto::sync::Fingerprint;
use basic_proto::{
    Changes, Commit, CommitError, CommitHeader, CommitId, DatabaseId, KeyCache, Name, PublicKey,
    RowKey, RowState, ScopeId, ScopeKey, Stamp, UnsignedCommit,
};

use crate::storage::kv::{Batch, Store, StoreError, scan_prefix};
use crate::storage::{layout, rows};

/// Where the keys to read commits come from.
pub trait Keyring {
    /// Every key of `scope` at `epoch` this replica holds: usually one;
    /// several when concurrent rotations made several for one epoch.
    fn scope_keys(&self, scope: &ScopeId, epoch: u32) -> Vec<ScopeKey>;

    /// The key writers use: the first.
    fn scope_key(&self, scope: &ScopeId, epoch: u32) -> Option<ScopeKey> {
        self.scope_keys(scope, epoch).into_iter().next()
    }

    /// Opens `commit` with whichever of its epoch's keys fits; `None` when
    /// this replica holds no key of that epoch.
    fn open(&self, commit: &Commit) -> Option<Result<Changes, CommitError>> {
        let header = commit.header();
        let mut result = None;
        for key in self.scope_keys(&header.scope, header.epoch) {
            match commit.open(&key) {
                Ok(changes) => return Some(Ok(changes)),
                Err(error) => result = Some(Err(error)),
            }
        }
        result
    }
}

impl Keyring for BTreeMap<(ScopeId, u32), ScopeKey> {
    fn scope_keys(&self, scope: &ScopeId, epoch: u32) -> Vec<ScopeKey> {
        self.get(&(*scope, epoch)).cloned().into_iter().collect()
    }
}

/// What inserting a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The commit was already stored; nothing changed.
    Duplicate,
    /// Stored, and its changes merged into the tables.
    Applied,
    /// Stored as ciphertext: this replica has no key for its scope and epoch.
    WaitingForKey,
    /// Stored (its signature is valid) but its content cannot be read with
    /// the key it names; its changes are not applied.
    Unreadable(CommitError),
    /// Stamped too far ahead of our clock: kept aside, not in the log, and
    /// inserted once the local clock reaches `apply_at_ms`.
    HeldBack {
        /// Local wall time from which it is inserted.
        apply_at_ms: u64,
    },
}

/// The result of inserting one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The commit's id.
    pub id: CommitId,
    /// What happened.
    pub outcome: Outcome,
    /// Whether another commit by the same author holds the same position.
    pub fork: bool,
}

/// How far one author's log is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Every seq from 1 to this one is stored.
    pub contiguous: u64,
    /// The highest seq stored.
    pub max: u64,
}

impl Head {
    /// A 2-item CBOR array of the two seqs.
    fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 2 * 9);
        codec::write_head(&mut out, codec::MAJOR_ARRAY, 2);
        codec::write_head(&mut out, codec::MAJOR_UINT, self.contiguous);
        codec::write_head(&mut out, codec::MAJOR_UINT, self.max);
        out
    }

    /// Reads a head written by [`Head::encode`] in place; anything else
    /// through the general decoder, which says what is wrong with it.
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let in_place = || {
            let (2, rest) = codec::read_head(bytes, codec::MAJOR_ARRAY)? else { return None };
            let (contiguous, rest) = codec::read_head(rest, codec::MAJOR_UINT)?;
            let (max, rest) = codec::read_head(rest, codec::MAJOR_UINT)?;
            rest.is_empty().then_some(Head { contiguous, max })
        };
        in_place().map_or_else(|| Self::decode_in_general(bytes), Ok)
    }

    fn decode_in_general(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt =
            |e: codec::DecodeError| StoreError::Corrupt { what: "log head", reason: e.to_string() };
        let mut fields = Fields::new(codec::parse(bytes, "head", 64).map_err(corrupt)?, "head", 2)
            .map_err(corrupt)?;
        Ok(Head {
            contiguous: fields.uint("head.contiguous").map_err(corrupt)?,
            max: fields.uint("head.max").map_err(corrupt)?,
        })
    }
}

/// What one author's log holds in one scope: the highest seq and the
/// fingerprint of every commit (the sync summary, `protocol-spec/sync.md` §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeSummary {
    /// Highest seq held in the scope.
    pub max: u64,
    /// Every commit held in the scope.
    pub held: Fingerprint,
}

impl ScopeSummary {
    /// Counts one more commit.
    pub fn add(&mut self, seq: u64, id: &CommitId) {
        self.max = self.max.max(seq);
        self.held.add(id);
    }

    fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.max.to_be_bytes());
        out.extend_from_slice(&self.held.count.to_be_bytes());
        out.extend_from_slice(&self.held.sum.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt { what: "sync summary", reason: "bad length".into() };
        let field = |range: std::ops::Range<usize>| bytes.get(range).ok_or_else(corrupt);
        let u64_at = |range| -> Result<u64, StoreError> {
            Ok(u64::from_be_bytes(field(range)?.try_into().map_err(|_| corrupt())?))
        };
        if bytes.len() != 32 {
            return Err(corrupt());
        }
        Ok(Self {
            max: u64_at(0..8)?,
            held: Fingerprint {
                count: u64_at(8..16)?,
                sum: u128::from_le_bytes(field(16..32)?.try_into().map_err(|_| corrupt())?),
            },
        })
    }
}

/// Where a commit sits: its author, seq and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The author.
    pub author: PublicKey,
    /// Its position in the author's log.
    pub seq: u64,
    /// Its scope.
    pub scope: ScopeId,
}

impl Placed {
    fn of(header: &CommitHeader) -> Self {
        Self { author: header.author, seq: header.seq, scope: header.scope }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(56);
        out.extend_from_slice(self.author.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.scope.0);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let author = PublicKey::from_bytes(bytes.get(..32)?.try_into().ok()?).ok()?;
        let seq = u64::from_be_bytes(bytes.get(32..40)?.try_into().ok()?);
        let scope = ScopeId(bytes.get(40..56)?.try_into().ok()?);
        Some(Self { author, seq, scope })
    }
}

/// A row whose state a transaction changed, borrowed from the transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowChange<'a> {
    /// The table.
    pub table: &'a Name,
    /// The row.
    pub key: &'a RowKey,
    /// The row's new state.
    pub state: &'a RowState,
}

/// One user's database on one device: logs and merged rows over a [`Store`].
#[derive(Debug)]
pub struct Replica<S> {
    store: S,
    /// Author keys read from the store's own keys, validated once.
    keys: KeyCache,
    /// Held for writing from a batch's apply until its flush returns, and
    /// for reading by [`Replica::settled`]: what a reader under it sees is
    /// on disk.
    unsettled: RwLock<()>,
}

impl<S: Store> Replica<S> {
    /// The replica kept in `store`.
    pub fn new(store: S) -> Self {
        Self { store, keys: KeyCache::default(), unsettled: RwLock::new(()) }
    }

    /// Holds off the next [`Txn::commit`] while the guard lives, so that
    /// everything read under it is on disk. Sync reads what it serves to
    /// peers under it: a commit a crash could still take back must never
    /// reach a peer, or this device would later sign a different commit
    /// at the same place in its log (a fork). Never hold it across a call
    /// that waits for a commit.
    pub fn settled(&self) -> RwLockReadGuard<'_, ()> {
        self.unsettled.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every batch applied before this call durable (see
    /// [`Store::flush`]); may run on any thread.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the underlying store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Starts staging changes.
    pub fn begin(&self) -> Txn<'_, S> {
        Txn {
            store: &self.store,
            keys: &self.keys,
            unsettled: &self.unsettled,
            batch: Batch::default(),
            rows: HashMap::new(),
            take: 0,
            unsigned: HashSet::new(),
            logs: Logs::default(),
        }
    }

    /// The stored commit with this id.
    pub fn commit(&self, id: &CommitId) -> Result<Option<Commit>, StoreError> {
        self.store
            .get(&layout::commit(id))?
            .map(|bytes| decode_stored(&bytes, &self.keys))
            .transpose()
    }

    /// The merge state of one row.
    pub fn row(&self, table: &Name, key: &RowKey) -> Result<Option<RowState>, StoreError> {
        self.store.get(&layout::row(table, key))?.map(|bytes| rows::decode(&bytes)).transpose()
    }

    /// Every row state, deleted rows included, with its table and encoded key.
    pub fn row_states(
        &self,
    ) -> impl Iterator<Item = Result<(Name, Vec<u8>, RowState), StoreError>> + '_ {
        scan_prefix(&self.store, &[layout::ROW]).map(|entry| {
            let (key, value) = entry?;
            let (table, row_key) = layout::parse_row(&key)
                .ok_or(StoreError::Corrupt { what: "row key", reason: "unparsable".into() })?;
            Ok((table, row_key, rows::decode(&value)?))
        })
    }

    /// Every row state of one table.
    pub fn table_states(
        &self,
        table: &Name,
    ) -> impl Iterator<Item = Result<(Vec<u8>, RowState), StoreError>> + '_ {
        let prefix = layout::rows_of(table);
        let skip = prefix.len();
        scan_prefix(&self.store, &prefix).map(move |entry| {
            let (key, value) = entry?;
            Ok((key[skip..].to_vec(), rows::decode(&value)?))
        })
    }

    /// The log head of every author.
    pub fn heads(&self) -> Result<BTreeMap<PublicKey, Head>, StoreError> {
        scan_prefix(&self.store, &[layout::HEAD])
            .map(|entry| {
                let (key, value) = entry?;
                let author = author_at(&key, 1)?;
                Ok((author, Head::decode(&value)?))
            })
            .collect()
    }

    /// The ids stored at each position of one author's log, in order (two
    /// at one position: a fork).
    pub fn log(&self, author: &PublicKey) -> Result<Vec<(u64, CommitId)>, StoreError> {
        let corrupt = || StoreError::Corrupt { what: "log entry", reason: "bad length".into() };
        let mut log = Vec::new();
        for entry in scan_prefix(&self.store, &layout::log_author(author)) {
            let (key, ids) = entry?;
            let seq: [u8; 8] =
                key.get(33..41).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
            if ids.is_empty() || ids.len() % 32 != 0 {
                return Err(corrupt());
            }
            for id in ids.chunks_exact(32) {
                let id: [u8; 32] = id.try_into().map_err(|_| corrupt())?;
                log.push((u64::from_be_bytes(seq), CommitId(id)));
            }
        }
        Ok(log)
    }

    /// The sync summary of every author in every scope.
    pub fn summaries(
        &self,
    ) -> impl Iterator<Item = Result<(PublicKey, ScopeId, ScopeSummary), StoreError>> + '_ {
        scan_prefix(&self.store, &[layout::SUMMARY]).map(|entry| {
            let (key, value) = entry?;
            let (author, scope) =
                layout::parse_summary(&key, &self.keys).ok_or(StoreError::Corrupt {
                    what: "sync summary key",
                    reason: "unparsable".into(),
                })?;
            Ok((author, scope, ScopeSummary::decode(&value)?))
        })
    }

    /// Refuses a replica whose commits are stored under ids this version
    /// does not compute: one written before commit ids changed (D49, a
    /// format change without migration). One commit tells: a replica is
    /// written by one version or the other.
    pub fn check_commit_ids(&self) -> Result<(), StoreError> {
        let Some(entry) = scan_prefix(&self.store, &[layout::COMMIT]).next() else {
            return Ok(());
        };
        let (key, bytes) = entry?;
        match Commit::id_of(&bytes) {
            Some(id) if key[1..] == id.0 => Ok(()),
            _ => Err(StoreError::Corrupt {
                what: "commit",
                reason: "stored under an id this version does not compute: the data directory \
                         was written before commit ids changed (protocol-spec/DECISIONS.md D49) \
                         and this version cannot use it; export its rows with the version that \
                         wrote it (`basic export --out rows.jsonl`) and import them into a new \
                         data directory (`basic import rows.jsonl`)"
                    .into(),
            }),
        }
    }

    /// Writes the sync summaries from the stored logs if this replica was
    /// created before they existed.
    pub fn ensure_summaries(&self) -> Result<(), StoreError> {
        const DONE: &str = "sync-summaries";
        if self.store.get(&layout::meta(DONE))?.is_some() {
            return Ok(());
        }
        let mut summaries: BTreeMap<(PublicKey, ScopeId), ScopeSummary> = BTreeMap::new();
        for commit in self.commits() {
            let commit = commit?;
            let header = commit.header();
            summaries
                .entry((header.author, header.scope))
                .or_default()
                .add(header.seq, &commit.id());
        }
        let mut batch = Batch::default();
        for ((author, scope), summary) in summaries {
            batch.put(layout::summary(&author, &scope), summary.encode());
        }
        batch.put(layout::meta(DONE), Vec::new());
        self.store.apply(batch)?;
        self.store.flush()
    }

    /// The ids at positions `lo..=hi` of `author`'s log, in order.
    pub fn log_range(
        &self,
        author: &PublicKey,
        lo: u64,
        hi: u64,
    ) -> impl Iterator<Item = Result<(u64, CommitId), StoreError>> + '_ {
        let corrupt = || StoreError::Corrupt { what: "log entry", reason: "bad length".into() };
        self.store
            .scan(&layout::log_author(author), &layout::log_position(author, lo))
            .map(move |entry| {
                let (key, ids) = entry?;
                let seq: [u8; 8] =
                    key.get(33..41).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
                if ids.is_empty() || ids.len() % 32 != 0 {
                    return Err(corrupt());
                }
                let seq = u64::from_be_bytes(seq);
                Ok(ids
                    .chunks_exact(32)
                    .filter_map(|id| id.try_into().ok().map(|id| (seq, CommitId(id))))
                    .collect::<Vec<_>>())
            })
            .take_while(move |entry| {
                entry.as_ref().map_or(true, |ids| ids.first().is_none_or(|(seq, _)| *seq <= hi))
            })
            .flat_map(|entry| match entry {
                Ok(ids) => ids.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(error) => vec![Err(error)],
            })
    }

    /// The stored bytes of a commit, as received.
    pub fn commit_bytes(&self, id: &CommitId) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(&layout::commit(id))
    }

    /// Every detected fork: author and position.
    pub fn forks(&self) -> Result<Vec<(PublicKey, u64)>, StoreError> {
        scan_prefix(&self.store, &[layout::FORK])
            .map(|entry| {
                let (key, _) = entry?;
                let seq: [u8; 8] = key[33..41].try_into().map_err(|_| StoreError::Corrupt {
                    what: "fork record",
                    reason: "short key".into(),
                })?;
                Ok((author_at(&key, 1)?, u64::from_be_bytes(seq)))
            })
            .collect()
    }

    /// Every stored commit, in id order.
    pub fn commits(&self) -> impl Iterator<Item = Result<Commit, StoreError>> + '_ {
        scan_prefix(&self.store, &[layout::COMMIT])
            .map(|entry| decode_stored(&entry?.1, &self.keys))
    }

    /// The ids of every stored commit, in id order, read from the keys
    /// alone (no commit is decoded or verified).
    pub fn commit_ids(&self) -> impl Iterator<Item = Result<CommitId, StoreError>> + '_ {
        scan_prefix(&self.store, &[layout::COMMIT]).map(|entry| {
            let (key, _) = entry?;
            layout::id_suffix(&key).ok_or(StoreError::Corrupt {
                what: "commit key",
                reason: "too short for an id".into(),
            })
        })
    }

    /// The log of `database` rebuilt from every stored control operation
    /// (parents first, whatever their ids). Only admitted operations are
    /// stored, so one that is not admitted again, or lacks a parent, means
    /// the store is damaged: that is an error, never a silent drop.
    pub fn control_log(&self, database: DatabaseId) -> Result<ControlLog, StoreError> {
        let keys = KeyCache::default();
        let ops = scan_prefix(&self.store, &[layout::CONTROL])
            .map(|entry| {
                let (_, bytes) = entry?;
                ControlOp::decode_with(&bytes, &keys)
                    .map_err(|e| StoreError::Corrupt { what: "control op", reason: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        ControlLog::restore(database, ops)
            .map_err(|e| StoreError::Corrupt { what: "control log", reason: e.to_string() })
    }

    /// Whether the commit `id` is stored and not set aside: receiving it
    /// again changes nothing, and it need not be verified again.
    pub fn holds_applied(&self, id: &CommitId) -> Result<bool, StoreError> {
        Ok(self.store.get(&layout::commit(id))?.is_some()
            && self.store.get(&layout::rejected(id))?.is_none())
    }

    /// [`Replica::holds_applied`] for a commit at `seq` of `author`'s log:
    /// nothing is stored past an author's head, which the store holds in
    /// memory, so a commit beyond it needs no look-up of its id.
    pub fn holds_applied_at(
        &self,
        id: &CommitId,
        author: &PublicKey,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let head = self.store.get(&layout::head(author))?.map(|b| Head::decode(&b)).transpose()?;
        match head {
            Some(head) if head.max >= seq => self.holds_applied(id),
            _ => Ok(false),
        }
    }

    /// Ids of the stored commits the control log does not authorise.
    pub fn rejected(&self) -> Result<BTreeSet<CommitId>, StoreError> {
        scan_prefix(&self.store, &[layout::REJECTED])
            .map(|entry| {
                let (key, _) = entry?;
                layout::id_suffix(&key).ok_or(StoreError::Corrupt {
                    what: "rejected index",
                    reason: "short key".into(),
                })
            })
            .collect()
    }

    /// The stored commits the control log does not authorise, with where
    /// they sit in their author's log.
    pub fn rejected_commits(&self) -> Result<Vec<(CommitId, Placed)>, StoreError> {
        let mut out = Vec::new();
        for entry in scan_prefix(&self.store, &[layout::REJECTED]) {
            let (key, value) = entry?;
            let id = layout::id_suffix(&key).ok_or(StoreError::Corrupt {
                what: "rejected index",
                reason: "short key".into(),
            })?;
            let placed = match Placed::decode(&value) {
                Some(placed) => placed,
                // Recorded before positions were kept: read the commit.
                None => match self.commit(&id)? {
                    Some(commit) => Placed::of(commit.header()),
                    None => continue,
                },
            };
            out.push((id, placed));
        }
        Ok(out)
    }

    /// How many commits are held back.
    pub fn held_count(&self) -> Result<usize, StoreError> {
        scan_prefix(&self.store, &[layout::HELD]).try_fold(0, |n, entry| entry.map(|_| n + 1))
    }

    /// When the first held commit becomes due, if any is held.
    pub fn next_held_due(&self) -> Result<Option<u64>, StoreError> {
        match scan_prefix(&self.store, &[layout::HELD]).next() {
            Some(entry) => Ok(layout::held_apply_at(&entry?.0)),
            None => Ok(None),
        }
    }
}

fn author_at(key: &[u8], at: usize) -> Result<PublicKey, StoreError> {
    let bytes: [u8; 32] = key
        .get(at..at + 32)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(StoreError::Corrupt { what: "author key", reason: "short key".into() })?;
    PublicKey::from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt { what: "author key", reason: e.to_string() })
}

fn decode_stored(bytes: &[u8], keys: &KeyCache) -> Result<Commit, StoreError> {
    Commit::decode_with(bytes, keys).map_err(corrupt_stored)
}

fn corrupt_stored(error: CommitError) -> StoreError {
    StoreError::Corrupt { what: "stored commit", reason: error.to_string() }
}

/// The end that decides whether a commit is kept, if any: its author's
/// removal when the author is a device, the revocation of its grant on the
/// commit's scope when it is an app (as [`AuthState::check_commit`] reads them).
pub(crate) fn end_of(state: &AuthState, header: &CommitHeader) -> Option<End> {
    let author = header.author;
    if state.root().is_some_and(|root| root.key == author) {
        return None;
    }
    if let Some(device) = state.devices().get(&author) {
        return device.removed;
    }
    state.apps().get(&author)?.scopes.get(&header.scope)?.revoked
}

/// Whether any author of `state` has an end (a removed device, an app
/// revoked on a scope): if none has, no commit lies below a cut-off.
pub(crate) fn any_end(state: &AuthState) -> bool {
    state.devices().values().any(|device| device.removed.is_some())
        || state.apps().values().any(|app| app.scopes.values().any(|scope| scope.revoked.is_some()))
}

/// The end under which a commit lies strictly below the cut-off: such a
/// commit is kept only if it is on the chain of the cut-off commit
/// (`protocol-spec/control-log.md` §6), which one header cannot show.
pub(crate) fn end_below(state: &AuthState, header: &CommitHeader) -> Option<End> {
    end_of(state, header).filter(|end| header.seq < end.cutoff.seq)
}

/// Where a commit below its author's cut-off stands against the chain
/// from the cut-off commit back through `prev` links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// An ancestor of the cut-off commit: kept.
    Ancestor,
    /// Another commit holds its place on the chain (or the chain does not
    /// reach its seq): a fork, not kept.
    Fork,
    /// The replica does not hold the chain down to its seq yet: undecided.
    NotHeld,
}

/// Whether a replica holds every scope (a device's, a pinning peer's) or
/// only some (an app's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Every scope: it holds each author's whole chain, or will.
    Whole,
    /// Some scopes: an author's chain may pass through commits it never
    /// holds.
    Part,
}

impl Holds {
    /// Whether a commit that stands so against its cut-off chain is kept:
    /// on the chain; or undecided on a replica that may never hold the
    /// chain (it relies on its peers' full check, as for every chain check
    /// across scopes it does not hold).
    pub fn keeps(self, chain: Chain) -> bool {
        match chain {
            Chain::Ancestor => true,
            Chain::NotHeld => self == Holds::Part,
            Chain::Fork => false,
        }
    }
}

/// The chain of one author's log from a cut-off commit down through
/// `prev` links, walked as far as needed and as the replica holds it.
#[derive(Debug, Clone)]
pub(crate) struct CutoffChain {
    author: PublicKey,
    /// The chain's commit id at each seq walked.
    ids: BTreeMap<u64, CommitId>,
    /// The lowest point walked so far, whose commit has not been read yet;
    /// `None` once the walk reached seq 1 or the chain broke.
    frontier: Option<(u64, CommitId)>,
}

impl CutoffChain {
    /// The chain of `author`'s log ending at `cutoff`.
    pub(crate) fn new(author: PublicKey, cutoff: Cutoff) -> Self {
        let frontier = cutoff.last.filter(|_| cutoff.seq > 0).map(|last| (cutoff.seq, last));
        Self { author, ids: BTreeMap::new(), frontier }
    }

    /// Where the commit `id` at `seq` stands, reading the commits of the
    /// chain through `txn` (so commits staged in it count).
    pub(crate) fn place<S: Store>(
        &mut self,
        txn: &Txn<'_, S>,
        seq: u64,
        id: CommitId,
    ) -> Result<Chain, StoreError> {
        while let Some((at, chain_id)) = self.frontier {
            self.ids.insert(at, chain_id);
            if at <= seq {
                break;
            }
            let Some(bytes) = txn.get(&layout::commit(&chain_id))? else { break };
            // Verified when stored: the chain needs only the header.
            let header = Commit::header_of(&bytes, txn.keys).map_err(corrupt_stored)?;
            self.frontier = match header.prev {
                // A commit that is not where the chain says ends the chain:
                // nothing below it is an ancestor of the cut-off commit.
                Some(prev) if header.author == self.author && header.seq == at => {
                    Some((at - 1, prev))
                }
                _ => None,
            };
        }
        Ok(match (self.ids.get(&seq), self.frontier) {
            (Some(chain_id), _) if *chain_id == id => Chain::Ancestor,
            (None, Some((at, _))) if at > seq => Chain::NotHeld,
            _ => Chain::Fork,
        })
    }
}

/// The chains of several cut-offs, each walked once for a batch.
#[derive(Debug, Default)]
pub(crate) struct CutoffChains {
    chains: BTreeMap<([u8; 32], Cutoff), CutoffChain>,
}

impl CutoffChains {
    /// Where the commit with `header` and `id` stands against the chain of
    /// `end` (an end of its author under which it lies below the cut-off).
    pub(crate) fn place<S: Store>(
        &mut self,
        txn: &Txn<'_, S>,
        header: &CommitHeader,
        id: CommitId,
        end: &End,
    ) -> Result<Chain, StoreError> {
        self.chains
            .entry((*header.author.as_bytes(), end.cutoff))
            .or_insert_with(|| CutoffChain::new(header.author, end.cutoff))
            .place(txn, header.seq, id)
    }
}

/// Changes staged over a replica, read-your-writes, applied atomically by
/// [`Txn::commit`].
#[derive(Debug)]
pub struct Txn<'a, S> {
    store: &'a S,
    /// The replica's validated author keys.
    keys: &'a KeyCache,
    /// The replica's [`Replica::settled`] lock.
    unsettled: &'a RwLock<()>,
    batch: Batch,
    /// Row states this transaction changed, by storage key
    /// ([`layout::row`]): merged in place, and encoded into the batch once,
    /// by [`Txn::commit`].
    rows: HashMap<Vec<u8>, Staged>,
    /// How many times [`Txn::take_changes`] ran: rows changed since have
    /// this as their [`Staged::changed`].
    take: u64,
    /// Own commits staged before they were signed ([`Txn::insert_unsigned`]):
    /// the transaction commits only once [`Txn::put_signed`] gave each its
    /// bytes.
    unsigned: HashSet<CommitId>,
    /// The log heads and sync summaries this transaction changed, by
    /// author (and scope): kept decoded, and encoded into the batch once,
    /// when it is applied, rather than once for each commit staged.
    logs: Logs,
}

/// Log heads and sync summaries staged by a [`Txn`].
#[derive(Debug, Default)]
struct Logs {
    heads: HashMap<PublicKey, Head>,
    summaries: HashMap<(PublicKey, ScopeId), ScopeSummary>,
}

impl Logs {
    /// Stages every head and summary into `batch`.
    fn write_into(self, batch: &mut Batch) {
        for (author, head) in self.heads {
            batch.put(layout::head(&author), head.encode());
        }
        for ((author, scope), summary) in self.summaries {
            batch.put(layout::summary(&author, &scope), summary.encode());
        }
    }
}

/// A row state staged by a transaction.
#[derive(Debug)]
struct Staged {
    table: Name,
    key: RowKey,
    state: RowState,
    /// The [`Txn::take`] in which it last changed.
    changed: u64,
}

impl Staged {
    fn change(&self) -> RowChange<'_> {
        RowChange { table: &self.table, key: &self.key, state: &self.state }
    }
}

impl<'a, S: Store> Txn<'a, S> {
    /// Makes room for `rows` more staged row states at once, rather than
    /// growing the table step by step as they come.
    pub fn reserve_rows(&mut self, rows: usize) {
        self.rows.reserve(rows);
    }

    /// Reads `key`, seeing this transaction's own writes (row states
    /// excepted: those are read with [`Txn::row`]).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.batch.lookup(key) {
            Some(value) => Ok(value.map(<[u8]>::to_vec)),
            None => self.store.get(key),
        }
    }

    /// Every entry under `prefix`, seeing this transaction's own writes.
    fn scan(&self, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> =
            scan_prefix(self.store, prefix).collect::<Result<_, _>>()?;
        for (key, value) in self.batch.scan_prefix(prefix) {
            match value {
                Some(value) => entries.insert(key.to_vec(), value.to_vec()),
                None => entries.remove(key),
            };
        }
        Ok(entries)
    }

    /// The bytes of every stored commit, staged ones included, read as
    /// they come (in no particular order).
    fn stored_commits(&self) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + '_ {
        let prefix = [layout::COMMIT];
        let stored = scan_prefix(self.store, &prefix).filter_map(|entry| match entry {
            // A staged commit is read from the batch below.
            Ok((key, _)) if self.batch.lookup(&key).is_some() => None,
            Ok((_, bytes)) => Some(Ok(bytes)),
            Err(error) => Some(Err(error)),
        });
        let staged: Vec<Vec<u8>> = self
            .batch
            .scan_prefix(&prefix)
            .filter_map(|(_, bytes)| bytes.map(<[u8]>::to_vec))
            .collect();
        stored.chain(staged.into_iter().map(Ok))
    }

    /// The merge state of a row, seeing staged changes.
    pub fn row(&self, table: &Name, key: &RowKey) -> Result<RowState, StoreError> {
        let at = layout::row(table, key);
        match self.rows.get(&at) {
            Some(staged) => Ok(staged.state.clone()),
            None => self.stored_row(&at),
        }
    }

    /// The stored state of the row at storage key `at` (none staged).
    fn stored_row(&self, at: &[u8]) -> Result<RowState, StoreError> {
        Ok(self.store.get(at)?.map(|b| rows::decode(&b)).transpose()?.unwrap_or_default())
    }

    /// Stores `commit` and merges its changes if `keyring` can open it.
    pub fn insert(
        &mut self,
        commit: &Commit,
        keyring: &impl Keyring,
    ) -> Result<Inserted, StoreError> {
        self.stage(commit.id(), commit.header(), commit.as_bytes(), keyring.open(commit))
    }

    /// Stores `commit` whose content the caller already opened (or tried to:
    /// `None` when it has no key), its bytes moved into the store rather
    /// than copied. Used to decrypt on several threads.
    pub fn insert_with(
        &mut self,
        commit: Commit,
        content: Option<Result<Changes, CommitError>>,
    ) -> Result<Inserted, StoreError> {
        let (id, header, bytes) = commit.into_parts();
        self.stage(id, &header, bytes, content)
    }

    /// Stages this replica's own new commit and merges its changes while
    /// it is being signed: everything but its bytes, which
    /// [`Txn::put_signed`] adds before the transaction commits. Until then
    /// the commit reads as held but cannot be read back.
    pub fn insert_unsigned(
        &mut self,
        commit: &UnsignedCommit,
        changes: Changes,
    ) -> Result<Inserted, StoreError> {
        let inserted = self.stage(commit.id(), commit.header(), Vec::new(), Some(Ok(changes)))?;
        if inserted.outcome != Outcome::Duplicate {
            self.unsigned.insert(inserted.id);
        }
        Ok(inserted)
    }

    /// The bytes of a commit staged by [`Txn::insert_unsigned`], now signed.
    pub fn put_signed(&mut self, commit: &Commit) -> Result<(), StoreError> {
        if !self.unsigned.remove(&commit.id()) {
            return Err(StoreError::Unsigned(commit.id()));
        }
        self.batch.put(layout::commit(&commit.id()), commit.as_bytes().to_vec());
        Ok(())
    }

    /// Stages a commit under `id`, its bytes being `bytes` (a copy of a
    /// slice only if the commit is new).
    fn stage(
        &mut self,
        id: CommitId,
        header: &CommitHeader,
        bytes: impl Into<Vec<u8>>,
        content: Option<Result<Changes, CommitError>>,
    ) -> Result<Inserted, StoreError> {
        // Every stored commit is listed at its log position, which its id
        // covers (author and sequence number): a copy held already is found
        // there, without a look-up of the id itself, a random key. Nothing
        // is stored past the author's head: a commit there (the usual case
        // in a sync) is new without even that look-up.
        let position = layout::log_position(&header.author, header.seq);
        let head = self.head(&header.author)?;
        let mut ids = match header.seq > head.max {
            true => Vec::new(),
            false => self.get(&position)?.unwrap_or_default(),
        };
        if ids.chunks_exact(id.0.len()).any(|held| held == id.0) {
            return Ok(Inserted { id, outcome: Outcome::Duplicate, fork: false });
        }
        self.batch.put(layout::commit(&id), bytes.into());
        // The commit is new, so any id already at its position is another one.
        let fork = !ids.is_empty();
        if fork {
            self.batch.put(layout::fork(&header.author, header.seq), Vec::new());
        }
        ids.extend_from_slice(&id.0);
        self.batch.put(position, ids);
        self.advance_head(&header.author, head, header.seq)?;
        let summary = match self.logs.summaries.entry((header.author, header.scope)) {
            Entry::Occupied(held) => held.into_mut(),
            Entry::Vacant(slot) => slot.insert(
                (self.store.get(&layout::summary(&header.author, &header.scope))?)
                    .map(|b| ScopeSummary::decode(&b))
                    .transpose()?
                    .unwrap_or_default(),
            ),
        };
        summary.add(header.seq, &id);
        let outcome = match content {
            Some(Ok(changes)) => {
                self.merge(header, changes)?;
                Outcome::Applied
            }
            Some(Err(error)) => {
                self.batch.put(layout::unreadable(&id), Vec::new());
                Outcome::Unreadable(error)
            }
            None => {
                self.batch.put(layout::unopened(&header.scope, header.epoch, &id), Vec::new());
                Outcome::WaitingForKey
            }
        };
        Ok(Inserted { id, outcome, fork })
    }

    /// Stores a control operation (admitted by the caller's log).
    pub fn insert_op(&mut self, op: &ControlOp) {
        self.batch.put(layout::control_op(&op.id().0), op.as_bytes().to_vec());
    }

    /// Brings the merged rows in line with `state`: every stored commit is
    /// checked ([`AuthState::check_commit`], on the header alone, then,
    /// below an author's cut-off, against the chain of the cut-off commit:
    /// a fork, or a commit whose chain is not held yet, is refused), and
    /// the rows touched by commits whose verdict changed since the last
    /// call — newly refused (a revocation's cut-off) or newly allowed (a
    /// grant that arrived after the app's commits) — are recomputed from
    /// the commits `state` allows. Returns the commits refused now.
    pub fn enforce(
        &mut self,
        state: &AuthState,
        keyring: &impl Keyring,
    ) -> Result<BTreeSet<CommitId>, StoreError> {
        self.enforce_in(state, keyring, Holds::Whole)
    }

    /// [`Txn::enforce`] on a replica that `holds` every scope or only some:
    /// one that holds only some (an app's) cannot follow an author's chain
    /// through the scopes it lacks, so it sets aside only the commits it
    /// shows to be forks (`protocol-spec/sync.md` §9).
    pub fn enforce_in(
        &mut self,
        state: &AuthState,
        keyring: &impl Keyring,
        holds: Holds,
    ) -> Result<BTreeSet<CommitId>, StoreError> {
        let before = self.rejected_ids()?;
        let mut now = BTreeSet::new();
        let mut placed = BTreeMap::new();
        let mut below = Vec::new();
        for bytes in self.stored_commits() {
            let commit = decode_stored(&bytes?, self.keys)?;
            let header = commit.header();
            if state.check_commit(header, commit.id()).is_err() {
                now.insert(commit.id());
                placed.insert(commit.id(), Placed::of(header));
            } else if let Some(end) = end_below(state, header) {
                below.push((commit.id(), header.clone(), end));
            }
        }
        let mut chains = CutoffChains::default();
        for (id, header, end) in below {
            if !holds.keeps(chains.place(self, &header, id, &end)?) {
                now.insert(id);
                placed.insert(id, Placed::of(&header));
            }
        }
        let changed: Vec<CommitId> = before.symmetric_difference(&now).copied().collect();
        for id in before.difference(&now) {
            self.batch.delete(layout::rejected(id));
        }
        for id in now.difference(&before) {
            let value = placed.get(id).map(Placed::encode).unwrap_or_default();
            self.batch.put(layout::rejected(id), value);
        }
        self.recompute(&changed, keyring, &|_, id| !now.contains(&id))?;
        Ok(now)
    }

    /// Ids in the rejected index, seeing staged changes.
    fn rejected_ids(&self) -> Result<BTreeSet<CommitId>, StoreError> {
        self.scan(&[layout::REJECTED])?
            .into_keys()
            .map(|key| {
                layout::id_suffix(&key).ok_or(StoreError::Corrupt {
                    what: "rejected index",
                    reason: "short key".into(),
                })
            })
            .collect()
    }

    /// Whether the stored commit `id` is in the rejected index.
    pub fn is_rejected(&self, id: &CommitId) -> Result<bool, StoreError> {
        Ok(self.get(&layout::rejected(id))?.is_some())
    }

    /// Takes a rejected commit back (the chain that decides it arrived
    /// since): out of the rejected index, its changes merged. Admitting
    /// one more commit is a join of its operations into the rows, as on a
    /// replica that never set it aside: nothing needs recomputing.
    pub fn accept_rejected(
        &mut self,
        id: CommitId,
        keyring: &impl Keyring,
    ) -> Result<(), StoreError> {
        self.batch.delete(layout::rejected(&id));
        let commit = self.stored(&id)?;
        if let Some(Ok(changes)) = keyring.open(&commit) {
            self.merge(commit.header(), changes)?;
        }
        Ok(())
    }

    /// Keeps aside a commit stamped too far ahead, to insert it from
    /// `apply_at_ms` on ([`Txn::take_due`]).
    pub fn hold(&mut self, commit: &Commit, apply_at_ms: u64) -> Result<Inserted, StoreError> {
        let id = commit.id();
        let held = layout::held(apply_at_ms, &id);
        if self.get(&layout::commit(&id))?.is_some() || self.get(&held)?.is_some() {
            return Ok(Inserted { id, outcome: Outcome::Duplicate, fork: false });
        }
        self.batch.put(held, commit.as_bytes().to_vec());
        Ok(Inserted { id, outcome: Outcome::HeldBack { apply_at_ms }, fork: false })
    }

    /// Takes out every held commit due at `now_ms`: no longer held, and
    /// not inserted either — the caller checks each against the control
    /// log as it stands now (a revocation may have come meanwhile) and
    /// inserts those it admits.
    pub fn take_due(&mut self, now_ms: u64) -> Result<Vec<Commit>, StoreError> {
        let mut due = Vec::new();
        for entry in scan_prefix(self.store, &[layout::HELD]) {
            let (key, bytes) = entry?;
            match layout::held_apply_at(&key) {
                Some(apply_at) if apply_at <= now_ms => due.push((key, bytes)),
                _ => break,
            }
        }
        let mut commits = Vec::with_capacity(due.len());
        for (key, bytes) in due {
            self.batch.delete(key);
            commits.push(decode_stored(&bytes, self.keys)?);
        }
        Ok(commits)
    }

    /// The head of `author`'s log, seeing staged commits.
    fn head(&self, author: &PublicKey) -> Result<Head, StoreError> {
        match self.logs.heads.get(author) {
            Some(head) => Ok(*head),
            None => Ok((self.store.get(&layout::head(author))?)
                .map(|b| Head::decode(&b))
                .transpose()?
                .unwrap_or_default()),
        }
    }

    /// Moves `author`'s log on from `head` past a commit staged at `seq`.
    fn advance_head(
        &mut self,
        author: &PublicKey,
        mut head: Head,
        seq: u64,
    ) -> Result<(), StoreError> {
        head.max = head.max.max(seq);
        if seq == head.contiguous + 1 {
            head.contiguous = seq;
            while head.contiguous < head.max
                && self.get(&layout::log_position(author, head.contiguous + 1))?.is_some()
            {
                head.contiguous += 1;
            }
        }
        self.logs.heads.insert(*author, head);
        Ok(())
    }

    fn merge(&mut self, header: &CommitHeader, changes: Changes) -> Result<(), StoreError> {
        let stamp = Stamp::of(header);
        for op in changes.into_ops() {
            let at = layout::row(op.table(), op.key());
            let (table, key, written) = op.into_state(stamp);
            if let Some(staged) = self.rows.get_mut(&at) {
                if staged.state.merge(written) {
                    staged.changed = self.take;
                }
                continue;
            }
            let mut state = self.stored_row(&at)?;
            if state.merge(written) {
                self.rows.insert(at, Staged { table, key, state, changed: self.take });
            }
        }
        Ok(())
    }

    fn put_row(&mut self, table: Name, key: RowKey, state: RowState) {
        let at = layout::row(&table, &key);
        self.rows.insert(at, Staged { table, key, state, changed: self.take });
    }

    /// Opens (with `keyring`) and merges every stored commit of `scope` at
    /// `epoch` that was waiting for its key. Returns how many were applied.
    pub fn open_waiting(
        &mut self,
        scope: &ScopeId,
        epoch: u32,
        keyring: &impl Keyring,
    ) -> Result<usize, StoreError> {
        let ids: Vec<CommitId> = scan_prefix(self.store, &layout::unopened_epoch(scope, epoch))
            .map(|entry| {
                let (k, _) = entry?;
                layout::id_suffix(&k).ok_or(StoreError::Corrupt {
                    what: "waiting index",
                    reason: "short key".into(),
                })
            })
            .collect::<Result<_, _>>()?;
        for id in &ids {
            self.batch.delete(layout::unopened(scope, epoch, id));
            let commit = self.stored(id)?;
            match keyring.open(&commit) {
                Some(Ok(changes)) => self.merge(commit.header(), changes)?,
                _ => self.batch.put(layout::unreadable(id), Vec::new()),
            }
        }
        Ok(ids.len())
    }

    fn stored(&self, id: &CommitId) -> Result<Commit, StoreError> {
        let bytes = self.get(&layout::commit(id))?.ok_or(StoreError::Corrupt {
            what: "commit",
            reason: format!("{id} is indexed but missing"),
        })?;
        decode_stored(&bytes, self.keys)
    }

    /// Recomputes, from the logs, every row that the commits `invalid`
    /// touched, merging only the commits `admits` accepts. Rows no other
    /// commit touched are left alone. Returns how many rows changed.
    ///
    /// No index says which commits touched a row (it would be a second
    /// key for every row written, D36): every stored commit is read and
    /// opened (any scope's commit may hold operations on any table,
    /// `protocol-spec/README.md`, open issue 3), and its operations on
    /// those rows merged. This runs only when commits' verdicts change (a
    /// cut-off, a grant arriving after an app's commits), after
    /// [`Txn::enforce`] has read and verified every stored commit anyway.
    pub fn recompute(
        &mut self,
        invalid: &[CommitId],
        keyring: &impl Keyring,
        admits: &dyn Fn(&CommitHeader, CommitId) -> bool,
    ) -> Result<usize, StoreError> {
        let mut states: BTreeMap<Name, BTreeMap<RowKey, RowState>> = BTreeMap::new();
        for id in invalid {
            let commit = self.stored(id)?;
            if let Some(Ok(changes)) = keyring.open(&commit) {
                for op in changes.ops() {
                    states
                        .entry(op.table().clone())
                        .or_default()
                        .insert(op.key().clone(), RowState::default());
                }
            }
        }
        if states.is_empty() {
            return Ok(0);
        }
        for bytes in self.stored_commits() {
            let commit = decode_stored(&bytes?, self.keys)?;
            let header = commit.header();
            if !admits(header, commit.id()) {
                continue;
            }
            let Some(Ok(changes)) = keyring.open(&commit) else { continue };
            let stamp = Stamp::of(header);
            for op in changes.ops() {
                if let Some(state) =
                    states.get_mut(op.table()).and_then(|rows| rows.get_mut(op.key()))
                {
                    state.apply(op, stamp);
                }
            }
        }
        let mut changed = 0;
        for (table, rows) in states {
            for (key, state) in rows {
                if state != self.row(&table, &key)? {
                    self.put_row(table.clone(), key, state);
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Takes the rows changed since the last call, with their new state.
    /// Staged writes are unaffected: later reads still see them. Each call
    /// passes over every staged row, so a group of many jobs pays for its
    /// rows once a job (measured on the 1-cell ingest: no change).
    pub fn take_changes(&mut self) -> Vec<RowChange<'_>> {
        self.take += 1;
        changes_of(&self.rows, self.take - 1)
    }

    /// Every row changed in this transaction, in storage-key order, as
    /// [`Txn::take_changes`] would return them had it not run before.
    pub fn retake_changes(&mut self) -> Vec<RowChange<'_>> {
        self.take += 1;
        in_key_order(&self.rows).into_iter().map(|(_, staged)| staged.change()).collect()
    }

    /// Stages a metadata record.
    pub fn put_meta(&mut self, name: &str, value: Vec<u8>) {
        self.batch.put(layout::meta(name), value);
    }

    /// Stages removing a metadata record.
    pub fn delete_meta(&mut self, name: &str) {
        self.batch.delete(layout::meta(name));
    }

    /// Refuses to commit while an own commit staged unsigned lacks its bytes.
    fn all_signed(&self) -> Result<(), StoreError> {
        match self.unsigned.iter().next() {
            None => Ok(()),
            Some(id) => Err(StoreError::Unsigned(*id)),
        }
    }

    /// Applies everything staged as one atomic batch and returns once it is
    /// on disk. Readers under [`Replica::settled`] see either none of it
    /// or all of it flushed.
    pub fn commit(self) -> Result<(), StoreError> {
        self.all_signed()?;
        let Txn { store, unsettled, mut batch, rows, logs, .. } = self;
        logs.write_into(&mut batch);
        let staged = in_key_order(&rows);
        let unsettled = apply_staged(store, unsettled, batch, &staged)?;
        store.flush()?;
        drop(unsettled);
        Ok(())
    }

    /// Applies everything staged as one atomic batch, while `meanwhile`
    /// runs on this thread with the rows changed since
    /// [`Txn::take_changes`] last ran: the writer fills its view as the
    /// batch is applied. Every read of the store sees the batch at once;
    /// it is durable after the next [`Replica::flush`], and readers under
    /// [`Replica::settled`] wait until the returned [`Unsettled`] is
    /// dropped (after that flush). Many changed rows are applied on
    /// another thread; a few are applied here, after `meanwhile`. Many are
    /// also freed on a thread of their own, while the writer goes on.
    pub fn apply_while<R>(
        self,
        meanwhile: impl FnOnce(&[RowChange<'_>]) -> R,
    ) -> (Result<Unsettled<'a>, StoreError>, R) {
        if let Err(error) = self.all_signed() {
            return (Err(error), meanwhile(&[]));
        }
        let Txn { store, unsettled, mut batch, rows, take, logs, .. } = self;
        logs.write_into(&mut batch);
        let staged = in_key_order(&rows);
        let changes: Vec<RowChange<'_>> = (staged.iter())
            .filter(|(_, staged)| staged.changed == take)
            .map(|(_, staged)| staged.change())
            .collect();
        if changes.len() < PARALLEL_COMMIT_ROWS {
            let result = meanwhile(&changes);
            return (apply_staged(store, unsettled, batch, &staged), result);
        }
        let outcome = std::thread::scope(|scope| {
            // Taken here: a guard cannot come back from another thread.
            let guard = unsettled.write().unwrap_or_else(PoisonError::into_inner);
            let applied = scope.spawn(|| apply_in_order(store, batch, &staged));
            let result = meanwhile(&changes);
            match applied.join() {
                Ok(applied) => (applied.map(|()| Unsettled { _guard: guard }), result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        drop((changes, staged));
        free_elsewhere(rows);
        outcome
    }
}

/// A batch applied and not yet known to be on disk: readers under
/// [`Replica::settled`] wait while it lives. Drop it once
/// [`Replica::flush`] has returned after the apply.
#[must_use = "readers under `Replica::settled` wait until it is dropped"]
#[derive(Debug)]
pub struct Unsettled<'a> {
    _guard: RwLockWriteGuard<'a, ()>,
}

/// Drops `value` on a new thread: thousands of row states take the writer
/// a few percent of a first sync to free. Freed here if no thread starts.
fn free_elsewhere<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new().name("basic-free".into()).spawn(move || drop(value));
}

/// Changed rows from which [`Txn::apply_while`] applies on another
/// thread. Not tuned: a group of single-row writes stays well under it and
/// starts no thread; a first sync's groups are thousands of rows.
const PARALLEL_COMMIT_ROWS: usize = 256;

/// The staged rows changed in `take`, in storage-key order.
fn changes_of(rows: &HashMap<Vec<u8>, Staged>, take: u64) -> Vec<RowChange<'_>> {
    let mut changed: Vec<(&Vec<u8>, &Staged)> =
        rows.iter().filter(|(_, staged)| staged.changed == take).collect();
    changed.sort_unstable_by(|a, b| a.0.cmp(b.0));
    changed.into_iter().map(|(_, staged)| staged.change()).collect()
}

/// Every staged row, in storage-key order.
fn in_key_order(rows: &HashMap<Vec<u8>, Staged>) -> Vec<(&Vec<u8>, &Staged)> {
    let mut staged: Vec<(&Vec<u8>, &Staged)> = rows.iter().collect();
    staged.sort_unstable_by(|a, b| a.0.cmp(b.0));
    staged
}

/// Encodes the staged `rows` (in key order) into `batch` and applies it
/// under the [`Replica::settled`] lock, which it returns held.
fn apply_staged<'a, S: Store>(
    store: &S,
    unsettled: &'a RwLock<()>,
    batch: Batch,
    rows: &[(&Vec<u8>, &Staged)],
) -> Result<Unsettled<'a>, StoreError> {
    let guard = unsettled.write().unwrap_or_else(PoisonError::into_inner);
    apply_in_order(store, batch, rows)?;
    Ok(Unsettled { _guard: guard })
}

/// Encodes the staged `rows` (in key order) into `batch` and applies it.
fn apply_in_order<S: Store>(
    store: &S,
    mut batch: Batch,
    rows: &[(&Vec<u8>, &Staged)],
) -> Result<(), StoreError> {
    batch.write_in_order(rows.iter().map(|(at, staged)| {
        // A row no admitted commit writes any more is no row at all, as
        // on a replica that never saw those commits.
        let state = (staged.state != RowState::default()).then(|| rows::encode(&staged.state));
        ((*at).clone(), state)
    }));
    if batch.is_empty() { Ok(()) } else { store.apply(batch) }
}

pub(crate) mod access;
pub(crate) mod author;
pub(crate) mod scope_keys;

#[cfg(test)]
mod tests;
