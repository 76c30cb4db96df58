//! Our sync session with one peer (`protocol-spec/sync.md` §3–§6): the
//! store's session driver ([`basic_store::sync::Session`]) stepped over
//! `Net::request`.
//!
//! The task loops: one blocking step of the session, then either sends
//! the request and waits for its answer, or sleeps until the session's
//! timer or the next change. Requests are paced below the
//! peer's rate limit ([`Pace`]): when the budget is spent the next step
//! waits, and the changes that arrive meanwhile go in one push.

use std::sync::Arc;
use std::time::Duration;

use basic_net::PeerId;
use basic_proto::PublicKey;
use basic_proto::sync::message::ErrorCode;
use basic_proto::sync::{Event, RequesterConfig, StoreFailure, View};
use basic_store::sync::{Input, Session, Step, is_shut_out, shut_out_notice};
use basic_store::{Database, Store};
use rand::RngExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{PEER_REQUEST_BURST, PEER_REQUESTS_PER_S, Peering, RESYNC_MS, Shown, principal_id};

/// Wait before starting a new session after a local store failure.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Shortest sleep when the requester's timer is already due but it had
/// nothing to send (guards against spinning).
const MIN_SLEEP: Duration = Duration::from_millis(20);
/// Wait before asking again a peer that does not know us as a member (it
/// may learn of us meanwhile; or we were removed, and are told so).
const NOT_MEMBER_RETRY: Duration = Duration::from_secs(60);
/// Why a session ended when the peer is a device the control log removed
/// or an app it revoked.
const PEER_REMOVED: &str = "the peer was removed from the database (or, an app, revoked)";

