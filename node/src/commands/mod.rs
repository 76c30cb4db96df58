//! What each command does, and what it prints.

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};
use basic_proto::Name;
use basic_proto::keys::{Principal, Role};
use basic_store::{Database, Format, Invite, Schema};

use crate::backend::Backend;
use crate::cli::{
    AppCommand, Cli, Command, DeviceCommand, ExportArgs, PinCommand, PinnerCommand,
    RecoveryCommand, SchemaCommand, SqlArgs, StatusArgs,
};
use crate::daemon::{UpOptions, bind, up};
use crate::ids::device_id;
use crate::join::exchange_join;
use crate::node::NodeConfig;
use crate::ops::apps::{
    Access, Answer, AppEntry, Connect, ListApps, ListRequests, RequestInfo, Revoke,
};
use crate::ops::devices::{Invite as MakeInvite, ListDevices, RemoveDevice};
use crate::ops::pins::{AddPin, ListPins, RemovePin};
use crate::ops::recovery::{ConfirmRecovery, ShowRecovery};
use crate::ops::schema::{ApplySchema, ShowSchemas};
use crate::ops::sql::{Sql, SqlOutput};
use crate::ops::status::Status;
use crate::ops::transfer::{Export, ExportFormat, Import};
use crate::paths::DataDir;
use crate::status::{NetworkStatus, PinnerStatus};
use crate::tokens::OwnerToken;

mod show;
mod types;

/// Runs the command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Row types come from a file alone: no data directory needed.
    if let Command::Schema(SchemaCommand::Types { file, lang }) = &cli.command {
        return print_types(file, *lang);
    }
    let data = DataDir::resolve(cli.data)?;
    // Commands that make a database (or a pinning peer) make the directory
    // private; every command refuses one that other users can reach.
    let creates = matches!(
        cli.command,
        Command::Init(_) | Command::Up(_) | Command::Pinner(PinnerCommand::Init)
    );
    data.secure(creates)?;
    // The platform keystore for this device's secrets, when reachable.
    crate::keystore::install()?;
    match cli.command {
        Command::Init(args) if args.recover => crate::recover::run(&data, &args),
        Command::Init(args) => match args.join {
            Some(code) => join(&data, &code),
            None => init(&data, Ask::AtATerminal),
        },
        Command::Up(args) => {
            let options = UpOptions {
                api: args.api,
                api_public: args.api_public,
                config: NodeConfig {
                    listen: args.listen,
                    peers: args.peer,
                    relays: args.relay,
                    external: args.external,
                    mdns: !args.no_mdns,
                },
                database: args.database,
                query_budget: args.query_budget,
            };
            // Bad options and ports in use fail here, before a database
            // (and its recovery secret) is made.
            let bound = bind(&data, &options)?;
            if !data.holds_database() && !data.is_pinner() {
                // First run on this machine: `basic up` alone gives a node.
                println!("No database in {} yet: creating one.", data.root().display());
                // No question: `basic up &` must not stop for input.
                init(&data, Ask::Never)?;
            }
            if data.is_pinner() {
                return crate::pinner::up(data, options);
            }
            up(data, options, bound)
        }
        Command::Pinner(PinnerCommand::Init) => crate::pinner::init(&data),
        Command::Sql(args) => sql(&Backend::connect(&data)?, args),
        Command::Schema(command) => schema(&Backend::connect(&data)?, command),
        Command::Device(command) => device(&Backend::connect(&data)?, command),
        Command::App(command) => app(&Backend::connect(&data)?, command),
        Command::Pin(command) => pin(&Backend::connect(&data)?, command),
        Command::Export(args) => export(&Backend::connect(&data)?, args),
        Command::Import(args) => {
            let jsonl = std::fs::read(&args.file)
                .with_context(|| format!("cannot read {}", args.file.display()))?;
            let imported = Backend::connect(&data)?.call(Import { jsonl })?;
            println!(
                "imported {} rows in {} commits{}",
                imported.rows,
                imported.commits,
                match imported.schemas_applied.as_slice() {
                    [] => String::new(),
                    applied => format!("; applied the schemas of {}", applied.join(", ")),
                }
            );
            Ok(())
        }
        Command::Recovery(command) => recovery(&Backend::connect(&data)?, command),
        Command::Status(args) if data.is_pinner() => pinner_status(&data, args),
        Command::Status(args) => status(&Backend::connect(&data)?, args),
    }
}

