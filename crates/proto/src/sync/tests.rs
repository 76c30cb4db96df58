//! Two peers over a map-backed store, exchanging real frames.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::message::Message;
use super::*;
use crate::aead::ScopeKey;
use crate::commit::{Commit, CommitId};
use crate::control::testkit::{T0, World, key};
use crate::control::{AuthState, ControlLog, ControlOp, OpId, Payload, Rights};
use crate::keys::{DatabaseId, KeyCache, PublicKey, SecretKey};
use crate::scope::ScopeId;

/// One author's log: the commits at each seq, with their scope.
type Log = BTreeMap<u64, Vec<(CommitId, ScopeId, Vec<u8>)>>;

/// A replica as a map: the control log and every commit by author and seq.
#[derive(Clone)]
struct MapStore {
    log: ControlLog,
    auth: Arc<AuthState>,
    commits: BTreeMap<PublicKey, Log>,
    keys: Arc<KeyCache>,
}

impl MapStore {
    fn new(genesis: &ControlOp) -> Self {
        let mut log = ControlLog::new(genesis.database());
        log.insert(genesis.clone(), u64::MAX).unwrap();
        let auth = Arc::new(log.state());
        Self { log, auth, commits: BTreeMap::new(), keys: Arc::default() }
    }

    fn ids(&self) -> BTreeSet<CommitId> {
        self.commits.values().flat_map(|log| log.values().flatten().map(|(id, _, _)| *id)).collect()
    }
}

impl SyncStore for MapStore {
    fn database(&self) -> DatabaseId {
        self.log.database()
    }

    fn keys(&self) -> &KeyCache {
        &self.keys
    }

    fn auth(&self) -> Arc<AuthState> {
        self.auth.clone()
    }

    fn control_heads(&self) -> Result<Vec<OpId>, StoreFailure> {
        Ok(self.log.heads())
    }

    fn has_op(&self, id: &OpId) -> Result<bool, StoreFailure> {
        Ok(self.log.get(id).is_some())
    }

    fn ops_since(&self, heads: &[OpId]) -> Result<Vec<Vec<u8>>, StoreFailure> {
        Ok(self.log.since(heads).iter().map(|op| op.as_bytes().to_vec()).collect())
    }

    fn ingest_ops(&mut self, ops: &[Vec<u8>]) -> Result<Stored, StoreFailure> {
        let stored = admit_ops(&mut self.log, ops, u64::MAX);
        self.auth = Arc::new(self.log.state());
        Ok(stored)
    }

    fn entries(&self, view: &View) -> Result<Vec<Entry>, StoreFailure> {
        let mut entries = Vec::new();
        for (author, log) in &self.commits {
            let mut held = Fingerprint::default();
            let mut max = 0;
            for (seq, ids) in log {
                for (id, scope, _) in ids {
                    if view.contains(scope) {
                        held.add(id);
                        max = *seq;
                    }
                }
            }
            if held.count > 0 {
                entries.push(Entry { author: *author, max, held });
            }
        }
        entries.sort_by(|a, b| a.author.as_bytes().cmp(b.author.as_bytes()));
        Ok(entries)
    }

    fn fingerprint(
        &self,
        view: &View,
        author: &PublicKey,
        lo: u64,
        hi: u64,
    ) -> Result<Fingerprint, StoreFailure> {
        let mut held = Fingerprint::default();
        for ids in self
            .commits
            .get(author)
            .into_iter()
            .flat_map(|log| log.range(lo..=hi))
            .map(|(_, ids)| ids)
        {
            ids.iter()
                .filter(|(_, scope, _)| view.contains(scope))
                .for_each(|(id, _, _)| held.add(id));
        }
        Ok(held)
    }

    fn commits(
        &self,
        view: &View,
        author: &PublicKey,
        lo: u64,
        hi: u64,
        budget: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<bool, StoreFailure> {
        let mut used = 0;
        for ids in self
            .commits
            .get(author)
            .into_iter()
            .flat_map(|log| log.range(lo..=hi))
            .map(|(_, ids)| ids)
        {
            for (_, scope, bytes) in ids {
                if !view.contains(scope) {
                    continue;
                }
                if used >= budget {
                    return Ok(false);
                }
                used += bytes.len();
                out.push(bytes.clone());
            }
        }
        Ok(true)
    }

    fn ingest_commits(&mut self, commits: &[Vec<u8>]) -> Result<Stored, StoreFailure> {
        let mut stored = Stored::default();
        for bytes in commits {
            let Ok(commit) = Commit::decode_with(bytes, &KeyCache::default()) else {
                stored.invalid += 1;
                continue;
            };
            let header = commit.header();
            if self.auth.check_commit(header, commit.id()).is_err() {
                stored.refused += 1;
                continue;
            }
            let at = self.commits.entry(header.author).or_default().entry(header.seq).or_default();
            if !at.iter().any(|(id, _, _)| *id == commit.id()) {
                at.push((commit.id(), header.scope, bytes.clone()));
                stored.new += 1;
            }
        }
        Ok(stored)
    }
}

/// One node's end of a connection: its requester and its responder.
struct Peer {
    store: MapStore,
    requester: Requester,
    responder: Responder,
    events: Vec<Event>,
}

struct Pair {
    a: Peer,
    b: Peer,
    now: u64,
    rng: ChaCha20Rng,
    /// Frames sent, both ways, in bytes.
    bytes: usize,
    /// Request/response exchanges.
    exchanges: usize,
}

fn peer(
    store: MapStore,
    me: &SecretKey,
    my_id: u8,
    their_id: u8,
    view: View,
    shown: BTreeMap<PublicKey, (u64, u64)>,
    known_peer: Option<PublicKey>,
) -> Peer {
    let config = RequesterConfig {
        key: me.clone(),
        database: store.database(),
        local_transport: vec![my_id],
        peer_transport: vec![their_id],
        view,
        resync_ms: 30_000,
        nonce: [my_id; 32],
        known_peer,
    };
    Peer {
        requester: Requester::new(config, shown),
        responder: Responder::new(me.clone(), vec![my_id], vec![their_id]),
        store,
        events: Vec::new(),
    }
}

impl Pair {
    fn new(a: MapStore, a_key: &SecretKey, b: MapStore, b_key: &SecretKey) -> Self {
        Self::with_views(a, a_key, View::All, b, b_key, View::All)
    }

    fn with_views(
        a: MapStore,
        a_key: &SecretKey,
        a_view: View,
        b: MapStore,
        b_key: &SecretKey,
        b_view: View,
    ) -> Self {
        // Each knows the other's transport identity as the other's principal.
        let a = peer(a, a_key, 1, 2, a_view, BTreeMap::new(), Some(b_key.public()));
        let b = peer(b, b_key, 2, 1, b_view, BTreeMap::new(), Some(a_key.public()));
        Self { a, b, now: T0, rng: ChaCha20Rng::seed_from_u64(9), bytes: 0, exchanges: 0 }
    }

