//! The database: a replica, its SQLite view, one writer thread that
//! group-commits, query connections and live queries.
//!
//! Every write goes through the writer thread. It takes every job waiting
//! (up to [`MAX_GROUP`] jobs, and about [`MAX_GROUP_ROWS`] received row
//! operations), runs them one after another in one replica
//! transaction and one SQLite transaction — each job sees the ones before
//! it — then applies the replica batch, flushes it to disk once for the
//! whole group, commits the view, and only then answers each caller. A
//! write that returned is on disk; a crash loses only writes that had not
//! returned. If writes or received commits wait when a group is applied,
//! its flush runs on a thread of its own while they run ahead of it as the
//! next group (D50, D51): that group reads and plans against the earlier
//! one's rows, in a savepoint of the same SQLite transaction, and what it
//! wrote there is taken back out before the earlier group's view is
//! committed, so no reader sees a group before it is durable.
//!
//! This file is the facade callers use; the writer thread is in
//! [`writer`], the database's own records (identity, log position,
//! schemas, watermark) in [`records`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, mpsc};
use std::thread::JoinHandle;

use basic_proto::codec::{self, Fields};
use basic_proto::control::{
    AuthError, AuthState, ControlLog, ControlOp, Cutoff, OpBody, OpId, Payload, Rights, Rotation,
    SealedSchema, seal_label, seal_naming,
};
use basic_proto::hlc::check_not_ahead;
use basic_proto::sync::{View, entitled_view};
use basic_proto::{
    Changes, ClockAhead, Commit, CommitError, CommitId, DatabaseId, Hlc, KeyCache, Located, Name,
    PublicKey, RowOp, ScopeId, ScopeKey, SecretKey, Value,
};
use basic_proto::{Party, SealedKey};
use ciborium::Value as Cbor;
use rusqlite::Connection;

use crate::control_error::ControlError;
use crate::environment::Environment;
use crate::flows::pairing::PairingError;
use crate::flows::recovery::{self, RecoveryError};
use crate::replica::access::Access;
use crate::replica::author::LogWriter;
use crate::replica::scope_keys::ScopeKeys;
use crate::replica::{
    Chain, CutoffChains, Holds, Inserted, Keyring, Outcome, Replica, RowChange, Txn, any_end,
    end_below,
};
use crate::sql::live::{Live, Subscription};
use crate::sql::query::{self, QueryError, Rows};
use crate::sql::schema::{Catalog, Migration, Schema, SchemaError};
use crate::sql::view::{self, Gate, Reach, RowPlans, ViewError};
use crate::sql::write::{self, WriteError};
use crate::sql::{self, Caller, Checked, SqlError, Statement};
use crate::storage::device::{self, DeviceStore};
use crate::storage::kv::{Batch, Store, StoreError};
use crate::storage::layout;
use crate::storage::secrets;

mod records;
mod signer;
mod syncer;
mod writer;

pub(crate) use records::{
    clear_joining, read_identity, read_joining, write_identity, write_joining,
};
use records::{decode_u64, identity_elements, load_author, load_catalog, load_identity, meta};
use writer::{Command, Job, Received, Writer, adopt};

