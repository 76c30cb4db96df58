//! The sync session driver: one session with one peer, stepped the same
//! way by the node (over libp2p), the simulator (over its virtual network)
//! and [`super::LocalLink`] (in one process).
//!
//! A driver owns the transport and the clock; this owns everything else.
//! Each [`Session::step`] runs, in this order:
//!
//! 1. the input: the answer to the outstanding request, or its failure
//!    (timeout, closed stream), or nothing (a timer fired, or the session
//!    just started);
//! 2. if the database changed since the last step ([`Session::changed`]),
//!    what the change feed has — new local commits, commits received from
//!    other peers, new control operations — queued for a live push
//!    (sync.md §6);
//! 3. the next request, if the requester has one;
//! 4. the events the above produced, and when to step next.
//!
//! The driver sends the request and steps again with its answer, or, when
//! there is none, steps again at `wake_at` or on the next change.

use basic_proto::PublicKey;
use basic_proto::sync::{Event, Requester, RequesterConfig, StoreFailure};

use super::{ChangeFeed, MAX_FRESH_BYTES, SyncReplica};
use crate::database::Database;
use crate::storage::kv::Store;

/// What the peer showed of each author in earlier sessions: the highest
/// seq and count ([`Requester::shown`]).
pub type Shown = std::collections::BTreeMap<PublicKey, (u64, u64)>;

/// What happened to the outstanding request since the last step.
#[derive(Debug)]
pub enum Input {
    /// No request was outstanding: a timer fired, a change arrived, or the
    /// session starts.
    Idle,
    /// The peer's answer.
    Answer(Vec<u8>),
    /// The request failed (timeout, stream closed, peer unreachable).
    Failure,
}

/// What a step produced.
#[derive(Debug)]
pub struct Step {
    /// The request to send now, if any.
    pub request: Option<Vec<u8>>,
    /// What happened (authenticated, synced, a rollback, closed).
    pub events: Vec<Event>,
    /// When to step again if nothing else happens; `None` once the session
    /// closed (then [`Event::Closed`] is among the events).
    pub wake_at: Option<u64>,
}

/// One sync session with one peer: our requester and the change feed that
/// fills its live pushes.
#[derive(Debug)]
pub struct Session {
    requester: Requester,
    feed: ChangeFeed,
    changed: bool,
}

impl Session {
    /// A session on `db` that starts its handshake at the first step;
    /// `shown` is what the peer showed in earlier sessions. What `db`
    /// stores from now on is pushed live once the peer proved itself.
    pub fn open<S: Store>(
        db: &Database<S>,
        config: RequesterConfig,
        shown: Shown,
    ) -> Result<Self, StoreFailure> {
        Ok(Self {
            requester: Requester::new(config, shown),
            feed: ChangeFeed::new(db)?,
            changed: false,
        })
    }

    /// The database changed (a durable write, commits or operations
    /// received): the next step pushes what is new.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// The peer proved `principal` to our responder on this connection.
    pub fn peer_proved(&mut self, principal: PublicKey) {
        self.requester.peer_proved(principal);
    }

    /// Starts a round at the next step instead of after the interval.
    pub fn resync_now(&mut self) {
        self.requester.resync_now();
    }

    /// The requester, to read what it learned (the peer, what it showed).
    pub fn requester(&self) -> &Requester {
        &self.requester
    }

    /// Runs one step at `now` (ms since the Unix epoch); see the module
    /// documentation for the order. An `Err` is a failure of the local
    /// store, not of the peer: the driver drops the session and starts a
    /// new one later.
    pub fn step<S: Store>(
        &mut self,
        db: &Database<S>,
        input: Input,
        now: u64,
    ) -> Result<Step, StoreFailure> {
        let mut store = SyncReplica::new(db);
        match input {
            Input::Idle => {}
            Input::Answer(frame) => self.requester.handle_response(&mut store, &frame, now)?,
            Input::Failure => self.requester.handle_failure(now),
        }
        if std::mem::take(&mut self.changed) {
            let fresh = self.feed.poll(db)?;
            let bytes: usize = fresh
                .ops
                .iter()
                .map(Vec::len)
                .chain(fresh.commits.iter().map(|c| c.bytes.len()))
                .sum();
            // The requester leaves out the peer's own commits and those
            // outside its view.
            self.requester.push(&store, fresh.ops, fresh.commits);
            if bytes >= MAX_FRESH_BYTES {
                // The feed stopped at its budget: the rest goes by summary, now.
                self.requester.resync_now();
            }
        }
        let request = self.requester.poll_request(&mut store, now)?;
        let events = std::iter::from_fn(|| self.requester.poll_event()).collect();
        Ok(Step { request, events, wake_at: self.requester.poll_timeout() })
    }
}