    /// One request of `from` answered by `to`; false when `from` had none.
    fn exchange(
        from: &mut Peer,
        to: &mut Peer,
        now: u64,
        rng: &mut ChaCha20Rng,
        bytes: &mut usize,
    ) -> bool {
        let Some(request) = from.requester.poll_request(&mut from.store, now).unwrap() else {
            from.events.extend(std::iter::from_fn(|| from.requester.poll_event()));
            return false;
        };
        let response = match to.responder.handle(&mut to.store, &request, rng).unwrap() {
            Answer::Reply(frame) | Answer::Close(frame, _) => frame,
        };
        *bytes += request.len() + response.len();
        from.requester.handle_response(&mut from.store, &response, now).unwrap();
        from.events.extend(std::iter::from_fn(|| from.requester.poll_event()));
        true
    }

    /// Runs both requesters until neither has anything to send now.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let a =
                Self::exchange(&mut self.a, &mut self.b, self.now, &mut self.rng, &mut self.bytes);
            let b =
                Self::exchange(&mut self.b, &mut self.a, self.now, &mut self.rng, &mut self.bytes);
            self.exchanges += usize::from(a) + usize::from(b);
            if !a && !b {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    /// Moves time to the next round and runs it, counting only `a`'s side.
    fn next_round_of_a(&mut self) -> (usize, usize) {
        self.now += 30_000;
        let (bytes, exchanges) = (self.bytes, self.exchanges);
        while Self::exchange(&mut self.a, &mut self.b, self.now, &mut self.rng, &mut self.bytes) {
            self.exchanges += 1;
        }
        (self.bytes - bytes, self.exchanges - exchanges)
    }
}

/// A world with a `todo` scope at epoch 0 readable by the laptop and a phone.
struct Setup {
    world: World,
    todo: ScopeKey,
    phone: SecretKey,
    store: MapStore,
}

fn setup() -> Setup {
    let mut world = World::new();
    let todo = ScopeKey::generate(&mut world.rng);
    let laptop = world.laptop.clone();
    let rotation = world.rotation(&laptop, "todo", 0, &todo, &[&laptop]);
    world.issue(&laptop, Payload::RotateKey(rotation));
    let phone = key(3);
    let add = world.add_device(&laptop, &phone, &[("todo", 0, &todo)]);
    world.issue(&laptop, add);
    let mut store = MapStore::new(&world.genesis);
    let ops: Vec<Vec<u8>> = world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    store.ingest_ops(&ops).unwrap();
    Setup { world, todo, phone, store }
}

/// `n` commits by `author` after `prev`, ingested into `store`.
fn write(
    s: &mut Setup,
    store: &mut MapStore,
    author: &SecretKey,
    prev: Option<Commit>,
    n: u64,
) -> Option<Commit> {
    let mut last = prev;
    for _ in 0..n {
        let at = T0 + 1_000_000 + last.as_ref().map_or(0, |c| c.header().seq);
        let commit = s.world.commit(author, last.as_ref(), at, "todo", 0, &s.todo);
        assert_eq!(store.ingest_commits(&[commit.as_bytes().to_vec()]).unwrap().new, 1);
        last = Some(commit);
    }
    last
}

#[test]
fn first_sync_then_one_round_trip_when_nothing_is_new() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    let b = s.store.clone();
    write(&mut s, &mut a, &laptop, None, 50);
    let mut pair = Pair::new(a, &laptop, b, &phone);
    pair.drive();
    assert_eq!(pair.a.store.ids(), pair.b.store.ids());
    assert!(pair.b.events.iter().any(|e| matches!(e, Event::Synced { received: 50, .. })));

    let (bytes, exchanges) = pair.next_round_of_a();
    assert_eq!(exchanges, 1, "steady state is one round trip");
    assert!(bytes < 400, "steady state costs {bytes} bytes");
}

#[test]
fn one_new_commit_is_found_in_one_round_trip() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    let last = write(&mut s, &mut a, &laptop, None, 200);
    let mut pair = Pair::new(a, &laptop, s.store.clone(), &phone);
    pair.drive();
    let mut b_store = pair.b.store.clone();
    write(&mut s, &mut b_store, &laptop, last, 1);
    pair.b.store = b_store;
    let (_, exchanges) = pair.next_round_of_a();
    assert_eq!(exchanges, 1);
    assert_eq!(pair.a.store.ids(), pair.b.store.ids());
}

/// Issue 14: after a round that pulled commits, the puller's next summary
/// lists no change for them — both sides keep its list with the entries
/// of the reply in place — so a one-commit resync carries one entry (the
/// responder's), not one per author the last round brought; and control
/// heads that did not change since the last summary are not sent again.
#[test]
fn after_a_pull_the_next_change_list_is_empty() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    let last = write(&mut s, &mut a, &laptop, None, 20);
    let mut pair = Pair::new(a, &laptop, s.store.clone(), &phone);
    pair.drive();
    let mut a_store = pair.a.store.clone();
    write(&mut s, &mut a_store, &laptop, last, 1);
    pair.a.store = a_store;
    pair.now += 30_000;
    let request = pair.b.requester.poll_request(&mut pair.b.store, pair.now).unwrap().unwrap();
    let Ok(Message::Summary { entries, delta, control, .. }) =
        Message::decode(&request, usize::MAX, &KeyCache::default())
    else {
        panic!("not a summary");
    };
    assert!(delta, "a change list");
    assert_eq!(entries, Some(Vec::new()), "nothing changed since the laptop's reply");
    assert_eq!(control, Vec::new(), "unchanged control heads go as none");
    let response =
        match pair.a.responder.handle(&mut pair.a.store, &request, &mut pair.rng).unwrap() {
            Answer::Reply(frame) => frame,
            Answer::Close(_, violation) => panic!("{violation:?}"),
        };
    pair.b.requester.handle_response(&mut pair.b.store, &response, pair.now).unwrap();
    assert_eq!(pair.a.store.ids(), pair.b.store.ids(), "the new commit came in that round trip");
    assert!(pair.b.requester.poll_request(&mut pair.b.store, pair.now).unwrap().is_none());
}

#[test]
fn both_sides_write_while_apart_and_converge() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    let mut b = s.store.clone();
    write(&mut s, &mut a, &laptop, None, 30);
    write(&mut s, &mut b, &phone, None, 40);
    let mut pair = Pair::new(a, &laptop, b, &phone);
    pair.drive();
    assert_eq!(pair.a.store.ids().len(), 70);
    assert_eq!(pair.a.store.ids(), pair.b.store.ids());
}

#[test]
fn a_fork_and_a_hole_are_reconciled() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    let mut b = s.store.clone();
    let base = write(&mut s, &mut a, &laptop, None, 100);
    // b holds the same log but misses seq 37 (a hole), and the laptop forked
    // at seq 101: a and b hold different commits there.
    for ids in a.commits[&laptop.public()].values() {
        for (_, _, bytes) in ids {
            b.ingest_commits(std::slice::from_ref(bytes)).unwrap();
        }
    }
    b.commits.get_mut(&laptop.public()).unwrap().remove(&37);
    write(&mut s, &mut a, &laptop, base.clone(), 1);
    s.world.rng = ChaCha20Rng::seed_from_u64(77);
    write(&mut s, &mut b, &laptop, base, 1);
    let mut pair = Pair::new(a, &laptop, b, &phone);
    pair.drive();
    assert_eq!(pair.a.store.ids().len(), 102);
    assert_eq!(pair.a.store.ids(), pair.b.store.ids());
}

