//! `basic init --recover`: regaining a database after every device was
//! lost, with the recovery secret (the root identity), from a pinning peer
//! or a surviving device (`protocol-spec/control-log.md` §9.4).
//!
//! 1. The root fetches the control log: a sync session in which it proves
//!    itself as the root (a member everywhere), stopped after the control
//!    exchange.
//! 2. [`Database::recover`] makes this device's keys and a root-signed
//!    `add-device` that seals it every scope key; the device keeps the root
//!    secret for now.
//! 3. A full sync session, still as the root, pushes that operation to the
//!    peer (so that the device is known there) and pulls every commit.
//! 4. The lost devices are removed by root-signed `remove-device`s, cut off
//!    at what this replica now holds of each (the root's end decides, §6):
//!    a cut-off computed before the data arrived would drop their rows.
//!    Each removal rotates every scope away from the removed device. The
//!    removals go to the peer in the same session.
//! 5. If every other device was removed, the device forgets the root
//!    secret (the user has it written down: they just typed it);
//!    otherwise it keeps it until `basic recovery confirm`, and `basic
//!    device remove` signs with it meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use basic_net::{Config, Keypair, Limits, Multiaddr, Net, PeerId, peer_of};
use basic_proto::control::AuthState;
use basic_proto::sync::{Event, Requester};
use basic_proto::{DatabaseId, PublicKey, SecretKey};
use basic_store::{Database, SyncReplica};

use crate::cli::InitArgs;
use crate::ids::device_id;
use crate::network::{fetch_control_log, one_off_config};
use crate::paths::DataDir;
use crate::tokens::OwnerToken;

/// Longest the whole exchange with one peer may stall.
const STALL: Duration = Duration::from_secs(60);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `basic init --recover`.
pub fn run(data: &DataDir, args: &InitArgs) -> anyhow::Result<()> {
    data.refuse_existing()?;
    let database: DatabaseId = args
        .database
        .as_deref()
        .context("--recover needs --database db_… (printed with the recovery secret)")?
        .parse()
        .map_err(|e| anyhow!("--database: {e}"))?;
    let addresses: Vec<Multiaddr> = args
        .peer
        .iter()
        .map(|text| {
            let address: Multiaddr =
                text.parse().with_context(|| format!("{text:?} is not a network address"))?;
            if peer_of(&address).is_none() {
                bail!("--peer {text}: give the address with its peer id (…/p2p/12D3…)");
            }
            Ok(address)
        })
        .collect::<anyhow::Result<_>>()?;
    let secret = read_secret()?;
    let root = basic_store::recovery::decode(&secret)?;
    let runtime = crate::daemon::runtime()?;
    let mut config = Config::new(Keypair::generate_ed25519());
    config.peers = addresses.clone();
    config.limits = Limits { request_timeout: REQUEST_TIMEOUT, ..Limits::default() };
    let (net, _events) =
        runtime.block_on(basic_net::start(config)).context("cannot start the network")?;
    let result = recover_from(data, &runtime, &net, &addresses, database, &root, &secret, args);
    runtime.block_on(net.shutdown());
    if result.is_err() && data.holds_database() {
        // Nothing half-recovered stays behind: a retry starts afresh.
        let _ = data.remove_database();
    }
    result
}

/// Reads the recovery secret: from a prompt at a terminal, else one line
/// of standard input. Never from the command line (shell history).
fn read_secret() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Recovery secret (basic-recovery-…): ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).context("cannot read the recovery secret")?;
    if line.trim().is_empty() {
        bail!("no recovery secret given: type it at the prompt, or pass it on standard input");
    }
    Ok(line.trim().to_owned())
}

