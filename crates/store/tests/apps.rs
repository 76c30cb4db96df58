//! App access requests: asked, approved or denied, listed, and what each
//! app wrote.

use std::collections::BTreeMap;
use std::path::Path;

use basic_proto::control::Rights;
use basic_proto::{Changes, KeyPart, Name, Party, RowKey, RowOp, SecretKey, Value};
use basic_store::{AccessRequest, Database, LogWriter, RequestError, Schema};

fn todo_db(dir: &Path) -> Database {
    let db = Database::open(dir).unwrap();
    let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
    db.apply_schema(Schema::from_file(schema).unwrap()).unwrap();
    db
}

fn request(name: &str, app: &SecretKey) -> AccessRequest {
    AccessRequest {
        name: name.into(),
        app: Party::of(app),
        scopes: BTreeMap::from([(Name::new("todo").unwrap(), Rights::ReadWrite)]),
    }
}

#[test]
fn an_approved_request_is_a_grant_and_the_user_sees_what_the_app_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let db = todo_db(dir.path());
    let app = SecretKey::from_seed([50; 32]);
    let id = db.request_access(request("  Groceries  ", &app)).unwrap();
    let pending = db.access_requests().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].0, pending[0].1.name.as_str()), (id, "Groceries"));
    assert!(db.apps().unwrap().is_empty(), "nothing is granted before approval");

    db.approve(id).unwrap();
    assert!(db.access_requests().unwrap().is_empty());
    let apps = db.apps().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].name.as_deref(), Some("Groceries"));
    assert_eq!(apps[0].scopes[&Name::new("todo").unwrap()], (Rights::ReadWrite, false));

    // The app writes with the key it was sealed.
    let todo = db.scope_id(&Name::new("todo").unwrap()).unwrap();
    let key = db.auth_state().scope_keys(&app, &todo, 0).remove(0);
    let mut writer = LogWriter::new(app.clone(), db.id());
    let op = RowOp::Upsert {
        table: Name::new("todo.lists").unwrap(),
        key: RowKey::single(KeyPart::Text("groceries".into())),
        generation: 1,
        cells: BTreeMap::from([(Name::new("name").unwrap(), Value::Text("Groceries".into()))]),
    };
    let commit = writer
        .write(
            &todo,
            0,
            &key,
            &Changes::new(vec![op]).unwrap(),
            basic_store::now_ms(),
            &mut rand::rng(),
        )
        .unwrap();
    assert!(db.ingest(&[commit.as_bytes().to_vec()]).unwrap()[0].is_ok());
    let written = db.written_by(&app.public()).unwrap();
    assert_eq!(written.commits, 1);
    assert_eq!(
        written.rows[&Name::new("todo.lists").unwrap()].iter().collect::<Vec<_>>(),
        [&RowKey::single(KeyPart::Text("groceries".into()))]
    );

    db.revoke(app.public(), Name::new("todo").unwrap()).unwrap();
    assert_eq!(
        db.apps().unwrap()[0].scopes[&Name::new("todo").unwrap()],
        (Rights::ReadWrite, true)
    );
    // What it wrote stays, and is still listed as its own.
    assert_eq!(db.written_by(&app.public()).unwrap().commits, 1);
}

#[test]
fn a_denied_request_grants_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = todo_db(dir.path());
    let app = SecretKey::from_seed([51; 32]);
    let id = db.request_access(request("Tracker", &app)).unwrap();
    assert_eq!(db.deny(id).unwrap().name, "Tracker");
    assert!(db.access_requests().unwrap().is_empty());
    assert!(db.apps().unwrap().is_empty());
    assert!(db.approve(id).is_err(), "a denied request cannot be approved later");
}

#[test]
fn malformed_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = todo_db(dir.path());
    let app = SecretKey::from_seed([52; 32]);
    assert!(matches!(db.request_access(request("", &app)), Err(RequestError::BadName)));
    assert!(matches!(db.request_access(request("bad\nname", &app)), Err(RequestError::BadName)));
    assert!(matches!(
        db.request_access(request(&"x".repeat(65), &app)),
        Err(RequestError::BadName)
    ));
    let empty = AccessRequest { scopes: BTreeMap::new(), ..request("App", &app) };
    assert!(matches!(db.request_access(empty), Err(RequestError::BadScopes)));
    // Approving a request for a scope with no key yet fails and grants nothing.
    let unknown = AccessRequest {
        scopes: BTreeMap::from([(Name::new("mail").unwrap(), Rights::Read)]),
        ..request("Mail", &app)
    };
    let id = db.request_access(unknown).unwrap();
    assert!(db.approve(id).unwrap_err().to_string().contains("scope mail has no key"));
    assert!(db.apps().unwrap().is_empty());
}

#[test]
fn pinning_peers_are_authorised_without_any_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = todo_db(dir.path());
    let pinner = SecretKey::from_seed([53; 32]);
    db.add_pinner(pinner.public()).unwrap();
    let state = db.auth_state();
    assert!(state.is_pinner(&pinner.public()));
    assert!(
        state.scope_keys(&pinner, &db.scope_id(&Name::new("todo").unwrap()).unwrap(), 0).is_empty(),
        "no key for a pinner"
    );
    db.remove_pinner(pinner.public()).unwrap();
    assert!(!db.auth_state().is_pinner(&pinner.public()));
}
