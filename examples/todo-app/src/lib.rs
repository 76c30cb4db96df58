//! `todo-app`: a to-do list kept in the user's own Basic database, through
//! the light client. The app asks for access once (`todo-app connect
//! CODE`, with the code `basic app connect` prints), then lists, adds and
//! completes items, and watches them change live.
//!
//! A library with one entry point, [`main`], so that the end-to-end tests
//! can build the same program as a binary of their own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use basic_client::{Access, AccessCode, AppIdentity, Ask, Client, ClientError, Value};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde::Deserialize;

/// A to-do list in your own Basic database.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where the app keeps its identity and its replica.
    #[arg(long, env = "TODO_APP_DATA", global = true)]
    data: Option<PathBuf>,
    /// Also sync with this peer (a pinning peer's address, `…/p2p/12D3…`);
    /// repeatable.
    #[arg(long = "peer", global = true, value_name = "ADDRESS")]
    peers: Vec<basic_client::Multiaddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask your devices for access to the `todo` namespace, and wait for
    /// you to approve it (`basic app requests`, `basic app approve ID`).
    #[command(
        after_help = "Example:\n  todo-app connect basic-access:…   (from `basic app connect`)"
    )]
    Connect {
        /// The access code `basic app connect` printed on one of your devices.
        code: String,
    },
    /// List the items.
    List,
    /// Add an item.
    Add {
        /// What to do.
        title: String,
    },
    /// Mark an item done.
    Done {
        /// The item's id (see `todo-app list`).
        id: String,
    },
    /// Print the list again whenever it changes, here or on another device.
    Watch,
}

/// One item, as the app reads it.
#[derive(Debug, Deserialize)]
struct Item {
    id: String,
    title: String,
    done: bool,
}

const LIST: &str = "inbox";

/// How long a write waits for a device to hold it before the app exits.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);

/// Runs the app with the process's arguments.
pub fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("todo-app: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    // What the client does, on standard error: RUST_LOG=info shows syncing.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("todo-app: {error}");
            ExitCode::FAILURE
        }
    }
}

fn data_dir(cli: &Cli) -> Result<PathBuf, ClientError> {
    if let Some(dir) = &cli.data {
        return Ok(dir.clone());
    }
    directories::ProjectDirs::from("", "", "basic-todo-app")
        .map(|dirs| dirs.data_dir().to_owned())
        .ok_or_else(|| ClientError::Stopped("no home directory: give --data DIR".into()))
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let dir = data_dir(&cli)?;
    let client = match &cli.command {
        Command::Connect { code } => connect(&dir, code).await?,
        _ => Client::open_with_peers(&dir, &cli.peers).await?,
    };
    if client.access() == Access::Revoked {
        println!("this app was revoked: the items it wrote stay in your database");
        return Err(ClientError::Revoked);
    }
    match cli.command {
        Command::Connect { .. } => {
            println!("connected as {}", client.app_id());
            delivered(&client).await?;
        }
        Command::List => {
            if !client.sync(DELIVERY_WAIT).await {
                println!("(none of your devices answered: the list as this app last saw it)");
            }
            print_items(&items(&client).await?);
        }
        Command::Add { title } => {
            let id = format!("{:016x}", rand::random::<u64>());
            client
                .execute(
                    "INSERT INTO items (id, list, title) VALUES (?, ?, ?)",
                    &[Value::Text(id.clone()), Value::Text(LIST.into()), Value::Text(title)],
                )
                .await?;
            println!("added {id}");
            delivered(&client).await?;
        }
        Command::Done { id } => {
            let written = client
                .execute("UPDATE items SET done = true WHERE id = ?", &[Value::Text(id.clone())])
                .await?;
            match written {
                basic_client::Executed::Written(outcome) if outcome.rows_affected == 0 => {
                    println!("no item {id}");
                }
                _ => {
                    println!("done {id}");
                    delivered(&client).await?;
                }
            }
        }
        Command::Watch => watch(&client).await?,
    }
    client.close().await;
    Ok(())
}

/// Asks for access and makes the app's list.
async fn connect(dir: &Path, code: &str) -> Result<Client, ClientError> {
    let code: AccessCode = code.trim().parse().map_err(|e| ClientError::BadCode(format!("{e}")))?;
    std::fs::create_dir_all(dir)
        .map_err(|error| ClientError::Io { path: dir.to_owned(), error })?;
    // Connected before: a revoked identity is never granted again.
    if let Ok(client) = Client::open(dir).await {
        if client.access() == Access::Revoked {
            return Err(ClientError::Stopped(format!(
                "{} was revoked, for good: connect as a new app with another --data directory",
                client.app_id()
            )));
        }
        return Ok(client);
    }
    let identity = AppIdentity::load_or_create(&dir.join("app.key"))?;
    println!("this app is {}", identity.id());
    let ask = Ask::new("Todo (example app)").read_write("todo")?;
    let client = Client::request_access(dir, &identity, &code, &ask, |status| {
        println!("{status}");
    })
    .await?;
    client
        .execute(
            "INSERT INTO lists (id, name) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            &[Value::Text(LIST.into()), Value::Text("Inbox".into())],
        )
        .await?;
    Ok(client)
}

/// Says whether one of the user's devices holds the app's writes yet.
async fn delivered(client: &Client) -> Result<(), ClientError> {
    if !client.flush(DELIVERY_WAIT).await? {
        println!("saved here; it reaches your devices on the next sync");
    }
    Ok(())
}

async fn items(client: &Client) -> Result<Vec<Item>, ClientError> {
    client.query_as("SELECT id, title, done FROM items ORDER BY title", &[]).await
}

fn print_items(items: &[Item]) {
    if items.is_empty() {
        println!("(no items)");
    }
    for item in items {
        println!("{} [{}] {}", item.id, if item.done { "x" } else { " " }, item.title);
    }
}

/// Prints the list on every change until the app is revoked or stopped.
async fn watch(client: &Client) -> Result<(), ClientError> {
    let mut live =
        client.subscribe("SELECT id, title, done FROM items ORDER BY title", &[]).await?;
    let mut access = client.watch_access();
    loop {
        tokio::select! {
            next = live.next() => match next {
                Some(Ok(rows)) => {
                    println!("--");
                    print_items(&basic_client::rows_as::<Item>(rows)?);
                }
                Some(Err(error)) => return Err(ClientError::Stopped(error.to_string())),
                None => return Ok(()),
            },
            changed = access.changed() => {
                if changed.is_err() { return Ok(()) }
                if *access.borrow() == Access::Revoked {
                    println!("revoked: this app reads and writes nothing new; its items stay in your database");
                    return Err(ClientError::Revoked);
                }
            }
        }
    }
}