#[allow(clippy::too_many_arguments)]
fn recover_from(
    data: &DataDir,
    runtime: &tokio::runtime::Runtime,
    net: &Net,
    addresses: &[Multiaddr],
    database: DatabaseId,
    root: &SecretKey,
    secret: &str,
    args: &InitArgs,
) -> anyhow::Result<()> {
    // 1. The control log, from the first peer that serves it.
    let mut fetched = None;
    let mut failures = Vec::new();
    for address in addresses {
        let Some(peer) = peer_of(address) else { continue };
        println!("Fetching the control log from {address}…");
        match runtime.block_on(fetch_control_log(
            net,
            peer,
            database,
            root,
            |state: &AuthState, key: &PublicKey| state.root().is_some_and(|r| r.key == *key),
            "your root identity (is this the recovery secret of that database?)",
        )) {
            Ok(ops) => {
                fetched = Some((peer, address.clone(), ops));
                break;
            }
            Err(error) => {
                println!("  not from there: {error:#}");
                failures.push(format!("{address}: {error:#}"));
            }
        }
    }
    let Some((peer, address, ops)) = fetched else {
        bail!(
            "no peer served the control log of {database} to this recovery secret ({}); is the pinning peer or device running, and is it this database's?",
            failures.join("; ")
        );
    };
    println!("  {} control operations", ops.len());

    // 2. This device, added by the root.
    let db = Database::recover(data.root(), secret, &ops)
        .with_context(|| format!("cannot recover into {}", data.root().display()))?;
    OwnerToken::generate(&data.owner_token())?;
    let known: BTreeSet<Vec<u8>> = ops.into_iter().collect();
    let added: Vec<Vec<u8>> =
        db.control_ops()?.into_iter().filter(|op| !known.contains(op)).collect();
    println!("Recovered database {} in {}", db.id(), data.root().display());
    println!("  device    {} (added by your root identity)", device_id(&db.device()));

    // 3. Tell the peer, and fetch every commit.
    println!("Fetching the data from {address}…");
    let mut session = Session::new(net, peer, &db, root);
    let received = session.round(runtime, &db, added)?;
    println!("  {received} commits and operations received");
    print_rows(&db);

    // 4. The lost devices, removed by the root, cut off at what is here now.
    let lost = lost_devices(&db, root);
    let mut removed = 0;
    if !lost.is_empty() {
        println!("Devices other than this one (lost?):");
        for key in &lost {
            println!("  {}", device_id(key));
        }
    }
    let heads_before = db.control_log().heads();
    for key in &lost {
        if !(args.remove_lost || ask(&format!("Remove {} for good?", device_id(key)))?) {
            continue;
        }
        let kept = db.replica().heads()?.get(key).map_or(0, |h| h.contiguous);
        db.remove_device_as_root(*key, root.clone())?;
        removed += 1;
        println!(
            "  removed {} (root-signed; its commits up to seq {kept} stay, every scope rotated away from it)",
            device_id(key)
        );
    }
    if removed > 0 {
        let new: Vec<Vec<u8>> =
            db.control_log().since(&heads_before).iter().map(|op| op.as_bytes().to_vec()).collect();
        println!("Sending the removals to {address}…");
        session.round(runtime, &db, new)?;
    }

    // 5. The root secret.
    if removed == lost.len() {
        db.forget_recovery_secret()?;
        println!("This device has forgotten the recovery secret again: keep your written copy.");
    } else {
        println!(
            "This device keeps the recovery secret for now: `basic device remove dev_…` removes a lost device \
             with it (its end decides), and `basic recovery confirm` forgets it."
        );
    }
    println!("Next: basic up --peer {address}");
    Ok(())
}

/// The devices to offer for removal: every other device not yet removed by
/// the root (a device removed only by another device — a thief's mutual
/// removal with cut-off 0 — is offered again: the root's end decides).
fn lost_devices(db: &Database, root: &SecretKey) -> Vec<PublicKey> {
    let state = db.auth_state();
    let log = db.control_log();
    let by_root = |id: &basic_proto::control::OpId| {
        log.get(id).is_some_and(|op| op.body().author == root.public())
    };
    state
        .devices()
        .iter()
        .filter(|(key, _)| **key != db.device())
        .filter(|(_, device)| device.removed.is_none_or(|end| !by_root(&end.by)))
        .map(|(key, _)| *key)
        .collect()
}