/// Whether `basic init` may ask the user a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// When standard input is a terminal.
    AtATerminal,
    /// Never (the first `basic up`, which may run in the background).
    Never,
}

/// `basic init`.
fn init(data: &DataDir, ask: Ask) -> anyhow::Result<()> {
    data.refuse_existing()?;
    let db = Database::open(data.root())
        .with_context(|| format!("cannot create a database in {}", data.root().display()))?;
    OwnerToken::generate(&data.owner_token())?;
    println!("Created a database in {}", data.root().display());
    print_ids(&db);
    if let Some(secret) = db.recovery_secret()? {
        println!();
        println!(
            "Recovery secret — WRITE IT DOWN, with the database id above, and keep it offline."
        );
        println!(
            "Anyone who has it can take over this database; without it, losing every device loses the data."
        );
        println!("With both, `basic init --recover` regains the database on a new device.");
        println!();
        println!("    {secret}");
        println!();
        let interactive = ask == Ask::AtATerminal && std::io::stdin().is_terminal();
        if interactive && confirm("Have you written it down? This device then forgets it")? {
            db.forget_recovery_secret()?;
            println!("Forgotten on this device: only your written copy remains.");
        } else {
            println!(
                "This device keeps it (readable by your user only) until you have written it down and run \
                 `basic recovery confirm`; `basic recovery show` prints it again."
            );
        }
    }
    println!("Next: `basic schema apply FILE`; `basic up` runs the node (API and sync).");
    Ok(())
}

/// Asks a yes/no question on the terminal.
fn confirm(question: &str) -> anyhow::Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush().context("cannot write to the terminal")?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes" | "YES"))
}

/// `basic recovery …`.
fn recovery(backend: &Backend, command: RecoveryCommand) -> anyhow::Result<()> {
    match command {
        RecoveryCommand::Show => {
            let info = backend.call(ShowRecovery)?;
            let Some(secret) = info.secret else {
                bail!(
                    "this device no longer holds the recovery secret (it was confirmed as written down); \
                     only your written copy remains"
                );
            };
            println!("database  {}", info.database);
            println!("recovery  {secret}");
            eprintln!("Write both down and keep them offline; then `basic recovery confirm`.");
        }
        RecoveryCommand::Confirm => {
            if backend.call(ConfirmRecovery)?.forgotten {
                println!(
                    "This device has forgotten the recovery secret: only your written copy remains."
                );
            } else {
                println!("This device did not hold the recovery secret: nothing to forget.");
            }
        }
    }
    Ok(())
}

/// `basic init --join CODE`.
fn join(data: &DataDir, code: &str) -> anyhow::Result<()> {
    let invite = Invite::parse(code)?;
    data.refuse_existing()?;
    let request = Database::prepare_join(data.root(), &invite)?;
    let joined = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|runtime| runtime.block_on(exchange_join(&invite, &request)))
        .and_then(|ops| Ok(Database::finish_join(data.root(), &ops)?));
    let db = match joined {
        Ok(db) => db,
        Err(error) => {
            // Leave nothing half-joined behind, so that a retry can start afresh.
            data.remove_database()?;
            return Err(error);
        }
    };
    OwnerToken::generate(&data.owner_token())?;
    println!("Joined database {} in {}", db.id(), data.root().display());
    print_ids(&db);
    Ok(())
}

fn print_ids(db: &Database) {
    println!("  database  {}", db.id());
    println!("  device    {}", device_id(&db.device()));
    if let Some(root) = db.auth_state().root() {
        println!("  user      {}", Principal { role: Role::User, key: root.key });
    }
}