/// Most jobs one group commit takes.
pub(crate) const MAX_GROUP: usize = 512;
/// Received row operations one job carries, and one group gathers, about
/// at most: the writer holds the state of every row its group touched
/// until the group is durable, and a sync reply of columnar commits can
/// carry nearly 200,000 rows. [`Database::ingest`] splits a larger batch.
pub(crate) const MAX_GROUP_ROWS: usize = 16_384;
/// Received commits [`Database::ingest`] verifies together (one field
/// inversion between them: `Located::verify_all`), a thread taking that
/// many at a time.
pub const VERIFIED_TOGETHER: usize = 16;
/// Encoded commits [`Database::ingest`] opens at a time, in bytes.
const OPEN_SLICE_BYTES: usize = 256 << 10;
/// Most jobs waiting for the writer; callers block beyond it.
pub(crate) const MAX_QUEUE: usize = 4096;
/// Row operations per commit when a statement changes many rows.
pub(crate) const OPS_PER_COMMIT: usize = 1_000;
/// Most commits held back (stamped too far ahead) at once; past it they
/// are refused with [`IngestError::ClockAhead`] and must be offered again.
pub(crate) const MAX_HELD: usize = 10_000;
/// How often the writer looks for held-back commits whose time has come.
pub(crate) const HELD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// Checked statements kept for reuse.
pub(crate) const STATEMENT_CACHE: usize = 1024;
/// Longest statement text kept for reuse.
pub(crate) const CACHED_SQL_LEN: usize = 4096;
/// Cache of the replica's store in a database opened with
/// [`Database::open`] (redb's read cache and write buffer). Queries read
/// the SQLite view, not the replica; the replica's reads (row states while
/// merging, commits while serving) and redb's inserts of received rows
/// are what it serves. A new device's first sync of 1M rows peaks at
/// about 210 MiB with it, against 256 MiB allowed (D41, D52).
pub const CACHE_BYTES: u64 = 32 << 20;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The statement was refused before running.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The query failed while running.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The write was refused; nothing was written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The schema was refused; nothing changed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The statement writes a scope this device has no key for.
    #[error("no key for scope {0}: apply its schema on this device first")]
    NoScopeKey(Name),
    /// A statement's rows do not fit in commits (a single row over 1 MiB).
    #[error("cannot write: {0}")]
    Commit(#[from] CommitError),
    /// A live query was asked for with a write statement.
    #[error("only SELECT can be subscribed to")]
    NotAQuery,
    /// The disk or the storage engine failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The SQLite view failed.
    #[error("view: {0}")]
    View(#[from] ViewError),
    /// Opening the database directory failed.
    #[error("cannot open {path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// An invite or a join was refused.
    #[error(transparent)]
    Pairing(#[from] PairingError),
    /// A recovery secret was refused.
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// A control operation could not be made or was refused.
    #[error("control log: {0}")]
    Control(#[from] ControlError),
    /// Another process has this database open.
    #[error("the database in {} is open in another process (a running node?); stop it or use another directory", .0.display())]
    InUse(PathBuf),
    /// An earlier storage failure (the one held) stopped the writer;
    /// reopen the database.
    #[error("the database stopped after a storage failure ({0}); restart to recover")]
    Stopped(Arc<DbError>),
    /// The database was closed: its writer takes no more work.
    #[error("the database is closed")]
    Closed,
    /// The platform keystore holding this device's secrets failed, or is
    /// out of reach.
    #[error(transparent)]
    Keystore(#[from] secrets::SecretError),
    /// This device was removed from the database (control-log.md §9.5):
    /// it writes nothing more; what it holds stays readable here.
    #[error(
        "this device was removed from the database: it can no longer write (its data stays readable here; write on one of your remaining devices)"
    )]
    DeviceRemoved,
    /// The app holds no unrevoked grant (revoked, or never approved).
    #[error("the app holds no grant (revoked, or never approved)")]
    NoGrant,
    /// The app's key is not kept here: it writes through its own client.
    #[error("this node holds no key for the app: it signs its own writes")]
    NotCustodial,
    /// The thread signing this replica's commits stopped (a panic).
    #[error("the thread signing this device's commits stopped")]
    SigningStopped,
    /// The thread making groups durable stopped (a panic).
    #[error("the thread making writes durable stopped")]
    SyncStopped,
}

/// What a write statement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Rows inserted, updated or deleted.
    pub rows_affected: usize,
    /// The commits that carry the change (none if no row changed).
    pub commits: Vec<CommitId>,
}

/// What a statement returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed {
    /// A `SELECT`'s rows.
    Rows(Rows),
    /// A write's outcome, durable on disk.
    Written(WriteOutcome),
}

/// Why a received commit was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Malformed, or its signature does not verify.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Stamped too far ahead of our clock: offer it again later.
    #[error(transparent)]
    ClockAhead(#[from] ClockAhead),
    /// It belongs to another database.
    #[error("commit belongs to database {0}, not this one")]
    OtherDatabase(DatabaseId),
    /// Its author may not write it (no grant, revoked, stale epoch…).
    #[error("commit not authorised: {0}")]
    Unauthorised(#[from] AuthError),
    /// Below its author's cut-off, but not an ancestor of the cut-off
    /// commit: a fork of the log the end keeps (control-log.md §6).
    #[error(
        "commit seq {seq} is below its author's cut-off but not on the chain of the cut-off commit"
    )]
    ForkBelowCutoff {
        /// The commit's seq.
        seq: u64,
    },
    /// Below its author's cut-off, and this replica does not hold the
    /// chain from the cut-off commit down to it yet: offer it again later
    /// (with the commits above it, it is decided at once).
    #[error(
        "commit seq {seq} is below its author's cut-off and the chain down to it is not held yet"
    )]
    ChainNotHeld {
        /// The commit's seq.
        seq: u64,
    },
}

/// What one control operation did: its id, or why it was refused.
pub type OpOutcome = Result<OpId, ControlError>;

struct Shared<S> {
    replica: Replica<S>,
    view_path: PathBuf,
    /// Shared, not copied, by the queries that run under it.
    catalog: RwLock<Arc<Catalog>>,
    /// What each caller may read under the current catalog.
    reaches: Mutex<Reaches>,
    keys: RwLock<ScopeKeys>,
    /// The namespace of each scope this replica can name (a device's).
    namespaces: RwLock<BTreeMap<ScopeId, Name>>,
    auth: RwLock<Arc<AuthState>>,
    control: RwLock<Arc<ControlLog>>,
    /// Where time and randomness come from.
    environment: Environment,
    /// Told (without waiting) after every durable group of changes.
    watchers: Mutex<Vec<mpsc::SyncSender<()>>>,
    readers: Mutex<Vec<(Connection, Gate)>>,
    /// Time each caller statement may run, in microseconds.
    budget: std::sync::atomic::AtomicU64,
    database: DatabaseId,
    device: PublicKey,
    stopped: Mutex<Option<Arc<DbError>>>,
    authors: KeyCache,
    /// Checked statements by namespace and text; cleared when the schema changes.
    statements: Mutex<HashMap<(Option<Name>, String), Checked>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn publish<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(PoisonError::into_inner) = value;
}

/// One user's database on this device.
pub struct Database<S: Store = DeviceStore> {
    shared: Arc<Shared<S>>,
    jobs: Option<mpsc::SyncSender<Job>>,
    writer: Option<JoinHandle<()>>,
    live: Live,
    /// Held (locked) while the database is open in this process.
    lock: Option<std::fs::File>,
}

