//! Pinning-peer mode: a node that stores and serves one database's
//! ciphertext, holds no key, and relays connections for devices.
//!
//! 1. `basic pinner init` makes the pinning peer's key (`pinner-key`,
//!    mode 0600) and prints its id (`pin_…`).
//! 2. On a device, the owner authorises it, with its address:
//!    `basic pin add pin_… --address ADDR`; the device's `basic up` dials it.
//! 3. `basic up --database db_…` here: on the first start the pinning peer
//!    fetches the control log with the sync protocol
//!    ([`crate::network::bootstrap`]) from the first authorised device
//!    connected — one that dialled it, or one given with `--peer` — and
//!    makes its replica; then it syncs like any member. Later starts need
//!    no `--database` (it is in the replica).
//!
//! It serves no HTTP API: there is nothing it could show (no key). Its
//! operator sees what it holds and whom it serves with `basic status`
//! ([`status`]): the running pinning peer writes its status to
//! `status.json` every second; a stopped one's is read from its replica.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use basic_proto::keys::{Principal, Role};
use basic_proto::{DatabaseId, PublicKey, SecretKey};
use basic_store::now_ms;
use basic_store::{Database, DbError};
use tracing::{info, warn};

use crate::daemon::{UpOptions, api_info_writer, remove_api_info, runtime, shutdown_signal};
use crate::network::{Network, Transport, bootstrap};
use crate::paths::{ApiInfo, DataDir, write_atomic};
use crate::status::{NetworkStatus, PinnerStatus};

/// How often a running pinning peer writes its status.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// A status older than this was left by a pinning peer that stopped
/// without cleaning up (killed, or crashed).
const STATUS_STALE_MS: u64 = 10_000;

/// `basic pinner init`.
pub fn init(data: &DataDir) -> anyhow::Result<()> {
    data.refuse_existing()?;
    std::fs::create_dir_all(data.root())
        .with_context(|| format!("cannot create {}", data.root().display()))?;
    let key = SecretKey::generate(&mut rand::rng());
    write_atomic(&data.pinner_key(), format!("{}\n", hex::encode(key.seed())).as_bytes(), true)?;
    let id = Principal { role: Role::Pinner, key: key.public() };
    println!("Made a pinning peer in {}", data.root().display());
    println!("  pinner    {id}");
    println!();
    println!(
        "Next, here: `basic up --database db_… --listen /ip4/0.0.0.0/tcp/4001` (it logs its address);"
    );
    println!(
        "then on one of your devices: `basic pin add {id} --address THAT-ADDRESS` and `basic up`."
    );
    Ok(())
}

fn load_key(data: &DataDir) -> anyhow::Result<SecretKey> {
    let path = data.pinner_key();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|seed| seed.try_into().ok())
        .with_context(|| format!("{} is damaged", path.display()))?;
    Ok(SecretKey::from_seed(seed))
}

/// `basic up` in a pinning peer's directory.
pub fn up(data: DataDir, options: UpOptions) -> anyhow::Result<()> {
    let key = load_key(&data)?;
    let database = match &options.database {
        Some(text) => Some(
            text.parse::<DatabaseId>()
                .map_err(|e| anyhow::anyhow!("--database {text:?} is not a database id: {e}"))?,
        ),
        None => None,
    };
    let existing = if data.holds_database() {
        let db = Database::open(data.root())
            .with_context(|| format!("cannot open the replica in {}", data.root().display()))?;
        if database.is_some_and(|d| d != db.id()) {
            bail!(
                "this pinning peer pins {}, not {}",
                db.id(),
                options.database.unwrap_or_default()
            );
        }
        Some(db)
    } else if database.is_none() {
        bail!("the first start of a pinning peer needs the database to pin: --database db_…");
    } else {
        None
    };
    let runtime = runtime()?;
    let result = runtime.block_on(run(&data, options, key, database, existing));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    remove_api_info(&data);
    let _ = std::fs::remove_file(data.pinner_status());
    result
}

async fn run(
    data: &DataDir,
    options: UpOptions,
    key: SecretKey,
    database: Option<DatabaseId>,
    existing: Option<Database>,
) -> anyhow::Result<()> {
    let mut config = crate::network::NetworkConfig::parse(&options.config)?;
    // Devices behind a NAT reserve on us and meet through us; our listen
    // addresses (and --external ones) are what we relay on.
    config.relay_server = true;
    let Some(database) = existing.as_ref().map(Database::id).or(database) else {
        bail!("no database to pin")
    };
    let mut transport = Transport::start(&data.network_key(), &config).await?;
    ApiInfo { address: None, pid: std::process::id(), listen: transport.addresses.clone() }
        .write(data)?;
    let status = Arc::new(RwLock::new(NetworkStatus::default()));
    let replica = Arc::new(OnceLock::new());
    let reporter = tokio::spawn(report(Reporter {
        data: data.clone(),
        key: key.public(),
        database,
        replica: Arc::clone(&replica),
        network: Arc::clone(&status),
    }));
    info!(
        "pinning peer {} for database {database}",
        Principal { role: Role::Pinner, key: key.public() }
    );
    for address in &transport.addresses {
        info!("sync on {address}");
    }
    let db = match existing {
        Some(db) => db,
        None => {
            let ops = tokio::select! {
                ops = bootstrap(&mut transport, database, &key) => ops?,
                signalled = shutdown_signal() => return signalled,
            };
            let dir = data.root().to_owned();
            tokio::task::spawn_blocking(move || Database::replicate(&dir, database, &key, &ops))
                .await??
        }
    };
    let db = Arc::new(db);
    let _ = replica.set(Arc::clone(&db));
    let on_listen = api_info_writer(data.clone(), None);
    let network = Network::start(db, transport, status, false, on_listen, data.shown()).await?;
    let signalled = shutdown_signal().await;
    info!("shutting down");
    reporter.abort();
    network.shutdown().await;
    signalled
}

