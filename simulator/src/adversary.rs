//! Adversarial peers: they open sessions with an honest node's real
//! [`Responder`] and send forged, tampered, replayed, stale-epoch,
//! oversized and out-of-order frames. Each attack states what the honest
//! side must do; anything else is an invariant failure.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use basic_proto::commit::MAX_COMMIT_BYTES;
use basic_proto::sync::message::Message;
use basic_proto::sync::proof::{Side, Transcript};
use basic_proto::sync::{Answer, ErrorCode, Responder, View};
use basic_proto::{Changes, KeyCache, KeyPart, Name, RowKey, RowOp, ScopeKey, SecretKey, Value};
use basic_store::{LogWriter, SyncReplica};
use rand_core::Rng;

use crate::node::Role;
use crate::world::{T0, World, key};

/// One kind of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Bytes that are not a frame.
    Garbage,
    /// A summary before the membership proof.
    OutOfOrder,
    /// A key that is no member proves itself and pushes.
    Stranger,
    /// A member pushes a valid commit with one byte flipped.
    Tampered,
    /// A member pushes a commit signed by a non-member (valid signature).
    Forged,
    /// A member pushes commits the target already holds.
    Replayed,
    /// A member pushes a commit under an epoch it was never given.
    StaleEpoch,
    /// A member pushes a frame over the request limit.
    Oversized,
}

/// Every attack, in the order a byzantine run cycles through them.
pub const ALL: [Attack; 8] = [
    Attack::Garbage,
    Attack::OutOfOrder,
    Attack::Stranger,
    Attack::Tampered,
    Attack::Forged,
    Attack::Replayed,
    Attack::StaleEpoch,
    Attack::Oversized,
];

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

impl Conn<'_> {
    fn send(&mut self, frame: &[u8]) -> anyhow::Result<Reply> {
        let db = self.world.nodes[self.target].db.as_ref().context("target up")?;
        let mut store = SyncReplica::new(db);
        match self.responder.handle(&mut store, frame, &mut self.world.rng)? {
            Answer::Reply(bytes) => {
                Ok(Reply::Ok(Box::new(Message::decode(&bytes, usize::MAX, &KeyCache::default())?)))
            }
            Answer::Close(_, violation) => Ok(Reply::Closed(violation.code)),
        }
    }

    /// Runs the handshake as `key`; returns whether the target accepted it.
    fn handshake(&mut self, key: &SecretKey) -> anyhow::Result<Result<(), String>> {
        let database = self.world.database;
        let mut nonce = [0; 32];
        self.world.rng.fill_bytes(&mut nonce);
        let hello = Message::Hello { database, key: key.public(), nonce };
        let Reply::Ok(challenge) = self.send(&hello.encode())? else {
            bail!("hello was not challenged");
        };
        let Message::Challenge { key: theirs, nonce: their_nonce, proof } = *challenge else {
            bail!("hello was not challenged");
        };
        let transcript = Transcript {
            database,
            requester: key.public(),
            requester_nonce: nonce,
            requester_transport: vec![ADVERSARY_TRANSPORT],
            responder: theirs,
            responder_nonce: their_nonce,
            responder_transport: vec![self.target as u8],
        };
        if !transcript.verify(Side::Responder, &proof) {
            bail!("the honest node's proof does not verify");
        }
        let auth = Message::Auth { proof: transcript.prove(Side::Requester, key), prelude: vec![] };
        Ok(match self.send(&auth.encode())? {
            Reply::Ok(message) if matches!(*message, Message::Ready { .. }) => Ok(()),
            Reply::Ok(other) => Err(other.name().to_owned()),
            Reply::Closed(code) => Err(format!("{code:?}")),
        })
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
        cells: BTreeMap::from([(Name::new("name")?, Value::Text("pwned".into()))]),
    };
    let changes = Changes::new(vec![row]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = T0 + world.now;
    Ok(writer.write(&Name::new("todo")?, epoch, key, &changes, now, &mut world.rng)?)
}