impl<S: Store> std::fmt::Debug for Database<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("id", &self.shared.database).finish_non_exhaustive()
    }
}

impl Database<DeviceStore> {
    /// Opens the database in directory `dir`, creating it (with a new
    /// identity for this device) if it does not exist.
    /// Only one process at a time may open a directory.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        let lock = lock_dir(dir)?;
        let store = device::open(&dir.join("replica"), CACHE_BYTES)?;
        let mut db = Self::with_store(store, &dir.join("view.sqlite"))?;
        db.lock = Some(lock);
        // The replica holds this device's secret, the view plaintext: both
        // for their owner only, whatever the umask made them.
        for name in ["replica", "view.sqlite", "view.sqlite-wal", "view.sqlite-shm", "lock"] {
            let path = dir.join(name);
            make_private(&path).map_err(|error| DbError::Io { path, error })?;
        }
        Ok(db)
    }
}

/// Makes `path` readable and writable by its owner only: a directory
/// (with everything under it) 0700, a file 0600, whatever the umask made
/// them. Files made there later are out of other users' reach because the
/// directory is. Nothing to do off Unix, or if `path` does not exist.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                make_private(&entry?.path())?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Whether `device` is a device that the state removed (a pinning peer,
/// or a device not yet added, is not).
fn is_removed(state: &AuthState, device: &PublicKey) -> bool {
    state.devices().get(device).is_some_and(|d| d.removed.is_some())
}

/// The view of a pinning peer: an SQLite database in memory, shared by
/// this process's connections to it and by no other.
fn pinner_view(database: DatabaseId) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("file:basic-view-{database}-{}-{n}?mode=memory&cache=shared", std::process::id()).into()
}

/// Removes a view file and its journals, if any.
fn remove_view_files(path: &Path) -> Result<(), DbError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(DbError::Io { path: file.into(), error }),
        }
    }
    Ok(())
}

/// Creates `dir` if needed (readable by its owner only) and locks it for
/// this process.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, DbError> {
    let io = |error| DbError::Io { path: dir.to_owned(), error };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io)?;
        make_private(dir).map_err(io)?;
    }
    let lock = std::fs::File::create(dir.join("lock")).map_err(io)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(DbError::InUse(dir.to_owned())),
        Err(std::fs::TryLockError::Error(error)) => Err(io(error)),
    }
}

impl<S: Store> Database<S> {
    /// Opens the database kept in `store`, with its SQLite view at `view_path`.
    pub fn with_store(store: S, view_path: &Path) -> Result<Self, DbError> {
        Self::with_environment(store, view_path, Environment::default())
    }

    /// [`Database::with_store`], with time and randomness from `environment`.
    pub fn with_environment(
        store: S,
        view_path: &Path,
        environment: Environment,
    ) -> Result<Self, DbError> {
        let replica = Replica::new(store);
        replica.check_commit_ids()?;
        replica.ensure_summaries()?;
        let (database, device, _) = load_identity(&replica, &environment)?;
        let log = load_author(&replica, device.clone(), database)?;
        let access = Access::load(&replica, database, &device)?;
        // A pinning peer holds no key: it keeps no SQL view on disk, not
        // even an empty one (its table names would be there).
        let view_path = &if access.state().pinners().contains_key(&device.public()) {
            remove_view_files(view_path)?;
            pinner_view(database)
        } else {
            view_path.to_owned()
        };
        let mut catalog = load_catalog(&replica)?;
        adopt(&mut catalog, access.schemas());
        let watermark = match replica.store().get(&layout::meta(meta::WATERMARK))? {
            Some(bytes) => decode_u64(&bytes, "watermark")?,
            None => 0,
        };
        let (conn, gate) = view::open_writer(view_path)?;
        if view::watermark(&conn)? != watermark {
            view::rebuild(&conn, &catalog, &replica)?;
            view::set_watermark(&conn, watermark)?;
        } else {
            view::sync_schema(&conn, &catalog, &replica)?;
        }
        let shared = Arc::new(Shared {
            replica,
            view_path: view_path.to_owned(),
            catalog: RwLock::new(Arc::new(catalog.clone())),
            reaches: Mutex::new(Reaches::default()),
            keys: RwLock::new(access.keys().clone()),
            namespaces: RwLock::new(access.namespaces(&catalog)),
            auth: RwLock::new(Arc::clone(access.state())),
            control: RwLock::new(Arc::new(access.log().clone())),
            environment: environment.clone(),
            watchers: Mutex::new(Vec::new()),
            readers: Mutex::new(Vec::new()),
            budget: std::sync::atomic::AtomicU64::new(micros(query::DEFAULT_BUDGET)),
            database,
            device: device.public(),
            stopped: Mutex::new(None),
            authors: KeyCache::default(),
            statements: Mutex::new(HashMap::new()),
        });
        let live_shared = Arc::clone(&shared);
        let live = Live::start(Box::new(move |sql: &str, params: &[Value], reach: &Arc<Reach>| {
            with_reader(&live_shared, reach, sql, params)
        }));
        let (jobs, queue) = mpsc::sync_channel(MAX_QUEUE);
        let writer = Writer {
            shared: Arc::clone(&shared),
            log,
            app_logs: BTreeMap::new(),
            catalog,
            row_plans: RowPlans::default(),
            access,
            watermark,
            rng: environment.rng(),
            changed_tables: live.notifier(),
            gate,
            published_stale: false,
            held: shared.replica.held_count()?,
            signer: signer::Signer::new(),
        };
        let handle = std::thread::Builder::new()
            .name("basic-writer".into())
            .spawn(move || writer.run(conn, queue))
            .map_err(|error| DbError::Io { path: view_path.to_owned(), error })?;
        Ok(Self { shared, jobs: Some(jobs), writer: Some(handle), live, lock: None })
    }