#[test]
fn an_app_receives_only_its_scopes() {
    let mut s = setup();
    let (laptop, app) = (s.world.laptop.clone(), key(9));
    let mail = ScopeKey::generate(&mut s.world.rng);
    let rotation = s.world.rotation(&laptop, "mail", 0, &mail, &[&laptop]);
    s.world.issue(&laptop, Payload::RotateKey(rotation));
    let grant = s.world.grant(&laptop, &app, "todo", Rights::ReadWrite, 0, &s.todo);
    s.world.issue(&laptop, grant);
    let ops: Vec<Vec<u8>> = s.world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    let mut a = s.store.clone();
    a.ingest_ops(&ops).unwrap();
    let app_store = a.clone();
    let last = write(&mut s, &mut a, &laptop, None, 5);
    let mail_commit = s.world.commit(&laptop, last.as_ref(), T0 + 2_000_000, "mail", 0, &mail);
    a.ingest_commits(&[mail_commit.as_bytes().to_vec()]).unwrap();
    let todo = View::Scopes([super::super::control::testkit::scope("todo")].into());
    let mut pair = Pair::with_views(a, &laptop, View::All, app_store, &app, todo.clone());
    pair.drive();
    assert_eq!(pair.b.store.ids().len(), 5, "the app got the todo commits only");
    // Asking for everything still yields only the granted scopes.
    pair.b.requester =
        peer(pair.b.store.clone(), &app, 2, 1, View::All, BTreeMap::new(), Some(laptop.public()))
            .requester;
    pair.drive();
    assert_eq!(pair.b.store.ids().len(), 5);
    let _ = todo;
}

#[test]
fn a_stranger_is_served_nothing() {
    let s = setup();
    let stranger = key(42);
    let mut pair = Pair::new(s.store.clone(), &s.world.laptop, s.store.clone(), &stranger);
    let mut a = s.store.clone();
    let mut world = s.world;
    let commit = world.commit(&world.laptop.clone(), None, T0 + 5, "todo", 0, &s.todo);
    a.ingest_commits(&[commit.as_bytes().to_vec()]).unwrap();
    pair.a.store = a;
    pair.drive();
    assert!(pair.b.store.ids().is_empty());
    assert!(pair.b.requester.is_closed());
    assert!(pair.b.events.iter().any(|e| matches!(e, Event::Closed { .. })));
}

#[test]
fn garbage_and_out_of_order_frames_are_violations() {
    let s = setup();
    let mut responder = Responder::new(s.world.laptop.clone(), vec![1], vec![2]);
    let mut store = s.store.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for frame in [vec![0xff, 0x00], vec![], Message::Ack { stored: 1 }.encode()] {
        assert!(matches!(
            responder.handle(&mut store, &frame, &mut rng).unwrap(),
            Answer::Close(..)
        ));
    }
    let summary = Message::Summary {
        view: View::All,
        digest: [0; 16],
        entries: Some(Vec::new()),
        delta: false,
        control: Vec::new(),
        sign: false,
    };
    match responder.handle(&mut store, &summary.encode(), &mut rng).unwrap() {
        Answer::Close(_, violation) => assert_eq!(violation.code, ErrorCode::Unexpected),
        Answer::Reply(_) => panic!("served a summary before the proof"),
    }
}

#[test]
fn a_rolled_back_peer_is_detected() {
    let (mut again, _, _) = rolled_back(false);
    again.drive();
    assert!(
        again.a.events.iter().any(|e| matches!(e, Event::RolledBack { before: (10, 10), .. })),
        "{:?}",
        again.a.events
    );
}

/// Runs `a`'s requester against `b`'s responder until it has nothing to
/// send or is closed, passing every answer through `tamper`; returns the
/// requests it sent.
fn run_a_through(pair: &mut Pair, mut tamper: impl FnMut(Message) -> Message) -> Vec<Message> {
    let mut requests = Vec::new();
    for _ in 0..1_000 {
        let a = &mut pair.a;
        let Some(request) = a.requester.poll_request(&mut a.store, pair.now).unwrap() else {
            break;
        };
        requests.push(Message::decode(&request, usize::MAX, &KeyCache::default()).unwrap());
        let response = match pair.b.responder.handle(&mut pair.b.store, &request, &mut pair.rng) {
            Ok(Answer::Reply(frame) | Answer::Close(frame, _)) => frame,
            Err(error) => panic!("{error:?}"),
        };
        let message = Message::decode(&response, usize::MAX, &KeyCache::default()).unwrap();
        a.requester.handle_response(&mut a.store, &tamper(message).encode(), pair.now).unwrap();
        a.events.extend(std::iter::from_fn(|| a.requester.poll_event()));
        if a.requester.is_closed() {
            break;
        }
    }
    requests
}

/// `message` without its signature if it is a reply.
fn unsigned(message: Message) -> Message {
    match message {
        Message::Reply { digest, entries, commits, more, control, .. } => {
            Message::Reply { digest, entries, commits, more, control, signature: None }
        }
        other => other,
    }
}

/// The summary `a` sends when its next round is due, and `b`'s reply,
/// which `a` takes.
fn next_summary_of_a(pair: &mut Pair) -> (Message, Message) {
    // Ends the round under way, if any: the next is due an interval later.
    assert!(pair.a.requester.poll_request(&mut pair.a.store, pair.now).unwrap().is_none());
    pair.now += 30_000;
    let request = pair.a.requester.poll_request(&mut pair.a.store, pair.now).unwrap().unwrap();
    let summary = Message::decode(&request, usize::MAX, &KeyCache::default()).unwrap();
    let response = match pair.b.responder.handle(&mut pair.b.store, &request, &mut pair.rng) {
        Ok(Answer::Reply(frame)) => frame,
        other => panic!("{other:?}"),
    };
    pair.a.requester.handle_response(&mut pair.a.store, &response, pair.now).unwrap();
    pair.a.events.extend(std::iter::from_fn(|| pair.a.requester.poll_event()));
    (summary, Message::decode(&response, usize::MAX, &KeyCache::default()).unwrap())
}

/// Whether `a`'s session ended, refusing a reply as a bad proof.
fn closed_for_bad_proof(pair: &Pair) -> bool {
    pair.a.requester.is_closed()
        && pair
            .a
            .events
            .iter()
            .any(|e| matches!(e, Event::Closed { reason } if reason.starts_with("BadProof")))
}

/// Issue 14: a reply with the requester's own digest, which the
/// requester did not ask to be signed, carries no signature (65 bytes
/// less), and the requester takes it; a differing reply is signed.
#[test]
fn an_equal_reply_is_unsigned_unless_asked() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    write(&mut s, &mut a, &laptop, None, 5);
    let mut pair = Pair::new(a, &laptop, s.store.clone(), &phone);
    pair.drive();
    let (summary, reply) = next_summary_of_a(&mut pair);
    assert!(matches!(summary, Message::Summary { sign: false, .. }), "{summary:?}");
    let Message::Reply { entries, signature, .. } = reply else { panic!("{reply:?}") };
    assert!(entries.is_empty());
    assert_eq!(signature, None, "an equal reply nobody asked to sign");
    assert!(!pair.a.requester.is_closed(), "{:?}", pair.a.events);
    let mut b_store = pair.b.store.clone();
    write(&mut s, &mut b_store, &phone, None, 1);
    pair.b.store = b_store;
    let (summary, reply) = next_summary_of_a(&mut pair);
    assert!(matches!(summary, Message::Summary { sign: false, .. }), "{summary:?}");
    assert!(matches!(reply, Message::Reply { signature: Some(_), .. }), "{reply:?}");
    assert_eq!(pair.a.store.ids(), pair.b.store.ids());
}

