//! App access requests: asked, approved or denied, listed, and what each
//! app wrote.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use basic_proto::control::Rights;
use basic_proto::{Changes, KeyPart, LiteMap, Name, Party, RowKey, RowOp, SecretKey, Value};
use basic_store::{
    ACCESS_FRESHNESS_MS, AccessAnswer, AccessAsk, AccessDenial, AccessFrame, AccessPoll,
    AccessRefusal, AccessRelay, AccessRequest, Database, DeviceStore, Environment, LogWriter,
    MAX_ACCESS_FRAME, MAX_PENDING_REQUESTS, MemStore, REQUEST_TTL_MS, RequestError, Schema,
};

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
        cells: LiteMap::from_iter([(Name::new("name").unwrap(), Value::Text("Groceries".into()))]),
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
    assert_eq!(db.deny(id).unwrap().request.name, "Tracker");
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
    // A scope the database has no namespace for is refused at once.
    let unknown = AccessRequest {
        scopes: BTreeMap::from([(Name::new("mail").unwrap(), Rights::Read)]),
        ..request("Mail", &app)
    };
    assert!(matches!(
        db.request_access(unknown),
        Err(RequestError::UnknownScope(scope)) if scope.as_str() == "mail"
    ));
    assert!(db.access_requests().unwrap().is_empty());
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

/// What the device's libp2p peer id bytes would be; any bytes will do.
const DEVICE: &[u8] = b"\x00\x24\x08\x01\x12\x20the device's transport id.......";

/// A database whose clock the test moves.
struct Clocked {
    db: Database,
    now: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Clocked {
    fn new() -> Self {
        Self::at(basic_store::now_ms())
    }

    /// A database whose clock reads `now_ms`.
    fn at(now_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(now_ms));
        let clock = Arc::clone(&now);
        let environment =
            Environment::simulated(Arc::new(move || clock.load(Ordering::SeqCst)), [1; 32]);
        let store = DeviceStore::open(&dir.path().join("replica"), 8 << 20).unwrap();
        let db = Database::with_environment(store, &dir.path().join("view.sqlite"), environment)
            .unwrap();
        let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
        db.apply_schema(Schema::from_file(schema).unwrap()).unwrap();
        Self { db, now, _dir: dir }
    }

    fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    fn ask(&self, app: &SecretKey, name: &str, scopes: &[(&str, Rights)]) -> AccessAsk {
        AccessAsk::sign(app, DEVICE, name.into(), scopes_of(scopes), self.now())
    }

    fn answer(&self, frame: &AccessFrame) -> AccessAnswer {
        self.db.answer_access(&frame.to_bytes(), DEVICE).answer
    }

    fn poll(&self, app: &SecretKey) -> AccessAnswer {
        self.answer(&AccessFrame::Poll(AccessPoll::sign(app, DEVICE, self.now())))
    }
}

fn scopes_of(scopes: &[(&str, Rights)]) -> BTreeMap<Name, Rights> {
    scopes.iter().map(|(s, r)| (Name::new(*s).unwrap(), *r)).collect()
}

