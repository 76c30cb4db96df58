//! Rollback memory survives restarts: a device whose data directory is
//! restored from an older copy shows less of its own log than it showed
//! before, and the other device reports it although it restarted in
//! between (what each peer showed is kept in `shown.json`).

use std::path::Path;

use serde_json::json;

use super::harness::{BASIC, Data};
use super::two_devices::{device_of, join, wait_in_sync};

/// Copies the files of `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Empties `dir`.
fn clear_dir(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).expect("remove");
        } else {
            std::fs::remove_file(path).expect("remove");
        }
    }
}

// Timing-dependent: the restored device's own session may pull its lost
// commit back from A before A's first summary sees the rollback; on a busy
// machine that happens on every attempt. The detection itself is tested
// deterministically in basic-proto (`a_rolled_back_peer_is_detected`) and
// the memory's file in node/src/network/shown.rs.
#[test]
#[ignore = "timing-dependent; run with `cargo test -p basic-e2e -- --ignored`"]
fn a_device_restored_from_an_old_copy_is_reported_after_a_restart() {
    let a_data = Data::with_todo(BASIC);
    let a_first = a_data.up(&[]);
    let b_data = join(&a_first);
    drop(a_first);
    let lists = "SELECT id FROM todo.lists ORDER BY id";

    let mut a = a_data.up(&[]);
    let mut b = b_data.up(&[a.address()]);
    let b_device = device_of(&b);
    wait_in_sync(&a, &b_device);
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('b1', 'B1')", json!([]));
    a.wait_rows(lists, &json!([["b1"]]));
    assert!(b.terminate().success());
    let old = tempfile::tempdir().expect("temp dir");
    copy_dir(b_data.path(), old.path());

    // B writes more, and A sees it; then both stop.
    b = b_data.up(&[a.address()]);
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('b2', 'B2')", json!([]));
    a.wait_rows(lists, &json!([["b1"], ["b2"]]));
    wait_in_sync(&a, &b_device);
    assert!(b.terminate().success());
    assert!(a_data.path().join("shown.json").exists(), "A keeps what B showed");
    assert!(!a.log().contains("shows less"), "{}", a.log());

    // B comes back from the old copy (same keys, without b2); A restarted
    // and remembers what B showed. B's own session may fetch b2 back from
    // A before A's first summary reaches B (then B shows it all): each
    // attempt starts both afresh, A knowing only what shown.json says.
    let mut reported = None;
    for _ in 0..ATTEMPTS {
        drop(b);
        assert!(a.terminate().success());
        clear_dir(b_data.path());
        copy_dir(old.path(), b_data.path());
        a = a_data.up(&[]);
        b = b_data.up(&[a.address()]);
        // A's first round with B is over, rollback check included.
        wait_in_sync(&a, &b_device);
        reported = a
            .log()
            .lines()
            .find(|l| l.contains("WARN") && l.contains("shows less"))
            .map(str::to_owned);
        if reported.is_some() {
            break;
        }
    }
    let line = reported.expect("A reports that B shows less than before");
    assert!(line.contains(&b_device), "the peer and the author are named: {line}");
    // B gets b2 back from A.
    b.wait_rows(lists, &json!([["b1"], ["b2"]]));
}

/// Restarts of both devices to see the report (see the test).
const ATTEMPTS: usize = 10;
