//! The `basic` command line, with and without a running node.

use std::path::PathBuf;

use basic_store::{Format, Schema};
use basic_testkit::{Data, example};
use serde_json::{Value as Json, json};

/// The binary under test.
const BASIC: &str = env!("CARGO_BIN_EXE_basic");

#[test]
fn init_prints_ids_and_refuses_a_second_init() {
    let data = Data::new(BASIC);
    let out = data.basic(&["init"]).ok();
    for prefix in ["database  db_", "device    dev_", "user      usr_", "basic-recovery-"] {
        assert!(out.contains(prefix), "{prefix} missing in:\n{out}");
    }
    let token = data.owner_token();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("owner-token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let error = data.basic(&["init"]).failed();
    assert!(error.contains("already holds a database"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    // Nothing changed, and the recovery secret is not shown again.
    assert_eq!(data.owner_token(), token);
    assert!(!data.basic(&["status"]).ok().contains("basic-recovery-"));
}

#[test]
fn commands_without_a_database_say_what_to_do() {
    let data = Data::new(BASIC);
    let error = data.basic(&["sql", "SELECT 1"]).failed();
    assert!(error.contains("run `basic init`"), "{error}");
    assert!(!data.path().join("replica").exists(), "a data command must not create a database");
}

#[test]
fn schema_and_sql_work_without_a_node() {
    let data = Data::with_todo(BASIC);
    let out = data
        .basic(&[
            "sql",
            "INSERT INTO todo.lists (id, name) VALUES (?, ?)",
            "--param",
            "home",
            "--param",
            "Home",
        ])
        .ok();
    assert!(out.contains("1 row written"), "{out}");
    let out = data.basic(&["sql", "SELECT id, name FROM todo.lists", "--json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json, serde_json::json!({ "columns": ["id", "name"], "rows": [["home", "Home"]] }));
    let error = data.basic(&["sql", "SELECT nope FROM todo.lists"]).failed();
    assert!(error.starts_with("error: ") && error.contains("nope"), "{error}");
    let schemas = data.basic(&["schema", "show"]).ok();
    assert!(schemas.contains("\"namespace\": \"todo\""), "{schemas}");
    assert!(data.basic(&["status"]).ok().contains("not running"));
}

#[test]
fn the_cli_goes_through_a_running_node() {
    let data = Data::with_todo(BASIC);
    let node = data.up(&[]);
    // The node holds the database: these can only succeed through its API.
    data.basic(&["sql", "INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')"]).ok();
    let out = data.basic(&["sql", "SELECT name FROM todo.lists", "--json"]).ok();
    assert!(out.contains("\"Home\""), "{out}");
    let applied = data.basic(&["schema", "apply", &example("contacts.json")]).ok();
    assert!(applied.contains("contacts.people"), "{applied}");
    let status: serde_json::Value =
        serde_json::from_str(&data.basic(&["status", "--json"]).ok()).unwrap();
    assert!(status["network"].is_object(), "{status}");
    assert_eq!(status["namespaces"], serde_json::json!(["contacts", "todo"]));
    let error = data.basic(&["sql", "SELECT nope FROM todo.lists"]).failed();
    assert!(error.contains("nope"), "{error}");
    // Export through the node, import into a fresh database directly.
    let export = data.path().join("export.jsonl");
    data.basic(&["export", "--out", export.to_str().unwrap()]).ok();
    drop(node);
    let other = Data::new(BASIC);
    other.basic(&["init"]).ok();
    let out = other.basic(&["import", export.to_str().unwrap()]).ok();
    assert!(out.contains("imported 1 rows"), "{out}");
}

#[test]
fn a_second_node_on_the_same_data_is_refused() {
    let data = Data::with_todo(BASIC);
    let _node = data.up(&[]);
    let error = data.basic(&["up", "--api", "127.0.0.1:0"]).failed();
    assert!(error.contains("already open in another process"), "{error}");
}

#[test]
fn up_stops_cleanly_on_sigterm() {
    let data = Data::with_todo(BASIC);
    let mut node = data.up(&[]);
    assert!(node.api_file.exists());
    let status = node.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(!node.api_file.exists(), "api.json must be removed on a clean shutdown");
    // The database is free again.
    data.basic(&["sql", "SELECT count(*) FROM todo.items"]).ok();
}

#[test]
fn help_is_there_for_every_command() {
    let data = Data::new(BASIC);
    for command in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["up", "--help"],
        vec!["sql", "--help"],
        vec!["schema", "apply", "--help"],
        vec!["device", "invite", "--help"],
        vec!["app", "revoke", "--help"],
        vec!["pin", "add", "--help"],
        vec!["pinner", "init", "--help"],
        vec!["export", "--help"],
        vec!["status", "--help"],
        vec!["recovery", "show", "--help"],
        vec!["recovery", "confirm", "--help"],
    ] {
        let out = data.basic(&command).ok();
        assert!(out.contains("Usage:"), "{command:?}: {out}");
    }
}

#[test]
fn an_invite_needs_a_running_node() {
    let inviter = Data::with_todo(BASIC);
    // No node runs: an invite could carry no address to join through.
    let out = inviter.basic(&["device", "invite"]);
    assert_eq!(out.stdout, "", "no invite is printed");
    let error = out.failed();
    assert!(error.contains("start it with `basic up`"), "{error}");
    assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    let help = inviter.basic(&["device", "invite", "--help"]).ok();
    assert!(help.contains("basic up"), "{help}");

    let _node = inviter.up(&[]);
    let invite = inviter.basic(&["device", "invite"]).ok();
    assert!(invite.starts_with("basic-invite-"), "{invite}");
}

#[test]
fn join_without_a_reachable_inviter_says_so_and_leaves_nothing_behind() {
    let inviter = Data::with_todo(BASIC);
    let joiner = Data::new(BASIC);

    // The node that made the invite has stopped: its addresses are named.
    let mut node = inviter.up(&[]);
    let invite = inviter.basic(&["device", "invite"]).ok();
    node.terminate();
    let error = joiner.basic(&["init", "--join", invite.trim()]).failed();
    assert!(error.contains("cannot reach the inviting device at /ip4/127.0.0.1/tcp/"), "{error}");
    assert!(!joiner.path().join("replica").exists());

    joiner.basic(&["init"]).ok();
    let error = joiner.basic(&["init", "--join", invite.trim()]).failed();
    assert!(error.contains("already holds a database"), "{error}");
    let error = Data::new(BASIC).basic(&["init", "--join", "basic-invite-nonsense"]).failed();
    assert!(error.contains("not an invite"), "{error}");
}

#[test]
fn a_pinner_directory_is_made_once_and_refuses_data_commands() {
    let data = Data::new(BASIC);
    let out = data.basic(&["pinner", "init"]).ok();
    assert!(out.contains("pinner    pin_"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("pinner-key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(data.basic(&["pinner", "init"]).failed().contains("pinning peer"));
    assert!(data.basic(&["init"]).failed().contains("pinning peer"));
    assert!(data.basic(&["sql", "SELECT 1"]).failed().contains("no key"));
    let error = data.basic(&["up", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]).failed();
    assert!(error.contains("--database"), "{error}");
}

#[test]
fn pin_add_saves_addresses_that_list_shows_and_remove_forgets() {
    let data = Data::with_todo(BASIC);
    let pinner = Data::new(BASIC);
    let out = pinner.basic(&["pinner", "init"]).ok();
    let pin = out.split_whitespace().find(|w| w.starts_with("pin_")).unwrap().to_owned();
    let peer = basic_net::Keypair::ed25519_from_bytes([1; 32]).unwrap().public().to_peer_id();
    let address = format!("/ip4/203.0.113.7/tcp/4001/p2p/{peer}");

    // Bad input: nothing is authorised, nothing saved, one line each.
    for (args, expected) in [
        (vec!["--address", "/ip4/203.0.113.7/tcp/4001"], "/p2p/<peer id>"),
        (vec!["--address", "/ip4/nonsense"], "not a network address"),
    ] {
        let error = data.basic(&[&["pin", "add", &pin][..], &args].concat()).failed();
        assert!(error.contains(expected), "{error}");
        assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    }
    let error = data.basic(&["pin", "add", "pin_nonsense", "--address", &address]).failed();
    assert!(error.contains("not a pinning peer id"), "{error}");
    let unknown = basic_proto::keys::Principal {
        role: basic_proto::keys::Role::Pinner,
        key: basic_proto::SecretKey::from_seed([9; 32]).public(),
    };
    let error = data.basic(&["pin", "remove", &unknown.to_string()]).failed();
    assert!(error.contains("no pinning peer"), "{error}");
    assert!(!data.path().join("peers.json").exists());
    assert_eq!(data.basic(&["pin", "list"]).ok().trim(), "no pinning peer");

    // Directly on the database, then through a running node, which dials
    // the addresses at once: each says when they are dialled.
    let out = data.basic(&["pin", "add", &pin, "--address", &address]).ok();
    assert!(out.contains("`basic up` dials it when it starts"), "{out}");
    let list = data.basic(&["pin", "list"]).ok();
    assert_eq!(list, format!("{pin}\n  {address}\n"));
    let node = data.up(&[]);
    let second = format!("/ip4/198.51.100.1/udp/4001/quic-v1/p2p/{peer}");
    let out = data.basic(&["pin", "add", &pin, "--address", &address, "--address", &second]).ok();
    assert!(out.contains("saved 2 addresses"), "{out}");
    assert!(out.contains("the running node dials them now"), "{out}");
    assert!(!out.contains("next start"), "{out}");
    let list = data.basic(&["pin", "list"]).ok();
    assert_eq!(list, format!("{pin}\n  {address}\n  {second}\n"));
    let error = data.basic(&["pin", "add", &pin]).failed();
    assert!(error.contains("pins already"), "{error}");
    data.basic(&["pin", "remove", &pin]).ok();
    assert_eq!(data.basic(&["pin", "list"]).ok(), format!("{pin}  (removed)\n"));
    let saved = std::fs::read_to_string(data.path().join("peers.json")).unwrap();
    assert!(!saved.contains(&pin), "{saved}");
    drop(node);

    // A damaged file is named.
    std::fs::write(data.path().join("peers.json"), "{\"pinners\": 3}").unwrap();
    let error = data.basic(&["pin", "list"]).failed();
    assert!(error.contains("peers.json is damaged"), "{error}");
}

/// The column names of `sql`'s result, run through the CLI.
fn columns(data: &Data, sql: &str) -> Vec<String> {
    let out = data.basic(&["sql", sql, "--json"]).ok();
    let json: Json = serde_json::from_str(&out).unwrap();
    json["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect()
}

/// The column names of `table` (`items`) in `schema`, in order.
fn schema_columns(schema: &Schema, table: &str) -> Vec<String> {
    schema.table(table).unwrap().columns().iter().map(|c| c.name.to_string()).collect()
}

#[test]
fn a_schema_keeps_its_column_order_on_every_path() {
    let todo = Schema::from_file(example("todo.toml")).unwrap();
    let v2 = Schema::from_file(example("todo-v2.toml")).unwrap();
    let data = Data::new(BASIC);
    data.basic(&["init"]).ok();
    let node = data.up(&[]);

    // The CLI, through the running node's API.
    data.basic(&["schema", "apply", &example("todo.toml")]).ok();
    assert_eq!(columns(&data, "SELECT * FROM todo.items"), schema_columns(&todo, "items"));
    // The README's migration applies: new columns go at the end.
    let out = data.basic(&["schema", "apply", &example("todo-v2.toml")]).ok();
    assert!(out.contains("+ column todo.items.tags"), "{out}");
    // A store issue of its own, left to the store: after a migration, the
    // node's reader connections name the old columns for a statement they
    // prepared before (cached), and for the first one they prepare (on
    // SQLite's cached schema). So one query first, then another text.
    columns(&data, "SELECT 1 FROM todo.items");
    let all = "SELECT * FROM todo.items WHERE true";
    assert_eq!(columns(&data, all), schema_columns(&v2, "items"));

    // The API itself: the order of the JSON object's members.
    let body = br#"{"namespace": "zz", "tables": {"t": {"primary_key": ["z"],
        "columns": {"z": "text", "b": "text", "a": {"type": "integer", "nullable": true}}}}}"#;
    let (status, answer) = node.post_raw("/v0/schema", Some(&node.token), body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(columns(&data, "SELECT * FROM zz.t"), ["z", "b", "a"]);

    // Another device, which gets the schemas from the control log.
    let invite = data.basic(&["device", "invite"]).ok();
    let other = Data::new(BASIC);
    other.basic(&["init", "--join", invite.trim()]).ok();
    assert_eq!(columns(&other, "SELECT * FROM todo.items"), schema_columns(&v2, "items"));
    assert_eq!(columns(&other, "SELECT * FROM zz.t"), ["z", "b", "a"]);
}

#[test]
fn schema_show_applies_back_as_a_no_op() {
    // Every example, in an order where each applies (todo before todo-v2).
    let mut files: Vec<PathBuf> = std::fs::read_dir(example(""))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| Schema::from_file(path).is_ok())
        .collect();
    files.sort_by_key(|path| path.file_stem().unwrap().to_owned());
    assert!(files.len() >= 3, "{files:?}");
    let out = tempfile::tempdir().unwrap();
    for running in [false, true] {
        let data = Data::new(BASIC);
        data.basic(&["init"]).ok();
        let _node = running.then(|| data.up(&[]));
        for file in &files {
            let schema = Schema::from_file(file).unwrap();
            let namespace = schema.namespace().as_str();
            data.basic(&["schema", "apply", file.to_str().unwrap()]).ok();
            let shown = data.basic(&["schema", "show", namespace]).ok();
            let parsed = Schema::parse(&shown, Format::Json).unwrap();
            assert_eq!(parsed, schema, "{file:?} (node running: {running}): {shown}");
            let again = out.path().join(format!("{namespace}.json"));
            std::fs::write(&again, &shown).unwrap();
            let applied = data.basic(&["schema", "apply", again.to_str().unwrap()]).ok();
            assert_eq!(applied, format!("{namespace}: already up to date\n"), "{file:?}");
        }
        // Every schema at once: `basic schema show` applies back whole.
        let all = out.path().join("all.json");
        std::fs::write(&all, data.basic(&["schema", "show"]).ok()).unwrap();
        let applied = data.basic(&["schema", "apply", all.to_str().unwrap()]).ok();
        assert_eq!(applied, "contacts: already up to date\ntodo: already up to date\n");
        let error = data.basic(&["schema", "show", "nowhere"]).failed();
        assert!(error.contains("no schema for namespace \"nowhere\""), "{error}");
    }
}

#[test]
fn up_checks_its_options_and_ports_before_creating_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let api = format!("127.0.0.1:{port}");
    let sync = format!("/ip4/127.0.0.1/tcp/{port}");
    let data = Data::new(BASIC);
    for (args, expected) in [
        (vec!["--api", &api, "--listen", "/ip4/127.0.0.1/tcp/0"], api.as_str()),
        (vec!["--api", "127.0.0.1:0", "--listen", &sync], sync.as_str()),
        (vec!["--api", "0.0.0.0:0"], "--api-public"),
        (vec!["--listen", "nonsense"], "not a network address"),
        (vec!["--database", "db_nonsense"], "--database"),
    ] {
        let out = data.basic(&[&["up", "--no-mdns"][..], &args].concat());
        assert!(!out.stdout.contains("basic-recovery-"), "{args:?}: {}", out.stdout);
        let error = out.failed();
        assert!(error.contains(expected), "{args:?}: {error}");
        assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
        assert!(!data.path().join("replica").exists(), "{args:?} created a database");
        assert!(!data.path().join("owner-token").exists(), "{args:?} made a token");
    }
}

#[test]
fn parameter_count_errors_say_what_was_given() {
    let data = Data::with_todo(BASIC);
    let error =
        data.basic(&["sql", "SELECT ?", "--param", "1", "--param", "2", "--param", "3"]).failed();
    assert!(
        error.contains("the statement has 1 placeholder but 3 parameters were given"),
        "{error}"
    );
    let error = data
        .basic(&["sql", "INSERT INTO todo.lists (id, name) VALUES (?, ?)", "--param", "a"])
        .failed();
    assert!(error.contains("2 placeholders but 1 parameter was given"), "{error}");

    let node = data.up(&[]);
    let params: Vec<Json> = (0..100_000).map(Json::from).collect();
    let (status, body) =
        node.post("/v0/sql", Some(&node.token), &json!({ "sql": "SELECT ?", "params": params }));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1 placeholder but 100000 parameters were given"), "{message}");
    let live = "/v0/live?sql=SELECT%20%3F&params=%5B1%2C2%2C3%5D";
    let (status, body) = node.get(live, Some(&node.token));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1 placeholder but 3 parameters were given"), "{message}");
}

#[test]
fn id_errors_name_the_kind_of_id_with_its_article() {
    let data = Data::with_todo(BASIC);
    let status: Json = serde_json::from_str(&data.basic(&["status", "--json"]).ok()).unwrap();
    let device = status["device"].as_str().unwrap().to_owned();
    let app = basic_proto::keys::Principal {
        role: basic_proto::keys::Role::App,
        key: basic_proto::SecretKey::from_seed([7; 32]).public(),
    }
    .to_string();
    for (args, expected) in [
        (vec!["app", "revoke", &device], "is not an app id: it is a device id"),
        (vec!["app", "revoke", "nonsense"], "is not an app id"),
        (vec!["device", "remove", &app], "is not a device id: it is an app id"),
        (vec!["pin", "remove", &device], "is not a pinning peer id: it is a device id"),
        (vec!["pin", "add", "nonsense"], "is not a pinning peer id"),
    ] {
        let error = data.basic(&args).failed();
        assert!(error.contains(expected), "{args:?}: {error}");
        assert!(!error.contains(" a app"), "{args:?}: {error}");
        assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    }
}

#[test]
fn path_rejections_answer_the_json_error_shape() {
    let data = Data::with_todo(BASIC);
    let node = data.up(&[]);
    let token = node.token.clone();
    for path in ["/v0/pins/%ff%fe", "/v0/devices/%ff"] {
        let (status, body) = node.delete(path, Some(&token));
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    }
    for path in
        ["/v0/apps/requests/%ff/approve", "/v0/apps/requests/%ff/deny", "/v0/apps/%ff/revoke"]
    {
        let (status, body) = node.post(path, Some(&token), &json!({}));
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    }
    let (status, body) = node.get("/v0/apps/requests/%ff?secret=x", None);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
}

#[test]
fn refused_live_queries_are_not_logged_as_node_errors() {
    let data = Data::with_todo(BASIC);
    let node = data.up(&[]);
    let token = node.token.clone();
    for query in ["sql=SELECT%20nope%20FROM%20todo.items", "sql=DELETE%20FROM%20todo.items"] {
        let (status, body) = node.get(&format!("/v0/live?{query}"), Some(&token));
        assert_eq!(status, 400, "{body}");
    }
    // Past the most live queries open at once (for this token, or for the
    // node), the next is refused: the client's load, not the node's failure.
    let mut open = Vec::new();
    let refused = loop {
        assert!(open.len() <= 64, "more than 64 live queries open");
        let request = basic_testkit::agent()
            .get(node.url("/v0/live?sql=SELECT%201"))
            .header("authorization", format!("Bearer {token}"));
        let response = request.call().unwrap();
        if response.status() != 200 {
            break basic_testkit::answer(Ok(response));
        }
        open.push(response);
    };
    let (status, body) = refused;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("busy")), "{body}");
    drop(open);
    drop(node);
    let log = std::fs::read_to_string(data.log_path()).unwrap();
    assert!(!log.contains(" ERROR "), "{log}");
}

#[test]
fn a_pinning_peer_has_a_status() {
    let device = Data::with_todo(BASIC);
    let pinner = Data::new(BASIC);
    let out = pinner.basic(&["pinner", "init"]).ok();
    let pin = out.split_whitespace().find(|w| w.starts_with("pin_")).unwrap().to_owned();
    let status: Json = serde_json::from_str(&device.basic(&["status", "--json"]).ok()).unwrap();
    let database = status["database"].as_str().unwrap().to_owned();
    let dev = status["device"].as_str().unwrap().to_owned();

    // Before its first start: who it is, and what to do.
    let out = pinner.basic(&["status"]).ok();
    assert!(out.contains(&pin) && out.contains("basic up --database"), "{out}");
    let json: Json = serde_json::from_str(&pinner.basic(&["status", "--json"]).ok()).unwrap();
    assert_eq!(json["pinner"], pin.as_str(), "{json}");
    assert_eq!(json["database"], Json::Null, "{json}");

    // Running: it gets the control log from the device that dials it, and
    // then the device's commits.
    let mut running = pinner.pinner_up(&database);
    let address = running.address().to_owned();
    device.basic(&["pin", "add", &pin, "--address", &address]).ok();
    let node = device.up(&[]);
    device.basic(&["sql", "INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')"]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let json = loop {
        let json: Json = serde_json::from_str(&pinner.basic(&["status", "--json"]).ok()).unwrap();
        let synced = json["network"]["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|p| p["principal"] == dev.as_str() && p["last_sync_ms"].is_u64())
        });
        if json["commits"].as_u64() >= Some(1) && synced {
            break json;
        }
        assert!(std::time::Instant::now() < deadline, "the pinner's status: {json}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(json["database"], database.as_str(), "{json}");
    assert_eq!(json["authorised"], true, "{json}");
    assert!(json["running"] == true && json["control_ops"].as_u64() >= Some(3), "{json}");
    assert!(json["storage_bytes"].as_u64() > Some(0), "{json}");
    let out = pinner.basic(&["status"]).ok();
    for expected in [pin.as_str(), database.as_str(), "authorised", "running", dev.as_str()] {
        assert!(out.contains(expected), "{expected} missing in:\n{out}");
    }
    drop(node);

    // Stopped: what it holds, read from its replica.
    assert!(running.terminate().success(), "the pinning peer stops on SIGTERM");
    let json: Json = serde_json::from_str(&pinner.basic(&["status", "--json"]).ok()).unwrap();
    assert_eq!(
        (json["database"].as_str(), json["running"].as_bool()),
        (Some(database.as_str()), Some(false)),
        "{json}"
    );
    assert!(json["commits"].as_u64() >= Some(1), "{json}");
    assert!(pinner.basic(&["status"]).ok().contains("not running"));
}

/// `basic ARGS…` on `dir` under umask `umask` (through `sh`), to the end.
#[cfg(unix)]
fn basic_under_umask(dir: &std::path::Path, umask: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_basic"))
        .arg("--data")
        .arg(dir)
        .args(args)
        .env_remove("BASIC_DATA")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run basic")
}

/// Every file and directory under `dir` (itself included) whose mode lets
/// anyone but its owner in.
#[cfg(unix)]
fn open_to_others(dir: &std::path::Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    if mode != 0o700 {
        open.push((dir.to_owned(), mode));
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            open.extend(open_to_others(&entry.path()));
        } else if meta.permissions().mode() & 0o777 != 0o600 {
            open.push((entry.path(), meta.permissions().mode() & 0o777));
        }
    }
    open
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_private_whatever_the_umask_and_an_open_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("basic");
    // umask 000: everything would be world-readable and writable.
    let init = basic_under_umask(&dir, "000", &["init"]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert_eq!(open_to_others(&dir), vec![], "after init");
    let schema = example("todo.toml");
    for args in [
        vec!["schema", "apply", &schema],
        vec!["sql", "INSERT INTO todo.lists (id, name) VALUES ('a', 'A')"],
        vec!["status"],
    ] {
        let out = basic_under_umask(&dir, "000", &args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(open_to_others(&dir), vec![], "after writes");

    // A directory other users can read or traverse is refused, with the fix.
    for mode in [0o755, 0o711, 0o750, 0o701] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = basic_under_umask(&dir, "022", &["status"]);
        let error = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode:o}: {error}");
        assert!(error.contains(&format!("chmod 700 {}", dir.display())), "{error}");
        assert_eq!(error.trim().lines().count(), 1, "one line: {error}");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(basic_under_umask(&dir, "022", &["status"]).status.success());

    // `init` in an empty directory (a fresh `mkdir`) makes it private; in
    // one open to others that holds something already, it is refused.
    let fresh = parent.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(basic_under_umask(&fresh, "022", &["init"]).status.success());
    assert_eq!(open_to_others(&fresh), vec![], "after init in an empty directory");
    let open = parent.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::write(open.join("notes.txt"), "mine").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = basic_under_umask(&open, "022", &["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 700"));
    assert!(!open.join("replica").exists(), "nothing made");
}

#[test]
fn the_recovery_secret_stays_until_confirmed_then_is_forgotten() {
    let data = Data::new(BASIC);
    // No terminal: init does not ask, and the device keeps the secret.
    let out = data.basic(&["init"]).ok();
    let secret = out
        .split_whitespace()
        .find(|w| w.starts_with("basic-recovery-"))
        .expect("the secret is printed")
        .to_owned();
    assert!(out.contains("basic recovery confirm"), "{out}");
    let database =
        out.split_whitespace().find(|w| w.starts_with("db_")).expect("database").to_owned();
    let shown = data.basic(&["recovery", "show"]).ok();
    assert!(shown.contains(&secret) && shown.contains(&database), "{shown}");
    let status = data.basic(&["status"]).ok();
    assert!(status.contains("recovery   this device holds the recovery secret"), "{status}");
    assert!(status.contains("secrets    in the replica's file"), "{status}");

    // Through a running node too.
    let mut node = data.up(&[]);
    let (status, body) = node.get("/v0/recovery", Some(&node.token));
    assert_eq!((status, &body["secret"]), (200, &json!(secret)), "{body}");
    let (status, _) = node.get("/v0/recovery", None);
    assert_eq!(status, 401);
    let confirmed = data.basic(&["recovery", "confirm"]).ok();
    assert!(confirmed.contains("forgotten"), "{confirmed}");
    let (status, body) = node.get("/v0/recovery", Some(&node.token));
    assert_eq!((status, &body["secret"]), (200, &Json::Null), "{body}");
    assert!(node.terminate().success());

    let error = data.basic(&["recovery", "show"]).failed();
    assert!(error.contains("no longer holds"), "{error}");
    assert!(data.basic(&["recovery", "confirm"]).ok().contains("nothing to forget"));
    let db = basic_store::Database::open(data.path()).unwrap();
    assert!(db.root_secret().unwrap().is_none(), "the root seed is gone from the replica");
}
