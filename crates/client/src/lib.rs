//! The Basic light client: what an app embeds to hold its own replica of
//! the scopes the user granted it.
//!
//! The app makes its own identity ([`AppIdentity`]) and asks one of the
//! user's devices for access with the access code the user copies from
//! `basic app connect` ([`Client::request_access`]). Once the user
//! approves, the client builds its replica from the database's control log
//! — it holds only the keys of its grants — and syncs it with the user's
//! devices and pinning peers, with the same protocol, limits and session
//! driver as a node ([`basic_peer`]). Queries run over the local replica
//! with the same scope checks as the node applies to apps; writes are
//! signed with the app's key, encrypted with the scope key, on disk
//! before they return and pushed live to connected peers.
//!
//! When the user revokes the app, its next sync brings the revocation:
//! [`Client::access`] turns [`Access::Revoked`] and every read and write
//! fails with [`ClientError::Revoked`]. What it wrote before stays in the
//! user's database.
//!
//! ```no_run
//! # async fn run() -> Result<(), basic_client::ClientError> {
//! use basic_client::{AccessCode, AppIdentity, Ask, Client, Value};
//! let dir = std::path::Path::new("todo-data");
//! let client = match Client::open(dir).await {
//!     Ok(client) => client,
//!     Err(basic_client::ClientError::NotConnected(_)) => {
//!         std::fs::create_dir_all(dir).ok();
//!         let identity = AppIdentity::load_or_create(&dir.join("app.key"))?;
//!         let code: AccessCode = "basic-access:…".parse()
//!             .map_err(|e| basic_client::ClientError::BadCode(format!("{e}")))?;
//!         let ask = Ask::new("Todo").read_write("todo")?;
//!         Client::request_access(dir, &identity, &code, &ask, |s| eprintln!("{s}")).await?
//!     }
//!     Err(error) => return Err(error),
//! };
//! client.execute("INSERT INTO items (id, title) VALUES (?, ?)",
//!     &[Value::Text("1".into()), Value::Text("milk".into())]).await?;
//! let rows = client.query("SELECT title FROM items", &[]).await?;
//! # Ok(()) }
//! ```

mod access;
mod app_view;
mod error;
mod identity;
mod live;
mod network;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use basic_net::{Config, Event, Keypair, Net, PeerId};
use basic_peer::{Hooks, Peering, Shown};
use basic_proto::PublicKey;
use basic_store::{Database, DbError, DeviceStore, Environment, MemStore, Store};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use access::{AccessStatus, Ask};
pub use app_view::{Access, AppView};
pub use basic_net::Multiaddr;
pub use basic_proto::Value;
pub use basic_store::{AccessCode, AccessRefusal, Executed, LiveError, Rows, WriteOutcome};
pub use error::ClientError;
pub use identity::AppIdentity;
pub use live::LiveRows;

/// The file, in the client's directory, that keeps the access code (the
/// database id and the devices' addresses) for [`Client::open`].
const CODE_FILE: &str = "access-code";
/// The client's libp2p key, in its directory: the same peer id on every
/// run, so that devices keep what it showed them (rollback evidence).
const NETWORK_KEY: &str = "network-key";
/// The replica's store, in the client's directory.
const REPLICA: &str = "replica";
/// How often [`Client::flush`] asks its peers again what they hold.
const FLUSH_POLL: Duration = Duration::from_millis(300);

/// How far each peer showed it holds the app's own log (peer → seq), and
/// how many sync rounds completed.
#[derive(Debug, Default)]
struct Held {
    seqs: HashMap<PeerId, u64>,
    rounds: u64,
}

/// What the client hears of its sessions: how much of the app's own log
/// each peer showed it holds, at the end of each round.
#[derive(Debug)]
struct ClientHooks {
    app: PublicKey,
    held: watch::Sender<Held>,
}

impl Hooks for ClientHooks {
    fn remember(&self, peer: PeerId, shown: Shown) {
        let seq = shown.heads.get(&self.app).map_or(0, |(max, _)| *max);
        self.held.send_modify(|held| {
            held.seqs.insert(peer, seq);
            held.rounds += 1;
        });
    }
}

