//! The command line: what `basic` accepts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Basic: a serverless, relational database for your own data.
#[derive(Debug, Parser)]
#[command(
    name = "basic",
    version,
    long_about = "Basic: a serverless, relational database for your own data.\n\n\
        Each of your devices keeps the whole database; apps get access you grant and can revoke.\n\
        Commands work on the running node (`basic up`) through its API, or on the database directly when no node runs.\n\
        The data directory is yours alone (mode 0700). This device's secrets are kept in the platform keystore when\n\
        `basic` is built with the `keystore` feature and one is reachable (Secret Service, macOS Keychain, Windows\n\
        Credential Manager), else in the replica's file; BASIC_KEYSTORE=file|platform|auto chooses.",
    after_help = "Examples:\n  basic init\n  basic schema apply examples/todo.toml\n  basic sql \"SELECT * FROM todo.items\"\n  basic up"
)]
pub struct Cli {
    /// The data directory (default: the platform's data directory for basic).
    #[arg(long, global = true, env = "BASIC_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new database on this device, join one with an invite, or recover one with the recovery secret.
    #[command(
        long_about = "Create a new database on this device: its identity, this device's keys and the owner token.\n\
            Prints the ids and the recovery secret to write down; at a terminal it asks whether you wrote it down,\n\
            and only then forgets it on this device (else `basic recovery confirm` does, later).\n\
            With --join, this device joins an existing database instead.\n\
            With --recover, this device regains a database after every device was lost: the recovery secret is read\n\
            from a prompt (or one line of standard input, never from the command line), the control log and the data\n\
            are fetched from --peer (a pinning peer or a surviving device), your root identity adds this device, and\n\
            the lost devices are removed (asked one by one at a terminal; all of them with --remove-lost).",
        after_help = "Examples:\n  basic init\n  basic init --data ~/basic-test\n  basic init --join basic-invite-…\n  \
            basic init --recover --database db_… --peer /ip4/203.0.113.7/tcp/4001/p2p/12D3…\n  \
            basic init --recover --database db_… --peer ADDR --remove-lost < secret.txt"
    )]
    Init(InitArgs),

    /// Run the node in the foreground: sync with your other devices and the local HTTP API (creates a database on first run).
    #[command(
        long_about = "Run the node in the foreground until Ctrl-C or SIGTERM.\n\
            On the first run in an empty data directory it creates a database first, as `basic init` does.\n\
            Syncs with the database's other devices and pinning peers over libp2p (TCP and QUIC; mDNS finds them on the LAN).\n\
            Dials every --peer and every pinning peer address saved with `basic pin add --address`, and redials them.\n\
            Behind a NAT, --relay a pinning peer's address: the node reserves a slot on it and is reachable at <pinner>/p2p-circuit/p2p/<this node>,\n\
            an address shown by `basic status`, written to api.json and carried by invites. A pinning peer relays for devices.\n\
            Serves the local HTTP API (see /v0/openapi.json) and writes its address to api.json in the data directory.\n\
            Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more or less.",
        after_help = "Examples:\n  basic up\n  basic up --api 127.0.0.1:9000\n  basic up --query-budget 500ms        (stop any SQL statement after half a second)\n  basic up --listen /ip4/0.0.0.0/tcp/4001 --peer /ip4/192.168.1.5/tcp/4001\n  basic up --relay /ip4/203.0.113.7/tcp/4001/p2p/12D3…        (behind a NAT: reachable through that pinning peer)\n  basic up --peer /ip4/203.0.113.7/tcp/4001/p2p/12D3…/p2p-circuit/p2p/12D3…   (another device, through the relay)\n  basic --data ~/pinner up --listen /ip4/0.0.0.0/tcp/4001 --external /ip4/203.0.113.7/tcp/4001"
    )]
    Up(UpArgs),

    /// Run one SQL statement.
    #[command(
        long_about = "Run one SQL statement: a SELECT prints its rows; INSERT, UPDATE and DELETE print what they wrote.\n\
            Parameters bind to `?` in order. Each is read as JSON if it is JSON (42, true, null, \"text\", {\"a\":1}), else as text.",
        after_help = "Examples:\n  basic sql \"SELECT id, title FROM todo.items WHERE NOT done\"\n  basic sql \"INSERT INTO todo.lists (id, name) VALUES (?, ?)\" --param home --param Home\n  basic sql \"SELECT count(*) FROM todo.items\" --json"
    )]
    Sql(SqlArgs),

    /// Apply or show schemas.
    #[command(subcommand)]
    Schema(SchemaCommand),

    /// Invite, list and remove your devices.
    #[command(subcommand)]
    Device(DeviceCommand),

    /// Answer app requests, list apps, revoke their access.
    #[command(subcommand)]
    App(AppCommand),

    /// Authorise, list and remove pinning peers.
    #[command(subcommand)]
    Pin(PinCommand),

    /// Export the database, or one namespace, as JSON lines or SQLite.
    #[command(
        after_help = "Examples:\n  basic export --out backup.jsonl\n  basic export --namespace todo\n  basic export --sqlite backup.sqlite"
    )]
    Export(ExportArgs),

    /// Import a JSON lines export (checked whole before anything is written).
    #[command(after_help = "Example:\n  basic import backup.jsonl")]
    Import(ImportArgs),

    /// Make this directory a pinning peer's, which stores and serves your
    /// databases' ciphertext without any key.
    #[command(subcommand)]
    Pinner(PinnerCommand),

    /// Show the recovery secret while this device holds it, or forget it once written down.
    #[command(subcommand)]
    Recovery(RecoveryCommand),

    /// Show the database, devices, apps, forks, storage and peers.
    #[command(
        long_about = "Show the database, devices, apps, forks, storage and peers.\n\
            In a pinning peer's directory: the database it pins, whether the database's control log\n\
            authorises it, the commits and control operations it holds, its storage, and its peers\n\
            (while it runs), from the running pinning peer or, when none runs, from its replica.",
        after_help = "Examples:\n  basic status\n  basic status --json\n  basic --data ~/pinner status"
    )]
    Status(StatusArgs),
}