    /// This replica's principal key: the device's (or the pinning peer's)
    /// secret, which proves membership to sync peers.
    pub fn member_key(&self) -> Result<SecretKey, DbError> {
        Ok(load_identity(&self.shared.replica, &self.shared.environment)?.1)
    }

    /// This database's id.
    pub fn id(&self) -> DatabaseId {
        self.shared.database
    }

    /// This device's key: the author of its commits.
    pub fn device(&self) -> PublicKey {
        self.shared.device
    }

    /// The validated author keys of this replica, shared by everything that
    /// decodes for it (ingest, and every sync session).
    pub fn key_cache(&self) -> &KeyCache {
        &self.shared.authors
    }

    /// Where this database takes time and randomness from.
    pub fn environment(&self) -> &Environment {
        &self.shared.environment
    }

    /// The replica, for logs, heads, forks and row states.
    pub fn replica(&self) -> &Replica<S> {
        &self.shared.replica
    }

    /// The SQLite view's file.
    pub(crate) fn view_path(&self) -> &Path {
        &self.shared.view_path
    }

    /// The current schemas.
    pub fn catalog(&self) -> Catalog {
        let catalog: Arc<Catalog> = read(&self.shared.catalog);
        Catalog::clone(&catalog)
    }

    /// Runs one SQL statement. `namespace` is the caller's own namespace,
    /// for unqualified table names. Writes return once they are on disk.
    pub fn execute(
        &self,
        sql: &str,
        params: &[Value],
        namespace: Option<&Name>,
    ) -> Result<Executed, DbError> {
        self.execute_as(&Caller::Owner, sql, params, namespace)
    }

    /// [`Database::execute`] for `caller`: its SQL reaches only the tables
    /// it may read (enforced by SQLite's authorizer as well as checked
    /// here) and writes only the ones it may write.
    pub fn execute_as(
        &self,
        caller: &Caller,
        sql: &str,
        params: &[Value],
        namespace: Option<&Name>,
    ) -> Result<Executed, DbError> {
        match self.parse(caller, sql, namespace)? {
            Statement::Select { sql, .. } => {
                Ok(Executed::Rows(self.run_query(caller, &sql, params)?))
            }
            statement => {
                let (caller, params) = (caller.clone(), params.to_vec());
                self.submit(|reply| Job::Write { caller, statement, params, author: None, reply })
                    .map(Executed::Written)
            }
        }
    }

    /// A new app whose key this node keeps (a custodial app, which uses
    /// the node's API): its writes through [`Database::execute_as_app`]
    /// are signed with its key, so grants, revocation cut-offs and
    /// attribution work from signatures as for apps that sign their own.
    pub fn new_custodial_app(&self) -> Result<Party, DbError> {
        let secret = SecretKey::generate(&mut self.environment().rng());
        let store = self.replica().store();
        let mut batch = Batch::default();
        batch.put(layout::custodial(&secret.public()), secret.seed().to_vec());
        store.apply(batch)?;
        store.flush()?;
        Ok(Party::of(&secret))
    }

    /// Runs one SQL statement as the custodial app `app`, within its
    /// unrevoked grants; a write is signed with the app's key.
    pub fn execute_as_app(
        &self,
        app: &PublicKey,
        sql: &str,
        params: &[Value],
        namespace: Option<&Name>,
    ) -> Result<Executed, DbError> {
        let caller = self.app_caller(app).ok_or(DbError::NoGrant)?;
        match self.parse(&caller, sql, namespace)? {
            Statement::Select { sql, .. } => {
                Ok(Executed::Rows(self.run_query(&caller, &sql, params)?))
            }
            statement => {
                let seed = self.replica().store().get(&layout::custodial(app))?;
                let seed: [u8; 32] =
                    seed.ok_or(DbError::NotCustodial)?.try_into().map_err(|_| {
                        StoreError::Corrupt {
                            what: "custodial app key",
                            reason: "not 32 bytes".into(),
                        }
                    })?;
                let author = Some(SecretKey::from_seed(seed));
                let params = params.to_vec();
                self.submit(|reply| Job::Write { caller, statement, params, author, reply })
                    .map(Executed::Written)
            }
        }
    }

    /// Runs a `SELECT`.
    pub fn query(
        &self,
        sql: &str,
        params: &[Value],
        namespace: Option<&Name>,
    ) -> Result<Rows, DbError> {
        self.query_as(&Caller::Owner, sql, params, namespace)
    }

    /// [`Database::query`] for `caller` (see [`Database::execute_as`]).
    pub fn query_as(
        &self,
        caller: &Caller,
        sql: &str,
        params: &[Value],
        namespace: Option<&Name>,
    ) -> Result<Rows, DbError> {
        match self.parse(caller, sql, namespace)? {
            Statement::Select { sql, .. } => self.run_query(caller, &sql, params),
            _ => Err(DbError::NotAQuery),
        }
    }

