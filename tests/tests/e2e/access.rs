//! Issue 13 item 3: an app asks a running device for access over the
//! network (`/basic/access/0`, no HTTP), with the access code `basic app
//! connect` prints; the user approves with `basic app approve`; the app's
//! poll brings the control log, from which it builds its replica. Forged,
//! misaddressed, oversized and garbage frames are refused, and so are asks
//! to a pinning peer. An ask made to A is relayed to B: the user sees it,
//! and denies or approves it, on B; the app learns the answer from A.

use std::collections::BTreeMap;

use basic_net::{Config, Keypair, Multiaddr, Net, PeerId, Protocol};
use basic_proto::control::Rights;
use basic_proto::{Name, SecretKey};
use basic_store::{
    AccessAnswer, AccessAsk, AccessCode, AccessDenial, AccessFrame, AccessPoll, AccessRefusal,
    AccessRelay, Database, Environment, MemStore, now_ms,
};

use super::harness::{BASIC, Data, SYNC_TIMEOUT, wait_for};
use super::pinner::authorised_pinner;
use super::two_devices::{device_of, join, wait_in_sync};

/// An app's network client: a bare libp2p node dialling `address`.
struct App {
    runtime: tokio::runtime::Runtime,
    net: Net,
    device: PeerId,
    key: SecretKey,
}

impl App {
    /// An app with the key of seed `[seed; 32]`, dialling `address`.
    fn new(address: &str, seed: u8) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let address: Multiaddr = address.parse().expect("address");
        let device = basic_net::peer_of(&address).expect("the address names the device");
        let mut config = Config::new(Keypair::generate_ed25519());
        config.peers = vec![address];
        let (net, _events) = runtime.block_on(basic_net::start(config)).expect("client");
        Self { runtime, net, device, key: SecretKey::from_seed([seed; 32]) }
    }

    /// Sends `frame` and reads the answer (an error if none came).
    fn send(&self, frame: Vec<u8>) -> Result<AccessAnswer, String> {
        let answer = self
            .runtime
            .block_on(self.net.request_on(Protocol::Access, self.device, frame))
            .map_err(|e| e.to_string())?;
        AccessAnswer::from_bytes(&answer, 8 << 20).map_err(|e| e.to_string())
    }

    fn ask(&self, name: &str) -> AccessAnswer {
        let scopes = BTreeMap::from([(Name::new("todo").expect("name"), Rights::ReadWrite)]);
        let ask =
            AccessAsk::sign(&self.key, &self.device.to_bytes(), name.into(), scopes, now_ms());
        self.send(AccessFrame::Ask(ask).to_bytes()).expect("an answer")
    }

    fn poll(&self) -> AccessAnswer {
        let poll = AccessPoll::sign(&self.key, &self.device.to_bytes(), now_ms());
        self.send(AccessFrame::Poll(poll).to_bytes()).expect("an answer")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.runtime.block_on(self.net.shutdown());
    }
}

#[test]
fn an_app_asks_over_the_network_and_builds_its_replica_once_approved() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let code: AccessCode = a_data.basic(&["app", "connect"]).ok().trim().parse().expect("code");
    assert!(code.addresses.iter().any(|address| address == a.address()), "{code:?}");

    let app = App::new(&code.addresses[0], 1);
    assert_eq!(app.ask("Groceries"), AccessAnswer::Pending);
    assert_eq!(app.poll(), AccessAnswer::Pending);
    let requests = a_data.basic(&["app", "requests"]).ok();
    assert!(requests.contains("\"Groceries\" asks for todo (read-write)"), "{requests}");
    let id = requests.split_whitespace().next().expect("request id");
    a_data.basic(&["app", "approve", id]).ok();

    let AccessAnswer::Granted(ops) = app.poll() else { panic!("the app is granted") };
    let view = tempfile::tempdir().expect("temp dir");
    let replica = Database::replicate_with_store(
        MemStore::new(),
        &view.path().join("view.sqlite"),
        code.database,
        &app.key,
        &ops,
        Environment::system(),
    )
    .expect("the app's replica");
    let todo = replica.scope_id(&Name::new("todo").expect("name")).expect("the todo schema");
    assert!(!replica.auth_state().scope_keys(&app.key, &todo, 0).is_empty(), "its key");
    let apps = a_data.basic(&["app", "list"]).ok();
    assert!(apps.contains("Groceries"), "{apps}");

    // Another app, denied: told so.
    let other = App::new(&code.addresses[0], 5);
    assert_eq!(other.ask("Tracker"), AccessAnswer::Pending);
    let requests = a_data.basic(&["app", "requests"]).ok();
    let id = requests.split_whitespace().next().expect("request id");
    assert!(a_data.basic(&["app", "deny", id]).ok().contains("denied \"Tracker\""));
    assert_eq!(other.poll(), AccessAnswer::Denied);
}

