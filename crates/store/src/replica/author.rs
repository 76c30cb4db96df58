//! A writer's own log: the next seq, the previous commit's id and its clock.

use basic_proto::{
    Changes, Clock, Commit, CommitDraft, CommitError, CommitId, DatabaseId, Hlc, ScopeId, ScopeKey,
    SecretKey, UnsignedCommit,
};
use rand_core::CryptoRng;

/// Chains one author's commits: each gets the next seq, the previous id and
/// a clock stamp above everything the author has seen.
#[derive(Debug, Clone)]
pub struct LogWriter {
    secret: SecretKey,
    database: DatabaseId,
    seq: u64,
    prev: Option<CommitId>,
    clock: Clock,
}

impl LogWriter {
    /// A writer whose log holds `seq` commits, the last being `prev`, and
    /// whose clock has seen `last_stamp`.
    pub fn resume(
        secret: SecretKey,
        database: DatabaseId,
        seq: u64,
        prev: Option<CommitId>,
        last_stamp: Hlc,
    ) -> Self {
        Self { secret, database, seq, prev, clock: Clock::resume(last_stamp) }
    }

    /// A writer with an empty log.
    pub fn new(secret: SecretKey, database: DatabaseId) -> Self {
        Self::resume(secret, database, 0, None, Hlc::default())
    }

    /// The author's secret.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// Seq of the last commit written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Id of the last commit written.
    pub fn prev(&self) -> Option<CommitId> {
        self.prev
    }

    /// The author's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The author's clock, to observe stamps of received commits.
    pub fn clock_mut(&mut self) -> &mut Clock {
        &mut self.clock
    }

    /// Seals and signs `changes` into the next commit of the log. The log
    /// advances only when this succeeds (signing cannot fail: the commit is
    /// sealed under this writer's own key).
    pub fn write(
        &mut self,
        scope: &ScopeId,
        epoch: u32,
        key: &ScopeKey,
        changes: &Changes,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Commit, CommitError> {
        self.seal(scope, epoch, key, changes, now_ms, rng)?.sign(&self.secret)
    }

    /// Seals `changes` into the next commit of the log, to be signed with
    /// [`LogWriter::secret`] later: the log advances past it at once (its
    /// id does not depend on the signature), and only when this succeeds.
    pub fn seal(
        &mut self,
        scope: &ScopeId,
        epoch: u32,
        key: &ScopeKey,
        changes: &Changes,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<UnsignedCommit, CommitError> {
        let mut clock = self.clock;
        let draft = CommitDraft {
            database: self.database,
            seq: self.seq + 1,
            prev: self.prev,
            hlc: clock.tick(now_ms),
            scope: *scope,
            epoch,
        };
        let commit = UnsignedCommit::seal(&self.secret.public(), draft, changes, key, rng)?;
        self.seq += 1;
        self.prev = Some(commit.id());
        self.clock = clock;
        Ok(commit)
    }
}
