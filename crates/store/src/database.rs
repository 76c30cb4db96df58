//! The database: a replica, its SQLite view, one writer thread that
//! group-commits, query connections and live queries.
//!
//! Every write goes through the writer thread. It takes every job waiting
//! (up to [`MAX_GROUP`]), runs them one after another in one replica
//! transaction and one SQLite transaction — each job sees the ones before
//! it — then applies the replica batch, flushes it to disk once for the
//! whole group, commits the view, and only then answers each caller. A
//! write that returned is on disk; a crash loses only writes that had not
//! returned.

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
    Changes, ClockAhead, Commit, CommitError, CommitId, DatabaseId, Hlc, KeyCache, Name, PublicKey,
    RowOp, ScopeId, ScopeKey, SecretKey, Value,
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
    Chain, CutoffChains, Holds, Inserted, Keyring, Outcome, Replica, RowChange, Txn, end_below,
};
use crate::sql::live::{Live, Subscription};
use crate::sql::query::{self, QueryError, Rows};
use crate::sql::schema::{Catalog, Migration, Schema, SchemaError};
use crate::sql::view::{self, Gate, Reach, ViewError};
use crate::sql::write::{self, WriteError};
use crate::sql::{self, Caller, Checked, SqlError, Statement};
use crate::storage::kv::{SledStore, Store, StoreError};
use crate::storage::layout;
use crate::storage::secrets;

/// Most jobs one group commit takes.
pub(crate) const MAX_GROUP: usize = 512;
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
/// sled page cache of a database opened with [`Database::open`].
pub const CACHE_BYTES: u64 = 256 << 20;

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
    /// An earlier storage failure stopped the writer; reopen the database.
    #[error("the database stopped after a storage failure ({0}); restart to recover")]
    Stopped(String),
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

enum Job {
    Write {
        caller: Caller,
        statement: Statement,
        params: Vec<Value>,
        reply: mpsc::Sender<Result<WriteOutcome, DbError>>,
    },
    Ingest {
        commits: Vec<Received>,
        reply: mpsc::Sender<Result<Ingested, DbError>>,
    },
    Schema {
        schema: Schema,
        reply: mpsc::Sender<Result<Migration, DbError>>,
    },
    Control {
        command: Command,
        reply: mpsc::Sender<Result<Vec<OpOutcome>, DbError>>,
    },
}

/// A change to the control log.
enum Command {
    /// Operations received from peers (or why one did not decode).
    Ingest(Vec<Result<ControlOp, ControlError>>),
    Grant {
        app: Party,
        scope: Name,
        rights: Rights,
    },
    Revoke {
        app: PublicKey,
        scope: Name,
    },
    AddDevice(Party),
    RemoveDevice(PublicKey),
    /// A removal signed by the root, whose end decides (control-log.md §6).
    RemoveDeviceAsRoot(PublicKey, Box<SecretKey>),
    AddPinner(PublicKey),
    RemovePinner(PublicKey),
}

/// What one control operation did: its id, or why it was refused.
pub type OpOutcome = Result<OpId, ControlError>;

/// One result per received commit, in order.
type Ingested = Vec<Result<Inserted, IngestError>>;

/// A verified commit received from a peer.
enum Received {
    /// To insert now, with the result of opening it (`None`: no key).
    Ready(Commit, Option<Result<Changes, CommitError>>),
    /// Stamped too far ahead: to hold back until its time.
    Ahead(Commit, ClockAhead),
}