fn refused(answer: AccessAnswer) -> AccessRefusal {
    match answer {
        AccessAnswer::Refused(refusal) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_network_ask_waits_is_approved_and_the_app_builds_its_replica_from_the_answer() {
    let device = Clocked::new();
    let app = SecretKey::from_seed([60; 32]);
    let ask = AccessFrame::Ask(device.ask(&app, "Groceries", &[("todo", Rights::ReadWrite)]));
    assert_eq!(device.answer(&ask), AccessAnswer::Pending);
    assert_eq!(
        device.answer(&ask),
        AccessAnswer::Pending,
        "the same ask again is the same request"
    );
    assert_eq!(device.poll(&app), AccessAnswer::Pending);
    let pending = device.db.access_requests().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1.name, "Groceries");
    assert_eq!(pending[0].1.app, Party::of(&app));

    device.db.approve(pending[0].0).unwrap();
    let AccessAnswer::Granted(ops) = device.poll(&app) else { panic!("granted") };
    assert_eq!(device.db.apps().unwrap()[0].name.as_deref(), Some("Groceries"));
    // Polling again still answers with the grant; replaying the ask is refused.
    assert!(matches!(device.poll(&app), AccessAnswer::Granted(_)));
    assert_eq!(refused(device.answer(&ask)), AccessRefusal::Replayed);

    let view = tempfile::tempdir().unwrap();
    let replica = Database::replicate_with_store(
        MemStore::new(),
        &view.path().join("view.sqlite"),
        device.db.id(),
        &app,
        &ops,
        Environment::system(),
    )
    .unwrap();
    let todo = replica.scope_id(&Name::new("todo").unwrap()).expect("the app reads the schema");
    assert!(!replica.auth_state().scope_keys(&app, &todo, 0).is_empty(), "the app holds the key");
}

#[test]
fn a_denial_is_told_and_the_denied_ask_cannot_be_replayed() {
    let device = Clocked::new();
    let app = SecretKey::from_seed([61; 32]);
    let ask = AccessFrame::Ask(device.ask(&app, "Tracker", &[("todo", Rights::Read)]));
    assert_eq!(device.answer(&ask), AccessAnswer::Pending);
    let (id, _) = device.db.access_requests().unwrap().remove(0);
    device.db.deny(id).unwrap();
    assert_eq!(device.poll(&app), AccessAnswer::Denied);
    // The adversary replays the very ask, to have it pending again.
    assert_eq!(refused(device.answer(&ask)), AccessRefusal::Replayed);
    assert!(device.db.access_requests().unwrap().is_empty());
    assert_eq!(device.poll(&app), AccessAnswer::Denied, "a denial is remembered");
    // Once the ask is too old to be replayed, it is stale.
    device.advance(ACCESS_FRESHNESS_MS + 1);
    assert_eq!(refused(device.answer(&ask)), AccessRefusal::Stale);
    assert_eq!(device.poll(&app), AccessAnswer::Denied);
    // The app itself may ask again, with a new ask.
    let again = AccessFrame::Ask(device.ask(&app, "Tracker", &[("todo", Rights::Read)]));
    assert_eq!(device.answer(&again), AccessAnswer::Pending);
    assert_eq!(device.poll(&app), AccessAnswer::Pending);
}

#[test]
fn an_unanswered_request_expires_and_the_app_is_told() {
    let device = Clocked::new();
    let app = SecretKey::from_seed([62; 32]);
    let ask = AccessFrame::Ask(device.ask(&app, "Slow", &[("todo", Rights::Read)]));
    assert_eq!(device.answer(&ask), AccessAnswer::Pending);
    let (id, _) = device.db.access_requests().unwrap().remove(0);
    device.advance(REQUEST_TTL_MS + 1);
    assert!(device.db.approve(id).is_err(), "an expired request cannot be approved");
    assert!(device.db.apps().unwrap().is_empty());
    assert!(device.db.access_requests().unwrap().is_empty(), "an expired request is not shown");
    assert_eq!(device.poll(&app), AccessAnswer::Expired);
    assert_eq!(refused(device.answer(&ask)), AccessRefusal::Stale);
}

#[test]
fn a_grant_made_on_another_device_answers_the_poll() {
    let device = Clocked::new();
    let app = SecretKey::from_seed([63; 32]);
    let ask = AccessFrame::Ask(device.ask(&app, "Notes", &[("todo", Rights::Read)]));
    assert_eq!(device.answer(&ask), AccessAnswer::Pending);
    // The grant arrives as it would by sync from another device.
    device.db.grant(Party::of(&app), Name::new("todo").unwrap(), Rights::ReadWrite).unwrap();
    assert!(matches!(device.poll(&app), AccessAnswer::Granted(_)));
    assert!(device.db.access_requests().unwrap().is_empty(), "answered elsewhere");
    // An app asking again for what it holds already is answered at once.
    device.advance(1);
    let ask = AccessFrame::Ask(device.ask(&app, "Notes", &[("todo", Rights::Read)]));
    assert!(matches!(device.answer(&ask), AccessAnswer::Granted(_)));
}

#[test]
fn forged_stale_and_misaddressed_frames_are_refused() {
    let device = Clocked::new();
    let app = SecretKey::from_seed([64; 32]);
    let adversary = SecretKey::from_seed([65; 32]);
    let todo = [("todo", Rights::ReadWrite)];

    // The adversary signs an ask in the app's name with its own key.
    let mut forged = device.ask(&adversary, "Groceries", &todo);
    forged.app = Party::of(&app);
    assert_eq!(refused(device.answer(&AccessFrame::Ask(forged))), AccessRefusal::BadSignature);
    // It alters a genuine ask: more rights, another name.
    let mut altered = device.ask(&app, "Groceries", &[("todo", Rights::Read)]);
    altered.scopes = scopes_of(&todo);
    assert_eq!(refused(device.answer(&AccessFrame::Ask(altered))), AccessRefusal::BadSignature);
    // It forwards an ask the app addressed to another device.
    let elsewhere =
        AccessAsk::sign(&app, b"another device", "G".into(), scopes_of(&todo), device.now());
    assert_eq!(refused(device.answer(&AccessFrame::Ask(elsewhere))), AccessRefusal::BadSignature);
    // It polls as the app.
    let mut poll = AccessPoll::sign(&adversary, DEVICE, device.now());
    poll.app = app.public();
    let forged_poll = AccessFrame::Poll(poll);
    assert_eq!(refused(device.answer(&forged_poll)), AccessRefusal::BadSignature);
    // Old or future-dated frames.
    for issued in [device.now() - ACCESS_FRESHNESS_MS - 1, device.now() + ACCESS_FRESHNESS_MS + 1] {
        let ask = AccessAsk::sign(&app, DEVICE, "G".into(), scopes_of(&todo), issued);
        assert_eq!(refused(device.answer(&AccessFrame::Ask(ask))), AccessRefusal::Stale);
        let poll = AccessPoll::sign(&app, DEVICE, issued);
        assert_eq!(refused(device.answer(&AccessFrame::Poll(poll))), AccessRefusal::Stale);
    }
    assert!(device.db.access_requests().unwrap().is_empty());
    assert_eq!(device.poll(&app), AccessAnswer::Refused(AccessRefusal::NoRequest));
}

#[test]
fn bad_asks_and_bad_bytes_are_refused_with_their_reason() {
    let device = Clocked::new();
    let app = SecretKey::from_seed([66; 32]);
    let answer = |name: &str, scopes: &[(&str, Rights)]| {
        refused(device.answer(&AccessFrame::Ask(device.ask(&app, name, scopes))))
    };
    let todo = [("todo", Rights::Read)];
    assert_eq!(answer("", &todo), AccessRefusal::BadName);
    assert_eq!(answer(" \t ", &todo), AccessRefusal::BadName);
    assert_eq!(answer("a\u{7}b", &todo), AccessRefusal::BadName);
    assert_eq!(answer(&"x".repeat(65), &todo), AccessRefusal::BadName);
    assert_eq!(answer("App", &[]), AccessRefusal::BadScopes);
    let names: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    let many: Vec<(&str, Rights)> = names.iter().map(|n| (n.as_str(), Rights::Read)).collect();
    assert_eq!(answer("App", &many), AccessRefusal::BadScopes);
    assert_eq!(
        answer("App", &[("todo", Rights::Read), ("mail", Rights::Read)]),
        AccessRefusal::UnknownScope("mail".into())
    );
    let huge = vec![0x80; MAX_ACCESS_FRAME + 1];
    assert_eq!(refused(device.db.answer_access(&huge, DEVICE).answer), AccessRefusal::Oversized);
    for garbage in [&b""[..], b"\xff\xff", b"\x83\x00\x40\x40", b"\x83\x07\x41\x00\x40"] {
        assert!(
            matches!(
                refused(device.db.answer_access(garbage, DEVICE).answer),
                AccessRefusal::Malformed(_)
            ),
            "{garbage:?}"
        );
    }
    assert!(device.db.access_requests().unwrap().is_empty(), "nothing was recorded");
}

#[test]
fn pending_requests_are_capped() {
    let device = Clocked::new();
    for i in 0..MAX_PENDING_REQUESTS {
        let mut seed = [0; 32];
        seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
        seed[31] = 1;
        let app = SecretKey::from_seed(seed);
        let ask = AccessFrame::Ask(device.ask(&app, "Flood", &[("todo", Rights::Read)]));
        assert_eq!(device.answer(&ask), AccessAnswer::Pending);
    }
    let late = SecretKey::from_seed([67; 32]);
    let ask = AccessFrame::Ask(device.ask(&late, "Late", &[("todo", Rights::Read)]));
    assert_eq!(refused(device.answer(&ask)), AccessRefusal::TooMany);
    // They expire, and make room.
    device.advance(REQUEST_TTL_MS + 1);
    let ask = AccessFrame::Ask(device.ask(&late, "Late", &[("todo", Rights::Read)]));
    assert_eq!(device.answer(&ask), AccessAnswer::Pending);
}

/// protocol-spec/vectors/access.json, replayed against a real device.
#[test]
fn the_access_vectors_are_answered_as_the_spec_says() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../protocol-spec/vectors/access.json");
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let bytes = |value: &serde_json::Value| hex::decode(value.as_str().unwrap()).unwrap();
    let now = vectors["now_ms"].as_u64().unwrap();
    let transport = bytes(&vectors["device_transport"]);
    let ask = bytes(&vectors["ask"]["signed"]["frame"]);
    let poll = bytes(&vectors["poll"]["signed"]["frame"]);

    let device = Clocked::at(now);
    assert_eq!(device.db.answer_access(&ask, &transport).answer, AccessAnswer::Pending);
    assert_eq!(device.db.answer_access(&poll, &transport).answer, AccessAnswer::Pending);
    assert_eq!(device.db.access_requests().unwrap()[0].1.name, "Groceries");

    for answer in vectors["answers"].as_array().unwrap() {
        let decoded = AccessAnswer::from_bytes(&bytes(&answer["bytes"]), 1 << 20).unwrap();
        assert_eq!(decoded.to_bytes(), bytes(&answer["bytes"]));
        let kind = match decoded {
            AccessAnswer::Pending => "pending",
            AccessAnswer::Granted(_) => "granted",
            AccessAnswer::Denied => "denied",
            AccessAnswer::Expired => "expired",
            AccessAnswer::Refused(_) => "refused",
        };
        assert_eq!(kind, answer["answer"]);
    }

    for case in vectors["refused"].as_array().unwrap() {
        let device = Clocked::at(now);
        if !case["before"].as_str().unwrap().is_empty() && case["refusal"] == "replayed" {
            assert_eq!(device.db.answer_access(&ask, &transport).answer, AccessAnswer::Pending);
            let (id, _) = device.db.access_requests().unwrap().remove(0);
            device.db.deny(id).unwrap();
        }
        if case["refusal"] == "revoked" {
            let AccessFrame::Ask(asked) = AccessFrame::from_bytes(&ask).unwrap() else {
                panic!("the valid ask")
            };
            let todo = Name::new("todo").unwrap();
            device.db.grant(asked.app, todo.clone(), Rights::Read).unwrap();
            device.db.revoke(asked.app.key, todo).unwrap();
        }
        let got = refused(device.db.answer_access(&bytes(&case["frame"]), &transport).answer);
        let (name, detail) = match &got {
            AccessRefusal::BadSignature => ("bad-signature", None),
            AccessRefusal::Stale => ("stale", None),
            AccessRefusal::Replayed => ("replayed", None),
            AccessRefusal::UnknownScope(scope) => ("unknown-scope", Some(scope.as_str())),
            AccessRefusal::Revoked(scope) => ("revoked", Some(scope.as_str())),
            AccessRefusal::BadName => ("bad-name", None),
            AccessRefusal::BadScopes => ("bad-scopes", None),
            AccessRefusal::Oversized => ("oversized", None),
            AccessRefusal::Malformed(_) => ("malformed", None),
            AccessRefusal::NoRequest => ("no-request", None),
            other => panic!("{}: unexpected {other:?}", case["why"]),
        };
        assert_eq!(name, case["refusal"], "{}", case["why"]);
        assert_eq!(detail, case["detail"].as_str(), "{}", case["why"]);
    }

    // Relays: a device whose log holds the relaying device (and a removed one).
    let relays = &vectors["relays"];
    let party = |keys: &serde_json::Value| Party {
        key: basic_proto::PublicKey::from_bytes(bytes(&keys["key"]).try_into().unwrap()).unwrap(),
        sealing: basic_proto::SealingKey(bytes(&keys["sealing"]).try_into().unwrap()),
    };
    let with_devices = || {
        let device = Clocked::at(now);
        device.db.add_device(party(&relays["relaying_device"])).unwrap();
        let removed = party(&relays["removed_device"]);
        device.db.add_device(removed).unwrap();
        device.db.remove_device(removed.key).unwrap();
        device
    };
    let relay = bytes(&relays["relay"]["frame"]);
    let denial = bytes(&relays["denial"]["frame"]);
    let device = with_devices();
    assert_eq!(device.db.answer_access(&relay, b"another").answer, AccessAnswer::Pending);
    assert_eq!(device.db.access_requests().unwrap()[0].1.name, "Groceries");
    assert_eq!(device.db.answer_access(&denial, b"another").answer, AccessAnswer::Pending);
    assert!(device.db.access_requests().unwrap().is_empty());
    assert_eq!(device.db.answer_access(&poll, &transport).answer, AccessAnswer::Denied);
    for case in relays["refused"].as_array().unwrap() {
        let device = with_devices();
        if !case["before"].as_str().unwrap().is_empty() {
            assert_eq!(device.db.answer_access(&relay, b"another").answer, AccessAnswer::Pending);
            let (id, _) = device.db.access_requests().unwrap().remove(0);
            device.db.deny(id).unwrap();
        }
        let got = refused(device.db.answer_access(&bytes(&case["frame"]), b"another").answer);
        let (name, detail) = match &got {
            AccessRefusal::NotFromADevice => ("not-from-a-device", None),
            AccessRefusal::BadSignature => ("bad-signature", None),
            AccessRefusal::Stale => ("stale", None),
            AccessRefusal::Replayed => ("replayed", None),
            AccessRefusal::UnknownScope(scope) => ("unknown-scope", Some(scope.as_str())),
            AccessRefusal::Oversized => ("oversized", None),
            other => panic!("{}: unexpected {other:?}", case["why"]),
        };
        assert_eq!(name, case["refusal"], "{}", case["why"]);
        assert_eq!(detail, case["detail"].as_str(), "{}", case["why"]);
        assert!(device.db.access_requests().unwrap().is_empty(), "{}", case["why"]);
    }
}