    /// Subscribes to a `SELECT`: the subscription receives its result now
    /// and again each time a write or a received commit changes it.
    pub fn subscribe(
        &self,
        sql: &str,
        params: &[Value],
        namespace: Option<&Name>,
    ) -> Result<Subscription, DbError> {
        self.subscribe_as(&Caller::Owner, sql, params, namespace)
    }

    /// [`Database::subscribe`] for `caller` (see [`Database::execute_as`]);
    /// each run again is within the caller's reach and the statement
    /// budget, and a run again past the budget ends the subscription.
    pub fn subscribe_as(
        &self,
        caller: &Caller,
        sql: &str,
        params: &[Value],
        namespace: Option<&Name>,
    ) -> Result<Subscription, DbError> {
        match self.parse(caller, sql, namespace)? {
            Statement::Select { sql, tables } => {
                let reach = self.reach(caller);
                let first = with_reader(&self.shared, &reach, &sql, params)?;
                Ok(self.live.subscribe(sql, params.to_vec(), tables, reach, first))
            }
            _ => Err(DbError::NotAQuery),
        }
    }

    /// How long one statement may run (see [`Database::set_statement_budget`]).
    pub fn statement_budget(&self) -> std::time::Duration {
        self.shared.budget()
    }

    /// Sets how long one statement may run — a query, a live query's run
    /// after each change, a write's evaluation — before it is stopped with
    /// a timeout error. The default is [`query::DEFAULT_BUDGET`].
    pub fn set_statement_budget(&self, budget: std::time::Duration) {
        self.shared.budget.store(micros(budget), std::sync::atomic::Ordering::Relaxed);
    }

    /// Why the database stopped, if a storage failure stopped it: writes
    /// and schema changes fail until it is opened again.
    pub fn failure(&self) -> Option<Arc<DbError>> {
        lock(&self.shared.stopped).clone()
    }

    /// Applies a new version of one namespace's schema (additive only).
    pub fn apply_schema(&self, schema: Schema) -> Result<Migration, DbError> {
        self.submit(|reply| Job::Schema { schema, reply })
    }

    /// The recovery secret, until [`Database::forget_recovery_secret`]: the
    /// user's root identity, to write down and keep offline. With it a new
    /// device regains the database ([`Database::recover`]).
    pub fn recovery_secret(&self) -> Result<Option<String>, DbError> {
        Ok(read_identity(&self.shared.replica)?
            .and_then(|(_, _, root)| root)
            .map(|root| recovery::encode(&root)))
    }

    /// Forgets the recovery secret on this device, once the user has
    /// written it down.
    pub fn forget_recovery_secret(&self) -> Result<(), DbError> {
        let replica = &self.shared.replica;
        if let Some((database, device, Some(_))) = read_identity(replica)? {
            let kept = identity_elements(replica)?
                .and_then(|(_, root)| secrets::named(&root).map(str::to_owned));
            let mut txn = replica.begin();
            write_identity(&mut txn, database, &device, None)?;
            txn.commit()?;
            if let (Some(name), Some(store)) = (kept, secrets::installed()) {
                store.delete(&name)?;
            }
        }
        Ok(())
    }

    /// The authorisation state of the control log.
    pub fn auth_state(&self) -> Arc<AuthState> {
        read(&self.shared.auth)
    }

    /// A signal after each durable change (local writes, received commits
    /// and operations); signals coalesce while unread. Sync uses it to push
    /// what is new.
    pub fn watch_changes(&self) -> mpsc::Receiver<()> {
        let (signal, watch) = mpsc::sync_channel(1);
        lock(&self.shared.watchers).push(signal);
        watch
    }

    /// The control log.
    pub fn control_log(&self) -> Arc<ControlLog> {
        read(&self.shared.control)
    }

    /// Every admitted control operation, encoded, in canonical order.
    pub fn control_ops(&self) -> Result<Vec<Vec<u8>>, DbError> {
        Ok(self.control_log().ordered().iter().map(|op| op.as_bytes().to_vec()).collect())
    }

    /// Admits control operations received from peers, then brings the
    /// tables in line with the new state. One outcome per operation.
    pub fn ingest_ops(&self, encoded: &[Vec<u8>]) -> Result<Vec<OpOutcome>, DbError> {
        let ops = encoded
            .iter()
            .map(|bytes| {
                ControlOp::decode_with(bytes, &self.shared.authors).map_err(ControlError::from)
            })
            .collect();
        self.submit(|reply| Job::Control { command: Command::Ingest(ops), reply })
    }

    /// Grants `app` (its key and sealing key) `rights` on `scope`, sealing
    /// the scope's current key to it.
    pub fn grant(&self, app: Party, scope: Name, rights: Rights) -> Result<OpId, DbError> {
        self.command(Command::Grant { app, scope, rights })
    }

    /// Revokes `app` on `scope`: its commits after the last one this device
    /// has stop counting everywhere, and the scope's key rotates to the
    /// remaining readers.
    pub fn revoke(&self, app: PublicKey, scope: Name) -> Result<OpId, DbError> {
        self.command(Command::Revoke { app, scope })
    }

    /// Adds a device, sealing every scope key this device holds to it.
    pub fn add_device(&self, device: Party) -> Result<OpId, DbError> {
        self.command(Command::AddDevice(device))
    }

