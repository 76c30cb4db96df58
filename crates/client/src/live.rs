//! Live queries as a [`Stream`]: a thread waits on the store's
//! subscription and hands each new result to the stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use basic_store::{LiveError, Rows, Subscription};
use futures::Stream;
use tokio::sync::mpsc;

/// How long the thread waits for a result before checking whether the
/// stream is still wanted.
const CHECK: Duration = Duration::from_millis(250);
/// Results waiting to be taken; a slow reader skips none of the newest.
const QUEUE: usize = 4;

/// The results of a live query: its rows now, then again after every
/// change; ends with the error that ended the query, if one did.
#[derive(Debug)]
pub struct LiveRows {
    results: mpsc::Receiver<Result<Rows, LiveError>>,
}

impl LiveRows {
    pub(crate) fn new(subscription: Subscription) -> Self {
        let (sender, results) = mpsc::channel(QUEUE);
        std::thread::spawn(move || {
            loop {
                if sender.is_closed() {
                    return;
                }
                if let Some(rows) = subscription.recv_timeout(CHECK)
                    && sender.blocking_send(Ok(rows)).is_err()
                {
                    return;
                }
                if let Some(error) = subscription.ended() {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            }
        });
        Self { results }
    }
}

impl Stream for LiveRows {
    type Item = Result<Rows, LiveError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.results.poll_recv(cx)
    }
}
