//! An app through device A's API: granted, writing and reading, revoked;
//! what it wrote stays for the user and reaches device B. The node signs
//! the app's writes with the app's own key, so device B — which never saw
//! its token — attributes them to the app and applies its revocation from
//! the signatures alone.

use serde_json::{Value as Json, json};

use super::harness::{BASIC, Data, Node, SYNC_TIMEOUT, wait_for};
use super::two_devices::{device_of, join, wait_in_sync};

/// Asks for `scopes` as an app, approves as the owner, fetches the token.
fn app_token(data: &Data, node: &Node) -> (String, String) {
    let (status, made) = node.post(
        "/v0/apps/requests",
        None,
        &json!({ "name": "Todo app", "scopes": { "todo": "read_write" } }),
    );
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().expect("id");
    let poll =
        format!("/v0/apps/requests/{id}?secret={}", made["secret"].as_str().expect("secret"));
    data.basic(&["app", "approve", id]).ok();
    let (status, state) = node.get(&poll, None);
    assert_eq!((status, state["status"].as_str()), (200, Some("approved")), "{state}");
    (
        state["token"].as_str().expect("token").to_owned(),
        state["app"].as_str().expect("app").to_owned(),
    )
}

#[test]
fn a_revoked_app_loses_access_and_its_rows_stay_and_sync() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));

    let (token, app) = app_token(&a_data, &a);
    let (status, body) = a.sql_as(
        &token,
        "INSERT INTO todo.lists (id, name) VALUES ('app', 'By the app')",
        json!([]),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = a.sql_as(&token, "SELECT name FROM todo.lists", json!([]));
    assert_eq!((status, &body["rows"]), (200, &json!([["By the app"]])), "{body}");

    let (status, body) = a.post(&format!("/v0/apps/{app}/revoke"), Some(&a.token), &json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = a.sql_as(&token, "SELECT name FROM todo.lists", json!([]));
    assert_eq!(status, 403, "{body}");
    let (status, body) = a.sql_as(
        &token,
        "INSERT INTO todo.lists (id, name) VALUES ('late', 'Too late')",
        json!([]),
    );
    assert_eq!(status, 403, "{body}");

    // The user keeps what the app wrote, on both devices; B learns of the revocation.
    let expected = json!([["app", "By the app"]]);
    assert_eq!(a.rows("SELECT id, name FROM todo.lists"), expected);
    b.wait_rows("SELECT id, name FROM todo.lists", &expected);
    wait_for("B sees the revocation", SYNC_TIMEOUT, || {
        let (_, apps) = b.get_owner("/v0/apps");
        apps.to_string().contains("\"revoked\":true").then_some(())
    });
}

const LISTS: &str = "SELECT id, name FROM todo.lists ORDER BY id";

/// The entry of `app` in `node`'s `GET /v0/apps` (null if absent).
fn listed(node: &Node, app: &str) -> Json {
    let (status, apps) = node.get_owner("/v0/apps");
    assert_eq!(status, 200, "{apps}");
    apps.as_array()
        .and_then(|apps| apps.iter().find(|entry| entry["id"] == app).cloned())
        .unwrap_or(Json::Null)
}

/// Runs `sql` as the app on `node`; its status.
fn status_as(node: &Node, token: &str, sql: &str) -> u16 {
    node.sql_as(token, sql, json!([])).0
}

#[test]
fn device_b_attributes_an_api_apps_writes_and_its_revocation_on_b_stops_the_token_on_a() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));

    let (token, app) = app_token(&a_data, &a);
    for sql in [
        "INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')",
        "INSERT INTO todo.items (id, list, title) VALUES ('milk', 'home', 'Milk')",
    ] {
        assert_eq!(status_as(&a, &token, sql), 200, "{sql}");
    }

    // B holds the app's commits, and reads who wrote them from their
    // signatures: it never saw the token, nor holds the app's key.
    let written = json!({ "commits": 2, "rows": { "todo.items": 1, "todo.lists": 1 } });
    let on_b = wait_for("B attributes the app's commits", SYNC_TIMEOUT, || {
        let entry = listed(&b, &app);
        (entry["written"] == written).then_some(entry)
    });
    let on_a = listed(&a, &app);
    assert_eq!(
        (on_a["custodial"].as_bool(), on_b["custodial"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(on_a["written"], written, "{on_a}");
    let last = on_b["last_activity"].as_str().expect("a last activity");
    assert_eq!(on_a["last_activity"].as_str(), Some(last), "the same commits' clocks");
    let shown = b_data.basic(&["app", "list"]).ok();
    assert!(shown.contains(&app) && shown.contains("signs its own writes"), "{shown}");
    let line = format!("wrote 2 commits touching 2 rows (todo.items 1, todo.lists 1); last {last}");
    assert!(shown.contains(&line), "{shown}");

    // The token is A's alone: B refuses it.
    assert_eq!(status_as(&b, &token, LISTS), 401);
    let late = "INSERT INTO todo.lists (id, name) VALUES ('late', 'Too late')";
    assert_eq!(status_as(&b, &token, late), 401);

    // Revoked on B: A refuses the token once it learns so; the rows stay.
    b_data.basic(&["app", "revoke", &app]).ok();
    wait_for("A refuses the revoked app's token", SYNC_TIMEOUT, || {
        (status_as(&a, &token, LISTS) == 403).then_some(())
    });
    assert_eq!(status_as(&a, &token, late), 403);
    let expected = json!([["home", "Home"]]);
    assert_eq!(a.rows(LISTS), expected);
    assert_eq!(b.rows(LISTS), expected);
    for node in [&a, &b] {
        let entry = listed(node, &app);
        assert_eq!(
            (&entry["written"], &entry["scopes"]["todo"]["revoked"]),
            (&written, &json!(true))
        );
    }
}

#[test]
fn what_an_api_app_writes_after_its_revocation_elsewhere_is_refused_on_every_device() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let mut b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));
    let (token, app) = app_token(&a_data, &a);
    let before = "INSERT INTO todo.lists (id, name) VALUES ('before', 'Before')";
    assert_eq!(status_as(&a, &token, before), 200);
    let expected = json!([["before", "Before"]]);
    b.wait_rows(LISTS, &expected);

    // B, apart, revokes the app (its cut-off: the commit B holds). A does
    // not know yet, so it still signs the app's next write.
    b.terminate();
    b_data.basic(&["app", "revoke", &app]).ok();
    let after = "INSERT INTO todo.lists (id, name) VALUES ('after', 'After the cut-off')";
    assert_eq!(status_as(&a, &token, after), 200);

    // Together again: A learns of the revocation and refuses the token;
    // the write past the cut-off is refused on both devices, the earlier
    // row stays on both.
    let b = b_data.up(&[a.address()]);
    wait_for("A refuses the revoked app's token", SYNC_TIMEOUT, || {
        (status_as(&a, &token, LISTS) == 403).then_some(())
    });
    wait_in_sync(&b, &device_of(&a));
    a.wait_rows(LISTS, &expected);
    assert_eq!(b.rows(LISTS), expected);
    assert_eq!(listed(&b, &app)["written"]["commits"], 1);
}
