//! Adversarial peers: they open sessions with an honest node's real
//! [`Responder`] and send forged, tampered, replayed, stale-epoch,
//! oversized and out-of-order frames, probe the handshake as outsiders,
//! and, as an app revoked on one scope, fork their log below the cut-off
//! and push the fork. Each attack states what the honest side must do;
//! anything else is an invariant failure (at once, or at the end of the
//! run: a fork is recorded as forbidden, and what a probe learns as a leak).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use basic_proto::commit::MAX_COMMIT_BYTES;
use basic_proto::control::{
    ControlOp, Cutoff, OpBody, OpId, Payload, Rights, Rotation, seal_naming,
};
use basic_proto::sync::message::{Message, frame_name};
use basic_proto::sync::proof::{Side, Transcript};
use basic_proto::sync::{Answer, ErrorCode, Responder, View};
use basic_proto::{
    Changes, DatabaseId, Hlc, KeyCache, KeyPart, LiteMap, Name, Party, RowKey, RowOp, ScopeId,
    ScopeKey, SecretKey, Value,
};
use basic_store::sync::{Input, Session};
use basic_store::{Keyring, LogWriter, SyncReplica};
use ciborium::Value as Cbor;
use rand_core::{Rng, SeedableRng};

use crate::node::Role;
use crate::world::{T0, World, below, key};

/// One kind of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Bytes that are not a frame.
    Garbage,
    /// A summary before the membership proof.
    OutOfOrder,
    /// A key that is no member proves itself and pushes.
    Stranger,
    /// A member pushes a commit it holds with its header, ciphertext or
    /// signature tampered, or its header put on another ciphertext.
    Tampered,
    /// A commit and a control op signed (validly) by a non-member reach
    /// the target by both sides — pushed by a relaying member, and slipped
    /// into a relaying member's answers to its requester — and reach a
    /// pinning peer the same ways: nothing is applied or admitted.
    Forged,
    /// A member pushes commits the target already holds.
    Replayed,
    /// A member granted after a rotation pushes a commit under the older
    /// epoch, which was never sealed to it.
    StaleEpoch,
    /// A member pushes a frame over the request limit.
    Oversized,
    /// A stranger, a removed device and a requester for another database
    /// probe the handshake: they must learn no key, and receive the same
    /// frames whether or not the node hosts the database they name.
    Probe,
    /// An app granted two scopes and revoked on one forks its log below
    /// the cut-off there and pushes the fork: to a node that knows the
    /// revocation (a push outside its entitled view), and to one that
    /// may not yet (which must reject the fork once it learns).
    Fork,
    /// A stolen device, removed by another device, claims not to have seen
    /// its removal: it removes its remover with cut-off 0 and a rotation
    /// sealed to itself, adds a puppet that removes a device added after
    /// the theft, stamps an op far in the future and floods the log.
    Thief,
    /// The target's requester syncs with a member (the insider app) whose
    /// responder adds a forged and a tampered commit to its reply: the
    /// target applies neither.
    Requester,
}

/// Every attack, in the order a byzantine run cycles through them.
pub const ALL: [Attack; 12] = [
    Attack::Garbage,
    Attack::OutOfOrder,
    Attack::Stranger,
    Attack::Tampered,
    Attack::Forged,
    Attack::Replayed,
    Attack::StaleEpoch,
    Attack::Oversized,
    Attack::Probe,
    Attack::Fork,
    Attack::Thief,
    Attack::Requester,
];

/// What became of an attack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It reached its target, which reacted as the protocol requires.
    Reached(String),
    /// It never reached the target (no insider left, the insider refused,
    /// nothing to tamper with): not counted as an attack.
    Missed(String),
}

impl From<String> for Outcome {
    fn from(what: String) -> Self {
        Outcome::Reached(what)
    }
}

impl From<&str> for Outcome {
    fn from(what: &str) -> Self {
        Outcome::Reached(what.to_owned())
    }
}

/// The schema of the second namespace a forking app is granted with `todo`.
pub const NOTES_SCHEMA: &str = r#"
namespace = "notes"
[tables.items]
primary_key = ["id"]
columns = { id = "text", body = "text" }
"#;

/// Transport id of the adversary's connections.
const ADVERSARY_TRANSPORT: u8 = 250;

struct Conn<'w> {
    world: &'w mut World,
    target: usize,
    responder: Responder,
}

enum Reply {
    Ok(Box<Message>),
    Closed(ErrorCode),
}

/// Whether a handshake was accepted (else what answered it), and every
/// frame the target answered.
type Handshake = (Result<(), String>, Vec<Vec<u8>>);