/// `basic init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Join the database of this invite (from `basic device invite`) instead.
    #[arg(long, value_name = "CODE", conflicts_with = "recover")]
    pub join: Option<String>,

    /// Recover a database with its recovery secret (read from a prompt or
    /// standard input), from a pinning peer or surviving device (--peer).
    #[arg(long, requires_all = ["database", "peer"])]
    pub recover: bool,

    /// With --recover: the database (`db_…`, printed with the recovery
    /// secret; a pinning peer's `basic status` shows it too).
    #[arg(long, value_name = "DB", requires = "recover")]
    pub database: Option<String>,

    /// With --recover: where to fetch the database from, a pinning peer's
    /// or surviving device's address ending in `/p2p/<peer id>` (repeatable).
    #[arg(long, value_name = "ADDR", requires = "recover")]
    pub peer: Vec<String>,

    /// With --recover: remove every other device (the lost ones) without
    /// asking.
    #[arg(long, requires = "recover")]
    pub remove_lost: bool,
}

/// `basic up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// A network address to listen on, for sync (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,

    /// A peer to connect to, for sync (repeatable). A relayed address
    /// (`<relay>/p2p-circuit/p2p/<peer id>`) connects through that relay.
    /// Pinning peers' addresses saved with `basic pin add --address` are
    /// dialled too.
    #[arg(long, value_name = "ADDR")]
    pub peer: Vec<String>,

    /// A relay (a pinning peer's address, ending in `/p2p/<its peer id>`)
    /// to reserve a slot on, so that peers that cannot reach this node
    /// directly (it is behind a NAT) reach it through the relay (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub relay: Vec<String>,

    /// A pinning peer: a public address to announce and relay on, besides
    /// the addresses it listens on, e.g. a router's forwarded port
    /// (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub external: Vec<String>,

    /// Do not look for peers on the local network (mDNS).
    #[arg(long)]
    pub no_mdns: bool,

    /// A pinning peer's first start: the database to pin (`db_…`). It
    /// gets the control log from the first authorised device connected
    /// (one that dials it, or a --peer).
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,

    /// Where the HTTP API listens (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub api: SocketAddr,

    /// Allow an --api address other than loopback (the API is then reachable
    /// from other machines).
    #[arg(long)]
    pub api_public: bool,

    /// How long one SQL statement may run (a query, a live query's run after
    /// each change, a write's evaluation) before it is stopped with the
    /// error `query_timeout` (HTTP 422), e.g. 500ms, 2s, 1m; from 1ms to 1h.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_budget)]
    pub query_budget: Duration,
}

/// The longest `--query-budget`.
pub const MAX_QUERY_BUDGET: Duration = Duration::from_secs(60 * 60);