impl Received {
    fn commit(&self) -> &Commit {
        match self {
            Received::Ready(commit, _) | Received::Ahead(commit, _) => commit,
        }
    }
}

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
    stopped: Mutex<Option<String>>,
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
pub struct Database<S: Store = SledStore> {
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

impl Database<SledStore> {
    /// Opens the database in directory `dir`, creating it (with a new
    /// identity for this device) if it does not exist.
    /// Only one process at a time may open a directory.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        let lock = lock_dir(dir)?;
        let store = SledStore::open(&dir.join("replica"), CACHE_BYTES)?;
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

mod meta {
    //! Metadata records of the database, in the replica's `m` space.
    pub(super) const IDENTITY: &str = "identity";
    pub(super) const JOINING: &str = "joining";
    pub(super) const AUTHOR: &str = "author";
    pub(super) const SCHEMAS: &str = "schemas";
    pub(super) const WATERMARK: &str = "watermark";
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
            catalog,
            access,
            watermark,
            rng: environment.rng(),
            changed_tables: live.notifier(),
            gate,
            published_stale: false,
            held: shared.replica.held_count()?,
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
                self.submit(|reply| Job::Write { caller, statement, params, reply })
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
    pub fn failure(&self) -> Option<String> {
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
        let check = |bytes: &Vec<u8>| -> Result<Received, IngestError> {
            let commit = Commit::decode_with(bytes, &self.shared.authors)?;
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
        let mut outcomes: Vec<Option<Result<Inserted, IngestError>>> =
            Vec::with_capacity(encoded.len());
        let mut accepted = Vec::new();
        for result in parallel_map(encoded, check) {
            match result {
                Ok(opened) => {
                    accepted.push(opened);
                    outcomes.push(None);
                }
                Err(error) => outcomes.push(Some(Err(error))),
            }
        }
        let mut inserted = if accepted.is_empty() {
            Vec::new()
        } else {
            self.submit(|reply| Job::Ingest { commits: accepted, reply })?
        }
        .into_iter();
        // The writer answers once per accepted commit, in order.
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

    fn submit<T>(
        &self,
        job: impl FnOnce(mpsc::Sender<Result<T, DbError>>) -> Job,
    ) -> Result<T, DbError> {
        let stopped = || {
            DbError::Stopped(lock(&self.shared.stopped).clone().unwrap_or_else(|| "closed".into()))
        };
        let (reply, answer) = mpsc::channel();
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(job(reply)).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
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

/// `f` over `items`, on every core when there are many.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < 64 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn encode_u64(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what,
        reason: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// The database id and this device's secret, created on first open.
/// The database id, this device's secret and, until the user has written
/// down the recovery secret, the root secret. Created on first open: the
/// root identity signs the genesis operation, which names this device and
/// whose id is the database id.
fn load_identity<S: Store>(
    replica: &Replica<S>,
    environment: &Environment,
) -> Result<(DatabaseId, SecretKey, Option<SecretKey>), DbError> {
    if let Some(identity) = read_identity(replica)? {
        // Secrets still in the file move to a keystore installed since.
        let in_file = |e: &Cbor| matches!(e, Cbor::Bytes(_));
        if secrets::installed().is_some()
            && identity_elements(replica)?.is_some_and(|(d, r)| in_file(&d) || in_file(&r))
        {
            let (database, device, root) = &identity;
            let mut txn = replica.begin();
            write_identity(&mut txn, *database, device, root.as_ref())?;
            txn.commit()?;
        }
        return Ok(identity);
    }
    if read_joining(replica)?.is_some() {
        return Err(ControlError::Joining.into());
    }
    let mut rng = environment.rng();
    let (root, device) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    let genesis = ControlOp::create(
        &root,
        OpBody {
            database: DatabaseId([0; 32]),
            author: root.public(),
            parents: Vec::new(),
            hlc: Hlc { wall_ms: environment.now_ms(), counter: 0 },
            payload: Payload::genesis(&root, &Party::of(&device), &mut rng)
                .map_err(ControlError::from)?,
        },
    )
    .map_err(ControlError::from)?;
    let database = genesis.database();
    let mut txn = replica.begin();
    txn.insert_op(&genesis);
    write_identity(&mut txn, database, &device, Some(&root))?;
    txn.commit()?;
    Ok((database, device, Some(root)))
}

/// The stored identity, if this replica has one.
pub(crate) fn read_identity<S: Store>(
    replica: &Replica<S>,
) -> Result<Option<(DatabaseId, SecretKey, Option<SecretKey>)>, DbError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::IDENTITY))? else {
        return Ok(None);
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "identity", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "identity", 1024).map_err(corrupt)?, "identity", 3)
            .map_err(corrupt)?;
    let database = DatabaseId(fields.fixed("database").map_err(corrupt)?);
    // Each secret: its bytes, or its name in the platform keystore.
    let device =
        SecretKey::from_seed(secrets::seed(&fields.next("device").map_err(corrupt)?, "key")?);
    let root = match fields.next("root").map_err(corrupt)? {
        Cbor::Null => None,
        value => Some(SecretKey::from_seed(secrets::seed(&value, "root key")?)),
    };
    Ok(Some((database, device, root)))
}

/// The raw elements of the identity record (device, root), to tell
/// secrets in the file from secrets in the keystore.
fn identity_elements<S: Store>(replica: &Replica<S>) -> Result<Option<(Cbor, Cbor)>, StoreError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::IDENTITY))? else {
        return Ok(None);
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "identity", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "identity", 1024).map_err(corrupt)?, "identity", 3)
            .map_err(corrupt)?;
    fields.next("database").map_err(corrupt)?;
    Ok(Some((fields.next("device").map_err(corrupt)?, fields.next("root").map_err(corrupt)?)))
}

/// The database and device secret of a join in progress.
pub(crate) fn read_joining<S: Store>(
    replica: &Replica<S>,
) -> Result<Option<(DatabaseId, SecretKey)>, StoreError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::JOINING))? else {
        return Ok(None);
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "joining", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "joining", 128).map_err(corrupt)?, "joining", 2)
            .map_err(corrupt)?;
    let database = DatabaseId(fields.fixed("database").map_err(corrupt)?);
    let device = SecretKey::from_seed(fields.fixed("device").map_err(corrupt)?);
    Ok(Some((database, device)))
}

/// Stages the record of a join in progress.
pub(crate) fn write_joining<S: Store>(
    txn: &mut Txn<'_, S>,
    database: DatabaseId,
    device: &SecretKey,
) {
    txn.put_meta(
        meta::JOINING,
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(database.0.to_vec()),
            Cbor::Bytes(device.seed().to_vec()),
        ])),
    );
}

/// Stages the end of a join.
pub(crate) fn clear_joining<S: Store>(txn: &mut Txn<'_, S>) {
    txn.delete_meta(meta::JOINING);
}

