//! `basic up`: opens the node, starts its network and serves the local
//! HTTP API until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api;
use crate::ids::device_id;
use crate::network::{ListenHook, Network, NetworkConfig, Transport};
use crate::node::{Node, NodeConfig, is_in_use};
use crate::paths::{ApiInfo, DataDir};
use crate::status::NetworkStatus;

/// How long `basic up` waits for open connections after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Options of `basic up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Where the HTTP API listens.
    pub api: SocketAddr,
    /// Allow a non-loopback API address.
    pub api_public: bool,
    /// Network settings.
    pub config: NodeConfig,
    /// The database a pinning peer serves (its first start only).
    pub database: Option<String>,
    /// How long one SQL statement may run
    /// ([`basic_store::Database::set_statement_budget`]).
    pub query_budget: Duration,
}

/// What `basic up` has checked and bound before it creates or opens
/// anything ([`bind`]).
#[derive(Debug)]
pub struct Bound {
    /// The API's listener (none for a pinning peer, which serves no API).
    api: Option<std::net::TcpListener>,
}

/// Checks `basic up`'s options and ports before anything is created or
/// opened, so that a mistake or a port in use costs nothing: `--database`
/// (a pinning peer's), the network addresses (parsed; a fixed sync port is
/// bound and released at once), and the API address, bound and kept.
pub fn bind(data: &DataDir, options: &UpOptions) -> anyhow::Result<Bound> {
    let pinner = data.is_pinner();
    if options.database.is_some() && !pinner {
        if data.holds_database() {
            bail!(
                "--database is for a pinning peer's first start; this directory holds a device's database"
            );
        }
        bail!(
            "--database is for a pinning peer's first start, in a directory made by `basic pinner init`"
        );
    }
    let network = NetworkConfig::parse(&options.config)?;
    for address in &network.listen {
        check_free(address)?;
    }
    if pinner {
        return Ok(Bound { api: None });
    }
    if !options.api.ip().is_loopback() && !options.api_public {
        bail!(
            "--api {} is not a loopback address: other machines could reach the API; pass --api-public to do it anyway",
            options.api
        );
    }
    let api = std::net::TcpListener::bind(options.api).with_context(|| {
        format!(
            "cannot listen on {} for the API (is a node running there? --api ADDR picks another; port 0 any free one)",
            options.api
        )
    })?;
    Ok(Bound { api: Some(api) })
}

/// Fails if a fixed TCP or UDP port of the sync address `address` cannot be
/// bound now (in use, or not an address of this machine).
fn check_free(address: &basic_net::Multiaddr) -> anyhow::Result<()> {
    use std::net::IpAddr;

    let context = || format!("cannot listen on {address} for sync");
    // The text form is canonical: `/ip4/127.0.0.1/tcp/4001/…`.
    let text = address.to_string();
    let parts: Vec<&str> = text.split('/').skip(1).collect();
    let mut ip = None;
    for pair in parts.windows(2) {
        match pair {
            ["ip4" | "ip6", value] => ip = value.parse::<IpAddr>().ok(),
            ["tcp", port] => {
                if let (Some(ip), Ok(port @ 1..)) = (ip, port.parse::<u16>()) {
                    std::net::TcpListener::bind((ip, port)).with_context(context)?;
                }
            }
            ["udp", port] => {
                if let (Some(ip), Ok(port @ 1..)) = (ip, port.parse::<u16>()) {
                    std::net::UdpSocket::bind((ip, port)).with_context(context)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs the node of a device in the foreground until Ctrl-C or SIGTERM,
/// with what [`bind`] bound (a pinning peer runs `crate::pinner::up`).
pub fn up(data: DataDir, options: UpOptions, bound: Bound) -> anyhow::Result<()> {
    let api = bound.api.context("no API listener was bound for this node")?;
    let network = Arc::new(RwLock::new(NetworkStatus::default()));
    let node = Node::open(data.clone(), options.config.clone(), Some(network)).map_err(|error| {
        if is_in_use(&error) {
            anyhow::anyhow!(
                "the database in {} is already open in another process (is a node running? see `basic status`)",
                data.root().display()
            )
        } else {
            error
        }
    })?;
    node.db.set_statement_budget(options.query_budget);
    let runtime = runtime()?;
    let result = runtime.block_on(serve(Arc::new(node), &options, api));
    // Live queries poll their shutdown flag; give them a moment.
    runtime.shutdown_timeout(Duration::from_secs(2));
    remove_api_info(&data);
    if result.is_ok() {
        info!("stopped");
    }
    result
}

/// The runtime a node runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("basic")
        .build()
        .context("cannot start the runtime")
}

/// Removes `api.json` if this process wrote it.
pub fn remove_api_info(data: &DataDir) {
    if let Ok(Some(info)) = ApiInfo::read(data)
        && info.pid == std::process::id()
    {
        let _ = std::fs::remove_file(data.api());
    }
}

async fn serve(
    node: Arc<Node>,
    options: &UpOptions,
    api: std::net::TcpListener,
) -> anyhow::Result<()> {
    let listener = api
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(api))
        .with_context(|| format!("cannot listen on {} for the API", options.api))?;
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() {
        warn!(
            "THE API LISTENS ON {address}, NOT ON LOOPBACK: anyone who can reach it may try tokens"
        );
    }
    let mut network_config = NetworkConfig::parse(&options.config)?;
    for address in node.peers.all() {
        if !network_config.peers.contains(&address) {
            info!(%address, "dialling a saved pinning peer");
            network_config.peers.push(address);
        }
    }
    let transport = Transport::start(&node.data.network_key(), &network_config).await?;
    // Only this function sets it, once.
    node.attach_network(transport.net());
    let listen = transport.addresses.clone();
    let status = node.network.clone().context("a running node has a network status")?;
    ApiInfo { address: Some(address), pid: std::process::id(), listen: listen.clone() }
        .write(&node.data)?;
    let on_listen = api_info_writer(node.data.clone(), Some(address));
    let network =
        Network::start(Arc::clone(&node.db), transport, status, true, on_listen, node.data.shown())
            .await?;
    info!("database {}, this device {}", node.db.id(), device_id(&node.db.device()));
    info!("API on http://{address}/v0/ (owner token in {})", node.data.owner_token().display());
    for address in &listen {
        info!("sync on {address}");
    }
    let (stop, stopping) = watch::channel(false);
    let mut stopped = stopping.clone();
    let server = axum::serve(listener, api::router(Arc::clone(&node), stopping, address))
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
    let signals = async {
        shutdown_signal().await?;
        info!("shutting down");
        stop.send_replace(true);
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        warn!("connections still open after {SHUTDOWN_GRACE:?}: closing them");
        anyhow::Ok(())
    };
    let result = tokio::select! {
        served = server => served.context("the API server failed"),
        signalled = signals => signalled,
    };
    network.shutdown().await;
    result
}

/// Rewrites `api.json` when the sync addresses change (a relay reservation
/// made or lost).
pub fn api_info_writer(data: DataDir, address: Option<SocketAddr>) -> ListenHook {
    ListenHook::new(move |listen| {
        let info = ApiInfo { address, pid: std::process::id(), listen: listen.to_vec() };
        match info.write(&data) {
            Ok(()) => debug!("api.json updated: sync on {}", listen.join(", ")),
            Err(error) => warn!("cannot update api.json: {error:#}"),
        }
    })
}

/// Waits for Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("cannot watch for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("cannot watch for Ctrl-C")
}
