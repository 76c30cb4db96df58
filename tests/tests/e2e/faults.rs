//! Faults between real processes: three devices and a pinning peer, each in
//! its own network namespace, under packet loss, a slow link, and a
//! partition and its heal; and two devices that find each other by mDNS
//! alone. See `netns.rs` for the lab.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::harness::{BASIC, Data, Node, wait_for};
use super::netns::{Host, Lab};
use super::pinner::authorised_pinner;
use super::two_devices::{device_of, join, pinned_commits, wait_in_sync};

/// Longest a change may take to reach every node under faults (a bound
/// that stops a hung test, not a figure).
const FAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// Rows written on each device while packets are lost.
const ROWS_EACH: usize = 20;

const IDS: &str = "SELECT id FROM todo.lists ORDER BY id";
const LISTS: &str = "SELECT id, name FROM todo.lists ORDER BY id";

/// `basic up` on `host`, dialling `peers`, with or without mDNS.
fn up_on(data: &Data, host: &Host, peers: &[&str], mdns: bool) -> Node {
    let (api, listen) = (host.api(), host.listen());
    let mut args = vec!["up", "--api", &api, "--api-public", "--listen", &listen];
    if !mdns {
        args.push("--no-mdns");
    }
    for peer in peers {
        args.extend(["--peer", peer]);
    }
    data.start_in(Some(&host.namespace), &args)
}

/// Waits until every node returns the same rows for `sql`, with `count`
/// rows; returns them.
fn converge(nodes: &[&Node], sql: &str, count: usize) -> Json {
    wait_for(&format!("{} nodes agree on {count} rows", nodes.len()), FAULT_TIMEOUT, || {
        let first = nodes[0].rows(sql);
        let agreed = first.as_array().is_some_and(|rows| rows.len() == count)
            && nodes[1..].iter().all(|node| node.rows(sql) == first);
        agreed.then_some(first)
    })
}

#[test]
fn devices_and_a_pinning_peer_converge_under_loss_a_slow_link_and_a_partition() {
    let Some(lab) = Lab::new(4) else { return };
    let (host_a, host_b, host_c, host_p) = (lab.host(0), lab.host(1), lab.host(2), lab.host(3));

    let a_data = Data::with_todo(BASIC);
    let (p_data, pin, database) = authorised_pinner(&a_data);
    let p = p_data.start_in(
        Some(&host_p.namespace),
        &["up", "--database", &database, "--listen", &host_p.listen(), "--no-mdns"],
    );
    let a = up_on(&a_data, host_a, &[p.address()], false);
    let (b_data, c_data) = (join(&a), join(&a));
    let b = up_on(&b_data, host_b, &[a.address(), p.address()], false);
    let c = up_on(&c_data, host_c, &[a.address(), p.address()], false);
    for node in [&a, &b, &c] {
        wait_in_sync(node, &pin);
    }
    a.sql("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home'), ('gone', 'Gone')", json!([]));
    converge(&[&a, &b, &c], IDS, 2);

    // Lossy links everywhere, and C behind a slow one, while all write.
    for i in 0..4 {
        lab.loss(i, 10);
    }
    lab.rate(2, 256);
    for i in 0..ROWS_EACH {
        for (name, node) in [("a", &a), ("b", &b), ("c", &c)] {
            node.sql(
                "INSERT INTO todo.lists (id, name) VALUES (?, ?)",
                json!([format!("{name}{i:03}"), format!("written on {name}")]),
            );
        }
    }
    converge(&[&a, &b, &c], IDS, 2 + 3 * ROWS_EACH);
    let dropped: u64 = (0..4).map(|i| lab.dropped(i)).sum();
    assert!(dropped > 0, "the loss rules dropped no packet");
    eprintln!("{dropped} packets dropped while the devices wrote and synced");
    for i in 0..4 {
        lab.loss(i, 0);
    }

    // A partition: A and B on one side, C and the pinning peer on the other.
    lab.partition(&[&[0, 1], &[2, 3]]);
    a.sql("UPDATE todo.lists SET name = 'Home (A)' WHERE id = 'home'", json!([]));
    a.sql("DELETE FROM todo.lists WHERE id = 'gone'", json!([]));
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('b-apart', 'B apart')", json!([]));
    // C writes after A on the same machine's clock: its update is the later one.
    std::thread::sleep(Duration::from_millis(50));
    c.sql("UPDATE todo.lists SET name = 'Home (C)' WHERE id = 'home'", json!([]));
    c.sql("UPDATE todo.lists SET name = 'Still here (C)' WHERE id = 'gone'", json!([]));
    c.sql("INSERT INTO todo.lists (id, name) VALUES ('c-apart', 'C apart')", json!([]));
    // Each side converges on its own, and nothing crosses.
    b.wait_rows("SELECT name FROM todo.lists WHERE id = 'home'", &json!([["Home (A)"]]));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.rows("SELECT id FROM todo.lists WHERE id = 'c-apart'"), json!([]));
    assert_eq!(c.rows("SELECT id FROM todo.lists WHERE id = 'b-apart'"), json!([]));

    // Healed: every row written anywhere is everywhere, and the concurrent
    // edits resolve by the merge rule (clocks-and-merge.md): the later
    // update of a cell wins, and a delete wins over a concurrent update.
    lab.heal();
    let rows = converge(&[&a, &b, &c], LISTS, 1 + 3 * ROWS_EACH + 2);
    let name_of = |id: &str| rows.as_array().and_then(|r| r.iter().find(|r| r[0] == id)).cloned();
    assert_eq!(name_of("home"), Some(json!(["home", "Home (C)"])), "{rows}");
    assert_eq!(name_of("gone"), None, "the delete wins: {rows}");
    assert!(name_of("b-apart").is_some() && name_of("c-apart").is_some(), "{rows}");

    // The pinning peer holds every commit the devices wrote.
    let written = 1 + 3 * ROWS_EACH as u64 + 6;
    wait_for("the pinning peer holds every commit", FAULT_TIMEOUT, || {
        (pinned_commits(&p_data) >= written).then_some(())
    });
    drop(p);
}

#[test]
fn two_devices_in_two_namespaces_find_each_other_by_mdns() {
    let Some(lab) = Lab::new(2) else { return };
    let a_data = Data::with_todo(BASIC);
    let first = up_on(&a_data, lab.host(0), &[], false);
    let b_data = join(&first);
    // Restarted, A listens on another port: the address B learnt when it
    // joined leads nowhere, and neither is given a peer. Only mDNS can
    // bring them together.
    drop(first);
    let a = up_on(&a_data, lab.host(0), &[], true);
    let b = up_on(&b_data, lab.host(1), &[], true);
    wait_in_sync(&a, &device_of(&b));
    wait_in_sync(&b, &device_of(&a));
    a.sql("INSERT INTO todo.lists (id, name) VALUES ('found', 'By mDNS')", json!([]));
    b.wait_rows(IDS, &json!([["found"]]));
}