/// Runs sessions with `peer` until one ends for a protocol reason (the
/// peer is then cut off) or the task is aborted (disconnection). `proved`
/// is the principal the peer proved to our responder, if it did; `pulls`
/// is bumped when our responder saw the peer hold what a round of ours
/// should fetch now; `dialled`, whether we dialled the peer.
///
/// A peer that dialled us and never proved membership on this transport
/// id hears nothing from us — not even the `hello` that names the database
/// and this device's key (sync.md §3) — until it proves itself to our
/// responder: so anyone who can reach the port learns nothing by
/// connecting. Peers we dial (given addresses, saved ones, the LAN) and
/// peers that proved themselves before are greeted at once.
pub(super) async fn run<S: Store + Send + Sync + 'static>(
    context: Arc<Peering<S>>,
    peer: PeerId,
    dialled: bool,
    mut proved: watch::Receiver<Option<PublicKey>>,
    mut pulls: watch::Receiver<u64>,
) {
    if !dialled && context.hooks.shown(&peer).is_none() {
        info!(%peer, "waiting for the peer that dialled us to prove itself before greeting it");
        // A member, or a device or app our log shut out (which must be told).
        let known = |key: &Option<PublicKey>| {
            let auth = context.db.auth_state();
            key.is_some_and(|key| {
                basic_proto::sync::entitled_view(&auth, &key).is_some() || is_shut_out(&auth, &key)
            })
        };
        if proved.wait_for(known).await.is_err() {
            return;
        }
    }
    loop {
        match session(&context, peer, &proved, &mut pulls).await {
            Ok(reason) if reason == PEER_REMOVED => {
                info!(%peer, "{PEER_REMOVED}: told it so; disconnecting");
                context.hooks.failed(peer, "removed");
                context.cut_off(peer).await;
                return;
            }
            Ok(reason) if refused_as_non_member(&reason) => {
                // Not the peer's fault: it does not know us (yet). Keep the
                // connection (its own session may tell us we were removed)
                // and ask again later, not in a loop.
                info!(%peer, "the peer does not know this device as a member: asking again in {NOT_MEMBER_RETRY:?}, or once it proves itself here");
                context.hooks.failed(peer, "refused: not a member there");
                // A peer that proves itself to our responder meanwhile may
                // be sent our control log as a prelude: ask again at once.
                let proved_before = *proved.borrow_and_update();
                tokio::select! {
                    _ = tokio::time::sleep(NOT_MEMBER_RETRY) => {}
                    _ = proved.wait_for(|now| now.is_some() && *now != proved_before) => {}
                }
            }
            Ok(reason) => {
                warn!(%peer, %reason, "sync session ended: disconnecting");
                context.hooks.failed(peer, &format!("closed: {reason}"));
                context.cut_off(peer).await;
                return;
            }
            Err(failure) => {
                warn!(%peer, %failure, "sync session stopped by a local failure; starting again");
                context.hooks.failed(peer, "local store failure");
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }
}

/// One session; returns why it closed.
async fn session<S: Store + Send + Sync + 'static>(
    context: &Arc<Peering<S>>,
    peer: PeerId,
    proved: &watch::Receiver<Option<PublicKey>>,
    pulls: &mut watch::Receiver<u64>,
) -> Result<String, StoreFailure> {
    let previous = context.hooks.shown(&peer);
    let config = RequesterConfig {
        key: context.key.clone(),
        database: context.db.id(),
        local_transport: context.local.clone(),
        peer_transport: peer.to_bytes(),
        // What our own grants entitle us to: everything for a device or a
        // pinning peer, the granted scopes for an app.
        view: basic_proto::sync::entitled_view(&context.db.auth_state(), &context.key.public())
            .unwrap_or(View::All),
        resync_ms: RESYNC_MS,
        nonce: rand::rng().random(),
        // The principal this peer id proved in an earlier session: the only
        // peer our control log may go to as a prelude (sync.md §3).
        known_peer: previous.as_ref().map(|shown| shown.principal),
    };
    let mut changes = context.changes.clone();
    changes.mark_unchanged();
    let mut resync = context.resync.subscribe();
    let mut resync_asked = false;
    let heads = previous.as_ref().map(|s| s.heads.clone()).unwrap_or_default();
    let mut state = blocking(context, move |db| Session::open(db, config, heads)).await?;
    let mut input = Input::Idle;
    let mut pace = Pace::new(Instant::now());
    let mut watching = true;
    // False once our responder for the peer stopped (no more pulls).
    let mut pulls_open = true;
    // Set when a change woke us (`changed()` marks it seen).
    let mut woken = false;
    loop {
        if let Some(until) = pace.wait_until(Instant::now()) {
            tracing::trace!(%peer, "sync requests paced");
            tokio::time::sleep_until(until).await;
        }
        let changed = std::mem::take(&mut woken) || changes.has_changed().unwrap_or(false);
        if changed {
            changes.mark_unchanged();
        }
        if std::mem::take(&mut resync_asked)
            || resync.has_changed().unwrap_or(false)
            || pulls.has_changed().unwrap_or(false)
        {
            resync.mark_unchanged();
            pulls.mark_unchanged();
            state.resync_now();
        }
        let now = context.now_ms();
        if let Some(principal) = *proved.borrow() {
            state.peer_proved(principal);
        }
        if changed {
            state.changed();
        }
        let (returned, output) = blocking(context, move |db| {
            let output = state.step(db, input, now);
            Ok((state, output))
        })
        .await?;
        state = returned;
        let output: Step = output?;
        for event in output.events {
            if let Some(reason) = report(context, peer, &state, previous.as_ref(), event) {
                if tell_if_shut_out(context, peer, &state).await {
                    return Ok(PEER_REMOVED.into());
                }
                return Ok(reason);
            }
        }
        // The peer may have been removed since it proved itself.
        if tell_if_shut_out(context, peer, &state).await {
            return Ok(PEER_REMOVED.into());
        }
        if let Some(request) = output.request {
            tracing::trace!(%peer, bytes = request.len(), "sync request");
            pace.sent(Instant::now());
            input = match context.net.request(peer, request).await {
                Ok(answer) => Input::Answer(answer),
                Err(error) => {
                    tracing::debug!(%peer, %error, "sync request failed");
                    Input::Failure
                }
            };
            continue;
        }
        input = Input::Idle;
        let Some(wake_at) = output.wake_at else {
            // Closed: the Closed event has been reported above.
            return Ok("session closed".into());
        };
        let delay = Duration::from_millis(wake_at.saturating_sub(context.now_ms())).max(MIN_SLEEP);
        tracing::trace!(%peer, ?delay, changed, "sync session idle");
        tokio::select! {
            // The signal ends only with the database: then only timers.
            changed = changes.changed(), if watching => {
                watching = changed.is_ok();
                woken = watching;
            }
            // Asked for a round now: it is started at the next step
            // (`changed()` marks it seen).
            asked = resync.changed() => resync_asked = asked.is_ok(),
            // Our responder saw the peer hold what its pushes will not
            // bring (sync.md §6).
            pulled = pulls.changed(), if pulls_open => {
                pulls_open = pulled.is_ok();
                resync_asked = pulls_open;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Whether a session's close `reason` is the peer refusing us as no member.
fn refused_as_non_member(reason: &str) -> bool {
    reason.starts_with(&format!("{:?}: peer ended the session", ErrorCode::NotMember))
}

/// If the peer proved a principal that our control log removed as a
/// device, or revoked as an app on every scope, sends it the operations
/// that did it with their causal past (`control-log.md` §9.5), over the
/// session it answers us on, and says so.
async fn tell_if_shut_out<S: Store + Send + Sync + 'static>(
    context: &Arc<Peering<S>>,
    peer: PeerId,
    state: &Session,
) -> bool {
    let Some(principal) = state.requester().peer() else { return false };
    if !is_shut_out(&context.db.auth_state(), &principal) {
        return false;
    }
    let frames = blocking(context, move |db| Ok(shut_out_notice(db, &principal))).await;
    for frame in frames.unwrap_or_default() {
        if let Err(error) = context.net.request(peer, frame).await {
            tracing::debug!(%peer, %error, "the removal was not delivered");
            break;
        }
    }
    true
}

/// A token bucket over our requests to one peer, at half the rate and
/// burst the peer accepts (see [`PEER_REQUESTS_PER_S`]): a margin for
/// arrival times bunched by the network.
#[derive(Debug)]
pub(super) struct Pace {
    tokens: f64,
    last: Instant,
}

impl Pace {
    const RATE: f64 = PEER_REQUESTS_PER_S as f64 / 2.0;
    const BURST: f64 = PEER_REQUEST_BURST as f64 / 2.0;

    fn new(now: Instant) -> Self {
        Self { tokens: Self::BURST, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * Self::RATE).min(Self::BURST);
        self.last = self.last.max(now);
    }

    /// When the next request may go, if not now.
    fn wait_until(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        (self.tokens < 1.0).then(|| now + Duration::from_secs_f64((1.0 - self.tokens) / Self::RATE))
    }

    /// Accounts one request sent.
    fn sent(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

/// Runs `f` on the database on the blocking pool.
async fn blocking<S: Store + Send + Sync + 'static, T: Send + 'static>(
    context: &Arc<Peering<S>>,
    f: impl FnOnce(&Database<S>) -> Result<T, StoreFailure> + Send + 'static,
) -> Result<T, StoreFailure> {
    let db = Arc::clone(&context.db);
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| StoreFailure::new(StepPanicked(e)))?
}

/// A sync step on the blocking pool panicked.
#[derive(Debug, thiserror::Error)]
#[error("sync step panicked: {0}")]
struct StepPanicked(tokio::task::JoinError);

/// Logs an event and updates the status; returns the reason if the
/// session closed.
fn report<S: Store>(
    context: &Peering<S>,
    peer: PeerId,
    state: &Session,
    previous: Option<&Shown>,
    event: Event,
) -> Option<String> {
    match event {
        Event::Authenticated { peer: principal } => {
            let id = principal_id(&context.db.auth_state(), &principal);
            info!(%peer, principal = %id, "peer authenticated");
            if previous.is_some_and(|p| p.principal != principal) {
                warn!(%peer, principal = %id, "this peer id answered for another principal before");
            }
            context.hooks.authenticated(peer, &id);
        }
        Event::Synced { received, round_trips } => {
            if received > 0 {
                info!(%peer, received, round_trips, "synced");
            } else {
                tracing::debug!(%peer, round_trips, "in sync");
            }
            // Named again: the round may have brought the operation that
            // says what the peer is (a pinning peer added meanwhile).
            let principal =
                state.requester().peer().map(|key| principal_id(&context.db.auth_state(), &key));
            context.hooks.synced(peer, principal);
            if let Some(principal) = state.requester().peer() {
                let heads = state.requester().shown().clone();
                context.hooks.remember(peer, Shown { principal, heads });
            }
        }
        Event::RolledBack { author, before, now, .. } => {
            let auth = context.db.auth_state();
            let author = principal_id(&auth, &author);
            let principal = state.requester().peer().map(|key| principal_id(&auth, &key));
            warn!(
                %peer, principal = principal.as_deref().unwrap_or("?"), %author, ?before, ?now,
                "the peer shows less of this author's log than it showed before (withheld or rolled back)"
            );
        }
        Event::Closed { reason } => return Some(reason),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        for _ in 0..Pace::BURST as usize {
            assert_eq!(pace.wait_until(start), None);
            pace.sent(start);
        }
        let until = pace.wait_until(start).expect("budget spent");
        let gap = until - start;
        assert!(
            gap > Duration::ZERO && gap <= Duration::from_secs_f64(1.0 / Pace::RATE),
            "{gap:?}"
        );
        let later = until + Duration::from_micros(1);
        assert_eq!(pace.wait_until(later), None);
        pace.sent(later);
        assert!(pace.wait_until(later).is_some());
        // Half the peer's limits: the peer never refuses us.
        assert!(Pace::RATE * 2.0 <= f64::from(PEER_REQUESTS_PER_S));
        assert!(Pace::BURST * 2.0 <= f64::from(PEER_REQUEST_BURST));
    }
}