impl Conn<'_> {
    fn send(&mut self, frame: &[u8]) -> anyhow::Result<Reply> {
        self.send_raw(frame).map(|(reply, _)| reply)
    }

    /// Sends `frame`; returns the reply and the answer's bytes.
    fn send_raw(&mut self, frame: &[u8]) -> anyhow::Result<(Reply, Vec<u8>)> {
        let db = self.world.nodes[self.target].db.as_ref().context("target up")?;
        let mut store = SyncReplica::new(db);
        match self.responder.handle(&mut store, frame, &mut self.world.rng)? {
            Answer::Reply(bytes) => {
                let message = Message::decode(&bytes, usize::MAX, &KeyCache::default())?;
                Ok((Reply::Ok(Box::new(message)), bytes))
            }
            Answer::Close(bytes, violation) => Ok((Reply::Closed(violation.code), bytes)),
        }
    }

    /// Runs the handshake as `key`; returns whether the target accepted it.
    fn handshake(&mut self, key: &SecretKey) -> anyhow::Result<Result<(), String>> {
        let database = self.world.database;
        self.handshake_with(key, database, Vec::new()).map(|(result, _)| result)
    }

    /// Runs the handshake as `key` asking for `database`, sending
    /// `prelude` when told it is not a member; returns whether the target
    /// accepted it, and every frame the target answered.
    fn handshake_with(
        &mut self,
        key: &SecretKey,
        database: DatabaseId,
        prelude: Vec<Vec<u8>>,
    ) -> anyhow::Result<Handshake> {
        let mut nonce = [0; 32];
        self.world.rng.fill_bytes(&mut nonce);
        let mut frames = Vec::new();
        let hello = Message::Hello { database, key: key.public(), nonce };
        let (reply, frame) = self.send_raw(&hello.encode())?;
        frames.push(frame);
        let Reply::Ok(challenge) = reply else { bail!("hello was not challenged") };
        let Message::Challenge { nonce: their_nonce } = *challenge else {
            bail!("hello was not challenged");
        };
        let transcript = Transcript {
            database,
            requester: key.public(),
            requester_nonce: nonce,
            requester_transport: vec![ADVERSARY_TRANSPORT],
            responder_nonce: their_nonce,
            responder_transport: vec![self.target as u8],
        };
        let proof = transcript.prove(Side::Requester, key);
        let (mut reply, frame) =
            self.send_raw(&Message::Auth { proof, prelude: vec![] }.encode())?;
        frames.push(frame);
        if !prelude.is_empty()
            && matches!(&reply, Reply::Ok(m) if matches!(**m, Message::Error { .. }))
        {
            let (again, frame) = self.send_raw(&Message::Auth { proof, prelude }.encode())?;
            frames.push(frame);
            reply = again;
        }
        let result = match reply {
            Reply::Ok(message) => match *message {
                Message::Ready { key: theirs, proof, .. } => {
                    if !transcript.verify(Side::Responder(theirs), &proof) {
                        bail!("the honest node's proof does not verify");
                    }
                    Ok(())
                }
                other => Err(other.name().to_owned()),
            },
            Reply::Closed(code) => Err(format!("{code:?}")),
        };
        Ok((result, frames))
    }

    fn push(&mut self, commits: Vec<Vec<u8>>) -> anyhow::Result<Reply> {
        self.send(&Message::Push { ops: vec![], commits }.encode())
    }
}

/// The member an attack runs as: the first app that is not revoked.
fn insider(world: &World) -> Option<usize> {
    world.nodes.iter().enumerate().position(|(i, n)| {
        matches!(n.role, Role::App { .. }) && !world.revoked.iter().any(|(a, _, _)| *a == i)
    })
}

fn commit_bytes(world: &World, target: usize) -> anyhow::Result<Option<Vec<u8>>> {
    let db = world.nodes[target].db.as_ref().context("target up")?;
    match db.replica().commits().next() {
        Some(commit) => Ok(Some(commit?.as_bytes().to_vec())),
        None => Ok(None),
    }
}

/// A commit `target` holds other than `not`, if any.
fn commit_bytes_not(world: &World, target: usize, not: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let db = world.nodes[target].db.as_ref().context("target up")?;
    for commit in db.replica().commits() {
        let commit = commit?;
        if commit.as_bytes() != not {
            return Ok(Some(commit.as_bytes().to_vec()));
        }
    }
    Ok(None)
}

/// `bytes` (a commit) with one part tampered: 0 a byte of the header's
/// nonce (the header still decodes, and no longer matches the
/// ciphertext), 1 a byte of the ciphertext, 2 a byte of the signature, 3
/// the header and signature put on `other`'s ciphertext (the signature of
/// `bytes` when `other` is `None`).
fn tamper(
    bytes: &[u8],
    other: Option<&[u8]>,
    part: usize,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let parts = |bytes: &[u8]| -> anyhow::Result<[Vec<u8>; 3]> {
        match basic_proto::codec::parse(bytes, "commit", MAX_COMMIT_BYTES)? {
            Cbor::Array(items) => match <[Cbor; 3]>::try_from(items) {
                Ok([Cbor::Bytes(h), Cbor::Bytes(c), Cbor::Bytes(s)]) => Ok([h, c, s]),
                _ => bail!("a commit is not three byte strings"),
            },
            _ => bail!("a commit is not an array"),
        }
    };
    let [mut header, mut ciphertext, mut signature] = parts(bytes)?;
    let flip = |field: &mut Vec<u8>, from: usize, rng: &mut rand_chacha::ChaCha20Rng| {
        let at = from + below(rng, (field.len() - from) as u64) as usize;
        field[at] ^= 1 << below(rng, 8);
    };
    let what = match (part, other) {
        (0, _) => {
            // The nonce is the header's last field: 24 bytes.
            let from = header.len().saturating_sub(24);
            flip(&mut header, from, rng);
            "a tampered header"
        }
        (1, _) => {
            flip(&mut ciphertext, 0, rng);
            "a tampered ciphertext"
        }
        (3, Some(other)) => {
            ciphertext = parts(other)?[1].clone();
            "its header on another commit's ciphertext"
        }
        _ => {
            flip(&mut signature, 0, rng);
            "a tampered signature"
        }
    };
    let value =
        Cbor::Array(vec![Cbor::Bytes(header), Cbor::Bytes(ciphertext), Cbor::Bytes(signature)]);
    Ok((basic_proto::codec::encode_value(&value), what))
}

