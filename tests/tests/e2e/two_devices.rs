//! Two devices: pairing over the network, live sync, and convergence after
//! a partition in which both wrote.
//!
//! Every wait is for an outcome (rows, status) under a deadline that only
//! stops a hung test; how fast a change propagates is measured by
//! `basic-bench live`, not asserted here.

use serde_json::{Value as Json, json};

use super::harness::{BASIC, Data, Node, SYNC_TIMEOUT, example, wait_for};

/// A new device joined to the running node `a` with an invite.
pub(crate) fn join(a: &Node) -> Data {
    let b = Data::new(BASIC);
    let (status, invite) =
        a.post("/v0/devices/invite", Some(&a.token), &json!({ "valid_minutes": 5 }));
    assert_eq!(status, 200, "{invite}");
    let addresses = invite["addresses"].as_array().expect("addresses");
    assert!(addresses.iter().any(|a| a.as_str().is_some_and(|a| a.contains("/p2p/"))), "{invite}");
    let out = b.basic(&["init", "--join", invite["invite"].as_str().expect("invite")]).ok();
    assert!(out.contains("Joined database"), "{out}");
    // Used once.
    let again = Data::new(BASIC);
    let error =
        again.basic(&["init", "--join", invite["invite"].as_str().expect("invite")]).failed();
    assert!(error.contains("refused") && error.contains("no unused invite"), "{error}");
    b
}

/// Waits until `node` shows `peer` (a principal id) in sync.
pub(crate) fn wait_in_sync(node: &Node, principal: &str) {
    wait_for(&format!("in sync with {principal}"), SYNC_TIMEOUT, || {
        let status = node.status();
        let peers = status["network"]["state"]["peers"].as_array()?.clone();
        peers.iter().any(|p| p["principal"] == principal && p["sync"] == "in sync").then_some(())
    });
}

/// Commits a pinning peer holds, from `basic status --json` in its directory.
pub(crate) fn pinned_commits(pinner: &Data) -> u64 {
    pinned_status(pinner).1
}

/// When the running pinning peer in `pinner` took its last status report
/// (ms), and the commits it held then.
fn pinned_status(pinner: &Data) -> (u64, u64) {
    let status = pinner.basic(&["status", "--json"]).ok();
    let status: Json = serde_json::from_str(&status).expect("status");
    let taken = status["taken_at_ms"].as_u64().expect("a running pinning peer's status");
    (taken, status["commits"].as_u64().expect("commits"))
}

/// The commits the pinning peer in `pinner` holds once two of its status
/// reports in a row (taken a second apart) agree: a count that no commit
/// still on its way there changes afterwards.
pub(crate) fn pinned_settled(pinner: &Data) -> u64 {
    let mut last = pinned_status(pinner);
    wait_for("the pinning peer's commit count holds still", SYNC_TIMEOUT, || {
        let now = pinned_status(pinner);
        let settled = now.0 != last.0 && now.1 == last.1;
        last = now;
        settled.then_some(now.1)
    })
}

/// Waits until the pinning peer in `pinner` holds more than `commits`
/// commits (from [`pinned_settled`] before a write). A device's "in sync"
/// alone does not say so: it dates from the device's last pull, which may
/// precede its newest write.
pub(crate) fn wait_pinned_more_than(pinner: &Data, commits: u64) {
    wait_for(&format!("the pinning peer holds more than {commits} commits"), SYNC_TIMEOUT, || {
        (pinned_commits(pinner) > commits).then_some(())
    });
}

/// The device id of a data directory's node.
pub(crate) fn device_of(node: &Node) -> String {
    node.status()["device"].as_str().expect("device").to_owned()
}

const LISTS: &str = "SELECT id, name FROM todo.lists ORDER BY id";

#[test]
fn two_devices_sync_live_and_converge_after_a_partition() {
    let a_data = Data::new(BASIC);
    a_data.basic(&["init"]).ok();
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let mut b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));
    wait_in_sync(&b, &device_of(&a));

    // A schema applied on A reaches B, then rows, live.
    a_data.basic(&["schema", "apply", &example("todo.toml")]).ok();
    wait_for("the schema reaches B", SYNC_TIMEOUT, || {
        let (status, _) = b.sql_as(&b.token.clone(), "SELECT count(*) FROM todo.lists", json!([]));
        (status == 200).then_some(())
    });
    // Both keep running: each change reaches the other device as it is.
    a.sql("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", json!([]));
    b.wait_rows(LISTS, &json!([["home", "Home"]]));
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('work', 'Work')", json!([]));
    a.wait_rows(LISTS, &json!([["home", "Home"], ["work", "Work"]]));

    // Apart: B is killed; both write, B through the database directly.
    b.kill9();
    a.sql("INSERT INTO todo.lists (id, name) VALUES ('a-only', 'From A')", json!([]));
    a.sql("UPDATE todo.lists SET name = 'Home (A)' WHERE id = 'home'", json!([]));
    b_data.basic(&["sql", "INSERT INTO todo.lists (id, name) VALUES ('b-only', 'From B')"]).ok();
    b_data.basic(&["sql", "UPDATE todo.lists SET name = 'Home (B)' WHERE id = 'home'"]).ok();
    b_data.basic(&["sql", "DELETE FROM todo.lists WHERE id = 'work'"]).ok();

    // Together again: the same rows on both. The concurrent update of
    // `home` resolves by the merge rule (clocks-and-merge.md §3): the later
    // stamp wins, and B's update was made after A's had returned, on the
    // same machine's clock (at least a process start later, so not in the
    // same millisecond). B's delete of `work`, which A did not touch, holds.
    let b = b_data.up(&[a.address()]);
    let converged = wait_for("A and B converge", SYNC_TIMEOUT, || {
        let (on_a, on_b) = (a.rows(LISTS), b.rows(LISTS));
        (on_a == on_b && on_a.as_array().is_some_and(|rows| rows.len() == 3)).then_some(on_a)
    });
    let ids: Vec<&Json> = converged.as_array().expect("rows").iter().map(|r| &r[0]).collect();
    assert_eq!(ids, [&json!("a-only"), &json!("b-only"), &json!("home")], "{converged}");
    assert_eq!(converged[2], json!(["home", "Home (B)"]), "{converged}");
}
