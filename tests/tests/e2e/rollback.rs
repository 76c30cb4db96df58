//! Rollback memory survives restarts: a device whose data directory is
//! restored from an older copy shows less of its own log than it showed
//! before, and the other device reports it although it restarted in
//! between (what each peer showed is kept in `shown.json`).
//!
//! No sleep and no wall-clock bound: every wait is for an outcome. Once
//! they meet again, the restored device could pull its lost commit back
//! from the other before that one checks what it shows (then it shows
//! everything, and nothing is to report). The protocol orders the two: the
//! old copy is from before the restored device ever synced, so it
//! remembers no peer, and it does not dial; a peer that dialled it and that
//! it does not remember hears nothing from it until that peer has proved
//! itself (sync.md §3). The reporting device dials, and its very next
//! request after its proof is the summary whose reply it checks, while the
//! restored device's own session only starts then and needs three round
//! trips (hello, auth, summary) before it can hold anything new. What is
//! left is a margin of round trips, not a race of equals: the report is
//! missed only if one request of the reporting device waits longer than
//! three whole round trips of the other.

use std::path::Path;

use basic_testkit::copy_dir;
use serde_json::{Value as Json, json};

use super::harness::{BASIC, Data, SYNC_TIMEOUT, wait_for};
use super::two_devices::{device_of, join, wait_in_sync};

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

/// The (max, count) of every head any peer showed, as `shown.json` in
/// `dir` keeps them (none while the file is absent or being replaced).
fn shown_heads(dir: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join("shown.json")).unwrap_or_default();
    let shown: Json = serde_json::from_str(&text).unwrap_or_default();
    let peers = shown["peers"].as_array().into_iter().flatten();
    peers
        .flat_map(|peer| peer["heads"].as_array().into_iter().flatten())
        .filter_map(|head| Some((head["max"].as_u64()?, head["count"].as_u64()?)))
        .collect()
}

const LISTS: &str = "SELECT id FROM todo.lists ORDER BY id";

#[test]
fn a_device_restored_from_an_old_copy_is_reported_after_a_restart() {
    let a_data = Data::with_todo(BASIC);
    let a_first = a_data.up(&[]);
    let b_data = join(&a_first);
    drop(a_first);

    // B writes b1 on its own, before it ever met A in a session; the old
    // copy is taken then (it remembers no peer).
    let mut b = b_data.up(&[]);
    let b_device = device_of(&b);
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('b1', 'B1')", json!([]));
    assert!(b.terminate().success());
    assert!(!b_data.path().join("shown.json").exists(), "B has not synced yet");
    let old = tempfile::tempdir().expect("temp dir");
    copy_dir(b_data.path(), old.path());

    // B writes b2, then meets A; A's first round with B takes both (what
    // a peer showed is remembered at the end of a round). Then both stop.
    b = b_data.up(&[]);
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('b2', 'B2')", json!([]));
    assert!(b.terminate().success());
    let mut a = a_data.up(&[]);
    b = b_data.up(&[a.address()]);
    a.wait_rows(LISTS, &json!([["b1"], ["b2"]]));
    wait_in_sync(&a, &b_device);
    wait_for("A keeps what B showed in shown.json", SYNC_TIMEOUT, || {
        shown_heads(a_data.path()).contains(&(2, 2)).then_some(())
    });
    assert!(b.terminate().success());
    assert!(a.terminate().success());
    assert!(!a.log().contains("shows less"), "{}", a.log());

    // B comes back from the old copy (same keys, without b2), dialling no
    // one; A restarts, remembering what B showed, and dials B.
    drop(b);
    clear_dir(b_data.path());
    copy_dir(old.path(), b_data.path());
    let b = b_data.up(&[]);
    let a = a_data.up(&[b.address()]);
    let line = wait_for("A reports that B shows less than before", SYNC_TIMEOUT, || {
        a.log().lines().find(|l| l.contains("WARN") && l.contains("shows less")).map(str::to_owned)
    });
    assert!(line.contains(&b_device), "the peer and the author are named: {line}");
    // B gets b2 back from A.
    b.wait_rows(LISTS, &json!([["b1"], ["b2"]]));
}
