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
//! It serves no HTTP API: there is nothing it could show (no key).

use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use basic_proto::keys::{Principal, Role};
use basic_proto::{DatabaseId, SecretKey};
use basic_store::Database;
use tracing::info;

use crate::commands::refuse_existing;
use crate::network::{Network, Transport, bootstrap};
use crate::node::{UpOptions, api_info_writer, remove_api_info, runtime, shutdown_signal};
use crate::paths::{ApiInfo, DataDir, write_atomic};
use crate::status::NetworkStatus;

/// `basic pinner init`.
pub fn init(data: &DataDir) -> anyhow::Result<()> {
    refuse_existing(data)?;
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
    result
}

async fn run(
    data: &DataDir,
    options: UpOptions,
    key: SecretKey,
    database: Option<DatabaseId>,
    existing: Option<Database>,
) -> anyhow::Result<()> {
    let mut config = options.config.network()?;
    // Devices behind a NAT reserve on us and meet through us; our listen
    // addresses (and --external ones) are what we relay on.
    config.relay_server = true;
    let Some(database) = existing.as_ref().map(Database::id).or(database) else {
        bail!("no database to pin")
    };
    let mut transport = Transport::start(&data.network_key(), &config).await?;
    ApiInfo { address: None, pid: std::process::id(), listen: transport.addresses.clone() }
        .write(data)?;
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
    let status = Arc::new(RwLock::new(NetworkStatus::default()));
    let on_listen = api_info_writer(data.clone(), None);
    let network =
        Network::start(Arc::new(db), transport, status, false, on_listen, data.shown()).await?;
    let signalled = shutdown_signal().await;
    info!("shutting down");
    network.shutdown().await;
    signalled
}