/// `basic sql`.
fn sql(backend: &Backend, args: SqlArgs) -> anyhow::Result<()> {
    // A parameter is JSON if it reads as JSON, else text.
    let params = args
        .params
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|_| serde_json::Value::from(p.as_str())))
        .collect();
    let output = backend.call(Sql { sql: args.sql, params })?;
    if args.json {
        return show::json(&output);
    }
    match output {
        SqlOutput::Rows { columns, rows } => show::table(&columns, &rows),
        SqlOutput::Written { written, commits } => {
            println!(
                "{written} row{} written ({} commit{})",
                plural(written),
                commits.len(),
                plural(commits.len())
            );
        }
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `basic schema …`.
fn schema(backend: &Backend, command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Apply { file } => {
            for schema in read_schemas(&file)? {
                let applied = backend.call(ApplySchema { schema })?;
                if applied.tables.is_empty()
                    && applied.columns.is_empty()
                    && applied.indexes.is_empty()
                {
                    println!("{}: already up to date", applied.namespace);
                    continue;
                }
                println!("applied {}", applied.namespace);
                for table in &applied.tables {
                    println!("  + table {table}");
                }
                for column in &applied.columns {
                    println!("  + column {column}");
                }
                for index in &applied.indexes {
                    println!("  + index {index}");
                }
            }
            Ok(())
        }
        SchemaCommand::Types { file, lang } => print_types(&file, lang),
        SchemaCommand::Show { namespace: None } => show::json(&backend.call(ShowSchemas)?),
        SchemaCommand::Show { namespace: Some(namespace) } => {
            let schemas = backend.call(ShowSchemas)?;
            match schemas.iter().find(|schema| schema.namespace().as_str() == namespace) {
                Some(schema) => show::json(schema),
                None if schemas.is_empty() => {
                    bail!("no schema for namespace {namespace:?}: the database has none yet")
                }
                None => bail!(
                    "no schema for namespace {namespace:?} (there are: {})",
                    schemas.iter().map(|s| s.namespace().as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    }
}

/// Largest file of schemas `basic schema apply` reads.
const MAX_SCHEMAS_FILE: u64 = 64 << 20;

/// The schemas of `file`: one schema (TOML or JSON), or a JSON array of
/// them, as `basic schema show` prints every namespace's.
/// `basic schema types FILE --lang …`.
fn print_types(file: &std::path::Path, lang: crate::cli::TypesLang) -> anyhow::Result<()> {
    print!("{}", types::render(&read_schemas(file)?, lang));
    Ok(())
}

fn read_schemas(file: &std::path::Path) -> anyhow::Result<Vec<Schema>> {
    let is_array = Format::from_path(file) != Some(Format::Toml)
        && std::fs::read(file)
            .is_ok_and(|bytes| bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'['));
    if !is_array {
        return Ok(vec![Schema::from_file(file)?]);
    }
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or_default();
    if size > MAX_SCHEMAS_FILE {
        bail!("{}: {size} bytes, more than a file of schemas may hold", file.display());
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {} as text", file.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not an array of schemas", file.display()))
}

/// `basic device …`.
fn device(backend: &Backend, command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Invite { valid_minutes } => {
            if !backend.is_running() {
                bail!(
                    "no node is running for this database, and the new device joins through it: start it with `basic up`, then make the invite"
                );
            }
            let invite = backend.call(MakeInvite { valid_minutes })?;
            println!("{}", invite.invite);
            eprintln!(
                "On the new device: basic init --join CODE (valid until {}, once).",
                show::time(invite.expires_at_ms)
            );
            if invite.addresses.is_empty() {
                eprintln!("This node listens on no network address, so the invite carries none.");
            }
        }
        DeviceCommand::List => {
            for device in backend.call(ListDevices)? {
                let mut notes = Vec::new();
                if device.this_device {
                    notes.push("this device");
                }
                if device.removed {
                    notes.push("removed");
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", notes.join(", "))
                };
                println!("{}{notes}", device.id);
            }
        }
        DeviceCommand::Remove { id } => {
            backend.call(RemoveDevice { id: id.clone() })?;
            println!("removed {id}: its keys rotated away from it");
        }
    }
    Ok(())
}

fn access(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::ReadWrite => "read-write",
    }
}

fn print_request(request: &RequestInfo) {
    let scopes: Vec<String> =
        request.scopes.iter().map(|(s, a)| format!("{s} ({})", access(*a))).collect();
    println!("{}  {:?} asks for {}", request.id, request.name, scopes.join(", "));
    if let Some(origin) = &request.origin {
        println!("    from the web page {origin} (its token will work from there only)");
    }
    println!("    app {}", request.app);
}

