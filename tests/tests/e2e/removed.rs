//! A removed device is told (issue 11 item 13): the device that removes it
//! sends it its removal; it then says so in its status, its API and its
//! log, refuses new writes, stops syncing; its remover no longer lists it
//! as an in-sync peer.

use serde_json::{Value as Json, json};

use super::harness::{BASIC, Data, SYNC_TIMEOUT, wait_for};
use super::two_devices::{device_of, join, wait_in_sync};

const LISTS: &str = "SELECT id FROM todo.lists ORDER BY id";

#[test]
fn a_removed_device_is_told_refuses_writes_and_is_no_peer() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let b = b_data.up(&[a.address()]);
    let (a_id, b_id) = (device_of(&a), device_of(&b));
    wait_in_sync(&a, &b_id);
    wait_in_sync(&b, &a_id);
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('before', 'B')", json!([]));
    a.wait_rows(LISTS, &json!([["before"]]));

    a_data.basic(&["device", "remove", &b_id]).ok();

    // B learns it: status (JSON and text), health, the log — once, at WARN.
    wait_for("B learns it was removed", SYNC_TIMEOUT, || {
        (b.status()["removed"] == json!(true)).then_some(())
    });
    let (code, health) = b.get("/v0/health", None);
    assert_eq!((code, &health["status"]), (200, &json!("removed")), "{health}");
    let text = b_data.basic(&["status"]).ok();
    assert!(text.contains("REMOVED"), "{text}");
    assert!(!text.contains("in sync"), "{text}");
    let log = b.log();
    let warned = log.lines().filter(|l| l.contains("WARN") && l.contains("was removed")).count();
    assert_eq!(warned, 1, "{log}");

    // New writes are refused, with a clear code, through the API and the CLI.
    let (code, body) = b.sql_as(
        &b.token.clone(),
        "INSERT INTO todo.lists (id, name) VALUES ('after', 'B')",
        json!([]),
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "device_removed", "{body}");
    let error =
        b_data.basic(&["sql", "INSERT INTO todo.lists (id, name) VALUES ('after2', 'B')"]).failed();
    assert!(error.contains("removed"), "{error}");
    // What it had stays readable here.
    assert_eq!(b.rows(LISTS), json!([["before"]]));

    // A lists B as removed, never as an in-sync peer, and keeps B's rows
    // up to the cut-off.
    wait_for("A stops listing B as in sync", SYNC_TIMEOUT, || {
        let status = a.status();
        let peers: Vec<Json> = status["network"]["state"]["peers"].as_array()?.clone();
        peers
            .iter()
            .all(|p| p["principal"] != b_id.as_str() || p["sync"] == "removed")
            .then_some(())
    });
    assert_eq!(a.rows(LISTS), json!([["before"]]));
}

#[test]
fn a_device_removed_while_it_was_off_learns_it_when_it_comes_back() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let b_id = b_data.basic(&["status", "--json"]).ok();
    let b_id: Json = serde_json::from_str(&b_id).expect("status");
    let b_id = b_id["device"].as_str().expect("device").to_owned();
    a_data.basic(&["device", "remove", &b_id]).ok();

    let b = b_data.up(&[a.address()]);
    wait_for("B learns it was removed", SYNC_TIMEOUT, || {
        (b.status()["removed"] == json!(true)).then_some(())
    });
    let (code, body) = b.sql_as(
        &b.token.clone(),
        "INSERT INTO todo.lists (id, name) VALUES ('after', 'B')",
        json!([]),
    );
    assert_eq!((code, &body["error"]["code"]), (409, &json!("device_removed")), "{body}");
    // Said once, and no session loop: the log does not grow with retries.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let log = b.log();
    assert_eq!(log.matches("was removed from the database by").count(), 1, "{log}");
    assert!(log.matches("peer authenticated").count() <= 1, "{log}");
}