/// What a hostile responder's session with a target's requester came to.
struct Hostile {
    /// Answers the inject function changed (the requester handled each).
    injected: usize,
    /// Whether the requester closed the session.
    closed: bool,
}

/// The target's requester opens a session with `server`, whose real
/// responder answers; `inject` may replace any answer before the
/// requester handles it (returning `None` leaves it as it is).
fn hostile_session(
    world: &mut World,
    target: usize,
    server: usize,
    mut inject: impl FnMut(Message) -> Option<Message>,
) -> anyhow::Result<Hostile> {
    let server_key = world.nodes[server].key.clone();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(world.rng.next_u64());
    let mut nonce = [0; 32];
    rng.fill_bytes(&mut nonce);
    let now = world.now;
    let config = basic_proto::sync::RequesterConfig {
        key: world.nodes[target].key.clone(),
        database: world.database,
        local_transport: vec![target as u8],
        peer_transport: vec![ADVERSARY_TRANSPORT],
        view: world.nodes[target].view(),
        resync_ms: crate::world::RESYNC_MS,
        nonce,
        known_peer: Some(server_key.public()),
    };
    let mut responder = Responder::new(server_key, vec![ADVERSARY_TRANSPORT], vec![target as u8]);
    let target_db = world.nodes[target].db.as_ref().context("target up")?;
    let server_db = world.nodes[server].db.as_ref().context("server up")?;
    // The target's side is stepped by the driver its node runs.
    let mut session = Session::open(target_db, config, Default::default())?;
    let mut theirs = SyncReplica::new(server_db);
    let (mut injected, mut input, mut closing) = (0, Input::Idle, false);
    // At most 32 requests; the step after the last takes its answer.
    for _ in 0..=32 {
        let step = session.step(target_db, input, T0 + now)?;
        if closing || session.requester().is_closed() {
            break;
        }
        let Some(request) = step.request else { break };
        let mut frame;
        (frame, closing) = match responder.handle(&mut theirs, &request, &mut rng)? {
            Answer::Reply(bytes) => (bytes, false),
            Answer::Close(bytes, _) => (bytes, true),
        };
        if let Ok(message) = Message::decode(&frame, usize::MAX, &KeyCache::default())
            && let Some(changed) = inject(message)
        {
            frame = changed.encode();
            injected += 1;
        }
        input = Input::Answer(frame);
    }
    Ok(Hostile { injected, closed: session.requester().is_closed() })
}

/// The target's requester opens a session with the insider app, whose
/// real responder answers, except that its first reply also carries a
/// commit signed by a stranger and a commit of the target's with a flipped
/// ciphertext byte. The requester may go on or close; the target must apply
/// neither commit (both are recorded as forbidden for the final check).
fn hostile_responder(world: &mut World, target: usize) -> anyhow::Result<Outcome> {
    let Some(insider) = insider(world) else { return Ok(Outcome::Missed("no insider".into())) };
    if !world.nodes[insider].is_up() {
        return Ok(Outcome::Missed("the insider is down".into()));
    }
    let insider_key = world.nodes[insider].key.clone();
    let stranger = key(&mut world.rng);
    let (epoch, scope_key) = current_key(world, &insider_key)?;
    let forged = a_commit(world, &stranger, epoch, &scope_key)?.as_bytes().to_vec();
    let Some(mut tampered) = commit_bytes(world, target)? else {
        return Ok(Outcome::Missed("nothing to tamper".into()));
    };
    // The last byte of the ciphertext (before the signature's 2-byte head
    // and 64 bytes): the id changes with it, and the signature fails.
    let last = tampered.len() - 67;
    tampered[last] ^= 0x01;
    for (bytes, what) in [
        (&forged, "forged, sent by a hostile responder"),
        (&tampered, "tampered, sent by a hostile responder"),
    ] {
        world.forbidden.push((id_of(bytes)?, what.into()));
    }
    let slipped = [forged.clone(), tampered.clone()];
    let session = hostile_session(world, target, insider, |message| match message {
        Message::Reply { digest, entries, mut commits, more, control, signature } => {
            commits.extend(slipped.iter().cloned());
            Some(Message::Reply { digest, entries, commits, more, control, signature })
        }
        _ => None,
    })?;
    if session.injected == 0 {
        return Ok(Outcome::Missed("the session reached no reply".into()));
    }
    let applied = crate::invariants::applied(world, target).map_err(|e| anyhow::anyhow!(e))?;
    for bytes in [&forged, &tampered] {
        if applied.contains(&id_of(bytes)?) {
            bail!("the target applied a commit a hostile responder slipped into its reply");
        }
    }
    Ok(format!(
        "reply with a forged and a tampered commit: neither applied, session {}",
        if session.closed { "closed" } else { "kept" }
    )
    .into())
}

/// A commit and a control op signed, validly, by `stranger`, a key that
/// is no member: a row in `todo` under its current key (as the first
/// device holds it), and an op on `on`'s control heads that makes the
/// stranger a pinning peer.
fn forgeries(
    world: &mut World,
    stranger: &SecretKey,
    on: usize,
) -> anyhow::Result<(Vec<u8>, ControlOp)> {
    let admin = world.admin_index()?;
    let admin_key = world.nodes[admin].key.clone();
    let (epoch, scope_key) = current_key(world, &admin_key)?;
    let commit = a_commit(world, stranger, epoch, &scope_key)?;
    world.forbidden.push((commit.id(), "forged by a non-member".into()));
    let db = world.nodes[on].db.as_ref().context("target up")?;
    let heads = db.control_log().heads();
    let payload = Payload::AddPinner { pinner: stranger.public() };
    let op = signed(db, stranger, &heads, None, payload)?;
    Ok((commit.as_bytes().to_vec(), op))
}

