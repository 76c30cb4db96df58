//! Recovery (issue 11 item 14): every device lost, the database regained on
//! a new device with the recovery secret, through a pinning peer alone; the
//! lost devices removed by the root once their data has synced, so every
//! row comes back; and the lost devices' keys (a thief's copy) can neither
//! sync with the recovered database nor read what is written after.

use std::path::Path;

use basic_proto::Name;
use basic_store::{Database, Keyring};
use serde_json::{Value as Json, json};

use super::harness::{BASIC, Data, SYNC_TIMEOUT, wait_for};
use super::pinner::pinner_of;
use super::two_devices::{device_of, join, pinned_settled, wait_in_sync, wait_pinned_more_than};

const LISTS: &str = "SELECT id FROM todo.lists ORDER BY id";

/// Copies the files of `from` into `to`, recursively (a thief's copy),
/// and makes `to` its owner's only, as `basic` wants it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "lock" && entry.file_name() != "api.json" {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The recovery secret and database id `basic recovery show` prints.
fn recovery_of(data: &Data) -> (String, String) {
    let out = data.basic(&["recovery", "show"]).ok();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    (field("recovery"), field("database"))
}

#[test]
fn every_device_lost_the_database_is_recovered_through_a_pinning_peer() {
    // A with the todo schema and a pinning peer P; B joins; both write.
    let a_data = Data::with_todo(BASIC);
    let (p_data, pin, database) = pinner_of(&a_data);
    let p = p_data.pinner_up(&database);
    let a = a_data.up(&[p.address()]);
    a_data.basic(&["pin", "add", &pin, "--address", p.address()]).ok();
    wait_in_sync(&a, &pin);
    let b_data = join(&a);
    let b = b_data.up(&[p.address()]);
    wait_in_sync(&b, &pin);
    a.sql("INSERT INTO todo.lists (id, name) VALUES ('a1', 'A'), ('a2', 'A')", json!([]));
    b.sql("INSERT INTO todo.lists (id, name) VALUES ('b1', 'B')", json!([]));
    let all = json!([["a1"], ["a2"], ["b1"]]);
    a.wait_rows(LISTS, &all);
    b.wait_rows(LISTS, &all);
    let (a_id, b_id) = (device_of(&a), device_of(&b));
    let (secret, shown_database) = recovery_of(&a_data);
    assert_eq!(shown_database, database);
    // P holds every commit before the devices are lost: A and B synced
    // with P only, and each saw the other's rows.
    drop((a, b));

    // A thief keeps copies of both devices; the owner loses them.
    let stolen_a = Data::new(BASIC);
    copy_dir(a_data.path(), stolen_a.path());
    let stolen_b = Data::new(BASIC);
    copy_dir(b_data.path(), stolen_b.path());
    drop((a_data, b_data));

    // Recovery on a new directory, through P alone. The secret goes on
    // standard input, never on the command line.
    let c_data = Data::new(BASIC);
    let refused = c_data
        .basic_with_input(
            &["init", "--recover", "--database", &database, "--peer", p.address()],
            "basic-recovery-aaaa-bbbb\n",
        )
        .failed();
    assert!(refused.contains("recovery secret"), "{refused}");
    let out = c_data
        .basic_with_input(
            &["init", "--recover", "--database", &database, "--peer", p.address(), "--remove-lost"],
            &format!("{secret}\n"),
        )
        .ok();
    eprintln!("---- basic init --recover ----\n{out}");
    assert!(out.contains(&format!("Recovered database {database}")), "{out}");
    assert!(out.contains("todo.lists: 3 rows"), "progress names what came back: {out}");
    for lost in [&a_id, &b_id] {
        assert!(out.contains(&format!("removed {lost}")), "{out}");
    }
    assert!(out.contains("forgotten the recovery secret"), "{out}");

    // Every row is back, on a node that syncs with P as a member.
    let c = c_data.up(&[p.address()]);
    assert_eq!(c.rows(LISTS), all);
    let status = c.status();
    let devices: Vec<&Json> = status["devices"].as_array().expect("devices").iter().collect();
    for lost in [&a_id, &b_id] {
        assert!(
            devices.iter().any(|d| d["id"] == lost.as_str() && d["removed"] == true),
            "{status}"
        );
    }
    wait_in_sync(&c, &pin);
    let pinned = pinned_settled(&p_data);
    c.sql("INSERT INTO todo.lists (id, name) VALUES ('after', 'C')", json!([]));
    wait_pinned_more_than(&p_data, pinned);
    let (code, secret_now) = c.get_owner("/v0/recovery");
    assert_eq!((code, &secret_now["secret"]), (200, &Json::Null), "{secret_now}");

    // The thief's copies: P tells each it was removed; neither syncs, and
    // neither holds a key of the epoch the recovered device now writes under.
    let mut c = c;
    assert!(c.terminate().success());
    let recovered = Database::open(c_data.path()).expect("open the recovered replica");
    let todo = recovered.scope_id(&Name::new("todo").expect("name")).expect("todo scope id");
    let newest = recovered.auth_state().scopes()[&todo].current().expect("an epoch");
    assert!(!recovered.scope_keys().scope_keys(&todo, newest).is_empty());
    drop(recovered);
    for stolen in [&stolen_a, &stolen_b] {
        let mut node = stolen.up(&[p.address()]);
        wait_for("the stolen device learns it was removed", SYNC_TIMEOUT, || {
            (node.status()["removed"] == json!(true)).then_some(())
        });
        assert!(!node.rows(LISTS).as_array().expect("rows").contains(&json!(["after"])));
        let (code, body) = node.sql_as(
            &node.token.clone(),
            "INSERT INTO todo.lists (id, name) VALUES ('thief', 'T')",
            json!([]),
        );
        assert_eq!(code, 409, "{body}");
        assert!(node.terminate().success());
        let replica = Database::open(stolen.path()).expect("open the stolen replica");
        assert!(
            replica.scope_keys().scope_keys(&todo, newest).is_empty(),
            "a removed device holds a key of epoch {newest}"
        );
        let after = replica
            .replica()
            .commits()
            .filter_map(Result::ok)
            .filter(|commit| commit.header().scope == todo && commit.header().epoch == newest)
            .count();
        assert_eq!(after, 0, "it received a commit written after the recovery");
    }
}