/// Runs one attack on `target`; an error means the honest node did not
/// react as the protocol requires.
pub fn attack(world: &mut World, attack: Attack, target: usize) -> anyhow::Result<String> {
    let responder = Responder::new(
        world.nodes[target].key.clone(),
        vec![target as u8],
        vec![ADVERSARY_TRANSPORT],
    );
    let insider_key = insider(world).map(|i| world.nodes[i].key.clone());
    let mut conn = Conn { world, target, responder };
    let expect_close = |reply: Reply, code: ErrorCode, what: &str| -> anyhow::Result<String> {
        match reply {
            Reply::Closed(got) if got == code => Ok(format!("closed {got:?}")),
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
        Attack::Tampered
        | Attack::Forged
        | Attack::Replayed
        | Attack::StaleEpoch
        | Attack::Oversized => {
            let Some(insider_key) = insider_key else { return Ok("no insider".into()) };
            if let Err(why) = conn.handshake(&insider_key)? {
                return Ok(format!("insider refused ({why})"));
            }
            match attack {
                Attack::Tampered => {
                    let Some(mut bytes) = commit_bytes(conn.world, target)? else {
                        return Ok("nothing to tamper".into());
                    };
                    let at = bytes.len() - 1 - (conn.world.rng.next_u64() as usize % 16);
                    bytes[at] ^= 0x40;
                    let reply = conn.push(vec![bytes])?;
                    expect_close(reply, ErrorCode::BadData, "tampered commit")
                }
                Attack::Forged => {
                    let stranger = key(&mut conn.world.rng);
                    let (epoch, scope_key) = current_key(conn.world, &insider_key)?;
                    let commit = a_commit(conn.world, &stranger, epoch, &scope_key)?;
                    conn.world.forbidden.push((commit.id(), "forged author".into()));
                    match conn.push(vec![commit.as_bytes().to_vec()])? {
                        Reply::Ok(m) if matches!(*m, Message::Ack { stored: 0 }) => {
                            Ok("refused".into())
                        }
                        Reply::Ok(other) => bail!("forged commit answered {other:?}"),
                        Reply::Closed(code) => Ok(format!("closed {code:?}")),
                    }
                }
                Attack::Replayed => {
                    let Some(bytes) = commit_bytes(conn.world, target)? else {
                        return Ok("nothing to replay".into());
                    };
                    match conn.push(vec![bytes.clone(), bytes])? {
                        Reply::Ok(m) if matches!(*m, Message::Ack { stored: 0 }) => {
                            Ok("idempotent".into())
                        }
                        Reply::Ok(other) => bail!("replayed commit answered {other:?}"),
                        Reply::Closed(code) => bail!("replay closed the session: {code:?}"),
                    }
                }
                Attack::StaleEpoch => {
                    let (epoch, scope_key) = current_key(conn.world, &insider_key)?;
                    let commit = a_commit(conn.world, &insider_key, epoch + 7, &scope_key)?;
                    conn.world.forbidden.push((commit.id(), "epoch never given".into()));
                    match conn.push(vec![commit.as_bytes().to_vec()])? {
                        Reply::Ok(m) if matches!(*m, Message::Ack { stored: 0 }) => {
                            Ok("refused".into())
                        }
                        Reply::Ok(other) => bail!("stale-epoch commit answered {other:?}"),
                        Reply::Closed(code) => Ok(format!("closed {code:?}")),
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

/// The current epoch of `todo` and its key, as `member` can open it.
fn current_key(world: &World, member: &SecretKey) -> anyhow::Result<(u32, ScopeKey)> {
    let (_, auth) = world.reference().context("a device is up")?;
    let scope = Name::new("todo")?;
    let epoch = auth.scopes().get(&scope).and_then(|s| s.current()).context("todo epoch")?;
    let key = auth
        .scope_keys(member, &scope, epoch)
        .into_iter()
        .next()
        .unwrap_or_else(|| ScopeKey::from_bytes([7; 32]));
    Ok((epoch, key))
}