/// Fails if `node` admitted `op` or counts `stranger` as a member.
fn admitted_nothing(
    world: &World,
    node: usize,
    op: &ControlOp,
    stranger: &SecretKey,
) -> anyhow::Result<()> {
    let db = world.nodes[node].db.as_ref().context("node up")?;
    let auth = db.auth_state();
    if db.control_log().get(&op.id()).is_some() || auth.is_pinner(&stranger.public()) {
        bail!("{} admitted an op forged by a non-member", world.nodes[node].name);
    }
    if basic_proto::sync::entitled_view(&auth, &stranger.public()).is_some() {
        bail!("{} counts a non-member as a member", world.nodes[node].name);
    }
    Ok(())
}

/// A relay for forged data to `to`: an up device or pinning peer other
/// than `to` (its key in the adversary's hands), if any.
fn relay_for(world: &World, to: usize) -> Option<usize> {
    (0..world.nodes.len()).find(|&i| {
        let node = &world.nodes[i];
        i != to && node.is_up() && !node.lost && matches!(node.role, Role::Device | Role::Pinner)
    })
}

/// Delivers a forged commit and op to `to` by both of its sides: pushed
/// to its responder by a relay member (a device or pinning peer may
/// relay what others signed, so the push rule lets them through to
/// verification), and slipped into the answers a relay's responder gives
/// its requester (the op into `ops`, announced among the `ready` heads).
/// Returns what reached `to`; fails if `to` admitted or applied any.
fn forge_at(world: &mut World, to: usize) -> anyhow::Result<Vec<String>> {
    let Some(relay) = relay_for(world, to) else { return Ok(Vec::new()) };
    let stranger = key(&mut world.rng);
    let (commit, op) = forgeries(world, &stranger, to)?;
    let name = world.nodes[to].name.clone();
    let mut reached = Vec::new();

    // Its responder: a relay pushes both.
    let relay_key = world.nodes[relay].key.clone();
    let mut conn = Conn {
        responder: Responder::new(
            world.nodes[to].key.clone(),
            vec![to as u8],
            vec![ADVERSARY_TRANSPORT],
        ),
        world: &mut *world,
        target: to,
    };
    if conn.handshake(&relay_key)?.is_ok() {
        let push =
            Message::Push { ops: vec![op.as_bytes().to_vec()], commits: vec![commit.clone()] };
        match conn.send(&push.encode())? {
            Reply::Ok(m) if matches!(*m, Message::Ack { stored: 0 }) => {
                reached.push(format!("{name}'s responder: push refused"));
            }
            Reply::Closed(code) if code != ErrorCode::Forbidden => {
                reached.push(format!("{name}'s responder: push closed {code:?}"));
            }
            other => bail!("a push of forgeries by a relay was answered {}", describe(&other)),
        }
    }
    admitted_nothing(world, to, &op, &stranger)?;

    // Its requester: a relay's responder slips them into its answers.
    let (op_id, op_bytes) = (op.id(), op.as_bytes().to_vec());
    let mut delivered = Vec::new();
    let session = hostile_session(world, to, relay, |message| match message {
        Message::Ready { key, proof, mut heads } => {
            heads.push(op_id);
            Some(Message::Ready { key, proof, heads })
        }
        Message::Ops { mut ops, more } => {
            ops.push(op_bytes.clone());
            delivered.push("the op");
            Some(Message::Ops { ops, more })
        }
        Message::Reply { digest, entries, mut commits, more, control, signature } => {
            commits.push(commit.clone());
            delivered.push("the commit");
            Some(Message::Reply { digest, entries, commits, more, control, signature })
        }
        _ => None,
    })?;
    if !delivered.is_empty() {
        delivered.dedup();
        reached.push(format!(
            "{name}'s requester: {} in answers, session {}",
            delivered.join(" and "),
            if session.closed { "closed" } else { "kept" }
        ));
    }
    admitted_nothing(world, to, &op, &stranger)?;
    let applied = crate::invariants::applied(world, to).map_err(|e| anyhow::anyhow!(e))?;
    if applied.contains(&id_of(&commit)?) {
        bail!("{name} applied a commit forged by a non-member");
    }
    Ok(reached)
}

/// [`Attack::Forged`]: forgeries delivered to the target by both of its
/// sides, and to a pinning peer too when the target is not one.
fn forged(world: &mut World, target: usize) -> anyhow::Result<Outcome> {
    let mut reached = forge_at(world, target)?;
    if reached.is_empty() {
        return Ok(Outcome::Missed("no relay reached the target".into()));
    }
    let pinner = (0..world.nodes.len())
        .find(|&i| i != target && world.nodes[i].role == Role::Pinner && world.nodes[i].is_up());
    if let Some(pinner) = pinner {
        reached.extend(forge_at(world, pinner)?);
    }
    Ok(reached.join("; ").into())
}

