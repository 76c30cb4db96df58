//! An app that embeds the light client (`examples/todo-app`, built here as
//! `basic-e2e-todo-app`), as a process of its own beside two devices:
//! asks for access over the network, is approved on the other device,
//! writes and reads, sees a device's write live, is revoked — and its
//! earlier rows stay on both devices.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::harness::{BASIC, Data, Guard, Node, Output, SYNC_TIMEOUT, wait_for};
use super::pinner::authorised_pinner;
use super::two_devices::{device_of, join, pinned_settled, wait_in_sync, wait_pinned_more_than};

/// The example app, built from its library by this package.
const TODO_APP: &str = env!("CARGO_BIN_EXE_basic-e2e-todo-app");
/// How long an app command may take (a connect waits for the user).
const APP_TIMEOUT: Duration = Duration::from_secs(60);

/// The app's own data directory.
struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(TODO_APP);
        command
            .arg("--data")
            .arg(self.dir.path().join("app"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    /// Runs the app to the end.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = Guard(command.spawn().expect("run the app"));
        let status = child
            .wait_for(APP_TIMEOUT)
            .unwrap_or_else(|| panic!("todo-app {args:?} took more than {APP_TIMEOUT:?}"));
        let mut stdout = String::new();
        let mut stderr = String::new();
        child.0.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("stdout");
        child.0.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
        Output { status, stdout, stderr }
    }

    /// Starts the app with its output going to `name` in its directory.
    fn spawn(&self, args: &[&str], name: &str) -> (Guard, PathBuf) {
        let out = self.dir.path().join(name);
        let file = std::fs::File::create(&out).expect("output file");
        let err = file.try_clone().expect("output file");
        let mut command = self.command(args);
        command.stdout(file).stderr(err);
        (Guard(command.spawn().expect("run the app")), out)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The access code `basic app connect` prints on `data`'s device.
fn access_code(data: &Data) -> String {
    let out = data.basic(&["app", "connect"]).ok();
    out.split_whitespace()
        .find(|word| word.starts_with("basic-access:"))
        .unwrap_or_else(|| panic!("no access code in {out:?}"))
        .to_owned()
}

/// The id of the one pending request on `node`, once it is there.
fn pending_request(node: &Node) -> (String, Json) {
    wait_for("the request shows on the device", SYNC_TIMEOUT, || {
        let (status, list) = node.get_owner("/v0/apps/requests");
        let first = list.as_array()?.first()?.clone();
        (status == 200).then(|| (first["id"].as_str().unwrap_or_default().to_owned(), first))
    })
}

const ITEMS: &str = "SELECT title, done FROM todo.items ORDER BY title";

#[test]
fn an_embedded_app_asks_syncs_writes_watches_and_is_revoked() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));
    wait_in_sync(&b, &device_of(&a));

    // The app asks B; the user approves on B.
    let app = App::new();
    let code = access_code(&b_data);
    let (mut connecting, connect_out) = app.spawn(&["connect", &code], "connect.out");
    let (id, request) = pending_request(&b);
    assert_eq!(request["name"], "Todo (example app)", "{request}");
    assert_eq!(request["scopes"], json!({ "todo": "read_write" }), "{request}");
    b_data.basic(&["app", "approve", &id]).ok();
    let status = connecting.wait_for(APP_TIMEOUT).expect("connect ends once approved");
    let said = read(&connect_out);
    assert!(status.success(), "{said}");
    assert!(said.contains("waiting for the user"), "{said}");
    let app_id = said
        .split_whitespace()
        .find(|word| word.starts_with("app_"))
        .unwrap_or_else(|| panic!("no app id in {said:?}"))
        .to_owned();

    // It writes; its rows reach both devices.
    let added = app.run(&["add", "milk"]).ok();
    assert!(added.contains("added"), "{added}");
    a.wait_rows(ITEMS, &json!([["milk", false]]));
    b.wait_rows(ITEMS, &json!([["milk", false]]));
    let listed = app.run(&["list"]).ok();
    assert!(listed.contains("milk"), "{listed}");

    // It watches: a write made on A shows up live.
    let (mut watching, watch_out) = app.spawn(&["watch"], "watch.out");
    wait_for("the watch prints the list", SYNC_TIMEOUT, || {
        read(&watch_out).contains("milk").then_some(())
    });
    a.sql(
        "INSERT INTO todo.items (id, list, title) VALUES ('from-a', 'inbox', 'bread from A')",
        json!([]),
    );
    wait_for("the app sees A's write live", SYNC_TIMEOUT, || {
        read(&watch_out).contains("bread from A").then_some(())
    });

    // Revoked on B: the watching app is told, and writes no more.
    b_data.basic(&["app", "revoke", &app_id]).ok();
    let status = watching.wait_for(SYNC_TIMEOUT).expect("the watch ends once revoked");
    let said = read(&watch_out);
    assert!(!status.success() && said.contains("revoked"), "{said}");
    let refused = app.run(&["add", "after"]).failed();
    assert!(refused.contains("revoked"), "{refused}");
    // What it wrote before stays, on both devices; nothing after.
    let expected = json!([["bread from A", false], ["milk", false]]);
    a.wait_rows(ITEMS, &expected);
    b.wait_rows(ITEMS, &expected);
    // Its revoked key is never granted again: connecting with it says so.
    let refused = app.run(&["connect", &code]).failed();
    assert!(refused.contains("revoked") && refused.contains("new"), "{refused}");

    // A new grant works again, to a new identity of the app.
    let again = App::new();
    connect(&again, &b_data, &b);
    let added = again.run(&["add", "eggs"]).ok();
    assert!(added.contains("added") && !added.contains("saved here"), "{added}");
    let expected = json!([["bread from A", false], ["eggs", false], ["milk", false]]);
    a.wait_rows(ITEMS, &expected);
    b.wait_rows(ITEMS, &expected);
}