    /// Removes a device for good: its commits after the last one this
    /// device has stop counting, and every scope key rotates to the
    /// remaining readers.
    pub fn remove_device(&self, device: PublicKey) -> Result<OpId, DbError> {
        self.command(Command::RemoveDevice(device))
    }

    /// Removes a device with an operation signed by the root identity
    /// `root` (the recovery secret): among several removals of one device
    /// the root's end decides (control-log.md §6), so this one's cut-off —
    /// the last commit of the device's log this replica holds without a
    /// gap — replaces any other's, a thief's cut-off 0 included. Call it
    /// once the device's commits have synced here. The device may already
    /// be removed.
    pub fn remove_device_as_root(
        &self,
        device: PublicKey,
        root: SecretKey,
    ) -> Result<OpId, DbError> {
        self.command(Command::RemoveDeviceAsRoot(device, Box::new(root)))
    }

    /// Whether the control log removed this device: it then writes
    /// nothing more (control-log.md §9.5).
    pub fn is_removed(&self) -> bool {
        is_removed(&self.auth_state(), &self.shared.device)
    }

    /// The platform keystore that holds this device's secrets, by name;
    /// `None` when they are in the replica's identity record (a file).
    pub fn keystore(&self) -> Result<Option<String>, DbError> {
        Ok(match identity_elements(&self.shared.replica)? {
            Some((device, _)) if secrets::named(&device).is_some() => Some(
                secrets::installed()
                    .map_or_else(|| "a platform keystore".to_owned(), |s| s.name().to_owned()),
            ),
            _ => None,
        })
    }

    /// The root secret, while this device holds it (see
    /// [`Database::forget_recovery_secret`]).
    pub fn root_secret(&self) -> Result<Option<SecretKey>, DbError> {
        Ok(read_identity(&self.shared.replica)?.and_then(|(_, _, root)| root))
    }

    /// Authorises a pinning peer to store, verify and serve this database's
    /// ciphertext. It receives no key.
    pub fn add_pinner(&self, pinner: PublicKey) -> Result<OpId, DbError> {
        self.command(Command::AddPinner(pinner))
    }

    /// Ends a pinning peer's authorisation, for good.
    pub fn remove_pinner(&self, pinner: PublicKey) -> Result<OpId, DbError> {
        self.command(Command::RemovePinner(pinner))
    }

    fn command(&self, command: Command) -> Result<OpId, DbError> {
        let outcomes = self.submit(|reply| Job::Control { command, reply })?;
        match outcomes.into_iter().next() {
            Some(Ok(id)) => Ok(id),
            Some(Err(error)) => Err(error.into()),
            None => Err(ControlError::NoOperation.into()),
        }
    }

    /// The namespace of each scope this replica can name: the scopes of
    /// its schemas (a device's; a pinning peer names none).
    pub fn namespaces(&self) -> BTreeMap<ScopeId, Name> {
        read(&self.shared.namespaces)
    }

    /// The scope id of `namespace`, if this replica can name it.
    pub fn scope_id(&self, namespace: &Name) -> Option<ScopeId> {
        self.namespaces().into_iter().find(|(_, n)| n == namespace).map(|(id, _)| id)
    }

    /// What `app` may reach now, as a caller: every namespace it holds an
    /// unrevoked grant on for reading, the read-write ones for writing;
    /// `None` if it holds none (revoked, or never granted).
    pub fn app_caller(&self, app: &PublicKey) -> Option<Caller> {
        let grants = self.live_grants(app);
        (!grants.is_empty()).then(|| Caller::App {
            readable: grants.keys().cloned().collect(),
            writable: grants
                .iter()
                .filter(|(_, rights)| **rights == Rights::ReadWrite)
                .map(|(scope, _)| scope.clone())
                .collect(),
        })
    }

    /// The scope keys this device holds.
    pub fn scope_keys(&self) -> ScopeKeys {
        read(&self.shared.keys)
    }

