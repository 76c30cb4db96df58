//! Two databases in one process syncing through the real protocol, each
//! stepping a [`Session`] against the other's responder: replication to a
//! second disk, tests and benchmarks.

use basic_proto::PublicKey;
use basic_proto::sync::{Answer, Event, RequesterConfig, Responder, StoreFailure, View};
use rand::RngExt;
use rand::rngs::StdRng;

use super::{Input, Session, SyncReplica};
use crate::database::Database;
use crate::storage::kv::Store;

/// What one run of a [`LocalLink`] exchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkRun {
    /// Request/response exchanges, both directions.
    pub exchanges: u64,
    /// Exchanges made by the first database's requester (its pulls and pushes).
    pub exchanges_a: u64,
    /// Frame bytes of those exchanges.
    pub bytes_a: u64,
    /// Frame bytes, both directions.
    pub bytes: u64,
    /// Commits and operations newly stored, both sides.
    pub received: u64,
}

/// Why a local sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A replica failed.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// A database error (reading its key).
    #[error(transparent)]
    Database(#[from] crate::database::DbError),
    /// One side ended the session.
    #[error("session closed: {0}")]
    Closed(String),
}

/// One side of a link: its session (pulling from the other side) and its
/// responder (answering the other side's session).
#[derive(Debug)]
struct Side {
    session: Session,
    responder: Responder,
    /// The request the last step produced, not yet sent.
    next: Option<Vec<u8>>,
}

impl Side {
    fn new<S: Store>(
        db: &Database<S>,
        key: &basic_proto::SecretKey,
        peer: PublicKey,
        (me, them): (u8, u8),
        rng: &mut StdRng,
    ) -> Result<Self, StoreFailure> {
        let config = RequesterConfig {
            key: key.clone(),
            database: db.id(),
            local_transport: vec![me],
            peer_transport: vec![them],
            view: View::All,
            resync_ms: u64::MAX,
            nonce: rng.random(),
            // Both ends are in this process: each knows the other's principal.
            known_peer: Some(peer),
        };
        Ok(Self {
            session: Session::open(db, config, Default::default())?,
            responder: Responder::new(key.clone(), vec![me], vec![them]),
            next: None,
        })
    }
}

/// A sync session between two databases open in one process, each pulling
/// from the other through the real protocol. Sessions persist across
/// [`LocalLink::run`]s.
#[derive(Debug)]
pub struct LocalLink {
    a: Side,
    b: Side,
    rng: StdRng,
}

impl LocalLink {
    /// A link between `a` and `b`, both replicating every scope they may.
    pub fn new<S: Store, T: Store>(a: &Database<S>, b: &Database<T>) -> Result<Self, LinkError> {
        let mut rng = a.environment().rng();
        let (a_key, b_key) = (a.member_key()?, b.member_key()?);
        let a_side = Side::new(a, &a_key, b_key.public(), (1, 2), &mut rng)?;
        let b_side = Side::new(b, &b_key, a_key.public(), (2, 1), &mut rng)?;
        Ok(Self { a: a_side, b: b_side, rng })
    }

    /// Runs rounds until neither side has anything to ask: afterwards each
    /// holds everything the other showed.
    pub fn run<S: Store, T: Store>(
        &mut self,
        a: &Database<S>,
        b: &Database<T>,
        now_ms: u64,
    ) -> Result<LinkRun, LinkError> {
        let mut run = LinkRun::default();
        self.a.session.resync_now();
        self.b.session.resync_now();
        loop {
            let bytes = run.bytes;
            let moved_a = exchange(
                &mut self.a,
                a,
                &mut self.b.responder,
                b,
                now_ms,
                &mut self.rng,
                &mut run,
            )?;
            run.exchanges_a += u64::from(moved_a);
            run.bytes_a += run.bytes - bytes;
            let moved_b = exchange(
                &mut self.b,
                b,
                &mut self.a.responder,
                a,
                now_ms,
                &mut self.rng,
                &mut run,
            )?;
            if !moved_a && !moved_b {
                return Ok(run);
            }
        }
    }
}

/// One request of `side`'s session (on `mine`) answered by `responder` (on
/// `theirs`); false when the session had nothing to ask.
fn exchange<S: Store, T: Store>(
    side: &mut Side,
    mine: &Database<S>,
    responder: &mut Responder,
    theirs: &Database<T>,
    now_ms: u64,
    rng: &mut StdRng,
    run: &mut LinkRun,
) -> Result<bool, LinkError> {
    let request = match side.next.take() {
        Some(request) => request,
        None => {
            let step = side.session.step(mine, Input::Idle, now_ms)?;
            record(&step.events, run)?;
            match step.request {
                Some(request) => request,
                None => return Ok(false),
            }
        }
    };
    let response = match responder.handle(&mut SyncReplica::new(theirs), &request, rng)? {
        Answer::Reply(frame) => frame,
        Answer::Close(_, violation) => return Err(LinkError::Closed(violation.to_string())),
    };
    run.exchanges += 1;
    run.bytes += (request.len() + response.len()) as u64;
    let step = side.session.step(mine, Input::Answer(response), now_ms)?;
    record(&step.events, run)?;
    side.next = step.request;
    Ok(true)
}

fn record(events: &[Event], run: &mut LinkRun) -> Result<(), LinkError> {
    for event in events {
        match event {
            Event::Closed { reason } => return Err(LinkError::Closed(reason.clone())),
            Event::Synced { received, .. } => run.received += received,
            _ => {}
        }
    }
    Ok(())
}