/// Reads a `--query-budget`: a duration with its unit (`500ms`, `2s`,
/// `1m`), from 1 ms to [`MAX_QUERY_BUDGET`].
fn parse_budget(text: &str) -> Result<Duration, String> {
    let budget = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}: give a duration with its unit, e.g. 500ms, 2s or 1m"))?;
    if budget < Duration::from_millis(1) || budget > MAX_QUERY_BUDGET {
        return Err(format!(
            "a statement budget is from 1ms to {}",
            humantime::format_duration(MAX_QUERY_BUDGET)
        ));
    }
    Ok(budget)
}

/// `basic sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The statement.
    pub sql: String,

    /// A value for the next `?` (repeatable).
    #[arg(long = "param", value_name = "VALUE")]
    pub params: Vec<String>,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `basic schema …`.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Apply a schema file (TOML or JSON); a new version may only add.
    #[command(
        long_about = "Apply a schema file (TOML or JSON, by its extension); a new version may only add.\n\
            Tables and columns keep the file's order (the order of `SELECT *`); new columns go at the end.\n\
            A JSON file may also hold an array of schemas, as `basic schema show` prints them.",
        after_help = "Examples:\n  basic schema apply examples/todo.toml\n  basic schema show todo > todo.json && basic schema apply todo.json   (already up to date)"
    )]
    Apply {
        /// The schema file.
        file: PathBuf,
    },
    /// Print a namespace's schema, or every one, as JSON that applies back.
    #[command(
        long_about = "Print a namespace's schema as JSON, in canonical form (every column written out in full),\n\
            tables and columns in their order; without a namespace, every schema as a JSON array.\n\
            What it prints applies back unchanged with `basic schema apply`.",
        after_help = "Examples:\n  basic schema show todo\n  basic schema show > schemas.json"
    )]
    Show {
        /// Only this namespace's schema.
        namespace: Option<String>,
    },
    /// Print the row types of a schema file: TypeScript interfaces or Rust structs.
    #[command(
        long_about = "Print the row types of a schema file (TOML or JSON), one per table, as the API returns rows:
            TypeScript interfaces (for `query<T>` of the TypeScript client) or Rust structs with serde derives.
            Needs no database.",
        after_help = "Examples:
  basic schema types examples/todo.toml --lang ts > src/rows.ts
  basic schema types examples/todo.toml --lang rust > src/rows.rs"
    )]
    Types {
        /// The schema file.
        file: PathBuf,
        /// The language.
        #[arg(long, value_enum)]
        lang: TypesLang,
    },
}

/// The languages of `basic schema types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypesLang {
    /// TypeScript interfaces.
    Ts,
    /// Rust structs with serde derives.
    Rust,
}

/// `basic device …`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Print a one-line invite for a new device (`basic init --join CODE` there); needs the running node.
    #[command(
        long_about = "Print a one-line invite for a new device: `basic init --join CODE` there.\n\
            The new device joins through this device's running node, at the addresses the invite carries,\n\
            so start the node first (`basic up`) and keep it running until the new device has joined;\n\
            with no node running, this refuses and says so. The invite is valid once, for --valid-minutes.",
        after_help = "Examples:\n  basic up &    (or in another terminal)\n  basic device invite\n  basic device invite --valid-minutes 10"
    )]
    Invite {
        /// How long the invite stays valid, in minutes.
        #[arg(long, value_name = "MINUTES", default_value_t = 60)]
        valid_minutes: u64,
    },
    /// List your devices.
    List,
    /// Remove a device for good: its keys rotate away from it.
    #[command(after_help = "Example:\n  basic device remove dev_…")]
    Remove {
        /// The device's id (`dev_…`, see `basic device list`).
        id: String,
    },
}

/// `basic app …`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Print the access code an app uses to ask this device for access.
    #[command(
        long_about = "Print the access code an app uses to ask this device for access.\n\
            An app that embeds the light client takes this one line (the database and the\n\
            running node's addresses) and asks over the network; its request then shows in\n\
            `basic app requests`, to approve or deny. Needs a running node (`basic up`).",
        after_help = "Example:\n  basic app connect"
    )]
    Connect,
    /// List app requests waiting for an answer.
    Requests,
    /// Approve a request: grant the app what it asked for.
    #[command(after_help = "Example:\n  basic app approve 3f2a9c0b1d4e5f60")]
    Approve {
        /// The request id (see `basic app requests`).
        id: String,
    },
    /// Deny a request.
    Deny {
        /// The request id (see `basic app requests`).
        id: String,
    },
    /// List apps: their grants, how they write, what they wrote and when last.
    List,
    /// Revoke an app's access, to one scope or all; what it wrote stays.
    #[command(
        after_help = "Examples:\n  basic app revoke app_…\n  basic app revoke app_… --scope todo"
    )]
    Revoke {
        /// The app's id (`app_…`, see `basic app list`).
        id: String,
        /// Only this scope (namespace).
        #[arg(long, value_name = "SCOPE")]
        scope: Option<String>,
    },
}