    /// Verifies, opens and stores commits received from peers, merging the
    /// ones this device can read. One result per commit, in order.
    pub fn ingest(
        &self,
        encoded: &[Vec<u8>],
    ) -> Result<Vec<Result<Inserted, IngestError>>, DbError> {
        let keys = read(&self.shared.keys);
        let auth = read(&self.shared.auth);
        let now = self.shared.environment.now_ms();
        let database = self.shared.database;
        // What is checked once the signature holds.
        let checked = |commit: Commit| -> Result<Received, IngestError> {
            let header = commit.header();
            if header.database != database {
                return Err(IngestError::OtherDatabase(header.database));
            }
            auth.check_commit(header, commit.id())?;
            if let Err(ahead) = check_not_ahead(header.hlc, now) {
                return Ok(Received::Ahead(commit, ahead));
            }
            let content = keys.open(&commit);
            Ok(Received::Ready(commit, content))
        };
        // A copy of a commit held already (a peer relays what another sent)
        // is known by its id, read off its bytes: neither verified nor
        // opened again, and nothing of it is stored (a copy whose signature
        // was altered is a duplicate too: the verified one is kept). The
        // look-up runs beside the verification of the other commits, and
        // only for a commit at or below its author's head (held in memory):
        // nothing is stored past it. Each commit is either handed to the
        // writer or answered here. The signatures of a few commits taken
        // together are verified together, for less work (`Located::verify_all`).
        let replica = &self.shared.replica;
        let authors = &self.shared.authors;
        let screen = |chunk: &[Vec<u8>]| -> Vec<Result<Screened, StoreError>> {
            let mut to_verify = Vec::new();
            let first_look: Vec<Option<Result<Screened, StoreError>>> = chunk
                .iter()
                .map(|bytes| {
                    let Some(at) = Commit::locate(bytes, authors) else {
                        let decoded = Commit::decode_with(bytes, authors).map_err(Into::into);
                        return Some(Ok(decoded.and_then(checked).map_err(Err)));
                    };
                    let header = at.header();
                    match replica.holds_applied_at(&at.id(), &header.author, header.seq) {
                        Err(error) => Some(Err(error)),
                        Ok(true) => Some(Ok(Err(Ok(Inserted {
                            id: at.id(),
                            outcome: Outcome::Duplicate,
                            fork: false,
                        })))),
                        Ok(false) => {
                            to_verify.push(at);
                            None
                        }
                    }
                })
                .collect();
            let mut verified = Located::verify_all(to_verify)
                .into_iter()
                .map(|commit| Ok(commit.map_err(Into::into).and_then(checked).map_err(Err)));
            first_look.into_iter().filter_map(|first| first.or_else(|| verified.next())).collect()
        };
        // Opened a slice at a time, and handed to the writer in jobs of
        // about MAX_GROUP_ROWS rows, the next opened while the writer
        // applies the last: what is held at once stays bounded however
        // many rows the batch carries. A batch holding a commit below its
        // author's cut-off is one job: the chain from the cut-off commit,
        // which later commits of the batch may complete, decides it within
        // the job (writer `ingest`).
        // Only worth reading the headers for once some author has an end.
        let below_an_end = any_end(&auth)
            && encoded.iter().any(|bytes| {
                Commit::header_of(bytes, &self.shared.authors)
                    .is_ok_and(|header| end_below(&auth, &header).is_some())
            });
        let (slice_bytes, job_rows) = match below_an_end {
            true => (usize::MAX, usize::MAX),
            false => (OPEN_SLICE_BYTES, MAX_GROUP_ROWS),
        };
        // `None` for each commit the writer answers, in order.
        let mut outcomes: Vec<Option<Answer>> = Vec::with_capacity(encoded.len());
        let mut jobs = Jobs { inserted: Vec::with_capacity(encoded.len()), in_flight: None };
        let mut job = Vec::new();
        let mut rows = 0;
        for slice in slices(encoded, slice_bytes) {
            job.reserve(slice.len());
            for screened in parallel_chunks(slice, screen) {
                let received = match screened? {
                    Ok(received) => received,
                    Err(answer) => {
                        outcomes.push(Some(answer));
                        continue;
                    }
                };
                outcomes.push(None);
                rows += received.rows();
                job.push(received);
                if rows >= job_rows {
                    self.hand_over(std::mem::take(&mut job), &mut jobs)?;
                    rows = 0;
                }
            }
        }
        if !job.is_empty() {
            self.hand_over(job, &mut jobs)?;
        }
        if let Some(last) = jobs.in_flight {
            jobs.inserted.extend(self.answer(last)?);
        }
        // The writer answers once per commit it took, in order.
        let mut inserted = jobs.inserted.into_iter();
        Ok(outcomes.into_iter().filter_map(|outcome| outcome.or_else(|| inserted.next())).collect())
    }

    /// Parses and checks `sql` for `caller`, reusing the parse for the
    /// same text.
    fn parse(
        &self,
        caller: &Caller,
        sql: &str,
        namespace: Option<&Name>,
    ) -> Result<Statement, DbError> {
        let checked = self.check(sql, namespace)?;
        checked.authorize(caller)?;
        Ok(checked.statement)
    }

    fn check(&self, sql: &str, namespace: Option<&Name>) -> Result<Checked, DbError> {
        let cache_key = (namespace.cloned(), sql.to_owned());
        if let Some(checked) = lock(&self.shared.statements).get(&cache_key) {
            return Ok(checked.clone());
        }
        let catalog = self.shared.catalog.read().unwrap_or_else(PoisonError::into_inner);
        let tables: BTreeSet<Name> =
            catalog.schemas().flat_map(|s| s.tables().iter().map(|t| t.name().clone())).collect();
        drop(catalog);
        let checked = sql::check(sql, &tables, namespace)?;
        if sql.len() <= CACHED_SQL_LEN {
            let mut statements = lock(&self.shared.statements);
            if statements.len() >= STATEMENT_CACHE {
                statements.clear();
            }
            statements.insert(cache_key, checked.clone());
        }
        Ok(checked)
    }

    /// The tables `caller` may read now (computed once per catalog).
    fn reach(&self, caller: &Caller) -> Arc<Reach> {
        let catalog = read(&self.shared.catalog);
        let mut reaches = lock(&self.shared.reaches);
        if !reaches.of.as_ref().is_some_and(|of| Arc::ptr_eq(of, &catalog))
            || reaches.by_caller.len() >= STATEMENT_CACHE
        {
            *reaches = Reaches { of: Some(Arc::clone(&catalog)), by_caller: HashMap::new() };
        }
        let reach = reaches
            .by_caller
            .entry(caller.clone())
            .or_insert_with(|| Arc::new(Reach::of(caller, &catalog)));
        Arc::clone(reach)
    }

    fn run_query(&self, caller: &Caller, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        with_reader(&self.shared, &self.reach(caller), sql, params)
    }

