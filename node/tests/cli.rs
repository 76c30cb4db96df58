//! The `basic` command line, with and without a running node.

mod common;

use common::{Data, example};

#[test]
fn init_prints_ids_and_refuses_a_second_init() {
    let data = Data::new();
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
    let data = Data::new();
    let error = data.basic(&["sql", "SELECT 1"]).failed();
    assert!(error.contains("run `basic init`"), "{error}");
    assert!(!data.path().join("replica").exists(), "a data command must not create a database");
}

#[test]
fn schema_and_sql_work_without_a_node() {
    let data = Data::with_todo();
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
    let data = Data::with_todo();
    let node = data.up();
    // The node holds the database: these can only succeed through its API.
    data.basic(&["sql", "INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')"]).ok();
    let out = data.basic(&["sql", "SELECT name FROM todo.lists", "--json"]).ok();
    assert!(out.contains("\"Home\""), "{out}");
    let applied = data.basic(&["schema", "apply", example("contacts.json").to_str().unwrap()]).ok();
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
    let other = Data::new();
    other.basic(&["init"]).ok();
    let out = other.basic(&["import", export.to_str().unwrap()]).ok();
    assert!(out.contains("imported 1 rows"), "{out}");
}

#[test]
fn a_second_node_on_the_same_data_is_refused() {
    let data = Data::with_todo();
    let _node = data.up();
    let error = data.basic(&["up", "--api", "127.0.0.1:0"]).failed();
    assert!(error.contains("already open in another process"), "{error}");
}

#[test]
fn up_stops_cleanly_on_sigterm() {
    let data = Data::with_todo();
    let mut node = data.up();
    assert!(node.api_file.exists());
    let status = node.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(!node.api_file.exists(), "api.json must be removed on a clean shutdown");
    // The database is free again.
    data.basic(&["sql", "SELECT count(*) FROM todo.items"]).ok();
}

#[test]
fn help_is_there_for_every_command() {
    let data = Data::new();
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
    ] {
        let out = data.basic(&command).ok();
        assert!(out.contains("Usage:"), "{command:?}: {out}");
    }
}

#[test]
fn join_without_a_reachable_inviter_says_so_and_leaves_nothing_behind() {
    let inviter = Data::with_todo();
    // No node runs: the invite carries no address.
    let invite = inviter.basic(&["device", "invite"]).ok();
    let joiner = Data::new();
    let error = joiner.basic(&["init", "--join", invite.trim()]).failed();
    assert!(error.contains("no address of a running node"), "{error}");
    assert!(!joiner.path().join("replica").exists());

    // The node that made the invite has stopped: its addresses are named.
    let mut node = inviter.up();
    let invite = inviter.basic(&["device", "invite"]).ok();
    node.terminate();
    let error = joiner.basic(&["init", "--join", invite.trim()]).failed();
    assert!(error.contains("cannot reach the inviting device at /ip4/127.0.0.1/tcp/"), "{error}");
    assert!(!joiner.path().join("replica").exists());

    joiner.basic(&["init"]).ok();
    let error = joiner.basic(&["init", "--join", invite.trim()]).failed();
    assert!(error.contains("already holds a database"), "{error}");
    let error = Data::new().basic(&["init", "--join", "basic-invite-nonsense"]).failed();
    assert!(error.contains("not an invite"), "{error}");
}

#[test]
fn a_pinner_directory_is_made_once_and_refuses_data_commands() {
    let data = Data::new();
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
    let data = Data::with_todo();
    let pinner = Data::new();
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

    // Directly on the database, then through a running node.
    data.basic(&["pin", "add", &pin, "--address", &address]).ok();
    let list = data.basic(&["pin", "list"]).ok();
    assert_eq!(list, format!("{pin}\n  {address}\n"));
    let node = data.up();
    let second = format!("/ip4/198.51.100.1/udp/4001/quic-v1/p2p/{peer}");
    let out = data.basic(&["pin", "add", &pin, "--address", &address, "--address", &second]).ok();
    assert!(out.contains("saved 2 address"), "{out}");
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