/// An app's replica of its granted scopes, synced with the user's devices.
#[derive(Debug)]
pub struct Client<S: Store = DeviceStore> {
    db: Arc<Database<S>>,
    app: PublicKey,
    access: watch::Receiver<Access>,
    peering: Arc<Peering<S>>,
    held: watch::Receiver<Held>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The in-memory client's view, removed with it.
    _scratch: Option<tempfile::TempDir>,
}

/// The libp2p key kept in `dir`, made on first use (0600).
fn network_key(dir: &Path) -> Result<Keypair, ClientError> {
    let path = dir.join(NETWORK_KEY);
    let mut seed = identity::load_or_create_seed(&path)?;
    Keypair::ed25519_from_bytes(&mut seed).map_err(|_| ClientError::BadIdentity { path })
}

/// Starts the client's network, dialling `addresses` and redialling them.
async fn start_net(
    keypair: Keypair,
    addresses: Vec<Multiaddr>,
) -> Result<(Net, mpsc::Receiver<Event>), ClientError> {
    let mut config = Config::new(keypair);
    config.peers = addresses;
    config.limits = basic_peer::limits();
    Ok(basic_net::start(config).await?)
}

/// Starts the network and asks for access through the devices `code`
/// names; returns the network and the control operations once granted.
async fn ask_for_access(
    keypair: Keypair,
    identity: &AppIdentity,
    code: &AccessCode,
    ask: &Ask,
    on_status: &mut (dyn FnMut(AccessStatus) + Send),
) -> Result<(Net, mpsc::Receiver<Event>, Vec<Vec<u8>>), ClientError> {
    let (devices, addresses) = access::devices(code)?;
    let (net, events) = start_net(keypair, addresses).await?;
    match access::exchange(&net, identity, &devices, ask, on_status).await {
        Ok(ops) => Ok((net, events, ops)),
        Err(error) => {
            net.shutdown().await;
            Err(error)
        }
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ClientError::Stopped(e.to_string()))?
}

impl Client<DeviceStore> {
    /// Asks the user for access as `identity`, through a device the access
    /// code `code` names, and waits for the answer, telling `on_status`
    /// where it stands. Once approved, builds the replica in `dir` (which
    /// must not hold one) and starts syncing it.
    pub async fn request_access(
        dir: &Path,
        identity: &AppIdentity,
        code: &AccessCode,
        ask: &Ask,
        mut on_status: impl FnMut(AccessStatus) + Send,
    ) -> Result<Self, ClientError> {
        if dir.join(REPLICA).exists() {
            return Err(ClientError::AlreadyConnected(dir.to_owned()));
        }
        let keypair = {
            let dir = dir.to_owned();
            blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|error| io(&dir, error))?;
                basic_store::make_private(&dir).map_err(|error| io(&dir, error))?;
                network_key(&dir)
            })
            .await?
        };
        let (net, events, ops) =
            ask_for_access(keypair, identity, code, ask, &mut on_status).await?;
        let (dir, secret, database, text) =
            (dir.to_owned(), identity.secret().clone(), code.database, code.to_string());
        let db = blocking(move || {
            // The code first: a replica is never left without it.
            let path = dir.join(CODE_FILE);
            std::fs::write(&path, text).map_err(|error| io(&path, error))?;
            Ok(Database::replicate(&dir, database, &secret, &ops)?)
        })
        .await?;
        Self::start(db, net, events, None).await
    }

    /// Opens the replica that [`Client::request_access`] built in `dir`
    /// and starts syncing it with the devices its access code names.
    pub async fn open(dir: &Path) -> Result<Self, ClientError> {
        Self::open_with_peers(dir, &[]).await
    }

    /// [`Client::open`], also dialling `peers`: a pinning peer's address,
    /// say (`…/p2p/12D3…`), through which the app syncs when none of the
    /// user's devices is reachable.
    pub async fn open_with_peers(dir: &Path, peers: &[Multiaddr]) -> Result<Self, ClientError> {
        if !dir.join(REPLICA).exists() {
            return Err(ClientError::NotConnected(dir.to_owned()));
        }
        let keypair = network_key(dir)?;
        let dir = dir.to_owned();
        let (db, code) = blocking(move || {
            let path = dir.join(CODE_FILE);
            let text = std::fs::read_to_string(&path).map_err(|error| io(&path, error))?;
            let code: AccessCode =
                text.trim().parse().map_err(|e| ClientError::BadCode(format!("{e}")))?;
            let db = match Database::open(&dir) {
                Ok(db) => db,
                Err(error @ DbError::InUse(_)) => return Err(error.into()),
                Err(cause) => {
                    return Err(ClientError::Damaged { path: dir.clone(), cause: Box::new(cause) });
                }
            };
            if db.id() != code.database {
                return Err(ClientError::BadCode(format!(
                    "{} names another database than the replica's",
                    path.display()
                )));
            }
            Ok((db, code))
        })
        .await?;
        let (_, mut addresses) = access::devices(&code)?;
        addresses.extend(peers.iter().cloned());
        let (net, events) = start_net(keypair, addresses).await?;
        Self::start(db, net, events, None).await
    }
}