/// Stages the identity record. With a platform keystore installed
/// ([`secrets::install`]), the secrets go there and the record names them.
pub(crate) fn write_identity<S: Store>(
    txn: &mut Txn<'_, S>,
    database: DatabaseId,
    device: &SecretKey,
    root: Option<&SecretKey>,
) -> Result<(), DbError> {
    let who = basic_proto::keys::Principal {
        role: basic_proto::keys::Role::Device,
        key: device.public(),
    };
    let device_element = secrets::element(|| format!("{database} device {who}"), device.seed())?;
    let root_element = match root {
        None => Cbor::Null,
        Some(root) => secrets::element(|| format!("{database} root on {who}"), root.seed())?,
    };
    txn.put_meta(
        meta::IDENTITY,
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Bytes(database.0.to_vec()),
            device_element,
            root_element,
        ])),
    );
    Ok(())
}

fn encode_author(log: &LogWriter) -> Vec<u8> {
    let last = log.clock().last();
    codec::encode_value(&Cbor::Array(vec![
        Cbor::Integer(log.seq().into()),
        log.prev().map_or(Cbor::Null, |id| Cbor::Bytes(id.0.to_vec())),
        Cbor::Integer(last.wall_ms.into()),
        Cbor::Integer(last.counter.into()),
    ]))
}

fn load_author<S: Store>(
    replica: &Replica<S>,
    device: SecretKey,
    database: DatabaseId,
) -> Result<LogWriter, DbError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::AUTHOR))? else {
        return Ok(LogWriter::new(device, database));
    };
    let corrupt =
        |e: codec::DecodeError| StoreError::Corrupt { what: "author state", reason: e.to_string() };
    let mut fields =
        Fields::new(codec::parse(&bytes, "author", 256).map_err(corrupt)?, "author", 4)
            .map_err(corrupt)?;
    let seq = fields.uint("seq").map_err(corrupt)?;
    let prev = match fields.next("prev").map_err(corrupt)? {
        Cbor::Null => None,
        value => Some(CommitId(codec::as_fixed(value, "prev").map_err(corrupt)?)),
    };
    let wall_ms = fields.uint("wall_ms").map_err(corrupt)?;
    let counter = u32::try_from(fields.uint("counter").map_err(corrupt)?).map_err(|_| {
        StoreError::Corrupt { what: "author state", reason: "counter over 2^32-1".into() }
    })?;
    Ok(LogWriter::resume(device, database, seq, prev, Hlc { wall_ms, counter }))
}