/// A member granted `todo` after a rotation pushes a commit under the
/// epoch before it, whose key was never sealed to it: refused, never
/// applied. The admin first rotates `todo` (granting and revoking a
/// throwaway app) if it has only one epoch; the member's handshake carries
/// the admin's control log, so a target that did not know of it learns it.
fn stale_epoch(conn: &mut Conn<'_>) -> anyhow::Result<Outcome> {
    let todo = Name::new("todo")?;
    let scope = conn.world.scope_of("todo")?;
    let (throwaway, member) = (key(&mut conn.world.rng), key(&mut conn.world.rng));
    let admin = conn.world.admin_db()?;
    let current = |db: &basic_store::Database<crate::node::SharedMem>| {
        db.auth_state().scopes().get(&scope).and_then(|s| s.current())
    };
    if current(admin).context("todo epoch")? == 0 {
        admin.grant(Party::of(&throwaway), todo.clone(), Rights::ReadWrite)?;
        admin.revoke(throwaway.public(), todo.clone())?;
    }
    admin.grant(Party::of(&member), todo, Rights::ReadWrite)?;
    let epoch = current(admin).context("todo epoch")?;
    let old = epoch.checked_sub(1).context("a rotation happened")?;
    let old_key =
        admin.scope_keys().scope_key(&scope, old).context("the admin holds every epoch")?;
    let prelude = admin.control_ops()?;
    let commit = a_commit(conn.world, &member, old, &old_key)?;
    conn.world.forbidden.push((commit.id(), "an epoch older than the writer's grant".into()));
    let (accepted, _) = conn.handshake_with(&member, conn.world.database, prelude)?;
    if let Err(why) = accepted {
        return Ok(Outcome::Missed(format!("member refused ({why})")));
    }
    match conn.push(vec![commit.as_bytes().to_vec()])? {
        Reply::Ok(m) if matches!(*m, Message::Ack { stored: 0 }) => {
            Ok(format!("epoch {old} of {epoch}: refused").into())
        }
        Reply::Ok(other) => bail!("a commit under an epoch never given answered {other:?}"),
        Reply::Closed(code) => Ok(format!("epoch {old} of {epoch}: closed {code:?}").into()),
    }
}