/// What the running pinning peer reports its status from.
struct Reporter {
    data: DataDir,
    key: PublicKey,
    database: DatabaseId,
    /// Its replica, once it has one (a first start waits for the control log).
    replica: Arc<OnceLock<Arc<Database>>>,
    network: Arc<RwLock<NetworkStatus>>,
}

/// Writes the running pinning peer's status to `status.json` every
/// [`STATUS_EVERY`], until aborted.
async fn report(reporter: Reporter) {
    let reporter = Arc::new(reporter);
    let mut every = tokio::time::interval(STATUS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let reporter = Arc::clone(&reporter);
        let written = tokio::task::spawn_blocking(move || reporter.write()).await;
        match written.map_err(anyhow::Error::from).and_then(|written| written) {
            Ok(()) => failing = false,
            // Once per run of failures, not every second.
            Err(error) if !failing => {
                failing = true;
                warn!("cannot write the status for `basic status`: {error:#}");
            }
            Err(_) => {}
        }
    }
}

impl Reporter {
    fn write(&self) -> anyhow::Result<()> {
        let network =
            self.network.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let pinner = Principal { role: Role::Pinner, key: self.key }.to_string();
        let now = now_ms();
        let status = match self.replica.get() {
            Some(db) => held(db, &self.key, &self.data, pinner, Some((now, network)))?,
            None => PinnerStatus {
                pinner,
                database: Some(self.database.to_string()),
                replica: false,
                authorised: false,
                removed: false,
                commits: 0,
                authors: 0,
                control_ops: 0,
                storage_bytes: self.data.size_on_disk(),
                running: true,
                taken_at_ms: Some(now),
                network: None,
            },
        };
        write_atomic(&self.data.pinner_status(), &serde_json::to_vec_pretty(&status)?, false)
    }
}

/// What the replica `db` holds, for the pinning peer `key`; `running` is
/// when the running pinning peer took it, and its network.
fn held(
    db: &Database,
    key: &PublicKey,
    data: &DataDir,
    pinner: String,
    running: Option<(u64, NetworkStatus)>,
) -> anyhow::Result<PinnerStatus> {
    let mut commits = 0;
    let mut authors = BTreeSet::new();
    for summary in db.replica().summaries() {
        let (author, _, summary) = summary?;
        commits += summary.held.count;
        authors.insert(author);
    }
    let authorised = db.auth_state().pinners().get(key).copied();
    let (taken_at_ms, network) = running.unzip();
    Ok(PinnerStatus {
        pinner,
        database: Some(db.id().to_string()),
        replica: true,
        authorised: authorised == Some(true),
        removed: authorised == Some(false),
        commits,
        authors: authors.len(),
        control_ops: db.control_log().len(),
        storage_bytes: data.size_on_disk(),
        running: taken_at_ms.is_some(),
        taken_at_ms,
        network,
    })
}

/// `basic status` in a pinning peer's directory: the running pinning
/// peer's last status, or, when none runs, what its replica holds.
pub fn status(data: &DataDir) -> anyhow::Result<PinnerStatus> {
    let key = load_key(data)?.public();
    let pinner = Principal { role: Role::Pinner, key }.to_string();
    let written = read_status(data)?;
    if data.holds_database() {
        match Database::open(data.root()) {
            Ok(db) => return held(&db, &key, data, pinner, None),
            // The running pinning peer holds its replica: it wrote its status.
            Err(DbError::InUse(_)) => {
                return written.with_context(|| {
                    format!(
                        "the pinning peer in {} is starting and has no status yet: try again in a moment",
                        data.root().display()
                    )
                });
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("cannot open the replica in {}", data.root().display())
                });
            }
        }
    }
    // No replica: a first start waiting for the control log, or none yet.
    match written {
        Some(status)
            if status
                .taken_at_ms
                .is_some_and(|taken| now_ms().saturating_sub(taken) < STATUS_STALE_MS) =>
        {
            Ok(status)
        }
        _ => Ok(PinnerStatus {
            pinner,
            database: None,
            replica: false,
            authorised: false,
            removed: false,
            commits: 0,
            authors: 0,
            control_ops: 0,
            storage_bytes: data.size_on_disk(),
            running: false,
            taken_at_ms: None,
            network: None,
        }),
    }
}

/// The status a running pinning peer wrote, if there is one.
fn read_status(data: &DataDir) -> anyhow::Result<Option<PinnerStatus>> {
    let path = data.pinner_status();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is damaged: remove it", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}