/// A phone to which the laptop showed 10 commits of the laptop's log,
/// and the laptop holding only the first 7 of them now (say, restored from
/// a backup) — and, if `phone_too`, the phone as well: their digests are
/// then equal, yet the laptop shows less than before. `a` is the phone,
/// knowing what the laptop showed; `b` the laptop. Returns the pair and the
/// laptop's and the phone's keys.
fn rolled_back(phone_too: bool) -> (Pair, PublicKey, PublicKey) {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    write(&mut s, &mut a, &laptop, None, 10);
    let mut pair = Pair::new(s.store.clone(), &phone, a.clone(), &laptop);
    pair.drive();
    let shown = pair.a.requester.shown().clone();
    assert_eq!(shown[&laptop.public()], (10, 10));
    let mut rolled = a;
    for seq in 8..=10 {
        rolled.commits.get_mut(&laptop.public()).unwrap().remove(&seq);
    }
    let phone_holds = if phone_too { rolled.clone() } else { pair.a.store.clone() };
    let mut again = Pair::new(phone_holds, &phone, rolled, &laptop);
    again.a = peer(again.a.store, &phone, 1, 2, View::All, shown, Some(laptop.public()));
    (again, laptop.public(), phone.public())
}

/// Commits past an ended author's cut-off stop counting on every replica
/// that learns of the end: a peer that then shows less of that author than
/// it did, but no less than the requester itself counts, rolled nothing
/// back (sync.md §5). The same drop of an author still a member is one.
#[test]
fn an_ended_author_shown_less_after_its_end_is_no_rollback() {
    for ended in [true, false] {
        let mut s = setup();
        let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
        let tablet = key(5);
        let add = s.world.add_device(&laptop, &tablet, &[("todo", 0, &s.todo)]);
        let added = s.world.issue(&laptop, add);
        let mut b = s.store.clone();
        b.ingest_ops(&[added.as_bytes().to_vec()]).unwrap();
        let seventh = write(&mut s, &mut b, &tablet, None, 7);
        write(&mut s, &mut b, &tablet, seventh.clone(), 3);
        let mut a = s.store.clone();
        a.ingest_ops(&[added.as_bytes().to_vec()]).unwrap();
        let mut pair = Pair::new(a, &phone, b.clone(), &laptop);
        pair.drive();
        let shown = pair.a.requester.shown().clone();
        assert_eq!(shown[&tablet.public()], (10, 10));

        // The laptop removes the tablet at its 7th commit; both replicas
        // learn it and stop counting the 8th to the 10th.
        let mut a = pair.a.store.clone();
        if ended {
            let next = ScopeKey::generate(&mut s.world.rng);
            let rotation = s.world.rotation(&laptop, "todo", 1, &next, &[&laptop, &phone]);
            let remove = s.world.issue(
                &laptop,
                Payload::RemoveDevice {
                    device: tablet.public(),
                    cutoff: crate::control::testkit::cutoff_at(seventh.as_ref()),
                    rotations: BTreeMap::from([(crate::control::testkit::scope("todo"), rotation)]),
                },
            );
            for store in [&mut a, &mut b] {
                store.ingest_ops(&[remove.as_bytes().to_vec()]).unwrap();
            }
        }
        for store in [&mut a, &mut b] {
            for seq in 8..=10 {
                store.commits.get_mut(&tablet.public()).unwrap().remove(&seq);
            }
        }
        let mut again = Pair::new(a, &phone, b, &laptop);
        again.a = peer(again.a.store, &phone, 1, 2, View::All, shown, Some(laptop.public()));
        again.drive();
        let reported = again.a.events.iter().any(|e| matches!(e, Event::RolledBack { .. }));
        assert_eq!(reported, !ended, "ended: {ended}, {:?}", again.a.events);
        assert!(!again.a.requester.is_closed());
    }
}

/// Issue 14: a requester holding less of an author than the peer showed
/// before asks for the signature (a reply with its own digest would be a
/// rollback); the peer signs its equal reply, and the rollback is
/// reported with that signed reply as evidence.
#[test]
fn a_requester_below_what_was_shown_asks_and_gets_evidence() {
    let (mut pair, laptop, phone) = rolled_back(true);
    let requests = run_a_through(&mut pair, |message| message);
    assert!(
        matches!(
            requests.iter().find(|r| r.name() == "summary"),
            Some(Message::Summary { sign: true, .. })
        ),
        "{requests:?}"
    );
    let rolled_back: Vec<&Event> =
        pair.a.events.iter().filter(|e| matches!(e, Event::RolledBack { .. })).collect();
    let [Event::RolledBack { author, before, now, evidence }] = rolled_back[..] else {
        panic!("{:?}", pair.a.events);
    };
    assert_eq!((*author, *before, *now), (laptop, (10, 10), (7, 7)));
    let Ok(Message::Reply { entries, signature: Some(signature), digest, .. }) =
        Message::decode(evidence, usize::MAX, &KeyCache::default())
    else {
        panic!("the evidence is a signed reply");
    };
    assert!(entries.is_empty(), "the digests were equal");
    let signed = proof::heads_message(pair.a.store.database(), &phone, &digest, &entries);
    laptop.verify(crate::keys::SigningContext::SyncHeads, &signed, &signature).unwrap();
    assert!(!pair.a.requester.is_closed());
}

/// Adversary: a responder that strips the signature from a reply that
/// needs one — an equal reply the requester asked to be signed, or a
/// reply whose digest differs — is refused (bad proof): the session
/// ends, no rollback is reported without evidence, and nothing of the
/// reply is stored. So is an unsigned equal reply that lists entries.
#[test]
fn a_responder_stripping_a_needed_signature_is_refused() {
    // Asked: an equal reply that would show a rollback.
    let (mut pair, _, _) = rolled_back(true);
    run_a_through(&mut pair, unsigned);
    assert!(closed_for_bad_proof(&pair), "{:?}", pair.a.events);
    assert!(!pair.a.events.iter().any(|e| matches!(e, Event::RolledBack { .. })));
    assert_eq!(pair.a.requester.shown().values().next(), Some(&(10, 10)), "kept as it was");

    // Not asked, but the digests differ: the reply brings a commit.
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    let last = write(&mut s, &mut a, &laptop, None, 3);
    let mut pair = Pair::new(s.store.clone(), &phone, a.clone(), &laptop);
    pair.drive();
    let mut b_store = pair.b.store.clone();
    write(&mut s, &mut b_store, &laptop, last, 1);
    pair.b.store = b_store;
    pair.now += 30_000;
    let requests = run_a_through(&mut pair, unsigned);
    assert!(matches!(requests[..], [Message::Summary { sign: false, .. }]), "{requests:?}");
    assert!(closed_for_bad_proof(&pair), "{:?}", pair.a.events);
    assert_eq!(pair.a.store.ids().len(), 3, "nothing of the refused reply was stored");

    // Not asked, equal digests, but entries listed without a signature.
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    write(&mut s, &mut a, &laptop, None, 3);
    let mut pair = Pair::new(a.clone(), &phone, a.clone(), &laptop);
    pair.drive();
    pair.now += 30_000;
    let listed = a.entries(&View::All).unwrap();
    run_a_through(&mut pair, |message| match unsigned(message) {
        Message::Reply { digest, commits, more, control, signature, .. } => {
            Message::Reply { digest, entries: listed.clone(), commits, more, control, signature }
        }
        other => other,
    });
    assert!(closed_for_bad_proof(&pair), "{:?}", pair.a.events);
}