fn a_commit(
    world: &mut World,
    author: &SecretKey,
    epoch: u32,
    key: &ScopeKey,
) -> anyhow::Result<basic_proto::Commit> {
    let mut writer = LogWriter::new(author.clone(), world.database);
    let row = RowOp::Upsert {
        table: Name::new("todo.lists")?,
        key: RowKey::single(KeyPart::Text("evil".into())),
        generation: 1,
        cells: LiteMap::from_iter([(Name::new("name")?, Value::Text("pwned".into()))]),
    };
    let changes = Changes::new(vec![row]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = T0 + world.now;
    let todo = world.scope_of("todo")?;
    Ok(writer.write(&todo, epoch, key, &changes, now, &mut world.rng)?)
}

/// Runs one attack on `target`; an error means the honest node did not
/// react as the protocol requires.
pub fn attack(world: &mut World, attack: Attack, target: usize) -> anyhow::Result<Outcome> {
    let responder = Responder::new(
        world.nodes[target].key.clone(),
        vec![target as u8],
        vec![ADVERSARY_TRANSPORT],
    );
    let insider_key = insider(world).map(|i| world.nodes[i].key.clone());
    let mut conn = Conn { world, target, responder };
    let expect_close = |reply: Reply, code: ErrorCode, what: &str| -> anyhow::Result<Outcome> {
        match reply {
            Reply::Closed(got) if got == code => Ok(format!("closed {got:?}").into()),
            Reply::Closed(got) => bail!("{what}: closed with {got:?}, expected {code:?}"),
            Reply::Ok(message) => bail!("{what}: answered {} instead of closing", message.name()),
        }
    };
    match attack {
        Attack::Garbage => {
            let mut junk = vec![0u8; 64];
            conn.world.rng.fill_bytes(&mut junk);
            let reply = conn.send(&junk)?;
            expect_close(reply, ErrorCode::Malformed, "garbage")
        }
        Attack::OutOfOrder => {
            let summary = Message::Summary {
                view: View::All,
                digest: [0; 16],
                entries: Some(vec![]),
                delta: false,
                control: vec![],
                sign: false,
            };
            let reply = conn.send(&summary.encode())?;
            expect_close(reply, ErrorCode::Unexpected, "summary before proof")
        }
        Attack::Stranger => {
            let stranger = key(&mut conn.world.rng);
            if conn.handshake(&stranger)?.is_ok() {
                bail!("a stranger was accepted as a member");
            }
            let reply = conn.push(vec![])?;
            expect_close(reply, ErrorCode::Unexpected, "stranger push")
        }
        Attack::Probe => probe(&mut conn).map(Outcome::Reached),
        Attack::Fork => fork(&mut conn).map(Outcome::Reached),
        Attack::Thief => thief(conn.world).map(Outcome::Reached),
        Attack::StaleEpoch => stale_epoch(&mut conn),
        Attack::Requester => hostile_responder(conn.world, target),
        Attack::Forged => forged(conn.world, target),
        Attack::Tampered | Attack::Replayed | Attack::Oversized => {
            let Some(insider_key) = insider_key else {
                return Ok(Outcome::Missed("no insider".into()));
            };
            if let Err(why) = conn.handshake(&insider_key)? {
                return Ok(Outcome::Missed(format!("insider refused ({why})")));
            }
            match attack {
                Attack::Tampered => {
                    let Some(bytes) = commit_bytes(conn.world, target)? else {
                        return Ok(Outcome::Missed("nothing to tamper".into()));
                    };
                    let other = commit_bytes_not(conn.world, target, &bytes)?;
                    let part = below(&mut conn.world.rng, 4) as usize;
                    let (tampered, what) =
                        tamper(&bytes, other.as_deref(), part, &mut conn.world.rng)?;
                    let reply = conn.push(vec![tampered])?;
                    expect_close(reply, ErrorCode::BadData, &format!("commit with {what}")).map(
                        |outcome| match outcome {
                            Outcome::Reached(how) => Outcome::Reached(format!("{what}: {how}")),
                            missed => missed,
                        },
                    )
                }
                Attack::Replayed => {
                    let Some(bytes) = commit_bytes(conn.world, target)? else {
                        return Ok(Outcome::Missed("nothing to replay".into()));
                    };
                    let own = basic_proto::Commit::decode(&bytes)
                        .is_ok_and(|c| c.header().author == insider_key.public());
                    match (own, conn.push(vec![bytes.clone(), bytes])?) {
                        (true, Reply::Ok(m)) if matches!(*m, Message::Ack { stored: 0 }) => {
                            Ok("idempotent".into())
                        }
                        // An app relays nothing: another author's commit is
                        // not its to push.
                        (false, Reply::Closed(ErrorCode::Forbidden)) => {
                            Ok("closed Forbidden".into())
                        }
                        (_, Reply::Ok(other)) => bail!("replayed commit answered {other:?}"),
                        (_, Reply::Closed(code)) => bail!("replay closed the session: {code:?}"),
                    }
                }
                _ => {
                    let big = vec![0x5a; MAX_COMMIT_BYTES];
                    let reply = conn.push(vec![big.clone(), big])?;
                    expect_close(reply, ErrorCode::Malformed, "oversized push")
                }
            }
        }
    }
}

/// Probes the handshake as a stranger, a removed device (a device the
/// admin adds and removes for the purpose) and a requester for another
/// database. Each must end with the same `not a member` frames as the
/// others, with no key; what differs is recorded as a leak.
fn probe(conn: &mut Conn<'_>) -> anyhow::Result<String> {
    let stranger = key(&mut conn.world.rng);
    let removed = key(&mut conn.world.rng);
    let admin = conn.world.admin_db()?;
    admin.add_device(Party::of(&removed))?;
    admin.remove_device(removed.public())?;
    // The admin's whole log as a prelude: what a removed device holds.
    let prelude = admin.control_ops()?;
    let hosted = conn.world.database;
    let mut elsewhere = DatabaseId([0; 32]);
    conn.world.rng.fill_bytes(&mut elsewhere.0);
    let target_key = conn.world.nodes[conn.target].key.public();
    let mut seen = Vec::new();
    for (who, key, database) in [
        ("a stranger", &stranger, hosted),
        ("a removed device", &removed, hosted),
        ("a requester for another database", &stranger, elsewhere),
        ("a removed device asking for another database", &removed, elsewhere),
    ] {
        let (result, frames) = conn.handshake_with(key, database, prelude.clone())?;
        conn.responder = Responder::new(
            conn.world.nodes[conn.target].key.clone(),
            vec![conn.target as u8],
            vec![ADVERSARY_TRANSPORT],
        );
        let name = &conn.world.nodes[conn.target].name;
        if result.is_ok() {
            conn.world.leaks.push(format!("{name} accepted {who} as a member"));
        }
        if frames.iter().any(|f| f.windows(32).any(|w| w == target_key.as_bytes())) {
            conn.world.leaks.push(format!("{name} showed its key to {who}"));
        }
        let shape: Vec<(&str, usize)> = frames.iter().map(|f| (frame_name(f), f.len())).collect();
        seen.push((who, shape, frames[1..].to_vec()));
    }
    let (first, shape, answers) = &seen[0];
    for (who, other_shape, other_answers) in &seen[1..] {
        if other_shape != shape || other_answers != answers {
            let name = &conn.world.nodes[conn.target].name;
            conn.world.leaks.push(format!(
                "{name} answered {who} ({other_shape:?}) unlike {first} ({shape:?})"
            ));
        }
    }
    Ok(format!("{} probes, answers {:?}", seen.len(), shape))
}

/// An app granted `todo` and `notes` writes three commits in `notes`, the
/// admin holds them and revokes it there (cut-off at the third); the app
/// then forks its log below the cut-off and pushes the fork.
fn fork(conn: &mut Conn<'_>) -> anyhow::Result<String> {
    let notes = Name::new("notes")?;
    let notes_id = conn.world.scope_of("notes")?;
    let todo = Name::new("todo")?;
    let app = key(&mut conn.world.rng);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(conn.world.rng.next_u64());
    let now = T0 + conn.world.now;
    let admin = conn.world.admin_db()?;
    if !admin.auth_state().scopes().contains_key(&notes_id) {
        let schema = basic_store::Schema::parse(NOTES_SCHEMA, basic_store::Format::Toml)?;
        admin.apply_schema(schema)?;
    }
    admin.grant(Party::of(&app), todo, Rights::ReadWrite)?;
    admin.grant(Party::of(&app), notes.clone(), Rights::ReadWrite)?;
    let auth = admin.auth_state();
    let epoch = auth.scopes().get(&notes_id).and_then(|s| s.current()).context("notes epoch")?;
    let notes_key =
        auth.scope_keys(&app, &notes_id, epoch).into_iter().next().context("notes key sealed")?;
    let mut writer = LogWriter::new(app.clone(), admin.id());
    let mut chain = Vec::new();
    for i in 0..3 {
        let changes = note(&format!("kept {i}"))?;
        let commit = writer.write(&notes_id, epoch, &notes_key, &changes, now, &mut rng)?;
        chain.push(commit.as_bytes().to_vec());
    }
    for result in admin.ingest(&chain)? {
        result.map_err(|e| anyhow::anyhow!("the admin refused the app's commit: {e}"))?;
    }
    // What the app knows before its revocation: it may replay it.
    let before = admin.control_ops()?;
    admin.revoke(app.public(), notes.clone())?;
    let mut forks = Vec::new();
    let mut scratch = LogWriter::new(app.clone(), admin.id());
    for i in 0..2 {
        let changes = note(&format!("forked {i}"))?;
        let commit = scratch.write(&notes_id, epoch, &notes_key, &changes, now, &mut rng)?;
        conn.world.forbidden.push((commit.id(), "a fork below the cut-off".into()));
        forks.push(commit.as_bytes().to_vec());
    }
    // The target may not know of the revocation yet; the admin does. The
    // others (pinning peers too) are pushed the fork as well: each must
    // refuse it, or reject it once the revocation reaches it.
    let admin = conn.world.admin_index()?;
    let mut outcomes = vec![push_fork(conn, &app, &notes_id, before.clone(), forks.clone())?];
    let others: Vec<usize> = (0..conn.world.nodes.len())
        .filter(|&i| {
            let node = &conn.world.nodes[i];
            i != conn.target
                && node.is_up()
                && !node.lost
                && matches!(node.role, Role::Device | Role::Pinner)
        })
        .collect();
    for other in others {
        let mut to_other = Conn {
            responder: Responder::new(
                conn.world.nodes[other].key.clone(),
                vec![other as u8],
                vec![ADVERSARY_TRANSPORT],
            ),
            world: &mut *conn.world,
            target: other,
        };
        let outcome = push_fork(&mut to_other, &app, &notes_id, before.clone(), forks.clone())?;
        outcomes.push(match other == admin {
            true => format!("admin: {outcome}"),
            false => outcome,
        });
    }
    Ok(outcomes.join("; "))
}

/// The forking app handshakes with the target (sending `prelude`, the
/// control log from before its revocation, if the target does not know
/// it) and pushes `forks`: refused as outside its view where the target
/// knows the revocation, taken (to be rejected later) where not yet.
fn push_fork(
    conn: &mut Conn<'_>,
    app: &SecretKey,
    notes: &ScopeId,
    prelude: Vec<Vec<u8>>,
    forks: Vec<Vec<u8>>,
) -> anyhow::Result<String> {
    let (accepted, _) = conn.handshake_with(app, conn.world.database, prelude)?;
    if let Err(why) = accepted {
        return Ok(format!("app refused ({why})"));
    }
    // Whether `notes` is in the app's entitled view there (granted, and
    // the revocation not known yet).
    let auth = conn.world.nodes[conn.target].db.as_ref().context("target up")?.auth_state();
    let in_view = basic_proto::sync::entitled_view(&auth, &app.public())
        .is_some_and(|view| view.contains(notes));
    match (in_view, conn.push(forks)?) {
        (false, Reply::Closed(ErrorCode::Forbidden)) => Ok("closed Forbidden".into()),
        (false, other) => bail!("a push outside the app's view was answered {}", describe(&other)),
        // Not known to be revoked there yet: taken, to be rejected when the
        // revocation arrives (the final check finds any fork applied).
        (true, Reply::Ok(m)) if matches!(*m, Message::Ack { .. }) => Ok("held for now".into()),
        (true, other) => bail!("the fork was answered {}", describe(&other)),
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Ok(message) => message.name().to_owned(),
        Reply::Closed(code) => format!("closed {code:?}"),
    }
}

/// A change to `notes.items`.
fn note(body: &str) -> anyhow::Result<Changes> {
    let row = RowOp::Upsert {
        table: Name::new("notes.items")?,
        key: RowKey::single(KeyPart::Text(body.into())),
        generation: 1,
        cells: LiteMap::from_iter([(Name::new("body")?, Value::Text(body.into()))]),
    };
    Changes::new(vec![row]).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The current epoch of `todo` and its key, as `member` can open it.
fn current_key(world: &World, member: &SecretKey) -> anyhow::Result<(u32, ScopeKey)> {
    let (_, auth) = world.reference().context("a device is up")?;
    let scope = world.scope_of("todo")?;
    let epoch = auth.scopes().get(&scope).and_then(|s| s.current()).context("todo epoch")?;
    let key = auth
        .scope_keys(member, &scope, epoch)
        .into_iter()
        .next()
        .unwrap_or_else(|| ScopeKey::from_bytes([7; 32]));
    Ok((epoch, key))
}

/// Signs an op by `author` on `parents`, stamped after them (or at `hlc`).
fn signed(
    db: &basic_store::Database<crate::node::SharedMem>,
    author: &SecretKey,
    parents: &[OpId],
    hlc: Option<Hlc>,
    payload: Payload,
) -> anyhow::Result<ControlOp> {
    let log = db.control_log();
    let after = parents
        .iter()
        .filter_map(|p| log.get(p))
        .map(|op| op.body().hlc.successor())
        .max()
        .unwrap_or_default();
    let mut parents = parents.to_vec();
    parents.sort();
    parents.dedup();
    let body = OpBody {
        database: db.id(),
        author: author.public(),
        parents,
        hlc: hlc.unwrap_or(after),
        payload,
    };
    ControlOp::create(author, body).map_err(|e| anyhow::anyhow!("op: {e}"))
}

/// The [`Attack::Thief`] run against the admin device; the ops then reach
/// every node by sync. Every rule of control-log.md §5 the attack tries to
/// get around is checked on the admin at once, and the final invariants
/// (no compromised scope, removed devices holding no newest key) check the
/// rest everywhere.
fn thief(world: &mut World) -> anyhow::Result<String> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(world.rng.next_u64());
    let (t, x, l, p) = (key(&mut rng), key(&mut rng), key(&mut rng), key(&mut rng));
    let todo = world.scope_of("todo")?;
    let admin = world.admin_db()?;
    admin.add_device(Party::of(&t))?;
    admin.add_device(Party::of(&x))?;
    // What the thief knows when the device is stolen.
    let stolen = admin.control_log().heads();
    let before = admin.auth_state();
    let next = before.scopes().get(&todo).and_then(|s| s.current()).context("todo epoch")? + 1;
    let naming = before.naming_key(&t).context("the thief was sealed the naming key")?;
    let root = before.root().context("a root")?.key;
    // X removes the stolen device.
    let removal = Payload::RemoveDevice {
        device: t.public(),
        cutoff: Cutoff::NONE,
        rotations: BTreeMap::new(),
    };
    let r1 = signed(admin, &x, &admin.control_log().heads(), None, removal)?;
    refused_nothing(admin.ingest_ops(&[r1.as_bytes().to_vec()])?)?;
    // A device added after the theft.
    admin.add_device(Party::of(&l))?;
    let after_late = admin.control_log().heads();
    // The thief, on its old heads: removes X (cut-off 0) with a rotation
    // sealed to itself only, adds a puppet, floods, and stamps far ahead.
    let theirs = Rotation::seal(
        &t,
        admin.id(),
        todo,
        next,
        &ScopeKey::generate(&mut rng),
        &[Party::of(&t)],
        &mut rng,
    )?;
    let r2 = Payload::RemoveDevice {
        device: x.public(),
        cutoff: Cutoff::NONE,
        rotations: BTreeMap::from([(todo, theirs)]),
    };
    let r2 = signed(admin, &t, &stolen, None, r2)?;
    let sneak = Payload::AddDevice {
        device: p.public(),
        sealing: p.sealing_key(),
        naming: seal_naming(&naming, &t, &root, &Party::of(&p), &mut rng)?,
        keys: BTreeMap::new(),
    };
    let sneak = signed(admin, &t, &stolen, None, sneak)?;
    let mut ops = vec![r2.as_bytes().to_vec(), sneak.as_bytes().to_vec()];
    let mut last = sneak.clone();
    let mut hlc = sneak.body().hlc;
    for _ in 0..64 {
        hlc = hlc.successor();
        let pin = Payload::AddPinner { pinner: key(&mut rng).public() };
        let op = ControlOp::create(
            &t,
            OpBody {
                database: admin.id(),
                author: t.public(),
                parents: vec![last.id()],
                hlc,
                payload: pin,
            },
        )
        .map_err(|e| anyhow::anyhow!("op: {e}"))?;
        ops.push(op.as_bytes().to_vec());
        last = op;
    }
    let far = Payload::AddPinner { pinner: key(&mut rng).public() };
    let far = signed(admin, &t, &stolen, Some(Hlc { wall_ms: u64::MAX, counter: u32::MAX }), far)?;
    ops.push(far.as_bytes().to_vec());
    refused_nothing(admin.ingest_ops(&ops[..ops.len() - 1])?)?;
    let outcomes = admin.ingest_ops(&ops[ops.len() - 1..])?;
    if outcomes.iter().all(Result::is_ok) && admin.control_log().get(&far.id()).is_some() {
        bail!("an op stamped at the end of time was admitted");
    }
    // The puppet, which has seen the late device, removes it.
    let mut parents = after_late;
    parents.push(last.id());
    let kick = Payload::RemoveDevice {
        device: l.public(),
        cutoff: Cutoff::NONE,
        rotations: BTreeMap::new(),
    };
    let kick = signed(admin, &p, &parents, None, kick)?;
    refused_nothing(admin.ingest_ops(&[kick.as_bytes().to_vec()])?)?;

    let state = admin.auth_state();
    if !state.is_device(&l.public()) {
        bail!("a puppet of a removed device removed a device added after the theft");
    }
    if state.is_device(&p.public()) || state.is_device(&t.public()) {
        bail!("the thief or its puppet is a device");
    }
    if let Some(scope) = state.compromised().first() {
        bail!("scope {scope} is still compromised after the admin's repair");
    }
    for (scope, epochs) in state.scopes() {
        let newest = epochs.current().context("an epoch")?;
        if !state.scope_keys(&t, scope, newest).is_empty() {
            bail!("the thief opens the newest key of {scope}");
        }
    }
    // The log is not frozen: the admin still issues ops.
    admin.add_device(Party::of(&key(&mut rng)))?;
    Ok("the thief and its puppet got nothing in".into())
}

/// Fails unless every op was taken (admitted, held or a duplicate).
fn refused_nothing(outcomes: Vec<basic_store::OpOutcome>) -> anyhow::Result<()> {
    match outcomes.into_iter().find_map(Result::err) {
        Some(why) => bail!("an op was refused: {why}"),
        None => Ok(()),
    }
}

/// The id of a commit's bytes, forged or tampered ones included.
fn id_of(bytes: &[u8]) -> anyhow::Result<basic_proto::CommitId> {
    basic_proto::Commit::id_of(bytes).ok_or_else(|| anyhow::anyhow!("not a commit envelope"))
}