/// One app of `basic app list`: who it is, how it writes, what it may do
/// and what it wrote.
fn print_app(app: &AppEntry) {
    println!("{}  {}", app.id, app.name.as_deref().unwrap_or("(unnamed)"));
    if app.custodial {
        println!("    uses this node's API, which signs its writes with the app's key");
    } else {
        println!("    signs its own writes (an embedded app, or one using another device's API)");
    }
    if let Some(origin) = &app.origin {
        println!("    web app at {origin}");
    }
    for (scope, grant) in &app.scopes {
        let revoked = if grant.revoked { ", revoked" } else { "" };
        println!("    {scope}: {}{revoked}", access(grant.rights));
    }
    let (commits, rows) = (app.written.commits, app.written.rows.values().sum::<usize>());
    if commits == 0 {
        println!("    wrote nothing");
        return;
    }
    let tables: Vec<String> =
        app.written.rows.iter().map(|(table, n)| format!("{table} {n}")).collect();
    let tables =
        if tables.is_empty() { String::new() } else { format!(" ({})", tables.join(", ")) };
    println!(
        "    wrote {commits} commit{} touching {rows} row{}{tables}; last {}",
        plural(commits),
        plural(rows),
        app.last_activity.as_deref().unwrap_or("unknown")
    );
}

/// `basic app …`.
fn app(backend: &Backend, command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Connect => {
            if !backend.is_running() {
                bail!(
                    "no node is running for this database, and apps ask for access through it: start it with `basic up`, then make the code"
                );
            }
            println!("{}", backend.call(Connect)?.code);
            eprintln!(
                "Give this code to the app: it asks this device for access, and the request shows in `basic app requests`."
            );
        }
        AppCommand::Requests => {
            let requests = backend.call(ListRequests)?;
            if requests.is_empty() {
                println!("no request waits for an answer");
            }
            requests.iter().for_each(print_request);
        }
        AppCommand::Approve { id } => {
            let request = backend.call(Answer { id, approve: true })?;
            match &request.origin {
                Some(origin) => {
                    println!("approved {:?} at {origin}: it may now fetch its token", request.name)
                }
                None => println!(
                    "approved {:?}: it may now fetch its token, or its keys if it asked over the network",
                    request.name
                ),
            }
        }
        AppCommand::Deny { id } => {
            let request = backend.call(Answer { id, approve: false })?;
            println!("denied {:?}", request.name);
        }
        AppCommand::List => {
            let apps = backend.call(ListApps)?;
            if apps.is_empty() {
                println!("no app holds a grant");
            }
            apps.iter().for_each(print_app);
        }
        AppCommand::Revoke { id, scope } => {
            if let Some(scope) = &scope {
                Name::new(scope.clone()).with_context(|| format!("scope {scope:?}"))?;
            }
            let revoked = backend.call(Revoke { id: id.clone(), scope })?;
            println!("revoked {id} on {}; what it wrote stays", revoked.scopes.join(", "));
        }
    }
    Ok(())
}

/// `basic pin …`.
fn pin(backend: &Backend, command: PinCommand) -> anyhow::Result<()> {
    match command {
        PinCommand::Add { id, addresses } => {
            let saved = addresses.len();
            backend.call(AddPin { id: id.clone(), addresses })?;
            println!("{id} may now store and serve this database's ciphertext (it holds no key)");
            let (addresses, them) = if saved == 1 {
                ("1 address".to_owned(), "it")
            } else {
                (format!("{saved} addresses"), "them")
            };
            match (saved, backend.is_running()) {
                (0, _) => {}
                (_, true) => println!(
                    "saved {addresses} of it: the running node dials {them} now, and every `basic up` from then on"
                ),
                (_, false) => {
                    println!("saved {addresses} of it: `basic up` dials {them} when it starts")
                }
            }
        }
        PinCommand::List => {
            let pins = backend.call(ListPins)?;
            if pins.is_empty() {
                println!("no pinning peer");
            }
            for pin in pins {
                println!("{}{}", pin.id, if pin.active { "" } else { "  (removed)" });
                for address in pin.addresses {
                    println!("  {address}");
                }
            }
        }
        PinCommand::Remove { id } => {
            backend.call(RemovePin { id: id.clone() })?;
            println!("removed {id}, for good");
        }
    }
    Ok(())
}

