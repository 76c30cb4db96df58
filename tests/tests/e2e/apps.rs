//! An app through device A's API: granted, writing and reading, revoked;
//! what it wrote stays for the user and reaches device B.

use serde_json::json;

use super::harness::{BASIC, Data, Node};
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
    super::harness::wait_for("B sees the revocation", super::harness::SYNC_TIMEOUT, || {
        let (_, apps) = b.get_owner("/v0/apps");
        apps.to_string().contains("\"revoked\":true").then_some(())
    });
}