    /// Hands `commits` to the writer as one job, then waits for the job
    /// handed before it: one is applied while the next is opened.
    fn hand_over(&self, commits: Vec<Received>, jobs: &mut Jobs) -> Result<(), DbError> {
        let sent = self.send(|reply| Job::Ingest { commits, reply })?;
        if let Some(earlier) = jobs.in_flight.replace(sent) {
            jobs.inserted.extend(self.answer(earlier)?);
        }
        Ok(())
    }

    /// Hands a job to the writer and waits for its answer.
    fn submit<T>(
        &self,
        job: impl FnOnce(mpsc::Sender<Result<T, DbError>>) -> Job,
    ) -> Result<T, DbError> {
        let sent = self.send(job)?;
        self.answer(sent)
    }

    /// Hands a job to the writer; [`Database::answer`] waits for it.
    fn send<T>(
        &self,
        job: impl FnOnce(mpsc::Sender<Result<T, DbError>>) -> Job,
    ) -> Result<mpsc::Receiver<Result<T, DbError>>, DbError> {
        let (reply, answer) = mpsc::channel();
        let jobs = self.jobs.as_ref().ok_or_else(|| self.stopped())?;
        jobs.send(job(reply)).map_err(|_| self.stopped())?;
        Ok(answer)
    }

    /// The writer's answer to a job [`Database::send`] handed it.
    fn answer<T>(&self, answer: mpsc::Receiver<Result<T, DbError>>) -> Result<T, DbError> {
        answer.recv().map_err(|_| self.stopped())?
    }

    /// Why the writer takes no job: the failure that stopped it.
    fn stopped(&self) -> DbError {
        lock(&self.shared.stopped).clone().map_or(DbError::Closed, DbError::Stopped)
    }
}

impl<S: Store> Drop for Database<S> {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Runs a checked `SELECT` within `reach` and the statement budget, on a
/// query connection (from the pool, or a new one).
fn with_reader<S>(
    shared: &Shared<S>,
    reach: &Arc<Reach>,
    sql: &str,
    params: &[Value],
) -> Result<Rows, DbError> {
    let (conn, gate) = match lock(&shared.readers).pop() {
        Some(reader) => reader,
        None => view::open_reader(&shared.view_path)?,
    };
    // A copy: no lock is held while the query runs, so publishing a new
    // catalog (a schema change) never waits for a query.
    let catalog = read(&shared.catalog);
    let budget = shared.budget();
    let result = {
        let _entered = gate.enter(&conn, reach, budget);
        query::run(&conn, &catalog, sql, params, budget)
    };
    lock(&shared.readers).push((conn, gate));
    Ok(result?)
}

/// What each caller may read under one catalog.
#[derive(Default)]
struct Reaches {
    of: Option<Arc<Catalog>>,
    by_caller: HashMap<Caller, Arc<Reach>>,
}

impl<S> Shared<S> {
    fn budget(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.budget.load(std::sync::atomic::Ordering::Relaxed))
    }
}

fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// What [`Database::ingest`] answers for one commit.
type Answer = Result<Inserted, IngestError>;

/// A received commit after the checks of [`Database::ingest`]: for the
/// writer, or answered already.
type Screened = Result<Received, Answer>;

/// The ingest jobs of one batch: the writer's answers so far, and the job
/// handed over whose answer is still to come.
struct Jobs {
    inserted: writer::Ingested,
    in_flight: Option<mpsc::Receiver<Result<writer::Ingested, DbError>>>,
}

/// `items` in consecutive slices of at most `max_bytes` bytes each (and
/// at least one item).
fn slices(items: &[Vec<u8>], max_bytes: usize) -> impl Iterator<Item = &[Vec<u8>]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let end = rest
            .iter()
            .position(|item| {
                bytes += item.len();
                bytes > max_bytes
            })
            .map_or(rest.len(), |i| i.max(1));
        let (slice, after) = rest.split_at(end);
        rest = after;
        Some(slice)
    })
}

/// `f` over `items` a few at a time, on every core when there are many:
/// the calling thread and one more per other core take the next few items
/// in turn until none is left, so no thread idles while another finishes a
/// share fixed in advance. `f` gives one result per item it is given.
fn parallel_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    /// Items a thread takes at a time.
    const TAKE: usize = VERIFIED_TOGETHER;
    // Asking the system reads files under /proc and /sys: once per process.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if items.len() < 64 {
        return f(items);
    }
    let threads =
        *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads < 2 {
        return items.chunks(TAKE).flat_map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let start = next.fetch_add(TAKE, std::sync::atomic::Ordering::Relaxed);
            if start >= items.len() {
                return done;
            }
            done.push((start, f(&items[start..(start + TAKE).min(items.len())])));
        }
    };
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut done = work();
        // A panic in `f` is a bug: it goes on to the caller rather than
        // leaving a result out and shifting the rest against their items.
        for helper in helpers {
            done.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        done
    });
    done.sort_unstable_by_key(|(start, _)| *start);
    let mut results = Vec::with_capacity(items.len());
    for (_, taken) in done {
        results.extend(taken);
    }
    results
}

/// The scope of a table: its namespace.
pub fn scope_of(table: &Name) -> Name {
    let namespace = table.as_str().split('.').next().unwrap_or(table.as_str());
    Name::new(namespace).unwrap_or_else(|_| table.clone())
}