#[test]
fn a_removed_device_answers_no_app() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = todo_db(a_dir.path());
    let invite = a.invite(vec![], 60_000).unwrap();
    let request = Database::prepare_join(b_dir.path(), &invite).unwrap();
    a.accept_join(&request).unwrap();
    let b = Database::finish_join(b_dir.path(), &a.control_ops().unwrap()).unwrap();
    let app = SecretKey::from_seed([68; 32]);
    let ask = |db: &Database| {
        let ask = AccessAsk::sign(
            &app,
            DEVICE,
            "App".into(),
            scopes_of(&[("todo", Rights::Read)]),
            basic_store::now_ms(),
        );
        db.answer_access(&AccessFrame::Ask(ask).to_bytes(), DEVICE).answer
    };
    assert_eq!(ask(&b), AccessAnswer::Pending, "a device answers");

    a.remove_device(b.device()).unwrap();
    b.ingest_ops(&a.control_ops().unwrap()).unwrap();
    assert!(b.is_removed());
    // Whatever it is sent, even a valid poll from an app it knows.
    assert_eq!(refused(ask(&b)), AccessRefusal::NotADevice);
    let poll = AccessPoll::sign(&app, DEVICE, basic_store::now_ms());
    assert_eq!(
        refused(b.answer_access(&AccessFrame::Poll(poll).to_bytes(), DEVICE).answer),
        AccessRefusal::NotADevice
    );
    assert_eq!(refused(b.answer_access(b"\xff", DEVICE).answer), AccessRefusal::NotADevice);
}