/// Asks a yes/no question at a terminal; no terminal: no.
fn ask(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        println!("  {question} Not asked (no terminal): pass --remove-lost to remove them all.");
        return Ok(false);
    }
    print!("  {question} [y/N] ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    stdin.lock().read_line(&mut line).context("cannot read the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Rows per table, as a summary of what came back.
fn print_rows(db: &Database) {
    for schema in db.catalog().schemas() {
        for table in schema.tables() {
            let sql = format!("SELECT count(*) FROM {}", table.name());
            if let Ok(rows) = db.query(&sql, &[], None)
                && let Some(basic_proto::Value::Integer(n)) =
                    rows.rows.first().and_then(|r| r.first())
            {
                println!("  {}: {n} rows", table.name());
            }
        }
    }
}

/// A sync session with the peer in which this replica proves itself as the
/// root.
struct Session<'a> {
    net: &'a Net,
    peer: PeerId,
    requester: Requester,
    start: Instant,
}

impl<'a> Session<'a> {
    fn new(net: &'a Net, peer: PeerId, db: &Database, root: &SecretKey) -> Self {
        // The root is a member of every replica: it never needs a prelude.
        let config = one_off_config(net, peer, db.id(), root);
        Self {
            net,
            peer,
            requester: Requester::new(config, BTreeMap::new()),
            start: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Pushes `ops` once the peer is authenticated and runs a round to
    /// its end, then until nothing is outstanding: every commit the peer
    /// holds is then here, and the peer has `ops`. Returns what was
    /// received.
    fn round(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        db: &Database,
        ops: Vec<Vec<u8>>,
    ) -> anyhow::Result<u64> {
        let mut pending = Some(ops);
        if self.requester.peer().is_some() {
            let store = SyncReplica::new(db);
            self.requester.push(&store, pending.take().unwrap_or_default(), Vec::new());
            self.requester.resync_now();
        }
        let (mut synced, mut received) = (false, 0);
        let mut last_progress = Instant::now();
        let mut stalled_since = Instant::now();
        loop {
            let now = self.now();
            let mut store = SyncReplica::new(db);
            let request = self.requester.poll_request(&mut store, now)?;
            while let Some(event) = self.requester.poll_event() {
                match event {
                    Event::Authenticated { .. } => {
                        if let Some(ops) = pending.take() {
                            self.requester.push(&store, ops, Vec::new());
                        }
                    }
                    Event::Synced { received: got, .. } => {
                        received += got;
                        synced = pending.is_none();
                    }
                    Event::RolledBack { .. } => {}
                    Event::Closed { reason } => bail!("the peer ended the session: {reason}"),
                }
            }
            let Some(request) = request else {
                if synced && self.requester.is_idle() {
                    return Ok(received);
                }
                if stalled_since.elapsed() > STALL {
                    bail!("the exchange with the peer stalled");
                }
                let wake = self.requester.poll_timeout().unwrap_or(now + 100);
                std::thread::sleep(Duration::from_millis(wake.saturating_sub(now).clamp(10, 500)));
                continue;
            };
            stalled_since = Instant::now();
            let answer = runtime.block_on(self.net.request(self.peer, request));
            let mut store = SyncReplica::new(db);
            match answer {
                Ok(frame) => self.requester.handle_response(&mut store, &frame, self.now())?,
                Err(error) => {
                    println!("  a request failed ({error}); trying again");
                    self.requester.handle_failure(self.now());
                }
            }
            if last_progress.elapsed() > Duration::from_secs(2) {
                last_progress = Instant::now();
                let commits = db.replica().commits().count();
                println!("  … {commits} commits here so far");
            }
        }
    }
}