/// `basic export`.
fn export(backend: &Backend, args: ExportArgs) -> anyhow::Result<()> {
    if let Some(namespace) = &args.namespace {
        Name::new(namespace.clone()).with_context(|| format!("namespace {namespace:?}"))?;
    }
    let format = if args.sqlite.is_some() { ExportFormat::Sqlite } else { ExportFormat::Jsonl };
    let target = args.sqlite.or(args.out);
    if let Some(path) = &target
        && path.exists()
    {
        bail!("{} exists already: export to a new file", path.display());
    }
    let bytes = backend.export(Export { namespace: args.namespace, format })?;
    match target {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(&bytes).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("exported to {} ({})", path.display(), show::bytes(bytes.len() as u64));
        }
        None => std::io::stdout().write_all(&bytes).context("cannot write the export")?,
    }
    Ok(())
}

/// `basic status`.
fn status(backend: &Backend, args: StatusArgs) -> anyhow::Result<()> {
    let status = backend.call(Status)?;
    if args.json {
        return show::json(&status);
    }
    println!("database   {}", status.database);
    println!("device     {}", status.device);
    if status.removed {
        println!("REMOVED    {}", crate::ops::status::REMOVED);
    }
    if let Some(user) = &status.user {
        println!("user       {user}");
    }
    println!(
        "secrets    {}",
        match &status.keystore {
            Some(keystore) => format!("in the platform keystore ({keystore})"),
            None => "in the replica's file (yours only; no platform keystore)".to_owned(),
        }
    );
    if status.holds_recovery_secret {
        println!(
            "recovery   this device holds the recovery secret: write it down (`basic recovery show`), then `basic recovery confirm`"
        );
    }
    let active = status.devices.iter().filter(|d| !d.removed).count();
    println!("devices    {active}");
    println!("apps       {} ({} requests waiting)", status.apps, status.pending_requests);
    println!(
        "schemas    {}",
        if status.namespaces.is_empty() { "none".into() } else { status.namespaces.join(", ") }
    );
    println!("storage    {}", show::bytes(status.storage_bytes));
    for fork in &status.forks {
        println!("FORK       {} at seq {} (a cloned or restored device?)", fork.author, fork.seq);
    }
    match &status.network {
        None => println!("node       not running (start it with `basic up`)"),
        Some(network) => {
            println!("node       running");
            print_network(&network.state);
        }
    }
    Ok(())
}

/// The addresses a running node listens on, and its peers.
fn print_network(state: &NetworkStatus) {
    println!(
        "listen     {}",
        if state.listening.is_empty() { "none".into() } else { state.listening.join(", ") }
    );
    if state.peers.is_empty() {
        println!("peers      none");
    }
    for peer in &state.peers {
        let last = peer.last_sync_ms.map(show::time).unwrap_or_else(|| "never".into());
        println!(
            "peer       {} {} — {} (last sync {last}, in {} / out {})",
            peer.principal.as_deref().unwrap_or(&peer.id),
            peer.address.as_deref().unwrap_or("not connected"),
            peer.sync,
            show::bytes(peer.bytes_in),
            show::bytes(peer.bytes_out),
        );
    }
}

/// `basic status` in a pinning peer's directory.
fn pinner_status(data: &DataDir, args: StatusArgs) -> anyhow::Result<()> {
    let status: PinnerStatus = crate::pinner::status(data)?;
    if args.json {
        return show::json(&status);
    }
    println!("pinner     {}", status.pinner);
    let Some(database) = &status.database else {
        println!("database   none yet: the first start names it");
        println!(
            "node       not running (start it with `basic up --database db_… --listen ADDRESS`)"
        );
        return Ok(());
    };
    if !status.replica {
        println!(
            "database   {database} (waiting for an authorised device to send its control log)"
        );
    } else {
        println!("database   {database}");
        println!(
            "authorised {}",
            match (status.authorised, status.removed) {
                (true, _) => "yes, by the database's control log".to_owned(),
                (false, true) => "no: removed from the database, for good".to_owned(),
                (false, false) => format!(
                    "not yet: on a device of the database, `basic pin add {}`",
                    status.pinner
                ),
            }
        );
        println!(
            "holds      {} commit{} by {} author{}, {} control operation{} (ciphertext; no key)",
            status.commits,
            if status.commits == 1 { "" } else { "s" },
            status.authors,
            plural(status.authors),
            status.control_ops,
            plural(status.control_ops),
        );
    }
    println!("storage    {}", show::bytes(status.storage_bytes));
    match (&status.network, status.running) {
        (_, false) => println!("node       not running (start it with `basic up`)"),
        (None, true) => println!("node       running"),
        (Some(network), true) => {
            println!("node       running");
            print_network(network);
        }
    }
    Ok(())
}