/// Two devices of one database, A and B, with the todo namespace.
fn two_devices(a_dir: &Path, b_dir: &Path) -> (Database, Database) {
    let a = todo_db(a_dir);
    let invite = a.invite(vec![], 60_000).unwrap();
    let request = Database::prepare_join(b_dir, &invite).unwrap();
    a.accept_join(&request).unwrap();
    let b = Database::finish_join(b_dir, &a.control_ops().unwrap()).unwrap();
    (a, b)
}

fn ask_at(db: &Database, app: &SecretKey, name: &str) -> basic_store::Answered {
    let ask = AccessAsk::sign(
        app,
        DEVICE,
        name.into(),
        scopes_of(&[("todo", Rights::ReadWrite)]),
        basic_store::now_ms(),
    );
    db.answer_access(&AccessFrame::Ask(ask).to_bytes(), DEVICE)
}

fn poll_at(db: &Database, app: &SecretKey) -> AccessAnswer {
    let poll = AccessPoll::sign(app, DEVICE, basic_store::now_ms());
    db.answer_access(&AccessFrame::Poll(poll).to_bytes(), DEVICE).answer
}

#[test]
fn an_ask_is_relayed_to_another_device_and_denied_there_the_app_is_told_where_it_asked() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = two_devices(a_dir.path(), b_dir.path());
    let app = SecretKey::from_seed([70; 32]);
    let asked = ask_at(&a, &app, "Groceries");
    assert_eq!(asked.answer, AccessAnswer::Pending);
    let relay = asked.relay.expect("a new ask is relayed");
    let AccessFrame::Relay(decoded) = AccessFrame::from_bytes(&relay).unwrap() else {
        panic!("a relay")
    };
    assert_eq!((decoded.device, decoded.transport.as_slice()), (a.device(), DEVICE));
    let again = a.answer_access(&AccessFrame::Ask(decoded.ask.clone()).to_bytes(), DEVICE);
    assert_eq!(again.relay, None, "the same ask again is not relayed again");

    // B takes it as if the app had asked there: the user sees it on B.
    assert_eq!(b.answer_access(&relay, b"B's transport").answer, AccessAnswer::Pending);
    let listed = b.access_requests().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].1.name.as_str(), listed[0].1.app), ("Groceries", Party::of(&app)));
    assert_eq!(listed[0].0, a.access_requests().unwrap()[0].0, "the same request id everywhere");
    assert_eq!(b.answer_access(&relay, b"B").answer, AccessAnswer::Pending, "taken once");
    assert_eq!(b.access_requests().unwrap().len(), 1);

    // Denied on B: A learns it from B's denial, and tells the app.
    let denied = b.deny(listed[0].0).unwrap();
    let denial = denied.relay.expect("a network ask's denial is relayed");
    assert_eq!(poll_at(&a, &app), AccessAnswer::Pending);
    assert_eq!(a.answer_access(&denial, DEVICE).answer, AccessAnswer::Pending);
    assert!(a.access_requests().unwrap().is_empty(), "A lists it no more");
    assert_eq!(poll_at(&a, &app), AccessAnswer::Denied);
    assert_eq!(poll_at(&b, &app), AccessAnswer::Denied);

    // Replays: the relay at B, the denial at A, the ask itself at A.
    assert_eq!(refused(b.answer_access(&relay, b"B").answer), AccessRefusal::Replayed);
    assert_eq!(refused(a.answer_access(&denial, DEVICE).answer), AccessRefusal::Replayed);
    assert_eq!(refused(a.answer_access(&relay, DEVICE).answer), AccessRefusal::Replayed);
    let AccessFrame::Relay(relay) = AccessFrame::from_bytes(&relay).unwrap() else { panic!() };
    let replayed = AccessFrame::Ask(relay.ask).to_bytes();
    assert_eq!(refused(a.answer_access(&replayed, DEVICE).answer), AccessRefusal::Replayed);
    assert!(a.access_requests().unwrap().is_empty() && b.access_requests().unwrap().is_empty());
}

