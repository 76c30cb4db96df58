//! Devices behind NATs meet through a pinning peer: A reserves a slot on
//! the pinner P (`--relay`), B is given only A's relayed address
//! (`P/p2p-circuit/p2p/A`) and syncs with A through P. (On loopback nothing
//! is behind a NAT; what is shown is that the relayed path works on its
//! own. Hole punching, which DCUtR then tries, needs real NATs.)

use serde_json::json;

use super::harness::{BASIC, Data, LOOPBACK, SYNC_TIMEOUT, wait_for};
use super::pinner::authorised_pinner;
use super::two_devices::{device_of, join, wait_in_sync};

#[test]
fn a_device_known_only_by_its_relayed_address_syncs_through_a_pinning_peer() {
    let a_data = Data::with_todo(BASIC);
    let a_first = a_data.up(&[]);
    let b_data = join(&a_first);
    drop(a_first);

    let (p_data, _, database) = authorised_pinner(&a_data);
    let p = p_data.pinner_up(&database);

    // A reserves on P: its relayed address shows in api.json, the status
    // and invites.
    let a_args = ["--api", "127.0.0.1:0", "--listen", LOOPBACK, "--no-mdns"];
    let a = a_data.start(&[&["up"][..], &a_args, &["--relay", p.address()]].concat());
    let a_peer = a.address().rsplit("/p2p/").next().expect("a's peer id").to_owned();
    let circuit = wait_for("A reserves on P", SYNC_TIMEOUT, || {
        a_data.listen_now().into_iter().find(|address| address.contains("/p2p-circuit"))
    });
    assert_eq!(circuit, format!("{}/p2p-circuit/p2p/{a_peer}", p.address()));
    let listening = a.status()["network"]["state"]["listening"].clone();
    assert!(listening.as_array().expect("listening").contains(&json!(circuit)), "{listening}");
    let body = json!({ "valid_minutes": 5 });
    let (code, invite) = a.post("/v0/devices/invite", Some(&a.token), &body);
    assert_eq!(code, 200, "{invite}");
    assert_eq!(invite["addresses"][0], json!(circuit), "relayed addresses first: {invite}");

    // B knows A only by that address: it connects through P.
    let b_args = ["--api", "127.0.0.1:0", "--listen", LOOPBACK, "--no-mdns", "--peer", &circuit];
    let b = b_data.start(&[&["up"][..], &b_args].concat());
    let b_device = device_of(&b);
    wait_in_sync(&a, &b_device);
    wait_in_sync(&b, &device_of(&a));
    let peers = a.status()["network"]["state"]["peers"].clone();
    let b_peer = peers
        .as_array()
        .expect("peers")
        .iter()
        .find(|peer| peer["principal"] == b_device.as_str())
        .expect("B among A's peers")
        .clone();
    let through = b_peer["address"].as_str().expect("B connected").to_owned();
    assert!(through.starts_with(&format!("{}/p2p-circuit/p2p/", p.address())), "{through}");

    a.sql("INSERT INTO todo.lists (id, name) VALUES ('from-a', 'A')", json!([]));
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('from-b', 'B')", json!([]));
    let both = json!([["from-a"], ["from-b"]]);
    a.wait_rows("SELECT id FROM todo.lists ORDER BY id", &both);
    b.wait_rows("SELECT id FROM todo.lists ORDER BY id", &both);
}
