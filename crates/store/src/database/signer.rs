//! Signs the writer's own commits on a thread of its own (D49). A commit's
//! id does not cover its signature, so the writer chains, merges and views
//! the next writes of a group while earlier commits are being signed, and
//! collects the signatures before the group is made durable.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use basic_proto::{Commit, CommitError, SecretKey, UnsignedCommit};

/// The writer's side: hands commits to the signing thread and takes the
/// signed ones back, signing what the thread has not started itself.
pub(super) struct Signer {
    shared: Arc<Shared>,
    /// Started on the first commit handed over (a pinning peer never signs).
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a commit to sign, or the signer dropped.
    work: Condvar,
    /// Wakes the writer: the thread finished the commit it was signing.
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Handed over, not started.
    queue: VecDeque<Task>,
    /// Signed, in any order.
    signed: Vec<(usize, Result<Commit, CommitError>)>,
    /// Taken by the thread and not returned yet.
    signing: usize,
    /// Handed over since the last [`Signer::finish`].
    handed: usize,
    /// The thread died while signing (a panic): its commit is lost.
    failed: bool,
    stop: bool,
}

struct Task {
    index: usize,
    author: SecretKey,
    commit: UnsignedCommit,
}

impl Task {
    fn sign(self) -> (usize, Result<Commit, CommitError>) {
        (self.index, self.commit.sign(&self.author))
    }
}

/// Why [`Signer::finish`] could not return every commit signed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SignError {
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("the signing thread stopped while signing a commit")]
    ThreadDied,
}

impl Signer {
    pub(super) fn new() -> Self {
        Self { shared: Arc::default(), thread: None }
    }

    /// Hands `commit` over to be signed by `author`.
    pub(super) fn submit(&mut self, author: &SecretKey, commit: UnsignedCommit) {
        if self.thread.is_none() {
            let shared = Arc::clone(&self.shared);
            // Without the thread, `finish` signs everything on the writer.
            self.thread = std::thread::Builder::new()
                .name("basic-sign".into())
                .spawn(move || sign_until_stopped(&shared))
                .ok();
        }
        let mut state = lock(&self.shared.state);
        let index = state.handed;
        state.handed += 1;
        state.queue.push_back(Task { index, author: author.clone(), commit });
        drop(state);
        self.shared.work.notify_one();
    }

    /// Every commit handed over since the last call, signed, in the order
    /// they were handed over. The writer signs those the thread has not
    /// started, then waits for the one it is signing.
    pub(super) fn finish(&mut self) -> Result<Vec<Commit>, SignError> {
        let mut state = lock(&self.shared.state);
        while let Some(task) = state.queue.pop_front() {
            drop(state);
            let signed = task.sign();
            state = lock(&self.shared.state);
            state.signed.push(signed);
        }
        while state.signing > 0 && !state.failed {
            state = self.shared.done.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let failed = std::mem::take(&mut state.failed);
        let mut signed = std::mem::take(&mut state.signed);
        state.handed = 0;
        drop(state);
        if failed {
            return Err(SignError::ThreadDied);
        }
        signed.sort_unstable_by_key(|(index, _)| *index);
        Ok(signed.into_iter().map(|(_, commit)| commit).collect::<Result<_, _>>()?)
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The signing thread: takes commits off the queue until the signer is
/// dropped.
fn sign_until_stopped(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        if state.stop {
            return;
        }
        let Some(task) = state.queue.pop_front() else {
            state = shared.work.wait(state).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        state.signing += 1;
        drop(state);
        let died = DiesLoudly(shared);
        let signed = task.sign();
        std::mem::forget(died);
        state = lock(&shared.state);
        state.signed.push(signed);
        state.signing -= 1;
        shared.done.notify_one();
    }
}

/// Dropped only if signing panics: tells the writer, which would
/// otherwise wait for the commit forever.
struct DiesLoudly<'a>(&'a Shared);

impl Drop for DiesLoudly<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.failed = true;
        state.signing -= 1;
        drop(state);
        self.0.done.notify_one();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use basic_proto::{
        Changes, CommitDraft, DatabaseId, Hlc, KeyPart, Name, RowKey, RowOp, ScopeId, ScopeKey,
    };
    use rand::SeedableRng;

    fn chain(author: &SecretKey, count: u64) -> Vec<UnsignedCommit> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let key = ScopeKey::from_bytes([5; 32]);
        let changes = Changes::new(vec![RowOp::Delete {
            table: Name::new("todo.items").unwrap(),
            key: RowKey::single(KeyPart::Integer(1)),
            generation: 2,
        }])
        .unwrap();
        let mut prev = None;
        (1..=count)
            .map(|seq| {
                let draft = CommitDraft {
                    database: DatabaseId([9; 32]),
                    seq,
                    prev,
                    hlc: Hlc { wall_ms: seq, counter: 0 },
                    scope: ScopeId([1; 16]),
                    epoch: 0,
                };
                let commit =
                    UnsignedCommit::seal(&author.public(), draft, &changes, &key, &mut rng)
                        .unwrap();
                prev = Some(commit.id());
                commit
            })
            .collect()
    }

    /// However the work splits between the thread and the writer, every
    /// commit comes back signed, once, in the order handed over.
    #[test]
    fn every_commit_comes_back_signed_in_order() {
        let author = SecretKey::from_seed([3; 32]);
        let mut signer = Signer::new();
        for round in [1, 2, 40, 0, 7] {
            let commits = chain(&author, round);
            let ids: Vec<_> = commits.iter().map(UnsignedCommit::id).collect();
            for commit in commits {
                signer.submit(&author, commit);
            }
            let signed = signer.finish().unwrap();
            assert_eq!(signed.iter().map(Commit::id).collect::<Vec<_>>(), ids, "round {round}");
            for commit in signed {
                assert_eq!(Commit::decode(commit.as_bytes()).unwrap(), commit);
            }
        }
    }

    #[test]
    fn a_commit_handed_over_with_another_key_fails_its_group() {
        let author = SecretKey::from_seed([3; 32]);
        let mut signer = Signer::new();
        let mut commits = chain(&author, 3).into_iter();
        signer.submit(&author, commits.next().unwrap());
        signer.submit(&SecretKey::from_seed([4; 32]), commits.next().unwrap());
        signer.submit(&author, commits.next().unwrap());
        assert!(matches!(signer.finish(), Err(SignError::Commit(CommitError::WrongAuthor))));
        // Nothing of the failed group is left over for the next.
        let next = chain(&author, 1).remove(0);
        let id = next.id();
        signer.submit(&author, next);
        assert_eq!(signer.finish().unwrap().iter().map(Commit::id).collect::<Vec<_>>(), [id]);
    }
}