impl Client<MemStore> {
    /// [`Client::request_access`] for a replica kept in memory (and a
    /// scratch directory for its SQL view, removed with the client): the
    /// app asks again on its next run.
    pub async fn request_access_in_memory(
        identity: &AppIdentity,
        code: &AccessCode,
        ask: &Ask,
        mut on_status: impl FnMut(AccessStatus) + Send,
    ) -> Result<Self, ClientError> {
        let keypair = Keypair::generate_ed25519();
        let (net, events, ops) =
            ask_for_access(keypair, identity, code, ask, &mut on_status).await?;
        let scratch =
            tempfile::tempdir().map_err(|error| io(Path::new("a temporary dir"), error))?;
        let view = scratch.path().join("view.sqlite");
        let (secret, database) = (identity.secret().clone(), code.database);
        let db = blocking(move || {
            Ok(Database::replicate_with_store(
                MemStore::new(),
                &view,
                database,
                &secret,
                &ops,
                Environment::system(),
            )?)
        })
        .await?;
        Self::start(db, net, events, Some(scratch)).await
    }
}

fn io(path: &Path, error: std::io::Error) -> ClientError {
    ClientError::Io { path: PathBuf::from(path), error }
}

impl<S: Store + Send + Sync + 'static> Client<S> {
    async fn start(
        db: Database<S>,
        net: Net,
        events: mpsc::Receiver<Event>,
        scratch: Option<tempfile::TempDir>,
    ) -> Result<Self, ClientError> {
        let db = Arc::new(db);
        let app = blocking({
            let db = Arc::clone(&db);
            move || Ok(db.member_key()?.public())
        })
        .await?;
        let (held_tx, held) = watch::channel(Held::default());
        let hooks = Arc::new(ClientHooks { app, held: held_tx });
        let peering = {
            let (db, net) = (Arc::clone(&db), net.clone());
            blocking(move || {
                Peering::new(db, net, hooks).map_err(|e| ClientError::Stopped(e.to_string()))
            })
            .await?
        };
        let (access_tx, access) = watch::channel(access_now(&db, &app));
        let (stop, stopped) = watch::channel(false);
        let watcher = tokio::spawn(follow_access(
            Arc::clone(&db),
            app,
            peering.changes(),
            access_tx,
            stopped.clone(),
        ));
        let network = tokio::spawn(network::run(Arc::clone(&peering), net, events, stopped));
        Ok(Self {
            db,
            app,
            access,
            peering,
            held,
            stop,
            tasks: vec![network, watcher],
            _scratch: scratch,
        })
    }

    /// The app's id (`app_…`), as the user sees it.
    pub fn app_id(&self) -> String {
        basic_proto::keys::Principal { role: basic_proto::keys::Role::App, key: self.app }
            .to_string()
    }

    /// What the app may do now.
    pub fn access(&self) -> Access {
        self.access.borrow().clone()
    }

    /// Follows [`Client::access`]: changes when a grant is revoked or made.
    pub fn watch_access(&self) -> watch::Receiver<Access> {
        self.access.clone()
    }

    /// Runs one SQL statement as this app; a write returns once it is on
    /// disk, and goes to connected peers at once. Unqualified table names
    /// are the granted namespace's, when the app holds one.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<Executed, ClientError> {
        self.run(sql, params, |app, sql, params| app.execute(sql, params)).await
    }

    /// Waits, at most `timeout`, until one of the user's devices or pinning
    /// peers shows that it holds every write made here so far; false if
    /// none did in time (the writes are safe here and go out on the next
    /// sync). An app that exits right after writing calls this first.
    pub async fn flush(&self, timeout: Duration) -> Result<bool, ClientError> {
        let (db, app) = (Arc::clone(&self.db), self.app);
        let written = blocking(move || {
            let log = db.replica().log(&app).map_err(DbError::from)?;
            Ok(log.last().map_or(0, |(seq, _)| *seq))
        })
        .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut held = self.held.clone();
        loop {
            if written == 0 || held.borrow_and_update().seqs.values().any(|seq| *seq >= written) {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // Rounds show what the peers hold; theirs pull what they lack.
            self.peering.resync_now();
            let _ = tokio::time::timeout_at(deadline.min(now + FLUSH_POLL), held.changed()).await;
        }
    }

    /// Waits, at most `timeout`, until a sync round with one of the user's
    /// devices or pinning peers completes, so that the replica holds what
    /// they held when it started; false if none did in time. An app that
    /// shows its data once and exits calls this first.
    pub async fn sync(&self, timeout: Duration) -> bool {
        let mut held = self.held.clone();
        let before = held.borrow_and_update().rounds;
        self.peering.resync_now();
        let round = held.wait_for(|held| held.rounds > before);
        matches!(tokio::time::timeout(timeout, round).await, Ok(Ok(_)))
    }

    /// Runs a `SELECT` over the replica.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, ClientError> {
        self.run(sql, params, |app, sql, params| app.query(sql, params)).await
    }

    /// Runs a `SELECT` and reads each row as a `T` (its fields named as
    /// the columns).
    pub async fn query_as<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<T>, ClientError> {
        rows_as(self.query(sql, params).await?)
    }

    /// Subscribes to a `SELECT`: the stream yields its rows now and again
    /// whenever a write here or a commit from a peer changes them.
    pub async fn subscribe(&self, sql: &str, params: &[Value]) -> Result<LiveRows, ClientError> {
        let subscription =
            self.run(sql, params, |app, sql, params| app.subscribe(sql, params)).await?;
        Ok(LiveRows::new(subscription))
    }

    /// Stops syncing and closes the replica.
    pub async fn close(mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Runs `f` on the app's view of its replica, on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&AppView<'_, S>, &str, &[Value]) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, ClientError> {
        let (db, app) = (Arc::clone(&self.db), self.app);
        let (sql, params) = (sql.to_owned(), params.to_vec());
        blocking(move || f(&AppView::with_key(&db, app), &sql, &params)).await
    }
}