#[test]
fn an_author_the_peer_lacks_is_not_counted_as_shown() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let empty = s.store.clone();
    let mut holding = s.store.clone();
    write(&mut s, &mut holding, &laptop, None, 4);
    // Only the holder's requester runs: the peer lists nothing of the
    // laptop, which it does not hold — not "equal".
    let mut pair = Pair::new(holding, &laptop, empty, &phone);
    pair.next_round_of_a();
    assert_eq!(pair.a.requester.shown().get(&laptop.public()), None);
    // Once the peer holds it, the next round shows it.
    pair.drive();
    pair.next_round_of_a();
    assert_eq!(pair.a.requester.shown().get(&laptop.public()), Some(&(4, 4)));
}

#[test]
fn a_new_device_unknown_to_the_peer_sends_its_prelude() {
    let mut s = setup();
    let (laptop, tablet) = (s.world.laptop.clone(), key(4));
    let stale = s.store.clone();
    let add = s.world.add_device(&laptop, &tablet, &[("todo", 0, &s.todo)]);
    s.world.issue(&laptop, add);
    let ops: Vec<Vec<u8>> = s.world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    let mut fresh = s.store.clone();
    fresh.ingest_ops(&ops).unwrap();
    write(&mut s, &mut fresh, &laptop, None, 3);
    let mut pair = Pair::new(fresh, &tablet, stale, &laptop);
    pair.drive();
    assert!(pair.b.store.auth().is_device(&tablet.public()));
    assert_eq!(pair.b.store.ids().len(), 3);
}

/// `commit` as a live push carries it.
fn outgoing(commit: &Commit) -> Outgoing {
    Outgoing {
        scope: commit.header().scope,
        author: commit.header().author,
        bytes: commit.as_bytes().to_vec(),
    }
}

#[test]
fn live_pushes_reach_the_peer_but_not_their_author() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut pair = Pair::new(s.store.clone(), &laptop, s.store.clone(), &phone);
    pair.drive();
    let commit = s.world.commit(&laptop, None, T0 + 7, "todo", 0, &s.todo);
    pair.a.store.ingest_commits(&[commit.as_bytes().to_vec()]).unwrap();
    pair.a.requester.push(&pair.a.store, Vec::new(), vec![outgoing(&commit)]);
    pair.drive();
    assert_eq!(pair.b.store.ids().len(), 1);
    // The phone's own commit is not pushed back to it.
    let own = s.world.commit(&phone, None, T0 + 9, "todo", 0, &s.todo);
    pair.a.store.ingest_commits(&[own.as_bytes().to_vec()]).unwrap();
    pair.a.requester.push(&pair.a.store, Vec::new(), vec![outgoing(&own)]);
    assert_eq!(pair.a.requester.poll_request(&mut pair.a.store, pair.now).unwrap(), None);
}

#[test]
fn a_lost_push_is_sent_again_after_a_back_off() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut pair = Pair::new(s.store.clone(), &laptop, s.store.clone(), &phone);
    pair.drive();
    for at in [T0 + 7, T0 + 8] {
        let commit = s.world.commit(&laptop, None, at, "todo", 0, &s.todo);
        pair.a.store.ingest_commits(&[commit.as_bytes().to_vec()]).unwrap();
        pair.a.requester.push(&pair.a.store, Vec::new(), vec![outgoing(&commit)]);
    }
    let now = pair.now;
    let frame = pair.a.requester.poll_request(&mut pair.a.store, now).unwrap().unwrap();
    match Message::decode(&frame, message::MAX_FRAME_BYTES, &KeyCache::default()).unwrap() {
        Message::Push { commits, .. } => assert_eq!(commits.len(), 2, "queued pushes go together"),
        other => panic!("{other:?}"),
    }
    pair.a.requester.handle_failure(now);
    assert_eq!(pair.a.requester.poll_request(&mut pair.a.store, now).unwrap(), None, "backs off");
    assert_eq!(pair.a.requester.poll_timeout(), Some(now + requester::RETRY_MS));
    pair.now += requester::RETRY_MS;
    pair.drive();
    assert_eq!(pair.b.store.ids().len(), 2);
}

