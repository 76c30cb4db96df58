//! A pinning peer: devices that never connect to each other converge
//! through it, and it holds no key.

use basic_proto::keys::{Principal, Role};
use basic_store::Database;
use serde_json::json;

use super::harness::{BASIC, Data, Node, SYNC_TIMEOUT, wait_for};
use super::two_devices::{device_of, join, wait_in_sync};

#[test]
fn devices_converge_through_a_pinning_peer_that_holds_no_key() {
    let a_data = Data::with_todo(BASIC);
    let a_first = a_data.up(&[]);
    // B joins A directly (pairing); from then on A and B sync only through P.
    let b_data = join(&a_first);
    drop(a_first);

    let (p_data, pin, database) = authorised_pinner(&a_data);

    // P has no replica yet: A dials it once A is up, and P fetches the control log.
    let p = p_data.pinner_up(&database);
    let a = a_data.up(&[p.address()]);
    let b = b_data.up(&[p.address()]);
    wait_in_sync(&a, &pin);
    wait_in_sync(&b, &pin);

    converge_through_the_pinner_only(&a, &b);

    // P stores ciphertext only: no data command, no readable row, no key.
    let error = p_data.basic(&["sql", "SELECT * FROM todo.lists"]).failed();
    assert!(error.contains("pinning peer"), "{error}");
    let mut p = p;
    assert!(p.terminate().success(), "a clean shutdown on SIGTERM");
    let replica = wait_for("the pinner's directory is free", SYNC_TIMEOUT, || {
        Database::open(p_data.path()).ok()
    });
    let key = replica.member_key().expect("key");
    assert_eq!(Principal { role: Role::Pinner, key: key.public() }.to_string(), pin);
    assert!(replica.replica().commits().count() >= 2, "it stores the commits");
    // It cannot even name a table: schemas travel sealed.
    let error = replica.query("SELECT count(*) FROM todo.lists", &[], None).unwrap_err();
    assert!(error.to_string().contains("no table"), "{error}");
    assert!(replica.namespaces().is_empty(), "it names no scope");
    let auth = replica.auth_state();
    assert!(!auth.scopes().is_empty());
    for (scope, epochs) in auth.scopes() {
        for epoch in epochs.epochs.keys() {
            assert!(auth.scope_keys(&key, scope, *epoch).is_empty(), "a key for epoch {epoch}");
        }
    }
    drop(replica);
    // Nothing it stores names a namespace, table or column, or holds a value.
    let needles = ["todo", "lists", "items", "title", "priority", "notes", "from-a", "from-b"];
    let files = basic_testkit::files_under(p_data.path());
    assert!(!files.is_empty(), "the directory holds files");
    for (path, bytes) in files {
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}",
                path.display()
            );
        }
    }
}

#[test]
fn a_pinning_peer_that_dials_no_one_is_reached_by_devices_with_its_saved_address() {
    let a_data = Data::with_todo(BASIC);
    let (p_data, pin, database) = pinner_of(&a_data);
    // P dials no one: its first start waits for a device to dial it.
    let p = p_data.pinner_up(&database);

    // A authorises P with its address through A's running node; B joins A
    // after, and so learns of P.
    let a_first = a_data.up(&[]);
    a_data.basic(&["pin", "add", &pin, "--address", p.address()]).ok();
    let b_data = join(&a_first);
    drop(a_first);

    // Neither device is given a peer, nor finds one on the LAN. A dials the
    // address it saved; B saves it while its node runs, which dials it at once.
    let a = a_data.up(&[]);
    let b = b_data.up(&[]);
    b_data.basic(&["pin", "add", &pin, "--address", p.address()]).ok();
    let listed = b_data.basic(&["pin", "list"]).ok();
    assert_eq!(listed, format!("{pin}\n  {}\n", p.address()));
    wait_in_sync(&a, &pin);
    wait_in_sync(&b, &pin);
    assert!(p.log().contains("received the control log"), "{}", p.log());

    converge_through_the_pinner_only(&a, &b);
}

/// A pinning peer's directory, for the database of `device` (not yet
/// authorised); returns it, its `pin_…` id and the database id its first
/// start needs.
pub(super) fn pinner_of(device: &Data) -> (Data, String, String) {
    let pinner = Data::new(BASIC);
    let out = pinner.basic(&["pinner", "init"]).ok();
    let pin = out.split_whitespace().find(|w| w.starts_with("pin_")).expect("pin id").to_owned();
    let status = device.basic(&["status", "--json"]).ok();
    let status: serde_json::Value = serde_json::from_str(&status).expect("status");
    (pinner, pin, status["database"].as_str().expect("database").to_owned())
}

/// A pinning peer's directory, made and authorised on the device of
/// `device`; returns it, its `pin_…` id and the database id its first
/// start needs.
pub(crate) fn authorised_pinner(device: &Data) -> (Data, String, String) {
    let (pinner, pin, database) = pinner_of(device);
    device.basic(&["pin", "add", &pin]).ok();
    (pinner, pin, database)
}

/// Rows written on `a` and on `b` reach both, while neither ever lists the
/// other among its peers: they met only through the pinning peer.
fn converge_through_the_pinner_only(a: &Node, b: &Node) {
    a.sql("INSERT INTO todo.lists (id, name) VALUES ('from-a', 'A')", json!([]));
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('from-b', 'B')", json!([]));
    let both = json!([["from-a"], ["from-b"]]);
    a.wait_rows("SELECT id FROM todo.lists ORDER BY id", &both);
    b.wait_rows("SELECT id FROM todo.lists ORDER BY id", &both);
    for (node, other) in [(a, device_of(b)), (b, device_of(a))] {
        let status = node.status();
        let peers = status["network"]["state"]["peers"].as_array().expect("peers").clone();
        assert!(peers.iter().all(|p| p["principal"] != other.as_str()), "{peers:?}");
    }
}