/// Asks `node`'s device for access as `app`, and approves on `data`.
fn connect(app: &App, data: &Data, node: &Node) {
    let code = access_code(data);
    let (mut connecting, out) = app.spawn(&["connect", &code], "connect.out");
    let (id, _) = pending_request(node);
    data.basic(&["app", "approve", &id]).ok();
    let status = connecting.wait_for(APP_TIMEOUT).expect("connect ends once approved");
    assert!(status.success(), "{}", read(&out));
}

#[test]
fn an_embedded_app_syncs_through_a_pinning_peer_alone() {
    let a_data = Data::with_todo(BASIC);
    let (p_data, pin, database) = authorised_pinner(&a_data);
    let p = p_data.pinner_up(&database);
    let mut a = a_data.up(&[p.address()]);
    wait_in_sync(&a, &pin);
    let app = App::new();
    connect(&app, &a_data, &a);
    let pinned = pinned_settled(&p_data);
    a.sql(
        "INSERT INTO todo.items (id, list, title) VALUES ('from-a', 'inbox', 'bread from A')",
        json!([]),
    );
    wait_pinned_more_than(&p_data, pinned);
    // The device goes away: from now on the app reaches the pinning peer only.
    a.terminate();
    let through_p = ["--peer", p.address()];
    let listed = app.run(&[&through_p[..], &["list"]].concat()).ok();
    assert!(listed.contains("bread from A"), "{listed}");
    let added = app.run(&[&through_p[..], &["add", "eggs"]].concat());
    assert!(
        added.status.success()
            && added.stdout.contains("added")
            && !added.stdout.contains("saved here"),
        "{added:?}"
    );
    // The device, back, takes the app's write from the pinning peer.
    let a = a_data.up(&[p.address()]);
    a.wait_rows(ITEMS, &json!([["bread from A", false], ["eggs", false]]));
}

#[test]
fn bad_access_codes_and_a_tampered_directory_get_clear_errors() {
    let app = App::new();
    let error = app.run(&["connect", "basic-access:not-a-code"]).failed();
    assert!(error.contains("access code"), "{error}");
    let error = app.run(&["list"]).failed();
    assert!(error.contains("no replica") && error.contains("access"), "{error}");

    // A directory whose access code was replaced serves nothing.
    let dir = app.dir.path().join("app");
    std::fs::create_dir_all(dir.join("replica")).expect("dir");
    std::fs::write(dir.join("access-code"), "garbage").expect("write");
    let error = app.run(&["list"]).failed();
    assert!(error.contains("access code"), "{error}");
}

#[test]
fn a_client_directory_tampered_with_is_refused_with_a_clear_error() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let app = App::new();
    connect(&app, &a_data, &a);
    app.run(&["add", "milk"]).ok();
    let dir = app.dir.path().join("app");
    // Every byte of the replica's files flipped: nothing is served from it.
    flip_every_byte(&dir.join("replica"));
    let out = app.run(&["list"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(!out.stdout.contains("milk"), "{out:?}");
    assert!(
        out.stderr.contains("damaged") && out.stderr.contains("ask for access again"),
        "{out:?}"
    );
}

/// Flips every byte of every file under `dir`.
fn flip_every_byte(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            flip_every_byte(&path);
        } else {
            let bytes: Vec<u8> = std::fs::read(&path).expect("read").iter().map(|b| !b).collect();
            std::fs::write(&path, bytes).expect("write");
        }
    }
}