#[test]
fn forged_misaddressed_oversized_and_garbage_frames_are_refused_over_the_network() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let app = App::new(a.address(), 2);
    let refusal = |answer: Result<AccessAnswer, String>| match answer {
        Ok(AccessAnswer::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let scopes = BTreeMap::from([(Name::new("todo").expect("name"), Rights::Read)]);

    // Signed for another device, then forwarded here.
    let elsewhere = Keypair::generate_ed25519().public().to_peer_id().to_bytes();
    let ask = AccessAsk::sign(&app.key, &elsewhere, "App".into(), scopes.clone(), now_ms());
    assert_eq!(refusal(app.send(AccessFrame::Ask(ask).to_bytes())), AccessRefusal::BadSignature);
    // In another app's name.
    let victim = SecretKey::from_seed([4; 32]);
    let mut ask =
        AccessAsk::sign(&app.key, &app.device.to_bytes(), "App".into(), scopes.clone(), now_ms());
    ask.app = basic_proto::Party::of(&victim);
    assert_eq!(refusal(app.send(AccessFrame::Ask(ask).to_bytes())), AccessRefusal::BadSignature);
    // Over the frame cap, but under the transport's: a typed refusal.
    assert_eq!(refusal(app.send(vec![0x80; 9 << 10])), AccessRefusal::Oversized);
    // Over the transport's cap (64 KiB on this protocol): it never leaves
    // (the device would drop it unread).
    assert!(app.send(vec![0x80; 100 << 10]).is_err());
    // Garbage.
    assert!(matches!(refusal(app.send(vec![0xff; 40])), AccessRefusal::Malformed(_)));
    // Relays and denials in the app's own name, as if it were a device.
    let ask =
        AccessAsk::sign(&app.key, &app.device.to_bytes(), "App".into(), scopes.clone(), now_ms());
    let relay = AccessRelay::sign(&app.key, app.device.to_bytes(), ask.clone(), now_ms());
    let refused = refusal(app.send(AccessFrame::Relay(relay).to_bytes()));
    assert_eq!(refused, AccessRefusal::NotFromADevice);
    let denial = AccessDenial::sign(&app.key, app.key.public(), ask.id(), now_ms());
    let refused = refusal(app.send(AccessFrame::Denial(denial).to_bytes()));
    assert_eq!(refused, AccessRefusal::NotFromADevice);
    assert_eq!(app.poll(), AccessAnswer::Refused(AccessRefusal::NoRequest));

    // Nothing reached the user, and the node still answers.
    assert!(a_data.basic(&["app", "requests"]).ok().contains("no request waits"));
    assert_eq!(app.ask("App"), AccessAnswer::Pending);
}

#[test]
fn a_pinning_peer_refuses_to_answer_apps() {
    let a_data = Data::with_todo(BASIC);
    let (p_data, _pin, database) = authorised_pinner(&a_data);
    let p = p_data.pinner_up(&database);
    // The pinning peer answers nothing until a device gave it the log.
    let _a = a_data.up(&[p.address()]);
    let app = App::new(p.address(), 3);
    let scopes = BTreeMap::from([(Name::new("todo").expect("name"), Rights::Read)]);
    let answer = wait_for("the pinning peer answers", SYNC_TIMEOUT, || {
        let ask = AccessAsk::sign(
            &app.key,
            &app.device.to_bytes(),
            "App".into(),
            scopes.clone(),
            now_ms(),
        );
        app.send(AccessFrame::Ask(ask).to_bytes()).ok()
    });
    assert_eq!(answer, AccessAnswer::Refused(AccessRefusal::NotADevice));
    // Nor does it take relays between devices.
    let ask = AccessAsk::sign(&app.key, &app.device.to_bytes(), "App".into(), scopes, now_ms());
    let relay = AccessRelay::sign(&app.key, app.device.to_bytes(), ask, now_ms());
    let answer = app.send(AccessFrame::Relay(relay).to_bytes()).expect("an answer");
    assert_eq!(answer, AccessAnswer::Refused(AccessRefusal::NotADevice));
}

/// The id of the request of `name` once `basic app requests` lists it on
/// `data`'s device.
fn listed(data: &Data, name: &str) -> String {
    wait_for("the request shows on the device", SYNC_TIMEOUT, || {
        let requests = data.basic(&["app", "requests"]).ok();
        let line = requests.lines().find(|line| line.contains(&format!("\"{name}\"")))?;
        Some(line.split_whitespace().next()?.to_owned())
    })
}

#[test]
fn an_ask_to_a_is_answered_on_b_and_the_app_learns_it_from_a() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));
    wait_in_sync(&b, &device_of(&a));

    // Asked on A, denied on B: the app's poll at A answers Denied.
    let app = App::new(a.address(), 21);
    assert_eq!(app.ask("Tracker"), AccessAnswer::Pending);
    let id = listed(&b_data, "Tracker");
    assert_eq!(listed(&a_data, "Tracker"), id, "the same request on both devices");
    assert!(b_data.basic(&["app", "deny", &id]).ok().contains("denied \"Tracker\""));
    wait_for("A learns of the denial", SYNC_TIMEOUT, || {
        (app.poll() == AccessAnswer::Denied).then_some(())
    });
    assert!(a_data.basic(&["app", "requests"]).ok().contains("no request waits"));

    // Asked on A, approved on B: the grant reaches A by sync, and the
    // app's poll at A is granted; A lists the request no more.
    let other = App::new(a.address(), 22);
    assert_eq!(other.ask("Groceries"), AccessAnswer::Pending);
    let id = listed(&b_data, "Groceries");
    b_data.basic(&["app", "approve", &id]).ok();
    wait_for("the app's poll at A is granted", SYNC_TIMEOUT, || {
        matches!(other.poll(), AccessAnswer::Granted(_)).then_some(())
    });
    assert!(a_data.basic(&["app", "requests"]).ok().contains("no request waits"));
    let apps = a_data.basic(&["app", "list"]).ok();
    assert!(apps.contains("Groceries"), "{apps}");
}