#[test]
fn an_approval_on_another_device_closes_the_request_where_the_app_asked() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = two_devices(a_dir.path(), b_dir.path());
    let app = SecretKey::from_seed([71; 32]);
    let relay = ask_at(&a, &app, "Notes").relay.unwrap();
    assert_eq!(b.answer_access(&relay, b"B").answer, AccessAnswer::Pending);
    let (id, _) = b.access_requests().unwrap().remove(0);
    b.approve(id).unwrap();
    // The grants reach A by sync; A lists the request no more, and the
    // app's poll at A is granted.
    a.ingest_ops(&b.control_ops().unwrap()).unwrap();
    assert!(a.access_requests().unwrap().is_empty(), "covered by the app's grants");
    assert!(matches!(poll_at(&a, &app), AccessAnswer::Granted(_)));
    let apps = a.apps().unwrap();
    assert_eq!(apps[0].name.as_deref(), Some("Notes"), "A keeps the name it was asked under");
    // Approving (or denying) it on A too is no longer possible.
    assert!(a.deny(id).is_err());
}

#[test]
fn relays_and_denials_from_anyone_but_a_device_or_bad_ones_are_refused() {
    let device = Clocked::new();
    let db = &device.db;
    let relayer = SecretKey::from_seed([80; 32]);
    db.add_device(Party::of(&relayer)).unwrap();
    let removed = SecretKey::from_seed([81; 32]);
    db.add_device(Party::of(&removed)).unwrap();
    db.remove_device(removed.public()).unwrap();
    let pinner = SecretKey::from_seed([82; 32]);
    db.add_pinner(pinner.public()).unwrap();
    let granted = SecretKey::from_seed([83; 32]);
    db.grant(Party::of(&granted), Name::new("todo").unwrap(), Rights::Read).unwrap();
    let stranger = SecretKey::from_seed([84; 32]);
    let app = SecretKey::from_seed([85; 32]);
    let elsewhere = b"\x00\x24the device the app asked".to_vec();
    let todo = [("todo", Rights::ReadWrite)];
    let ask = || AccessAsk::sign(&app, &elsewhere, "Todo".into(), scopes_of(&todo), device.now());
    let relay = |by: &SecretKey, ask: AccessAsk, issued: u64| {
        AccessFrame::Relay(AccessRelay::sign(by, elsewhere.clone(), ask, issued)).to_bytes()
    };
    let answer = |frame: &[u8]| device.db.answer_access(frame, DEVICE).answer;

    // Signed by whoever is not a device of the log.
    for by in [&stranger, &removed, &pinner, &granted, &app] {
        let frame = relay(by, ask(), device.now());
        assert_eq!(refused(answer(&frame)), AccessRefusal::NotFromADevice);
        let denial = AccessDenial::sign(by, app.public(), ask().id(), device.now());
        let frame = AccessFrame::Denial(denial).to_bytes();
        assert_eq!(refused(answer(&frame)), AccessRefusal::NotFromADevice);
    }
    // A device's relay altered after signing, or naming a device it is not
    // signed by.
    let mut altered = AccessRelay::sign(&relayer, elsewhere.clone(), ask(), device.now());
    altered.issued_ms += 1;
    let altered = AccessFrame::Relay(altered).to_bytes();
    assert_eq!(refused(answer(&altered)), AccessRefusal::BadSignature);
    let mut posing = AccessRelay::sign(&stranger, elsewhere.clone(), ask(), device.now());
    posing.device = relayer.public();
    let posing = AccessFrame::Relay(posing).to_bytes();
    assert_eq!(refused(answer(&posing)), AccessRefusal::BadSignature);
    // An inner ask forged in the app's name, or altered.
    let mut forged =
        AccessAsk::sign(&stranger, &elsewhere, "Todo".into(), scopes_of(&todo), device.now());
    forged.app = Party::of(&app);
    let frame = relay(&relayer, forged, device.now());
    assert_eq!(refused(answer(&frame)), AccessRefusal::BadSignature);
    // An ask addressed to another transport than the relay carries.
    let misaddressed = AccessRelay::sign(&relayer, b"another".to_vec(), ask(), device.now());
    let frame = AccessFrame::Relay(misaddressed).to_bytes();
    assert_eq!(refused(answer(&frame)), AccessRefusal::BadSignature);
    // Stale relays, or fresh relays of stale asks.
    for issued in [device.now() - ACCESS_FRESHNESS_MS - 1, device.now() + ACCESS_FRESHNESS_MS + 1] {
        assert_eq!(refused(answer(&relay(&relayer, ask(), issued))), AccessRefusal::Stale);
        let old = AccessAsk::sign(&app, &elsewhere, "Todo".into(), scopes_of(&todo), issued);
        assert_eq!(refused(answer(&relay(&relayer, old, device.now()))), AccessRefusal::Stale);
        let denial = AccessDenial::sign(&relayer, app.public(), ask().id(), issued);
        let frame = AccessFrame::Denial(denial).to_bytes();
        assert_eq!(refused(answer(&frame)), AccessRefusal::Stale);
    }
    // Every check an ask gets.
    let bad = AccessAsk::sign(&app, &elsewhere, "".into(), scopes_of(&todo), device.now());
    assert_eq!(refused(answer(&relay(&relayer, bad, device.now()))), AccessRefusal::BadName);
    let mail = scopes_of(&[("mail", Rights::Read)]);
    let bad = AccessAsk::sign(&app, &elsewhere, "Mail".into(), mail, device.now());
    assert_eq!(
        refused(answer(&relay(&relayer, bad, device.now()))),
        AccessRefusal::UnknownScope("mail".into())
    );
    // Oversized.
    let huge = AccessAsk::sign(&app, &elsewhere, "x".repeat(8000), scopes_of(&todo), 0);
    let frame = relay(&relayer, huge, device.now());
    assert!(frame.len() > MAX_ACCESS_FRAME);
    assert_eq!(refused(answer(&frame)), AccessRefusal::Oversized);
    assert!(db.access_requests().unwrap().is_empty(), "nothing reached the user");

    // The genuine relay is taken; replayed once its ask is answered, it is
    // refused.
    let genuine = relay(&relayer, ask(), device.now());
    assert_eq!(answer(&genuine), AccessAnswer::Pending);
    let (id, _) = db.access_requests().unwrap().remove(0);
    db.deny(id).unwrap();
    assert_eq!(refused(answer(&genuine)), AccessRefusal::Replayed);
    assert!(db.access_requests().unwrap().is_empty());
}

#[test]
fn a_denial_of_an_older_ask_leaves_the_newer_one_waiting() {
    let device = Clocked::new();
    let relayer = SecretKey::from_seed([90; 32]);
    device.db.add_device(Party::of(&relayer)).unwrap();
    let app = SecretKey::from_seed([91; 32]);
    let old = device.ask(&app, "Old", &[("todo", Rights::Read)]);
    device.advance(1);
    let new = AccessFrame::Ask(device.ask(&app, "New", &[("todo", Rights::Read)]));
    assert_eq!(device.answer(&new), AccessAnswer::Pending);
    let denial = AccessDenial::sign(&relayer, app.public(), old.id(), device.now());
    let frame = AccessFrame::Denial(denial).to_bytes();
    assert_eq!(device.db.answer_access(&frame, DEVICE).answer, AccessAnswer::Pending);
    assert_eq!(device.db.access_requests().unwrap()[0].1.name, "New");
    assert_eq!(device.poll(&app), AccessAnswer::Pending);
    // The denied ask cannot come back.
    assert_eq!(refused(device.answer(&AccessFrame::Ask(old))), AccessRefusal::Replayed);
}
