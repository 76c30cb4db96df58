//! One simulated node: a real [`Database`] over a [`MemStore`] that
//! survives the node's crashes, and its role.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use basic_proto::sync::View;
use basic_proto::{DatabaseId, Name, ScopeId, SecretKey};
use basic_store::{Batch, Entry};
use basic_store::{Database, Environment, MemStore, Store, StoreError};

/// What a node is to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// One of the user's devices: every key, every scope.
    Device,
    /// A pinning peer: ciphertext only, no key.
    Pinner,
    /// An app holding its own key, granted one scope.
    App {
        /// The namespace granted.
        namespace: Name,
        /// Its scope id.
        scope: ScopeId,
    },
}

/// A [`MemStore`] shared between the node's successive lives: what was
/// flushed survives [`MemStore::crash`] and a reopen.
#[derive(Debug, Clone)]
pub struct SharedMem(pub Arc<MemStore>);

impl Store for SharedMem {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + '_> {
        self.0.scan(prefix, from)
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.0.apply(batch)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.0.size_on_disk()
    }
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// Its name in traces (`d0`, `p0`, `a0`, `x0`).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its principal key.
    pub key: SecretKey,
    /// Its storage, kept across crashes.
    pub store: Arc<MemStore>,
    /// The open database, `None` while crashed.
    pub db: Option<Database<SharedMem>>,
    /// Signalled after every durable change to `db` (as the node's sessions
    /// are).
    changes: Option<std::sync::mpsc::Receiver<()>>,
    /// Gone for good (a lost device); never restarted.
    pub lost: bool,
    view_dir: tempfile::TempDir,
    /// The world's virtual wall clock, ms since the Unix epoch.
    clock: Arc<AtomicU64>,
    /// The seed of its randomness.
    seed: [u8; 32],
    /// How many times the database was opened: each opening draws from its
    /// own seeded stream, so a restart never repeats a nonce.
    starts: u64,
}

/// Where a node's database takes time and randomness from: the world's
/// clock, and a stream of its own for each opening, so a restart never
/// repeats a nonce.
fn environment(seed: &[u8; 32], starts: u64, clock: &Arc<AtomicU64>) -> Environment {
    let mut hasher = blake3::Hasher::new_derive_key("basic-sim node randomness");
    hasher.update(seed);
    hasher.update(&starts.to_le_bytes());
    let clock = clock.clone();
    Environment::simulated(
        Arc::new(move || clock.load(Ordering::Relaxed)),
        *hasher.finalize().as_bytes(),
    )
}

impl Node {
    /// The device that creates the database, as a first `basic up` does
    /// (it holds the root secret); `seed` drives its randomness.
    pub fn found(name: String, seed: [u8; 32], clock: Arc<AtomicU64>) -> anyhow::Result<Self> {
        let store = Arc::new(MemStore::new());
        let view_dir = tempfile::tempdir()?;
        let db = Database::with_environment(
            SharedMem(store.clone()),
            &view_dir.path().join("view.sqlite"),
            environment(&seed, 1, &clock),
        )
        .with_context(|| format!("creating {name}"))?;
        let key = db.member_key()?;
        Ok(Self::up(name, Role::Device, key, store, db, view_dir, clock, seed))
    }

    /// A node with identity `key` in `database`, holding the control
    /// operations `ops` (as a join or pairing would leave it).
    pub fn create(
        name: String,
        role: Role,
        key: SecretKey,
        database: DatabaseId,
        ops: &[Vec<u8>],
        clock: Arc<AtomicU64>,
        seed: [u8; 32],
    ) -> anyhow::Result<Self> {
        let store = Arc::new(MemStore::new());
        let view_dir = tempfile::tempdir()?;
        let db = Database::replicate_with_store(
            SharedMem(store.clone()),
            &view_dir.path().join("view.sqlite"),
            database,
            &key,
            ops,
            environment(&seed, 1, &clock),
        )
        .with_context(|| format!("creating {name}"))?;
        Ok(Self::up(name, role, key, store, db, view_dir, clock, seed))
    }

    #[allow(clippy::too_many_arguments)]
    fn up(
        name: String,
        role: Role,
        key: SecretKey,
        store: Arc<MemStore>,
        db: Database<SharedMem>,
        view_dir: tempfile::TempDir,
        clock: Arc<AtomicU64>,
        seed: [u8; 32],
    ) -> Self {
        Self {
            name,
            role,
            key,
            store,
            changes: Some(db.watch_changes()),
            db: Some(db),
            lost: false,
            view_dir,
            clock,
            seed,
            starts: 1,
        }
    }

    fn view_path(&self) -> PathBuf {
        self.view_dir.path().join("view.sqlite")
    }

    /// Opens the database on what the store holds.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let db = Database::with_environment(
            SharedMem(self.store.clone()),
            &self.view_path(),
            environment(&self.seed, self.starts, &self.clock),
        )
        .with_context(|| format!("opening {}", self.name))?;
        self.changes = Some(db.watch_changes());
        self.db = Some(db);
        Ok(())
    }

    /// Whether the database changed durably since the last call.
    pub fn take_changed(&self) -> bool {
        self.changes.as_ref().is_some_and(|changes| changes.try_iter().count() > 0)
    }

    /// Loses power: what was not flushed is gone, the database is closed.
    pub fn crash(&mut self) {
        self.store.crash();
        self.db = None;
        self.changes = None;
        self.store.crash();
    }

    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.db.is_some()
    }

    /// The scopes its requesters replicate.
    pub fn view(&self) -> View {
        match &self.role {
            Role::App { scope, .. } => View::Scopes([*scope].into()),
            _ => View::All,
        }
    }
}