/// `basic pin …`.
#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Authorise a pinning peer to store and serve your ciphertext (it gets no key), and save its address.
    #[command(
        long_about = "Authorise a pinning peer to store and serve your ciphertext (it gets no key).\n\
            With --address, this device also saves where the pinning peer listens (in peers.json) and\n\
            `basic up` dials it there, as it does --peer: the way for a device behind a NAT to reach an\n\
            always-on pinning peer. A running node starts dialling a newly saved address at once (within a second).\n\
            Given addresses for a pinning peer already authorised, it replaces its saved addresses.",
        after_help = "Examples:\n  basic pin add pin_…\n  basic pin add pin_… --address /ip4/203.0.113.7/tcp/4001/p2p/12D3…"
    )]
    Add {
        /// The pinning peer's id (`pin_…`).
        id: String,
        /// An address of the pinning peer, ending in `/p2p/<its peer id>`
        /// as its log shows it (repeatable, at most 8).
        #[arg(long = "address", value_name = "ADDR")]
        addresses: Vec<String>,
    },
    /// List pinning peers, with the addresses this device dials them at.
    List,
    /// Remove a pinning peer, for good (and forget its addresses).
    Remove {
        /// The pinning peer's id (`pin_…`).
        id: String,
    },
}

/// `basic recovery …`.
#[derive(Debug, Subcommand)]
pub enum RecoveryCommand {
    /// Print the recovery secret again, while this device still holds it.
    #[command(
        long_about = "Print the recovery secret (your root identity) and the database id, while this device still holds it:\n\
            until `basic recovery confirm`. With it and the database id, `basic init --recover` regains the database\n\
            on a new device after every device was lost. Anyone who has it can take over the database: keep it offline.",
        after_help = "Example:\n  basic recovery show"
    )]
    Show,
    /// Say the recovery secret is written down: this device forgets it, for good.
    #[command(
        long_about = "Say that the recovery secret is written down and kept offline: this device then forgets it, for good.\n\
            Until then the root secret stays on this device (readable by your user only), so that a thief of the device\n\
            would hold it too; after, only your written copy can recover the database.",
        after_help = "Example:\n  basic recovery show    (write it down)\n  basic recovery confirm"
    )]
    Confirm,
}

/// `basic pinner …`.
#[derive(Debug, Subcommand)]
pub enum PinnerCommand {
    /// Make a pinning peer's key here and print its id (`pin_…`).
    #[command(
        long_about = "Make a pinning peer's key in the data directory and print its id (`pin_…`).\n\
            Then here: `basic up --database db_… --listen ADDRESS` (a fixed port devices can reach);\n\
            and on one of your devices: `basic pin add pin_… --address ADDRESS/p2p/PEER-ID` (the address\n\
            this pinning peer logs) and `basic up`. The first device to connect serves it the control log.\n\
            (Or, the other way round, `basic up --database db_… --peer ADDRESS-OF-A-DEVICE` here.)",
        after_help = "Example:\n  basic --data ~/pinner pinner init"
    )]
    Init,
}

/// `basic export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this namespace (with the schemas it references).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Write JSON lines to this file (default: standard output).
    #[arg(long, value_name = "FILE", conflicts_with = "sqlite")]
    pub out: Option<PathBuf>,

    /// Write a standalone SQLite file instead (it must not exist).
    #[arg(long, value_name = "FILE")]
    pub sqlite: Option<PathBuf>,
}

/// `basic import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A JSON lines export.
    pub file: PathBuf,
}

/// `basic status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_query_budget_is_the_stores() {
        let cli = Cli::try_parse_from(["basic", "up"]).unwrap();
        let Command::Up(args) = cli.command else { panic!("up") };
        assert_eq!(args.query_budget, basic_store::DEFAULT_QUERY_BUDGET);
        assert_eq!(parse_budget("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_budget("0s").is_err() && parse_budget("2h").is_err());
        assert!(parse_budget("2").unwrap_err().contains("500ms"));
    }
}
