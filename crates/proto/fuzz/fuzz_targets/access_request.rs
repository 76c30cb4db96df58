//! An app's access request, as the node's API receives it (`POST
//! /v0/apps/requests`: a JSON body with the app's name and, per scope, the
//! rights it asks for), recorded by `Database::request_access` and read back
//! by `Database::access_requests`. Nothing may panic; a request that is
//! accepted is listed, decoded from storage, exactly as recorded; it is
//! then denied so that the next input starts from the same state. The
//! database has the example todo schema: a request for a scope it lacks is
//! refused (`RequestError::UnknownScope`).

#![no_main]

use std::collections::BTreeMap;

use basic_proto::Name;
use basic_proto::Party;
use basic_proto::control::Rights;
use basic_proto::keys::SecretKey;
use basic_store::{AccessRequest, Format, Schema};
use libfuzzer_sys::fuzz_target;

/// The API's request body (field names and rights spelled as the node's).
#[derive(serde::Deserialize)]
struct Body {
    name: String,
    scopes: BTreeMap<String, String>,
}

#[path = "shared/world.rs"]
mod world;

fn request(data: &[u8]) -> Option<AccessRequest> {
    let body: Body = serde_json::from_slice(data).ok()?;
    let mut scopes = BTreeMap::new();
    for (scope, rights) in body.scopes {
        let rights = match rights.as_str() {
            "read" => Rights::Read,
            "read_write" => Rights::ReadWrite,
            _ => return None,
        };
        scopes.insert(Name::new(scope).ok()?, rights);
    }
    let app = Party::of(&SecretKey::from_seed([7; 32]));
    Some(AccessRequest { name: body.name, app, scopes })
}

/// A fresh world with the todo namespace.
fn todo_world() -> world::World {
    let world = world::fresh();
    let schema = Schema::parse(include_str!("../../../../examples/todo.toml"), Format::Toml)
        .expect("the example schema parses");
    world.db.apply_schema(schema).expect("the example schema applies");
    world
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else { return };
    let mut guard = world::lock();
    let db = &guard.get_or_insert_with(todo_world).db;
    let Ok(id) = db.request_access(request.clone()) else { return };
    let listed = db.access_requests().expect("stored requests decode");
    let (_, stored) = listed.iter().find(|(at, _)| *at == id).expect("the request is listed");
    assert_eq!(stored.name, request.name.trim());
    assert_eq!((stored.app, &stored.scopes), (request.app, &request.scopes));
    db.deny(id).expect("a pending request can be denied");
});
