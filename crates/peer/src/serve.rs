//! Answering one peer's sync requests: our `Responder` for it
//! (`protocol-spec/sync.md` §3–§6), one request at a time, on the
//! blocking pool.

use std::sync::Arc;

use basic_net::PeerId;
use basic_proto::PublicKey;
use basic_proto::sync::{Answer, Responder};
use basic_store::{Store, SyncReplica};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::Peering;

/// Answers the requests `inbox` receives from `peer` until the peer
/// breaks the protocol (it is then cut off) or the task is aborted. Once
/// the peer proves a principal, `proved` says which (our session with the
/// peer may then send it our control log as a prelude, sync.md §3); `pull`
/// is bumped when the peer showed what our session should fetch from it
/// now (sync.md §6).
pub(super) async fn run<S: Store + Send + Sync + 'static>(
    context: Arc<Peering<S>>,
    peer: PeerId,
    mut inbox: mpsc::Receiver<(Vec<u8>, basic_net::Responder)>,
    proved: watch::Sender<Option<PublicKey>>,
    pull: watch::Sender<u64>,
) {
    let mut responder = Responder::new(context.key.clone(), context.local.clone(), peer.to_bytes());
    let mut rng = StdRng::from_rng(&mut rand::rng());
    while let Some((frame, reply)) = inbox.recv().await {
        let db = Arc::clone(&context.db);
        let handled = tokio::task::spawn_blocking(move || {
            let answer = responder.handle(&mut SyncReplica::new(&db), &frame, &mut rng);
            (responder, rng, answer)
        })
        .await;
        let answer;
        (responder, rng, answer) = match handled {
            Ok(handled) => handled,
            Err(error) => {
                warn!(%peer, %error, "answering a sync request panicked");
                return;
            }
        };
        if let Some(principal) = responder.proved() {
            proved.send_if_modified(|known| {
                let new = *known != Some(principal);
                *known = Some(principal);
                new
            });
        }
        if responder.take_pull_wanted() {
            pull.send_modify(|n| *n = n.wrapping_add(1));
        }
        match answer {
            Ok(Answer::Reply(frame)) => {
                if let Err(error) = reply.send(frame) {
                    tracing::debug!(%peer, %error, "sync answer not sent");
                }
            }
            Ok(Answer::Close(frame, violation)) => {
                warn!(%peer, %violation, "the peer broke the sync protocol: disconnecting");
                let _ = reply.send(frame);
                context.hooks.failed(peer, &format!("cut off: {violation}"));
                context.cut_off(peer).await;
                return;
            }
            Err(failure) => {
                // Our replica failed, not the peer: no answer (its request
                // fails and it tries again later).
                warn!(%peer, %failure, "cannot answer a sync request");
            }
        }
    }
}