/// sync.md §6: what a device wrote while its session with a peer was
/// down was never pushed, and the peer's own session already ran its
/// round. The first summary of the device's next session shows it: the
/// peer's responder asks for a round of the peer's own at once (once per
/// session), which fetches it.
#[test]
fn a_peer_back_with_writes_it_could_not_push_is_pulled_from_at_once() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut pair = Pair::new(s.store.clone(), &laptop, s.store.clone(), &phone);
    pair.drive();
    assert!(!pair.a.responder.take_pull_wanted() && !pair.b.responder.take_pull_wanted());
    // The laptop writes while its session with the phone is down.
    let last = write(&mut s, &mut pair.a.store, &laptop, None, 3);
    // Its new session: a new requester, and a new responder for it.
    let again =
        peer(s.store.clone(), &laptop, 1, 2, View::All, BTreeMap::new(), Some(phone.public()));
    pair.a.requester = again.requester;
    pair.b.responder = Responder::new(phone.clone(), vec![2], vec![1]);
    while Pair::exchange(&mut pair.a, &mut pair.b, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert!(pair.b.responder.take_pull_wanted(), "the laptop's first summary shows more");
    // The phone's session pulls now, not at its interval.
    pair.b.requester.resync_now();
    while Pair::exchange(&mut pair.b, &mut pair.a, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert_eq!(pair.b.store.ids(), pair.a.store.ids());
    // Later summaries of the session are not compared: no round per round
    // (a write in flight shows in a summary too).
    write(&mut s, &mut pair.a.store, &laptop, last, 1);
    pair.now += 30_000;
    while Pair::exchange(&mut pair.a, &mut pair.b, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert!(!pair.b.responder.take_pull_wanted());
}

/// A requester whose first summary shows less than the responder holds
/// (or the same) gives the responder nothing to pull.
#[test]
fn a_peer_behind_gives_nothing_to_pull() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut ahead = s.store.clone();
    write(&mut s, &mut ahead, &laptop, None, 3);
    let mut pair = Pair::new(ahead, &laptop, s.store.clone(), &phone);
    while Pair::exchange(&mut pair.b, &mut pair.a, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert_eq!(pair.b.store.ids().len(), 3);
    assert!(!pair.a.responder.take_pull_wanted(), "the phone showed nothing the laptop lacks");
}

/// A push whose commit the responder refuses — here a new device's, ahead
/// of the operation that adds it — is acknowledged, and the responder asks
/// for a round of its own: the pusher holds what makes it acceptable.
#[test]
fn a_push_with_refused_commits_asks_for_a_pull() {
    let mut s = setup();
    let (laptop, phone, tablet) = (s.world.laptop.clone(), s.phone.clone(), key(4));
    let mut pair = Pair::new(s.store.clone(), &laptop, s.store.clone(), &phone);
    pair.drive();
    let add = s.world.add_device(&laptop, &tablet, &[("todo", 0, &s.todo)]);
    s.world.issue(&laptop, add);
    let ops: Vec<Vec<u8>> = s.world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    pair.a.store.ingest_ops(&ops).unwrap();
    let commit = s.world.commit(&tablet, None, T0 + 7, "todo", 0, &s.todo);
    assert_eq!(pair.a.store.ingest_commits(&[commit.as_bytes().to_vec()]).unwrap().new, 1);
    // The operation went in a push that was lost with its session.
    pair.a.requester.push(&pair.a.store, Vec::new(), vec![outgoing(&commit)]);
    while Pair::exchange(&mut pair.a, &mut pair.b, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert!(pair.b.store.ids().is_empty(), "refused: the phone does not know the tablet");
    assert!(pair.b.responder.take_pull_wanted());
    pair.b.requester.resync_now();
    while Pair::exchange(&mut pair.b, &mut pair.a, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert_eq!(pair.b.store.ids(), pair.a.store.ids(), "the round brought the op, then the commit");
}

/// `n` commits by `author` of one row whose text is `size` bytes: a few
/// fill a reply's budget.
fn write_large(s: &mut Setup, store: &mut MapStore, author: &SecretKey, n: u64, size: usize) {
    use crate::change::{Changes, RowOp};
    use crate::commit::CommitDraft;
    use crate::value::Value;
    use crate::value::{KeyPart, RowKey};
    let mut prev: Option<Commit> = None;
    for seq in 1..=n {
        let changes = Changes::new(vec![RowOp::Upsert {
            table: crate::control::testkit::name("todo.items"),
            key: RowKey::single(KeyPart::Integer(seq as i64)),
            generation: 1,
            cells: crate::LiteMap::from_iter([(
                crate::control::testkit::name("title"),
                Value::Text("x".repeat(size)),
            )]),
        }])
        .unwrap();
        let draft = CommitDraft {
            database: s.world.db,
            seq,
            prev: prev.as_ref().map(Commit::id),
            hlc: crate::hlc::Hlc { wall_ms: T0 + seq, counter: 0 },
            scope: crate::control::testkit::scope("todo"),
            epoch: 0,
        };
        let commit = Commit::create(author, draft, &changes, &s.todo, &mut s.world.rng).unwrap();
        assert_eq!(store.ingest_commits(&[commit.as_bytes().to_vec()]).unwrap().new, 1);
        prev = Some(commit);
    }
}

/// A first sync of several authors, each needing several replies: every
/// reply brings commits, and the round ends holding everything.
#[test]
fn a_first_sync_of_several_large_logs_completes_in_one_session() {
    let mut s = setup();
    let (laptop, phone, tablet) = (s.world.laptop.clone(), s.phone.clone(), key(4));
    let add = s.world.add_device(&laptop, &tablet, &[("todo", 0, &s.todo)]);
    s.world.issue(&laptop, add);
    let ops: Vec<Vec<u8>> = s.world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    s.store.ingest_ops(&ops).unwrap();
    let mut full = s.store.clone();
    write_large(&mut s, &mut full, &laptop, 12, 200_000);
    write_large(&mut s, &mut full, &phone, 12, 200_000);
    let mut pair = Pair::new(full, &laptop, s.store.clone(), &tablet);
    while Pair::exchange(&mut pair.b, &mut pair.a, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert_eq!(pair.b.store.ids(), pair.a.store.ids());
    // Six commits fill a reply's 1 MiB: four replies, none wasted. (When
    // both sides kept the laptop's and the phone's full entries after a
    // partial reply, the tablet's change list, which could not say it held
    // nothing of the phone yet, was refused every other time: six replies,
    // and three such refusals ended a larger first sync.)
    let synced = pair.b.events.iter().find_map(|e| match e {
        Event::Synced { received, round_trips } => Some((*received, *round_trips)),
        _ => None,
    });
    assert_eq!(synced, Some((24, 4)), "{:?}", pair.b.events);
}

#[test]
fn a_peer_that_freezes_mid_sync_costs_back_offs_and_nothing_is_lost() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut b = s.store.clone();
    write(&mut s, &mut b, &phone, None, 40);
    // B stops answering after `answered` of A's requests, for a while
    // (the transport's timeout reports each unanswered request), then
    // answers again: wherever the freeze falls, it costs A back-offs, never
    // a busy retry or a wrong state, and A ends with all of B's log.
    for answered in 0..3 {
        let mut pair = Pair::new(s.store.clone(), &laptop, b.clone(), &phone);
        let (mut served, mut unanswered) = (0, 0);
        for _ in 0..1_000 {
            let now = pair.now;
            let Some(request) = pair.a.requester.poll_request(&mut pair.a.store, now).unwrap()
            else {
                match pair.a.requester.poll_timeout() {
                    Some(at) if pair.a.store.ids() != pair.b.store.ids() => {
                        pair.now = at.max(now + 1);
                        continue;
                    }
                    _ => break,
                }
            };
            if served == answered && unanswered < 5 {
                unanswered += 1;
                pair.a.requester.handle_failure(now);
                assert_eq!(pair.a.requester.poll_request(&mut pair.a.store, now).unwrap(), None);
                let retry = pair.a.requester.poll_timeout().expect("a retry is scheduled");
                assert!(retry > now, "no busy retry");
                pair.now = retry;
                continue;
            }
            served += 1;
            let answer = match pair.b.responder.handle(&mut pair.b.store, &request, &mut pair.rng) {
                Ok(Answer::Reply(frame) | Answer::Close(frame, _)) => frame,
                Err(error) => panic!("{error:?}"),
            };
            pair.a.requester.handle_response(&mut pair.a.store, &answer, now).unwrap();
        }
        assert_eq!(unanswered, 5, "the freeze fell after {answered} answers");
        assert_eq!(pair.a.store.ids(), pair.b.store.ids(), "freeze after {answered} answers");
    }
}

#[test]
fn a_peer_claiming_an_endless_log_costs_bounded_work() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let mut a = s.store.clone();
    write(&mut s, &mut a, &laptop, None, 3);
    let b = a.clone();
    let mut pair = Pair::new(a, &laptop, b, &phone);
    pair.drive();
    pair.now += 30_000;
    let now = pair.now;
    assert!(pair.a.requester.poll_request(&mut pair.a.store, now).unwrap().is_some());
    // The phone answers the summary with a signed claim of a log reaching u64::MAX.
    let entries = vec![Entry {
        author: laptop.public(),
        max: u64::MAX,
        held: Fingerprint { count: 7, sum: 1 },
    }];
    let digest = summary::digest(&entries);
    let signed = proof::heads_message(pair.a.store.database(), &laptop.public(), &digest, &entries);
    let reply = Message::Reply {
        digest,
        entries,
        commits: Vec::new(),
        more: false,
        control: Vec::new(),
        signature: Some(phone.sign(crate::keys::SigningContext::SyncHeads, &signed)),
    };
    pair.a.requester.handle_response(&mut pair.a.store, &reply.encode(), now).unwrap();
    // Reconciling it against the real phone terminates, within the budget.
    pair.drive();
    assert!(pair.exchanges < 2_000, "{} exchanges", pair.exchanges);
    assert_eq!(pair.a.store.ids(), pair.b.store.ids());
}

/// What a requester holding `key` sees of a responder (holding
/// `responder_key` over `store`) when it asks for `database`: the frames
/// answering `hello`, `auth`, and `auth` again with a prelude.
fn probe(
    store: &MapStore,
    responder_key: &SecretKey,
    key: &SecretKey,
    database: DatabaseId,
) -> Vec<Vec<u8>> {
    let prelude = vec![store.log.ordered()[0].as_bytes().to_vec()];
    let mut store = store.clone();
    let mut responder = Responder::new(responder_key.clone(), vec![1], vec![2]);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut answer = |frame: Vec<u8>, rng: &mut ChaCha20Rng| match responder
        .handle(&mut store, &frame, rng)
        .unwrap()
    {
        Answer::Reply(frame) | Answer::Close(frame, _) => frame,
    };
    let nonce = [8; 32];
    let challenge =
        answer(Message::Hello { database, key: key.public(), nonce }.encode(), &mut rng);
    let Message::Challenge { nonce: theirs } =
        Message::decode(&challenge, usize::MAX, &KeyCache::default()).unwrap()
    else {
        panic!("hello was not challenged");
    };
    let transcript = proof::Transcript {
        database,
        requester: key.public(),
        requester_nonce: nonce,
        requester_transport: vec![2],
        responder_nonce: theirs,
        responder_transport: vec![1],
    };
    let proof = transcript.prove(proof::Side::Requester, key);
    let refused = answer(Message::Auth { proof, prelude: Vec::new() }.encode(), &mut rng);
    let again = answer(Message::Auth { proof, prelude }.encode(), &mut rng);
    vec![challenge, refused, again]
}

/// Issue 10 item 13: `hello` told anyone who knew a database id whether a
/// node hosts it, and its device key. Now a stranger, a removed device and
/// a requester for another database receive frames of the same kinds and
/// sizes as each other, whether or not the database is hosted, and none
/// carries the responder's key.
#[test]
fn the_handshake_tells_outsiders_nothing() {
    let mut s = setup();
    let (laptop, phone) = (s.world.laptop.clone(), s.phone.clone());
    let hosted = s.store.database();
    let elsewhere = DatabaseId([0xee; 32]);
    let stranger = key(42);
    let k1 = ScopeKey::generate(&mut s.world.rng);
    let rotation = s.world.rotation(&laptop, "todo", 1, &k1, &[&laptop]);
    s.world.issue(
        &laptop,
        Payload::RemoveDevice {
            device: phone.public(),
            cutoff: crate::control::Cutoff::NONE,
            rotations: BTreeMap::from([(super::super::control::testkit::scope("todo"), rotation)]),
        },
    );
    let ops: Vec<Vec<u8>> = s.world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    let mut store = s.store.clone();
    store.ingest_ops(&ops).unwrap();
    assert!(entitled_view(&store.auth(), &phone.public()).is_none());

    let seen = [
        probe(&store, &laptop, &stranger, hosted),
        probe(&store, &laptop, &phone, hosted),
        probe(&store, &laptop, &phone, elsewhere),
        probe(&store, &laptop, &stranger, elsewhere),
    ];
    let shape = |frames: &Vec<Vec<u8>>| -> Vec<(&'static str, usize)> {
        frames.iter().map(|f| (crate::sync::message::frame_name(f), f.len())).collect()
    };
    for frames in &seen {
        assert_eq!(shape(frames), shape(&seen[0]));
        assert_eq!(frames[1..], seen[0][1..], "the same not-a-member answers");
        for frame in frames {
            let key = laptop.public();
            assert!(!frame.windows(32).any(|w| w == key.as_bytes()), "the responder's key leaked");
        }
    }
    assert_eq!(
        shape(&seen[0]).iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["challenge", "error", "error"]
    );
    // A member gets the key and the proof, in `ready`.
    let member = probe(&store, &laptop, &laptop, hosted);
    assert_eq!(crate::sync::message::frame_name(&member[1]), "ready");
}

/// A requester sends its control log only to a peer it knows as a member;
/// the responder's `not a member` no longer shows who answered.
#[test]
fn a_new_device_keeps_its_log_from_a_peer_it_does_not_know() {
    let mut s = setup();
    let (laptop, tablet) = (s.world.laptop.clone(), key(4));
    let stale = s.store.clone();
    let add = s.world.add_device(&laptop, &tablet, &[("todo", 0, &s.todo)]);
    s.world.issue(&laptop, add);
    let ops: Vec<Vec<u8>> = s.world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    let mut fresh = s.store.clone();
    fresh.ingest_ops(&ops).unwrap();
    let mut pair = Pair::new(fresh, &tablet, stale, &laptop);
    pair.a = peer(pair.a.store.clone(), &tablet, 1, 2, View::All, BTreeMap::new(), None);
    // Only the tablet asks: the laptop's own requester would teach it.
    while Pair::exchange(&mut pair.a, &mut pair.b, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert!(pair.a.requester.is_closed());
    assert!(!pair.b.store.auth().is_device(&tablet.public()), "no prelude was sent");
    // Once the laptop proved itself on this connection (to the tablet's
    // responder), the tablet's next session sends its log.
    pair.a = peer(pair.a.store.clone(), &tablet, 1, 2, View::All, BTreeMap::new(), None);
    pair.a.requester.peer_proved(laptop.public());
    while Pair::exchange(&mut pair.a, &mut pair.b, pair.now, &mut pair.rng, &mut pair.bytes) {}
    assert!(pair.b.store.auth().is_device(&tablet.public()), "the prelude was sent");
    assert_eq!(pair.a.requester.peer(), Some(laptop.public()));
}

/// Issue 10 item 6(b): an app revoked on one scope but granted another
/// pushed commits of the revoked scope (and could push anyone's). A push
/// carries only what the pusher may push; anything else ends the session.
#[test]
fn an_app_pushes_only_its_own_commits_in_its_view() {
    let mut s = setup();
    let (laptop, app) = (s.world.laptop.clone(), key(9));
    let mail = ScopeKey::generate(&mut s.world.rng);
    let rotation = s.world.rotation(&laptop, "mail", 0, &mail, &[&laptop]);
    s.world.issue(&laptop, Payload::RotateKey(rotation));
    for (scope, key) in [("todo", s.todo.clone()), ("mail", mail.clone())] {
        let grant = s.world.grant(&laptop, &app, scope, Rights::ReadWrite, 0, &key);
        s.world.issue(&laptop, grant);
    }
    let mail_1 = s.world.commit(&app, None, T0 + 10, "mail", 0, &mail);
    let mail_2 = s.world.commit(&app, Some(&mail_1), T0 + 11, "mail", 0, &mail);
    let mail_3 = s.world.commit(&app, Some(&mail_2), T0 + 12, "mail", 0, &mail);
    let mail_1b = {
        s.world.rng = ChaCha20Rng::seed_from_u64(31);
        s.world.commit(&app, None, T0 + 13, "mail", 0, &mail)
    };
    let todo_1 = s.world.commit(&app, Some(&mail_3), T0 + 14, "todo", 0, &s.todo);
    let by_laptop = s.world.commit(&laptop, None, T0 + 15, "todo", 0, &s.todo);
    let mail_k1 = ScopeKey::generate(&mut s.world.rng);
    let rotation = s.world.rotation(&laptop, "mail", 1, &mail_k1, &[&laptop]);
    s.world.issue(
        &laptop,
        Payload::Revoke {
            app: app.public(),
            cutoff: crate::control::testkit::cutoff_at(Some(&mail_3)),
            rotation,
        },
    );
    let ops: Vec<Vec<u8>> = s.world.log.ordered().iter().map(|op| op.as_bytes().to_vec()).collect();
    let mut store = s.store.clone();
    store.ingest_ops(&ops).unwrap();
    let todo = View::Scopes([super::super::control::testkit::scope("todo")].into());
    assert_eq!(entitled_view(&store.auth(), &app.public()), Some(todo.clone()));

    let pushed = |commits: &[&Commit], ops: Vec<Vec<u8>>| {
        let mut pair =
            Pair::with_views(store.clone(), &laptop, View::All, store.clone(), &app, todo.clone());
        pair.drive();
        assert!(pair.b.requester.peer().is_some(), "the app is a member");
        let push =
            Message::Push { ops, commits: commits.iter().map(|c| c.as_bytes().to_vec()).collect() };
        let mut store = pair.a.store.clone();
        match pair.a.responder.handle(&mut store, &push.encode(), &mut pair.rng).unwrap() {
            Answer::Close(_, violation) => Err(violation.code),
            Answer::Reply(frame) => Ok(frame),
        }
    };
    // Its own commit in its view: taken.
    assert!(pushed(&[&todo_1], Vec::new()).is_ok());
    // A fork below its cut-off in the scope it was revoked on, and the
    // chain itself: outside its view now.
    assert_eq!(pushed(&[&mail_1b], Vec::new()), Err(ErrorCode::Forbidden));
    assert_eq!(pushed(&[&mail_1], Vec::new()), Err(ErrorCode::Forbidden));
    // Another author's commit, and operations: an app relays nothing.
    assert_eq!(pushed(&[&by_laptop], Vec::new()), Err(ErrorCode::Forbidden));
    assert_eq!(pushed(&[], ops[..1].to_vec()), Err(ErrorCode::Forbidden));
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::sync::message::Part;
    use crate::sync::{Fingerprint, View};

    /// One valid frame of every kind: the frames of
    /// `protocol-spec/vectors/sync.json` and the kinds it lacks, made here
    /// around a commit and a control op of the vectors.
    fn valid_frames() -> &'static [Vec<u8>] {
        static FRAMES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        FRAMES.get_or_init(|| {
            let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
            let sync = json(include_str!("../../../../protocol-spec/vectors/sync.json"));
            let commits = json(include_str!("../../../../protocol-spec/vectors/commits.json"));
            let control = json(include_str!("../../../../protocol-spec/vectors/control.json"));
            let hex = |value: &serde_json::Value| hex::decode(value.as_str().unwrap()).unwrap();
            let mut frames: Vec<Vec<u8>> = sync["frames"]
                .as_array()
                .unwrap()
                .iter()
                .chain(sync["violations"].as_array().unwrap())
                .map(|case| hex(&case["frame"]))
                .collect();
            let commit = hex(&commits["commits"][0]["commit"]);
            let op = hex(&control["ops"][1]["op"]);
            let author = SecretKey::from_seed([3; 32]).public();
            let scopes = View::Scopes([ScopeId([5; 16]), ScopeId([6; 16])].into());
            let held = Fingerprint { count: 3, sum: u128::MAX - 7 };
            frames.extend(
                [
                    Message::ControlWant { heads: vec![OpId([1; 32]), OpId([2; 32])] },
                    Message::Ops { ops: vec![op.clone()], more: true },
                    Message::Ranges {
                        view: scopes,
                        author,
                        parts: vec![Part { lo: 1, hi: 40, held }, Part { lo: 41, hi: 1000, held }],
                    },
                    Message::RangesReply { split: vec![(1, 20)], commits: vec![commit.clone()] },
                    Message::Push { ops: vec![op], commits: vec![commit] },
                    Message::Ack { stored: 2 },
                ]
                .iter()
                .map(Message::encode),
            );
            for frame in &frames {
                Message::decode(frame, message::MAX_FRAME_BYTES, &KeyCache::default()).unwrap();
            }
            frames
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Valid frames of every kind, mangled: decoding never panics, and
        /// a frame that still decodes is canonical.
        #[test]
        fn decoding_mangled_frames_never_panics(
            which in any::<prop::sample::Index>(),
            edits in crate::mangle::edits(),
        ) {
            let frames = valid_frames();
            let mut bytes = frames[which.index(frames.len())].clone();
            crate::mangle::apply(&mut bytes, &edits);
            if let Ok(message) = Message::decode(&bytes, message::MAX_FRAME_BYTES, &KeyCache::default()) {
                prop_assert_eq!(message.encode(), bytes);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Two replicas holding arbitrary subsets of the same logs (holes,
        /// and a fork at the end of each) end up holding the union.
        #[test]
        fn replicas_holding_any_subsets_converge_to_the_union(
            lengths in proptest::collection::vec(1u64..40, 2),
            mask_a in any::<u64>(),
            mask_b in any::<u64>(),
        ) {
            let mut s = setup();
            let authors = [s.world.laptop.clone(), s.phone.clone()];
            let mut all = s.store.clone();
            let mut pool = Vec::new();
            for (author, &n) in authors.iter().zip(&lengths) {
                let last = write(&mut s, &mut all, author, None, n);
                // A second branch at the last position: a fork.
                let prev = all.commits[&author.public()].get(&(n - 1)).map(|ids| {
                    Commit::decode(&ids[0].2).unwrap()
                });
                s.world.rng = ChaCha20Rng::seed_from_u64(n);
                let fork = s.world.commit(author, prev.as_ref(), T0 + 3_000_000, "todo", 0, &s.todo);
                all.ingest_commits(&[fork.as_bytes().to_vec()]).unwrap();
                let _ = last;
            }
            for log in all.commits.values() {
                for ids in log.values() {
                    pool.extend(ids.iter().map(|(_, _, bytes)| bytes.clone()));
                }
            }
            let (mut a, mut b) = (s.store.clone(), s.store.clone());
            for (i, bytes) in pool.iter().enumerate() {
                if mask_a.rotate_left(i as u32) & 1 == 1 {
                    a.ingest_commits(std::slice::from_ref(bytes)).unwrap();
                }
                if mask_b.rotate_left(i as u32 * 3) & 1 == 1 {
                    b.ingest_commits(std::slice::from_ref(bytes)).unwrap();
                }
            }
            let union: BTreeSet<CommitId> = a.ids().union(&b.ids()).copied().collect();
            let mut pair = Pair::new(a, &authors[0], b, &authors[1]);
            pair.drive();
            prop_assert_eq!(pair.a.store.ids(), union.clone());
            prop_assert_eq!(pair.b.store.ids(), union);
        }
    }
}