fn load_catalog<S: Store>(replica: &Replica<S>) -> Result<Catalog, DbError> {
    let Some(bytes) = replica.store().get(&layout::meta(meta::SCHEMAS))? else {
        return Ok(Catalog::new());
    };
    let corrupt = |reason: String| StoreError::Corrupt { what: "schemas", reason };
    let items = codec::as_array(
        codec::parse(&bytes, "schemas", usize::MAX).map_err(|e| corrupt(e.to_string()))?,
        "schemas",
        0,
        usize::MAX,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let schemas = items
        .into_iter()
        .map(|item| {
            let text = codec::as_text(item, "schema", 0, usize::MAX)
                .map_err(|e| corrupt(e.to_string()))?;
            Schema::from_json_canonical(&text).map_err(|e| corrupt(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Catalog::from_schemas(schemas).map_err(|e| corrupt(e.to_string()))?)
}

fn encode_catalog(catalog: &Catalog) -> Vec<u8> {
    codec::encode_value(&Cbor::Array(catalog.schemas().map(|s| Cbor::Text(s.to_json())).collect()))
}

/// The writer thread's state.
struct Writer<S> {
    shared: Arc<Shared<S>>,
    log: LogWriter,
    catalog: Catalog,
    /// The control log, its state and this device's keys.
    access: Access,
    watermark: u64,
    rng: rand::rngs::StdRng,
    changed_tables: Option<mpsc::Sender<BTreeSet<Name>>>,
    /// The writer connection's gate: a write's evaluation runs within it.
    gate: Gate,
    /// Whether the catalog or keys changed since they were last published.
    published_stale: bool,
    /// Commits held back, waiting for their time.
    held: usize,
}

/// A job's answer, sent once its group is durable.
enum Reply {
    Write(mpsc::Sender<Result<WriteOutcome, DbError>>, Result<WriteOutcome, DbError>),
    Ingest(mpsc::Sender<Result<Ingested, DbError>>, Result<Ingested, DbError>),
    Schema(mpsc::Sender<Result<Migration, DbError>>, Result<Migration, DbError>),
    Control(mpsc::Sender<Result<Vec<OpOutcome>, DbError>>, Result<Vec<OpOutcome>, DbError>),
}

impl Reply {
    // A caller that gave up waiting is not an error: sends are best effort.
    fn send(self) {
        match self {
            Reply::Write(to, result) => drop(to.send(result)),
            Reply::Ingest(to, result) => drop(to.send(result)),
            Reply::Schema(to, result) => drop(to.send(result)),
            Reply::Control(to, result) => drop(to.send(result)),
        }
    }

    fn fail(self, reason: &str) {
        let stopped = || DbError::Stopped(reason.to_owned());
        match self {
            Reply::Write(to, _) => drop(to.send(Err(stopped()))),
            Reply::Ingest(to, _) => drop(to.send(Err(stopped()))),
            Reply::Schema(to, _) => drop(to.send(Err(stopped()))),
            Reply::Control(to, _) => drop(to.send(Err(stopped()))),
        }
    }
}

impl<S: Store> Writer<S> {
    fn run(mut self, mut conn: Connection, queue: mpsc::Receiver<Job>) {
        loop {
            let mut group = match queue.recv_timeout(HELD_CHECK) {
                Ok(first) => vec![first],
                Err(mpsc::RecvTimeoutError::Timeout) if self.held > 0 => Vec::new(),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.commit_group(&mut conn, group) {
                *lock(&self.shared.stopped) = Some(error);
                return;
            }
        }
    }

    /// Runs a group of jobs and makes it durable. An `Err` is a storage
    /// failure: the writer stops and every job of the group is told so.
    fn commit_group(&mut self, conn: &mut Connection, group: Vec<Job>) -> Result<(), String> {
        let saved = (self.log.clone(), self.catalog.clone());
        let shared = Arc::clone(&self.shared);
        let mut changed_tables = BTreeSet::new();
        let mut replies = Vec::with_capacity(group.len());
        let outcome = (|| -> Result<(), DbError> {
            let tx = conn.transaction().map_err(ViewError::from)?;
            let mut txn = shared.replica.begin();
            self.release_held(&mut txn)?;
            changed_tables.extend(self.flush_view(&tx, &mut txn)?);
            for job in group {
                replies.push(match job {
                    Job::Write { caller, statement, params, reply } => {
                        Reply::Write(reply, self.write(&tx, &mut txn, &caller, &statement, &params))
                    }
                    Job::Ingest { commits, reply } => {
                        Reply::Ingest(reply, self.ingest(&mut txn, commits))
                    }
                    Job::Schema { schema, reply } => {
                        Reply::Schema(reply, self.schema(&tx, &mut txn, schema))
                    }
                    Job::Control { command, reply } => {
                        Reply::Control(reply, self.control(&tx, &mut txn, command))
                    }
                });
                if let Some(Err(error @ (DbError::Store(_) | DbError::View(_)))) =
                    replies.last().map(result_of)
                {
                    return Err(DbError::Stopped(error.to_string()));
                }
                changed_tables.extend(self.flush_view(&tx, &mut txn)?);
            }
            self.watermark += 1;
            txn.put_meta(meta::WATERMARK, encode_u64(self.watermark));
            txn.put_meta(meta::AUTHOR, encode_author(&self.log));
            txn.commit()?;
            view::set_watermark(&tx, self.watermark)?;
            tx.commit().map_err(ViewError::from)?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                if std::mem::take(&mut self.published_stale) {
                    publish(&shared.catalog, Arc::new(self.catalog.clone()));
                    publish(&shared.keys, self.access.keys().clone());
                    publish(&shared.namespaces, self.access.namespaces(&self.catalog));
                    publish(&shared.auth, Arc::clone(self.access.state()));
                    publish(&shared.control, Arc::new(self.access.log().clone()));
                    lock(&shared.statements).clear();
                }
                // Watchers first: a caller whose write returned finds its
                // change signalled already (the simulator relies on it).
                lock(&shared.watchers).retain(|watcher| {
                    !matches!(watcher.try_send(()), Err(mpsc::TrySendError::Disconnected(_)))
                });
                replies.into_iter().for_each(Reply::send);
                if let Some(notify) =
                    self.changed_tables.as_ref().filter(|_| !changed_tables.is_empty())
                {
                    // The live thread only stops when the database closes.
                    let _ = notify.send(changed_tables);
                }
                Ok(())
            }
            Err(error) => {
                (self.log, self.catalog) = saved;
                // The control log as stored: the failed group's operations are gone.
                if let Ok(access) =
                    Access::load(&self.shared.replica, self.shared.database, self.log.secret())
                {
                    self.access = access;
                }
                let reason = match error {
                    DbError::Stopped(reason) => reason,
                    other => other.to_string(),
                };
                // Known before any caller hears of it (health reports it).
                *lock(&self.shared.stopped) = Some(reason.clone());
                replies.into_iter().for_each(|r| r.fail(&reason));
                Err(reason)
            }
        }
    }

    /// Writes the rows changed so far into the view; returns their tables.
    fn flush_view(&self, tx: &Connection, txn: &mut Txn<'_, S>) -> Result<BTreeSet<Name>, DbError> {
        let changes: Vec<RowChange> = txn.take_changes();
        view::apply(tx, &self.catalog, &changes)?;
        Ok(changes.into_iter().map(|c| c.table).collect())
    }

    fn write(
        &mut self,
        tx: &Connection,
        txn: &mut Txn<'_, S>,
        caller: &Caller,
        statement: &Statement,
        params: &[Value],
    ) -> Result<WriteOutcome, DbError> {
        // Every other replica refuses what a removed device writes.
        if is_removed(self.access.state(), &self.shared.device) {
            return Err(DbError::DeviceRemoved);
        }
        let bounds = write::Bounds {
            gate: &self.gate,
            reach: Arc::new(Reach::of(caller, &self.catalog)),
            budget: self.shared.budget(),
        };
        let ops = write::plan(tx, &bounds, &self.catalog, txn, statement, params)?;
        let Some(table) = statement.written_table().filter(|_| !ops.is_empty()) else {
            return Ok(WriteOutcome { rows_affected: 0, commits: Vec::new() });
        };
        let namespace = scope_of(table);
        let scope = self.scope_id(&namespace)?;
        let (epoch, key) = self
            .access
            .keys()
            .current(&scope)
            .map(|(e, k)| (e, k.clone()))
            .ok_or(DbError::NoScopeKey(namespace))?;
        let rows_affected = ops.len();
        // Seal every commit before storing any, so a statement is all or nothing.
        let before = self.log.clone();
        let mut commits = Vec::new();
        let mut pending: Vec<Vec<RowOp>> =
            ops.chunks(OPS_PER_COMMIT).rev().map(<[RowOp]>::to_vec).collect();
        while let Some(chunk) = pending.pop() {
            let changes = Changes::new(chunk.clone()).map_err(|e| {
                DbError::Commit(CommitError::BadChanges(codec::DecodeError::InvalidValue {
                    field: "changes",
                    reason: e.to_string(),
                }))
            })?;
            match self.log.write(
                &scope,
                epoch,
                &key,
                &changes,
                self.shared.environment.now_ms(),
                &mut self.rng,
            ) {
                Ok(commit) => commits.push((commit, changes)),
                Err(CommitError::TooLarge { .. }) if chunk.len() > 1 => {
                    let (left, right) = chunk.split_at(chunk.len() / 2);
                    pending.push(right.to_vec());
                    pending.push(left.to_vec());
                }
                Err(error) => {
                    self.log = before;
                    return Err(error.into());
                }
            }
        }
        let mut ids = Vec::with_capacity(commits.len());
        for (commit, changes) in commits {
            txn.insert_with(&commit, Some(Ok(changes)))?;
            ids.push(commit.id());
        }
        Ok(WriteOutcome { rows_affected, commits: ids })
    }

    fn ingest(
        &mut self,
        txn: &mut Txn<'_, S>,
        commits: Vec<Received>,
    ) -> Result<Ingested, DbError> {
        let now = self.shared.environment.now_ms();
        let state = Arc::clone(self.access.state());
        // A commit below its author's cut-off is decided by the chain from
        // the cut-off commit, which commits above it in this batch may
        // complete: those go last, from the highest seq down, so a batch
        // holding the whole chain is taken at once.
        let below = |received: &Received| {
            let header = received.commit().header();
            end_below(&state, header).map(|_| header.seq)
        };
        let mut order: Vec<usize> = (0..commits.len()).collect();
        order.sort_by_key(|&i| below(&commits[i]).map(std::cmp::Reverse));
        let mut commits: Vec<Option<Received>> = commits.into_iter().map(Some).collect();
        let mut results: Vec<Option<Result<Inserted, IngestError>>> = vec![None; commits.len()];
        let mut chains = CutoffChains::default();
        for i in order {
            let Some(received) = commits[i].take() else { continue };
            results[i] = Some(self.ingest_one(txn, &state, &mut chains, received, now)?);
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Checks (against `state` and, below a cut-off, the chain) and
    /// inserts or holds one received commit.
    fn ingest_one(
        &mut self,
        txn: &mut Txn<'_, S>,
        state: &AuthState,
        chains: &mut CutoffChains,
        received: Received,
        now: u64,
    ) -> Result<Result<Inserted, IngestError>, DbError> {
        let commit = received.commit();
        let (header, id) = (commit.header(), commit.id());
        // The state may have changed since the caller checked it.
        if let Err(error) = state.check_commit(header, id) {
            return Ok(Err(error.into()));
        }
        if let Some(end) = end_below(state, header) {
            match chains.place(txn, header, id, &end)? {
                chain if self.holds(state).keeps(chain) => {}
                Chain::NotHeld => return Ok(Err(IngestError::ChainNotHeld { seq: header.seq })),
                _ => return Ok(Err(IngestError::ForkBelowCutoff { seq: header.seq })),
            }
        }
        Ok(Ok(match received {
            Received::Ready(commit, content) => {
                // Later local writes must order after what we have seen.
                let _ = self.log.clock_mut().observe(commit.header().hlc, now);
                let inserted = txn.insert_with(&commit, content)?;
                if inserted.outcome == Outcome::Duplicate && txn.is_rejected(&inserted.id)? {
                    // Set aside when its chain was not held; now it is.
                    txn.accept_rejected(inserted.id, self.access.keys())?;
                }
                inserted
            }
            Received::Ahead(_, ahead) if self.held >= MAX_HELD => return Ok(Err(ahead.into())),
            Received::Ahead(commit, ahead) => {
                let inserted = txn.hold(&commit, ahead.apply_at_ms)?;
                if matches!(inserted.outcome, Outcome::HeldBack { .. }) {
                    self.held += 1;
                }
                inserted
            }
        }))
    }

    /// Whether this replica holds every scope (a device, a pinning peer)
    /// or only some (an app's own replica).
    fn holds(&self, state: &AuthState) -> Holds {
        match entitled_view(state, &self.log.secret().public()) {
            Some(View::Scopes(_)) => Holds::Part,
            _ => Holds::Whole,
        }
    }

    /// Inserts the held-back commits whose time has come.
    fn release_held(&mut self, txn: &mut Txn<'_, S>) -> Result<(), DbError> {
        let now = self.shared.environment.now_ms();
        if self.held == 0 || self.shared.replica.next_held_due()?.is_none_or(|due| due > now) {
            return Ok(());
        }
        // Checked as if received now: a revocation or removal that came
        // while they were held applies to them.
        let due: Vec<Received> = txn
            .take_due(now)?
            .into_iter()
            .map(|commit| {
                let content = self.access.keys().open(&commit);
                Received::Ready(commit, content)
            })
            .collect();
        self.held = self.held.saturating_sub(due.len());
        self.ingest(txn, due)?;
        Ok(())
    }

    /// Applies a change to the control log, then brings the tables in line
    /// with the new state and merges the commits that waited for new keys.
    fn control(
        &mut self,
        tx: &Connection,
        txn: &mut Txn<'_, S>,
        command: Command,
    ) -> Result<Vec<OpOutcome>, DbError> {
        let device = self.log.secret().clone();
        let keys_before = self.access.keys().clone();
        let outcomes = match command {
            Command::Ingest(ops) => {
                // One state evaluation for the whole batch.
                let now = self.shared.environment.now_ms();
                let mut decoded: Vec<ControlOp> = Vec::with_capacity(ops.len());
                let mut outcomes: Vec<OpOutcome> = Vec::with_capacity(ops.len());
                for op in ops {
                    outcomes.push(op.map(|op| {
                        let id = op.id();
                        decoded.push(op);
                        id
                    }));
                }
                let mut admitted = self.access.insert_all(decoded, txn, &device, now).into_iter();
                for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    if let Some(Err(error)) = admitted.next() {
                        *outcome = Err(error.into());
                    }
                }
                outcomes
            }
            command => vec![self.issue(txn, &device, command)],
        };
        self.heal(txn, &device)?;
        self.after_control_change(txn, &keys_before)?;
        self.adopt_schemas(tx, txn)?;
        Ok(outcomes)
    }

    /// Makes, signs and admits the operation `command` asks for.
    fn issue(&mut self, txn: &mut Txn<'_, S>, device: &SecretKey, command: Command) -> OpOutcome {
        let payload = match command {
            Command::Grant { app, scope: namespace, rights } => {
                let scope = self.scope_id(&namespace)?;
                let epoch = self
                    .access
                    .state()
                    .scopes()
                    .get(&scope)
                    .and_then(|s| s.current())
                    .ok_or_else(|| ControlError::NoScopeKey(namespace.clone()))?;
                let key = self.access.keys().scope_key(&scope, epoch).ok_or_else(|| {
                    ControlError::NoEpochKey { namespace: namespace.clone(), epoch }
                })?;
                let label = seal_label(self.shared.database, &scope, epoch, &app.key);
                let key = SealedKey::seal(&key, device, &app, &label, &mut self.rng)?;
                Payload::Grant { app: app.key, sealing: app.sealing, scope, rights, epoch, key }
            }
            Command::Revoke { app, scope: namespace } => {
                let scope = self.scope_id(&namespace)?;
                Payload::Revoke {
                    app,
                    cutoff: self.cutoff(&app)?,
                    rotation: self.rotation(device, &scope, Some(&app))?,
                }
            }
            Command::AddDevice(new) => {
                let mut keys = BTreeMap::new();
                for (scope, epoch, key) in self.access.keys().iter() {
                    let label = seal_label(self.shared.database, scope, epoch, &new.key);
                    let sealed = SealedKey::seal(key, device, &new, &label, &mut self.rng)?;
                    keys.insert((*scope, epoch), sealed);
                }
                let naming = self.access.naming().ok_or(ControlError::NoNamingKey)?;
                let root = self.access.state().root().ok_or(ControlError::NoRoot)?;
                let naming = seal_naming(naming, device, &root.key, &new, &mut self.rng)?;
                Payload::AddDevice { device: new.key, sealing: new.sealing, naming, keys }
            }
            Command::RemoveDeviceAsRoot(removed, root) => {
                let scopes: Vec<ScopeId> = self.access.state().scopes().keys().copied().collect();
                let mut rotations = BTreeMap::new();
                for scope in scopes {
                    rotations.insert(scope, self.rotation(&root, &scope, Some(&removed))?);
                }
                let payload = Payload::RemoveDevice {
                    device: removed,
                    cutoff: self.cutoff(&removed)?,
                    rotations,
                };
                let now = self.shared.environment.now_ms();
                let op = self.access.issue(&root, payload, now)?;
                let id = op.id();
                self.access.insert(op, txn, device, now)?;
                return Ok(id);
            }
            Command::RemoveDevice(removed) => {
                let scopes: Vec<ScopeId> = self.access.state().scopes().keys().copied().collect();
                let mut rotations = BTreeMap::new();
                for scope in scopes {
                    let rotation = self.rotation(device, &scope, Some(&removed))?;
                    rotations.insert(scope, rotation);
                }
                Payload::RemoveDevice { device: removed, cutoff: self.cutoff(&removed)?, rotations }
            }
            Command::AddPinner(pinner) => Payload::AddPinner { pinner },
            Command::RemovePinner(pinner) => Payload::RemovePinner { pinner },
            Command::Ingest(_) => return Err(ControlError::NotIssued),
        };
        let op = self.access.issue(device, payload, self.shared.environment.now_ms())?;
        let id = op.id();
        self.access.insert(op, txn, device, self.shared.environment.now_ms())?;
        Ok(id)
    }

    /// The last commit of `author`'s log this device holds without a gap.
    fn cutoff(&self, author: &PublicKey) -> Result<Cutoff, ControlError> {
        let replica = &self.shared.replica;
        let seq = replica.heads()?.get(author).map_or(0, |h| h.contiguous);
        if seq == 0 {
            return Ok(Cutoff::NONE);
        }
        let last = replica.log(author)?.into_iter().find(|(s, _)| *s == seq).map(|(_, id)| id);
        Ok(Cutoff { seq, last })
    }

    /// Rotates every scope whose newest epoch is known to someone who no
    /// longer reads it, or that this device holds no key of
    /// (control-log.md §5.5): writers must never write under such a key.
    /// A device that is itself removed rotates nothing.
    fn heal(&mut self, txn: &mut Txn<'_, S>, device: &SecretKey) -> Result<(), DbError> {
        let state = self.access.state().clone();
        if !state.is_device(&device.public()) {
            return Ok(());
        }
        let mut stale: BTreeSet<ScopeId> = state.compromised().into_iter().collect();
        for (scope, epochs) in state.scopes() {
            let newest = epochs.current();
            if newest.is_some_and(|e| self.access.keys().scope_keys(scope, e).is_empty()) {
                stale.insert(*scope);
            }
        }
        for scope in stale {
            let rotation = self.rotation(device, &scope, None)?;
            let op = self
                .access
                .issue(device, Payload::RotateKey(rotation), self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
            self.access
                .insert(op, txn, device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        self.publish_schemas(txn, device)
    }

    /// Issues the schema of each namespace this device holds whose scope's
    /// winning schema op is older: sealed under an epoch before the
    /// current one (so that readers granted the current epoch only can
    /// read it), or a schema this device's extends (a migration that a
    /// concurrent schema op outstamped). So the log's schema converges to
    /// the most extended one, readable at the current epoch.
    fn publish_schemas(&mut self, txn: &mut Txn<'_, S>, device: &SecretKey) -> Result<(), DbError> {
        let namespaces: Vec<(Name, String)> = self
            .catalog
            .schemas()
            .map(|schema| (schema.namespace().clone(), schema.to_json()))
            .collect();
        for (namespace, text) in namespaces {
            let Some(scope) = self.access.scope_id(&namespace) else { return Ok(()) };
            let state = self.access.state().clone();
            let Some(current) = state.scopes().get(&scope).and_then(|s| s.current()) else {
                continue;
            };
            let winner = state.schemas().find(|(id, _)| **id == scope).map(|(_, op)| op.epoch);
            let logged = self.access.schemas().get(&scope).map(|(_, t)| t.as_str());
            let extends = match logged.and_then(|t| Schema::from_json_canonical(t).ok()) {
                Some(theirs) if logged != Some(text.as_str()) => {
                    let mut catalog = Catalog::default();
                    catalog.apply(theirs).is_ok()
                        && Schema::from_json_canonical(&text)
                            .is_ok_and(|mine| catalog.apply(mine).is_ok())
                }
                Some(_) => false,
                None => true,
            };
            if winner.is_some_and(|epoch| epoch >= current) && !extends {
                continue;
            }
            let op = self.schema_op(device, &scope, current, &namespace, &text)?;
            self.access
                .insert(op, txn, device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        Ok(())
    }

    /// A signed schema op of `namespace` (its scope `scope`), sealed under
    /// this device's key of `epoch`.
    fn schema_op(
        &mut self,
        device: &SecretKey,
        scope: &ScopeId,
        epoch: u32,
        namespace: &Name,
        text: &str,
    ) -> Result<ControlOp, ControlError> {
        let key = self
            .access
            .keys()
            .scope_key(scope, epoch)
            .ok_or_else(|| ControlError::NoEpochKey { namespace: namespace.clone(), epoch })?;
        let sealed = SealedSchema::seal(
            &key,
            self.shared.database,
            scope,
            epoch,
            namespace,
            text,
            &mut self.rng,
        );
        self.access
            .issue(
                device,
                Payload::Schema { scope: *scope, epoch, sealed },
                self.shared.environment.now_ms(),
            )
            .map_err(ControlError::from)
    }

    /// The scope id of `namespace`: this replica must be a device's.
    fn scope_id(&self, namespace: &Name) -> Result<ScopeId, ControlError> {
        self.access.scope_id(namespace).ok_or(ControlError::NotADevice)
    }

    /// A new epoch of `scope`, sealed to its readers except `leaving`.
    fn rotation(
        &mut self,
        device: &SecretKey,
        scope: &ScopeId,
        leaving: Option<&PublicKey>,
    ) -> Result<Rotation, ControlError> {
        let epoch = self
            .access
            .state()
            .scopes()
            .get(scope)
            .and_then(|s| s.current())
            .map_or(0, |current| current + 1);
        let readers: Vec<Party> =
            self.access.readers(scope).into_iter().filter(|p| Some(&p.key) != leaving).collect();
        let key = ScopeKey::generate(&mut self.rng);
        Ok(Rotation::seal(
            device,
            self.shared.database,
            *scope,
            epoch,
            &key,
            &readers,
            &mut self.rng,
        )?)
    }

    /// After the control log changed: recompute the rows of commits whose
    /// authorisation changed, merge commits that waited for keys this
    /// device just received, and publish the new state.
    fn after_control_change(
        &mut self,
        txn: &mut Txn<'_, S>,
        keys_before: &ScopeKeys,
    ) -> Result<(), DbError> {
        let holds = self.holds(self.access.state());
        txn.enforce_in(self.access.state(), self.access.keys(), holds)?;
        let new_epochs: BTreeSet<(ScopeId, u32)> = self
            .access
            .keys()
            .iter()
            .filter(|(scope, epoch, key)| !keys_before.scope_keys(scope, *epoch).contains(key))
            .map(|(scope, epoch, _)| (*scope, epoch))
            .collect();
        for (scope, epoch) in new_epochs {
            txn.open_waiting(&scope, epoch, self.access.keys())?;
        }
        self.published_stale = true;
        Ok(())
    }

    fn schema(
        &mut self,
        tx: &Connection,
        txn: &mut Txn<'_, S>,
        schema: Schema,
    ) -> Result<Migration, DbError> {
        if is_removed(self.access.state(), &self.shared.device) {
            return Err(DbError::DeviceRemoved);
        }
        let namespace = schema.namespace().clone();
        let scope = self.scope_id(&namespace)?;
        let text = schema.to_json();
        let mut catalog = self.catalog.clone();
        let migration = catalog.apply(schema)?;
        let device = self.log.secret().clone();
        let keys_before = self.access.keys().clone();
        // A new scope gets its first key (epoch 0), sealed to every device.
        if !self.access.state().scopes().contains_key(&scope) {
            let rotation = Rotation::seal(
                &device,
                self.shared.database,
                scope,
                0,
                &ScopeKey::generate(&mut self.rng),
                &self.access.readers(&scope),
                &mut self.rng,
            )
            .map_err(ControlError::from)?;
            let op = self
                .access
                .issue(&device, Payload::RotateKey(rotation), self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
            self.access
                .insert(op, txn, &device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        // The schema itself goes into the control log, sealed under the
        // scope's current key, so every reader of the scope gets it and no
        // one else learns its names.
        let logged = self.access.schemas().get(&scope).is_some_and(|(_, t)| *t == text);
        if !logged {
            let epoch = self.access.state().scopes().get(&scope).and_then(|s| s.current());
            let epoch = epoch.ok_or(ControlError::NoEpoch)?;
            let op = self.schema_op(&device, &scope, epoch, &namespace, &text)?;
            self.access
                .insert(op, txn, &device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        self.after_control_change(txn, &keys_before)?;
        self.catalog = catalog;
        self.save_catalog(tx, txn)?;
        Ok(migration)
    }

    /// Adopts the schemas of the control log that extend this device's
    /// (a schema applied on another device); incompatible ones are skipped.
    fn adopt_schemas(&mut self, tx: &Connection, txn: &mut Txn<'_, S>) -> Result<(), DbError> {
        if adopt(&mut self.catalog, self.access.schemas()) {
            self.save_catalog(tx, txn)?;
        }
        Ok(())
    }

    /// Stores the catalog and brings the view's tables up to it (rows for
    /// new tables may already be in the replica, from peers or staged in
    /// this group).
    fn save_catalog(&mut self, tx: &Connection, txn: &mut Txn<'_, S>) -> Result<(), DbError> {
        txn.put_meta(meta::SCHEMAS, encode_catalog(&self.catalog));
        self.published_stale = true;
        self.flush_view(tx, txn)?;
        view::sync_schema(tx, &self.catalog, &self.shared.replica)?;
        Ok(())
    }
}

/// Applies to `catalog` every schema of the control log that extends it;
/// returns whether any did.
fn adopt(catalog: &mut Catalog, schemas: &BTreeMap<ScopeId, (Name, String)>) -> bool {
    let mut adopted = false;
    for (namespace, text) in schemas.values() {
        let Ok(schema) = Schema::from_json_canonical(text) else { continue };
        if catalog.schema(namespace.as_str()) != Some(&schema) && catalog.apply(schema).is_ok() {
            adopted = true;
        }
    }
    adopted
}

fn result_of(reply: &Reply) -> Result<(), &DbError> {
    match reply {
        Reply::Write(_, Err(e)) => Err(e),
        Reply::Ingest(_, Err(e)) => Err(e),
        Reply::Schema(_, Err(e)) => Err(e),
        Reply::Control(_, Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// The scope of a table: its namespace.
pub fn scope_of(table: &Name) -> Name {
    let namespace = table.as_str().split('.').next().unwrap_or(table.as_str());
    Name::new(namespace).unwrap_or_else(|_| table.clone())
}