impl<S: Store> Drop for Client<S> {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Reads `rows` as `T`s, each row an object of its columns (as
/// [`Client::query_as`] does, for the rows of a live query).
pub fn rows_as<T: DeserializeOwned>(rows: Rows) -> Result<Vec<T>, ClientError> {
    rows.rows
        .into_iter()
        .map(|row| {
            let object: serde_json::Map<String, serde_json::Value> = rows
                .columns
                .iter()
                .cloned()
                .zip(row.iter().map(basic_store::value_json::to_json))
                .collect();
            Ok(serde_json::from_value(serde_json::Value::Object(object))?)
        })
        .collect()
}

fn access_now<S: Store>(db: &Database<S>, app: &PublicKey) -> Access {
    AppView::with_key(db, *app).access()
}

/// Keeps `access` up to date with the replica's control log.
async fn follow_access<S: Store + Send + Sync + 'static>(
    db: Arc<Database<S>>,
    app: PublicKey,
    mut changes: watch::Receiver<u64>,
    access: watch::Sender<Access>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        let db = Arc::clone(&db);
        let Ok(now) = tokio::task::spawn_blocking(move || access_now(&db, &app)).await else {
            return;
        };
        access.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            if now == Access::Revoked {
                tracing::info!("{}", ClientError::Revoked);
            }
            *current = now;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_key_is_kept_so_the_peer_id_stays() {
        let dir = tempfile::tempdir().unwrap();
        let first = network_key(dir.path()).unwrap().public().to_peer_id();
        assert_eq!(network_key(dir.path()).unwrap().public().to_peer_id(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(NETWORK_KEY)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(NETWORK_KEY), b"short").unwrap();
        assert!(matches!(network_key(dir.path()), Err(ClientError::BadIdentity { .. })));
    }
}
