//! The writer thread: every write, received commit, schema and control
//! operation runs here, in groups, each group made durable once before
//! its callers hear back.

use super::records::{encode_author, encode_catalog, encode_u64};
use std::collections::VecDeque;

use super::signer::{SignError, Signer};
use super::syncer::Syncer;
use super::*;
use crate::replica::Unsettled;

pub(super) enum Job {
    Write {
        caller: Caller,
        statement: Statement,
        params: Vec<Value>,
        /// A custodial app's key to sign with, instead of this replica's.
        author: Option<SecretKey>,
        reply: mpsc::Sender<Result<WriteOutcome, DbError>>,
    },
    Ingest {
        commits: Vec<Received>,
        reply: mpsc::Sender<Result<Ingested, DbError>>,
    },
    Schema {
        schema: Schema,
        reply: mpsc::Sender<Result<Migration, DbError>>,
    },
    Control {
        command: Command,
        reply: mpsc::Sender<Result<Vec<OpOutcome>, DbError>>,
    },
}

impl Job {
    /// Whether it reads the view: a write whose statement reads a table,
    /// and (as before D50) every other job.
    fn reads_view(&self) -> bool {
        match self {
            Job::Write { statement, .. } => statement.reads_tables(),
            _ => true,
        }
    }

    /// Whether it may run while the group before it is flushed: a write,
    /// or received commits (which settle that group between two commits
    /// once its flush returns); never a schema or control change, which
    /// must not be taken back out of the view.
    fn runs_ahead(&self) -> bool {
        matches!(self, Job::Write { .. } | Job::Ingest { .. })
    }

    /// The received row operations it carries (1 for any other job: the
    /// rows a statement changes are known once it runs).
    fn rows(&self) -> usize {
        match self {
            Job::Ingest { commits, .. } => commits.iter().map(Received::rows).sum(),
            _ => 1,
        }
    }
}

/// A change to the control log.
pub(super) enum Command {
    /// Operations received from peers (or why one did not decode).
    Ingest(Vec<Result<ControlOp, ControlError>>),
    Grant {
        app: Party,
        scope: Name,
        rights: Rights,
    },
    Revoke {
        app: PublicKey,
        scope: Name,
    },
    AddDevice(Party),
    RemoveDevice(PublicKey),
    /// A removal signed by the root, whose end decides (control-log.md §6).
    RemoveDeviceAsRoot(PublicKey, Box<SecretKey>),
    AddPinner(PublicKey),
    RemovePinner(PublicKey),
}

/// One result per received commit, in order.
pub(super) type Ingested = Vec<Result<Inserted, IngestError>>;

/// A verified commit received from a peer.
pub(super) enum Received {
    /// To insert now, with the result of opening it (`None`: no key).
    Ready(Commit, Option<Result<Changes, CommitError>>),
    /// Stamped too far ahead: to hold back until its time.
    Ahead(Commit, ClockAhead),
}

impl Received {
    /// Its row operations (1 when it cannot be opened here).
    pub(super) fn rows(&self) -> usize {
        match self {
            Received::Ready(_, Some(Ok(changes))) => changes.ops().len().max(1),
            _ => 1,
        }
    }

    pub(super) fn commit(&self) -> &Commit {
        match self {
            Received::Ready(commit, _) | Received::Ahead(commit, _) => commit,
        }
    }
}

/// The writer thread's state.
pub(super) struct Writer<S> {
    pub(super) shared: Arc<Shared<S>>,
    pub(super) log: LogWriter,
    /// Custodial apps' logs, resumed from the replica on their first write.
    pub(super) app_logs: BTreeMap<PublicKey, LogWriter>,
    pub(super) catalog: Catalog,
    /// How rows of each table of the catalog are written into the view.
    pub(super) row_plans: RowPlans,
    /// The control log, its state and this device's keys.
    pub(super) access: Access,
    pub(super) watermark: u64,
    pub(super) rng: rand::rngs::StdRng,
    pub(super) changed_tables: Option<mpsc::Sender<BTreeSet<Name>>>,
    /// The writer connection's gate: a write's evaluation runs within it.
    pub(super) gate: Gate,
    /// Whether the catalog or keys changed since they were last published.
    pub(super) published_stale: bool,
    /// Commits held back, waiting for their time.
    pub(super) held: usize,
    /// Signs the group's own commits while the writer goes on (D49).
    pub(super) signer: Signer,
}

/// A job's answer, sent once its group is durable.
pub(super) enum Reply {
    Write(mpsc::Sender<Result<WriteOutcome, DbError>>, Result<WriteOutcome, DbError>),
    Ingest(mpsc::Sender<Result<Ingested, DbError>>, Result<Ingested, DbError>),
    Schema(mpsc::Sender<Result<Migration, DbError>>, Result<Migration, DbError>),
    Control(mpsc::Sender<Result<Vec<OpOutcome>, DbError>>, Result<Vec<OpOutcome>, DbError>),
}

impl Reply {
    // A caller that gave up waiting is not an error: sends are best effort.
    fn send(self) {
        match self {
            Reply::Write(to, result) => drop(to.send(result)),
            Reply::Ingest(to, result) => drop(to.send(result)),
            Reply::Schema(to, result) => drop(to.send(result)),
            Reply::Control(to, result) => drop(to.send(result)),
        }
    }

    /// The storage failure this reply carries, taken out (the group stops,
    /// and every reply of it is then failed with that cause).
    fn take_storage_failure(&mut self) -> Option<DbError> {
        match self {
            Reply::Write(_, result) => take_storage_failure(result),
            Reply::Ingest(_, result) => take_storage_failure(result),
            Reply::Schema(_, result) => take_storage_failure(result),
            Reply::Control(_, result) => take_storage_failure(result),
        }
    }

    fn fail(self, cause: &Arc<DbError>) {
        let stopped = || DbError::Stopped(Arc::clone(cause));
        match self {
            Reply::Write(to, _) => drop(to.send(Err(stopped()))),
            Reply::Ingest(to, _) => drop(to.send(Err(stopped()))),
            Reply::Schema(to, _) => drop(to.send(Err(stopped()))),
            Reply::Control(to, _) => drop(to.send(Err(stopped()))),
        }
    }
}

/// What the writer's groups run on.
struct Pipe<'a, 'r, S> {
    /// The view, with the writer's open transaction.
    conn: &'a Connection,
    queue: &'a mpsc::Receiver<Job>,
    replica: &'r Replica<S>,
    /// Flushes while the next group runs (`None`: no thread, each group is
    /// flushed before the next starts).
    syncer: Option<Syncer>,
    /// The group applied and being flushed while the next one runs.
    ahead: Option<Ahead<'r>>,
}

impl<S> Pipe<'_, '_, S> {
    /// Whether the flush of the group ahead has returned.
    fn syncer_done(&mut self) -> bool {
        self.syncer.as_mut().is_none_or(Syncer::is_done)
    }
}

/// A group applied to the store whose flush runs on the syncing thread.
struct Ahead<'r> {
    /// Keeps readers of settled state out until the flush returns.
    unsettled: Unsettled<'r>,
    answers: Answers,
}

/// A group's answers, sent once it is durable.
#[derive(Default)]
struct Answers {
    replies: Vec<Reply>,
    changed_tables: BTreeSet<Name>,
}

impl<S: Store> Writer<S> {
    pub(super) fn run(mut self, conn: Connection, queue: mpsc::Receiver<Job>) {
        let shared = Arc::clone(&self.shared);
        std::thread::scope(|scope| {
            let syncer = Syncer::start(scope, &shared.replica);
            let mut pipe =
                Pipe { conn: &conn, queue: &queue, replica: &shared.replica, syncer, ahead: None };
            let mut next = None;
            loop {
                let first = match next.take() {
                    Some(job) => Some(job),
                    None => match queue.recv_timeout(HELD_CHECK) {
                        Ok(first) => Some(first),
                        Err(mpsc::RecvTimeoutError::Timeout) if self.held > 0 => None,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    },
                };
                match self.commit_group(&mut pipe, first) {
                    Ok(following) => next = following,
                    Err(()) => return,
                }
            }
        });
    }

    /// Runs a group of jobs, starting with `first` and taking what waits
    /// in the queue, and applies it. The group is made durable here, or,
    /// if a write or received commits already wait to start the next
    /// group, on the syncing thread while that group runs (it is then
    /// returned): its rows wait in the view's open transaction and its
    /// callers for their answers until the flush returns. An `Err` is a
    /// storage failure: the writer stops, every job not answered is told
    /// so, and `shared.stopped` says why.
    fn commit_group(
        &mut self,
        pipe: &mut Pipe<'_, '_, S>,
        first: Option<Job>,
    ) -> Result<Option<Job>, ()> {
        let mut group = Answers::default();
        let outcome = self.run_group(pipe, first, &mut group);
        let error = match outcome {
            Ok(next) => return Ok(next),
            Err(error) => error,
        };
        // The failed group's commits are dropped, signed or not.
        let _ = self.signer.finish();
        // The group before this one ends as its flush decides.
        let error = match pipe.ahead.take().map(|ahead| self.settle(pipe, ahead)) {
            Some(Err(earlier)) => earlier,
            _ => error,
        };
        let cause = match error {
            DbError::Stopped(cause) => cause,
            other => Arc::new(other),
        };
        let _ = pipe.conn.execute_batch("ROLLBACK");
        // Known before any caller hears of it (health reports it).
        *lock(&self.shared.stopped) = Some(Arc::clone(&cause));
        group.replies.into_iter().for_each(|r| r.fail(&cause));
        Err(())
    }

    /// [`Writer::commit_group`]'s work, its answers kept in `group`.
    fn run_group(
        &mut self,
        pipe: &mut Pipe<'_, '_, S>,
        first: Option<Job>,
        group: &mut Answers,
    ) -> Result<Option<Job>, DbError> {
        let conn = pipe.conn;
        // Rows this group writes before the last one is durable are taken
        // back out of the view (see `settle_ahead`).
        conn.execute_batch(if pipe.ahead.is_some() { "SAVEPOINT ahead" } else { "BEGIN" })
            .map_err(ViewError::from)?;
        let mut txn = pipe.replica.begin();
        self.release_held(&mut txn)?;
        let (mut jobs, mut rows) = (0, 0);
        // A group takes the jobs waiting as it starts, and the writes that
        // come while it runs; any other job that comes then starts the
        // next group (a batch of received commits taken into a running
        // group slows the ingest: D50).
        let mut waiting: VecDeque<Job> = first.into_iter().collect();
        let mut waiting_rows: usize = waiting.iter().map(Job::rows).sum();
        while pipe.ahead.is_none() && waiting.len() < MAX_GROUP && waiting_rows < MAX_GROUP_ROWS {
            match pipe.queue.try_recv() {
                Ok(job) => {
                    waiting_rows += job.rows();
                    waiting.push_back(job);
                }
                Err(_) => break,
            }
        }
        let mut carried = None;
        loop {
            let job = match waiting.pop_front() {
                Some(job) => job,
                None if jobs >= MAX_GROUP || rows >= MAX_GROUP_ROWS => break,
                None => match pipe.queue.try_recv() {
                    Ok(job) if matches!(job, Job::Write { .. }) => job,
                    Ok(job) => {
                        carried = Some(job);
                        break;
                    }
                    Err(_) if pipe.ahead.is_some() => {
                        self.settle_ahead(pipe, &mut txn, group)?;
                        continue;
                    }
                    Err(_) => break,
                },
            };
            (jobs, rows) = (jobs + 1, rows + job.rows());
            // Writes and received commits run ahead (see
            // `Job::runs_ahead`): a write is one statement, and a batch
            // settles the group ahead between two of its commits, so that
            // group is answered soon after its flush returns.
            if pipe.ahead.is_some() && (!job.runs_ahead() || pipe.syncer_done()) {
                self.settle_ahead(pipe, &mut txn, group)?;
            }
            // What runs between writes may read the commits staged so
            // far: they are signed first.
            if !matches!(job, Job::Write { .. }) {
                self.put_signatures(&mut txn)?;
            }
            // Every job that reads the view sees in it the rows changed
            // before it (the rest reach it at the group's end).
            if job.reads_view() {
                group.changed_tables.extend(self.flush_view(conn, &mut txn)?);
            }
            let reply = match job {
                Job::Write { caller, statement, params, author, reply } => {
                    let write = (&caller, &statement, &params[..], author.as_ref());
                    Reply::Write(reply, self.write(conn, &mut txn, write))
                }
                Job::Ingest { commits, reply } => {
                    Reply::Ingest(reply, self.ingest(&mut txn, commits, Some((pipe, group))))
                }
                Job::Schema { schema, reply } => {
                    Reply::Schema(reply, self.schema(conn, &mut txn, schema))
                }
                Job::Control { command, reply } => {
                    Reply::Control(reply, self.control(conn, &mut txn, command))
                }
            };
            group.replies.push(reply);
            if let Some(cause) = group.replies.last_mut().and_then(Reply::take_storage_failure) {
                return Err(DbError::Stopped(Arc::new(cause)));
            }
        }
        if pipe.ahead.is_some() {
            self.settle_ahead(pipe, &mut txn, group)?;
        }
        self.put_signatures(&mut txn)?;
        self.watermark += 1;
        txn.put_meta(meta::WATERMARK, encode_u64(self.watermark));
        txn.put_meta(meta::AUTHOR, encode_author(&self.log));
        let (catalog, plans) = (&self.catalog, &mut self.row_plans);
        let (applied, viewed) =
            txn.apply_while(|changes| write_view(conn, catalog, plans, changes));
        let unsettled = applied?;
        group.changed_tables.extend(viewed?);
        view::set_watermark(conn, self.watermark)?;
        // A write or batch waiting now starts the next group while this
        // one is flushed on the syncing thread.
        let next =
            carried.or_else(|| pipe.syncer.as_ref().and_then(|_| pipe.queue.try_recv().ok()));
        let ahead = next.as_ref().is_some_and(Job::runs_ahead);
        if ahead && pipe.syncer.as_ref().is_some_and(Syncer::begin) {
            pipe.ahead = Some(Ahead { unsettled, answers: std::mem::take(group) });
            return Ok(next);
        }
        pipe.replica.flush()?;
        drop(unsettled);
        conn.execute_batch("COMMIT").map_err(ViewError::from)?;
        self.announce(std::mem::take(group));
        Ok(next)
    }

    /// Ends the group before the one running (`txn`): once its flush
    /// returns, the rows the running group wrote into the view so far are
    /// taken back out, the earlier group's view is committed and its
    /// callers answered, and the running group's rows are written again
    /// in a new view transaction.
    fn settle_ahead(
        &mut self,
        pipe: &mut Pipe<'_, '_, S>,
        txn: &mut Txn<'_, S>,
        group: &mut Answers,
    ) -> Result<(), DbError> {
        let Some(ahead) = pipe.ahead.take() else { return Ok(()) };
        self.settle(pipe, ahead)?;
        pipe.conn.execute_batch("BEGIN").map_err(ViewError::from)?;
        let changes = txn.retake_changes();
        group.changed_tables.extend(write_view(
            pipe.conn,
            &self.catalog,
            &mut self.row_plans,
            &changes,
        )?);
        Ok(())
    }

    /// Waits for `ahead`'s flush, then commits its view (without the rows
    /// of the group after it) and answers its callers. If the flush
    /// failed, its callers are told so (`Err`: the writer stops).
    fn settle(&mut self, pipe: &mut Pipe<'_, '_, S>, ahead: Ahead<'_>) -> Result<(), DbError> {
        let Ahead { unsettled, answers } = ahead;
        let flushed = match pipe.syncer.as_mut() {
            Some(syncer) => syncer.wait(),
            None => pipe.replica.flush().map_err(DbError::from),
        };
        let committed = flushed.and_then(|()| {
            drop(unsettled);
            let undo = "ROLLBACK TO ahead; RELEASE ahead; COMMIT";
            pipe.conn.execute_batch(undo).map_err(|e| DbError::View(ViewError::from(e)))
        });
        if let Err(error) = committed {
            let cause = Arc::new(error);
            *lock(&self.shared.stopped) = Some(Arc::clone(&cause));
            answers.replies.into_iter().for_each(|r| r.fail(&cause));
            return Err(DbError::Stopped(cause));
        }
        self.announce(answers);
        Ok(())
    }

    /// Tells everyone of a group now durable and in the view: readers of
    /// the catalog and keys, watchers, the callers, live queries.
    fn announce(&mut self, group: Answers) {
        let shared = &self.shared;
        if std::mem::take(&mut self.published_stale) {
            publish(&shared.catalog, Arc::new(self.catalog.clone()));
            publish(&shared.keys, self.access.keys().clone());
            publish(&shared.namespaces, self.access.namespaces(&self.catalog));
            publish(&shared.auth, Arc::clone(self.access.state()));
            publish(&shared.control, Arc::new(self.access.log().clone()));
            lock(&shared.statements).clear();
        }
        // Watchers first: a caller whose write returned finds its change
        // signalled already (the simulator relies on it).
        lock(&shared.watchers).retain(|watcher| {
            !matches!(watcher.try_send(()), Err(mpsc::TrySendError::Disconnected(_)))
        });
        group.replies.into_iter().for_each(Reply::send);
        if let Some(notify) =
            self.changed_tables.as_ref().filter(|_| !group.changed_tables.is_empty())
        {
            // The live thread only stops when the database closes.
            let _ = notify.send(group.changed_tables);
        }
    }

    /// Gives every own commit staged so far its signature.
    fn put_signatures(&mut self, txn: &mut Txn<'_, S>) -> Result<(), DbError> {
        let signed = self.signer.finish().map_err(|error| match error {
            SignError::Commit(error) => DbError::Commit(error),
            SignError::ThreadDied => DbError::SigningStopped,
        })?;
        for commit in &signed {
            txn.put_signed(commit)?;
        }
        Ok(())
    }

    /// Writes the rows changed so far into the view; returns their tables.
    fn flush_view(
        &mut self,
        tx: &Connection,
        txn: &mut Txn<'_, S>,
    ) -> Result<BTreeSet<Name>, DbError> {
        write_view(tx, &self.catalog, &mut self.row_plans, &txn.take_changes())
    }

    fn write(
        &mut self,
        tx: &Connection,
        txn: &mut Txn<'_, S>,
        (caller, statement, params, author): (&Caller, &Statement, &[Value], Option<&SecretKey>),
    ) -> Result<WriteOutcome, DbError> {
        // Every other replica refuses what a removed device writes.
        if is_removed(self.access.state(), &self.shared.device) {
            return Err(DbError::DeviceRemoved);
        }
        let bounds = write::Bounds {
            gate: &self.gate,
            reach: Arc::new(Reach::of(caller, &self.catalog)),
            budget: self.shared.budget(),
        };
        let ops = write::plan(tx, &bounds, &self.catalog, txn, statement, params)?;
        let Some(table) = statement.written_table().filter(|_| !ops.is_empty()) else {
            return Ok(WriteOutcome { rows_affected: 0, commits: Vec::new() });
        };
        let namespace = scope_of(table);
        let scope = self.scope_id(&namespace)?;
        let (epoch, key) = self
            .access
            .keys()
            .current(&scope)
            .map(|(e, k)| (e, k.clone()))
            .ok_or(DbError::NoScopeKey(namespace))?;
        // A custodial app's grant may have been revoked since the caller
        // was checked: its commit would be refused everywhere.
        if let Some(secret) = author {
            let may_write = self
                .access
                .state()
                .apps()
                .get(&secret.public())
                .and_then(|app| app.scopes.get(&scope))
                .is_some_and(|g| g.revoked.is_none() && g.rights == Rights::ReadWrite);
            if !may_write {
                return Err(DbError::NoGrant);
            }
        }
        let rows_affected = ops.len();
        let now = self.shared.environment.now_ms();
        let log = match author {
            None => &mut self.log,
            Some(secret) => match self.app_logs.entry(secret.public()) {
                std::collections::btree_map::Entry::Occupied(log) => log.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(resume_log(&self.shared.replica, secret, self.shared.database)?)
                }
            },
        };
        let commits = seal(log, (&scope, epoch, &key), &ops, now, &mut self.rng)?;
        let mut ids = Vec::with_capacity(commits.len());
        for (commit, changes) in commits {
            ids.push(commit.id());
            if txn.insert_unsigned(&commit, changes)?.outcome != Outcome::Duplicate {
                self.signer.submit(log.secret(), commit);
            }
        }
        Ok(WriteOutcome { rows_affected, commits: ids })
    }

    /// Merges received `commits`; with `settle`, the group before this
    /// one is settled between two commits once its flush has returned.
    fn ingest(
        &mut self,
        txn: &mut Txn<'_, S>,
        commits: Vec<Received>,
        mut settle: Option<(&mut Pipe<'_, '_, S>, &mut Answers)>,
    ) -> Result<Ingested, DbError> {
        let now = self.shared.environment.now_ms();
        let state = Arc::clone(self.access.state());
        txn.reserve_rows(commits.iter().map(Received::rows).sum());
        // A commit below its author's cut-off is decided by the chain from
        // the cut-off commit, which commits above it in this batch may
        // complete: those go last, from the highest seq down, so a batch
        // holding the whole chain is taken at once.
        let below = |received: &Received| {
            let header = received.commit().header();
            end_below(&state, header).map(|_| header.seq)
        };
        let mut order: Vec<usize> = (0..commits.len()).collect();
        order.sort_by_key(|&i| below(&commits[i]).map(std::cmp::Reverse));
        let mut commits: Vec<Option<Received>> = commits.into_iter().map(Some).collect();
        let mut results: Vec<Option<Result<Inserted, IngestError>>> = vec![None; commits.len()];
        let mut chains = CutoffChains::default();
        for i in order {
            let Some(received) = commits[i].take() else { continue };
            results[i] = Some(self.ingest_one(txn, &state, &mut chains, received, now)?);
            if let Some((pipe, group)) = settle.as_mut()
                && pipe.ahead.is_some()
                && pipe.syncer_done()
            {
                self.settle_ahead(pipe, txn, group)?;
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Checks (against `state` and, below a cut-off, the chain) and
    /// inserts or holds one received commit.
    fn ingest_one(
        &mut self,
        txn: &mut Txn<'_, S>,
        state: &AuthState,
        chains: &mut CutoffChains,
        received: Received,
        now: u64,
    ) -> Result<Result<Inserted, IngestError>, DbError> {
        let commit = received.commit();
        let (header, id) = (commit.header(), commit.id());
        // The state may have changed since the caller checked it.
        if let Err(error) = state.check_commit(header, id) {
            return Ok(Err(error.into()));
        }
        if let Some(end) = end_below(state, header) {
            match chains.place(txn, header, id, &end)? {
                chain if self.holds(state).keeps(chain) => {}
                Chain::NotHeld => return Ok(Err(IngestError::ChainNotHeld { seq: header.seq })),
                _ => return Ok(Err(IngestError::ForkBelowCutoff { seq: header.seq })),
            }
        }
        Ok(Ok(match received {
            Received::Ready(commit, content) => {
                // Later local writes must order after what we have seen.
                let _ = self.log.clock_mut().observe(commit.header().hlc, now);
                let inserted = txn.insert_with(commit, content)?;
                if inserted.outcome == Outcome::Duplicate && txn.is_rejected(&inserted.id)? {
                    // Set aside when its chain was not held; now it is.
                    txn.accept_rejected(inserted.id, self.access.keys())?;
                }
                inserted
            }
            Received::Ahead(_, ahead) if self.held >= MAX_HELD => return Ok(Err(ahead.into())),
            Received::Ahead(commit, ahead) => {
                let inserted = txn.hold(&commit, ahead.apply_at_ms)?;
                if matches!(inserted.outcome, Outcome::HeldBack { .. }) {
                    self.held += 1;
                }
                inserted
            }
        }))
    }

    /// Whether this replica holds every scope (a device, a pinning peer)
    /// or only some (an app's own replica).
    fn holds(&self, state: &AuthState) -> Holds {
        match entitled_view(state, &self.log.secret().public()) {
            Some(View::Scopes(_)) => Holds::Part,
            _ => Holds::Whole,
        }
    }

    /// Inserts the held-back commits whose time has come.
    fn release_held(&mut self, txn: &mut Txn<'_, S>) -> Result<(), DbError> {
        let now = self.shared.environment.now_ms();
        if self.held == 0 || self.shared.replica.next_held_due()?.is_none_or(|due| due > now) {
            return Ok(());
        }
        // Checked as if received now: a revocation or removal that came
        // while they were held applies to them.
        let due: Vec<Received> = txn
            .take_due(now)?
            .into_iter()
            .map(|commit| {
                let content = self.access.keys().open(&commit);
                Received::Ready(commit, content)
            })
            .collect();
        self.held = self.held.saturating_sub(due.len());
        self.ingest(txn, due, None)?;
        Ok(())
    }

    /// Applies a change to the control log, then brings the tables in line
    /// with the new state and merges the commits that waited for new keys.
    fn control(
        &mut self,
        tx: &Connection,
        txn: &mut Txn<'_, S>,
        command: Command,
    ) -> Result<Vec<OpOutcome>, DbError> {
        let device = self.log.secret().clone();
        let keys_before = self.access.keys().clone();
        let outcomes = match command {
            Command::Ingest(ops) => {
                // One state evaluation for the whole batch.
                let now = self.shared.environment.now_ms();
                let mut decoded: Vec<ControlOp> = Vec::with_capacity(ops.len());
                let mut outcomes: Vec<OpOutcome> = Vec::with_capacity(ops.len());
                for op in ops {
                    outcomes.push(op.map(|op| {
                        let id = op.id();
                        decoded.push(op);
                        id
                    }));
                }
                let mut admitted = self.access.insert_all(decoded, txn, &device, now).into_iter();
                for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    if let Some(Err(error)) = admitted.next() {
                        *outcome = Err(error.into());
                    }
                }
                outcomes
            }
            command => vec![self.issue(txn, &device, command)],
        };
        self.heal(txn, &device)?;
        self.after_control_change(txn, &keys_before)?;
        self.adopt_schemas(tx, txn)?;
        Ok(outcomes)
    }

    /// Makes, signs and admits the operation `command` asks for.
    fn issue(&mut self, txn: &mut Txn<'_, S>, device: &SecretKey, command: Command) -> OpOutcome {
        let payload = match command {
            Command::Grant { app, scope: namespace, rights } => {
                let scope = self.scope_id(&namespace)?;
                let epoch = self
                    .access
                    .state()
                    .scopes()
                    .get(&scope)
                    .and_then(|s| s.current())
                    .ok_or_else(|| ControlError::NoScopeKey(namespace.clone()))?;
                let key = self.access.keys().scope_key(&scope, epoch).ok_or_else(|| {
                    ControlError::NoEpochKey { namespace: namespace.clone(), epoch }
                })?;
                let label = seal_label(self.shared.database, &scope, epoch, &app.key);
                let key = SealedKey::seal(&key, device, &app, &label, &mut self.rng)?;
                Payload::Grant { app: app.key, sealing: app.sealing, scope, rights, epoch, key }
            }
            Command::Revoke { app, scope: namespace } => {
                let scope = self.scope_id(&namespace)?;
                Payload::Revoke {
                    app,
                    cutoff: self.cutoff(&app)?,
                    rotation: self.rotation(device, &scope, Some(&app))?,
                }
            }
            Command::AddDevice(new) => {
                let mut keys = BTreeMap::new();
                for (scope, epoch, key) in self.access.keys().iter() {
                    let label = seal_label(self.shared.database, scope, epoch, &new.key);
                    let sealed = SealedKey::seal(key, device, &new, &label, &mut self.rng)?;
                    keys.insert((*scope, epoch), sealed);
                }
                let naming = self.access.naming().ok_or(ControlError::NoNamingKey)?;
                let root = self.access.state().root().ok_or(ControlError::NoRoot)?;
                let naming = seal_naming(naming, device, &root.key, &new, &mut self.rng)?;
                Payload::AddDevice { device: new.key, sealing: new.sealing, naming, keys }
            }
            Command::RemoveDeviceAsRoot(removed, root) => {
                let scopes: Vec<ScopeId> = self.access.state().scopes().keys().copied().collect();
                let mut rotations = BTreeMap::new();
                for scope in scopes {
                    rotations.insert(scope, self.rotation(&root, &scope, Some(&removed))?);
                }
                let payload = Payload::RemoveDevice {
                    device: removed,
                    cutoff: self.cutoff(&removed)?,
                    rotations,
                };
                let now = self.shared.environment.now_ms();
                let op = self.access.issue(&root, payload, now)?;
                let id = op.id();
                self.access.insert(op, txn, device, now)?;
                return Ok(id);
            }
            Command::RemoveDevice(removed) => {
                let scopes: Vec<ScopeId> = self.access.state().scopes().keys().copied().collect();
                let mut rotations = BTreeMap::new();
                for scope in scopes {
                    let rotation = self.rotation(device, &scope, Some(&removed))?;
                    rotations.insert(scope, rotation);
                }
                Payload::RemoveDevice { device: removed, cutoff: self.cutoff(&removed)?, rotations }
            }
            Command::AddPinner(pinner) => Payload::AddPinner { pinner },
            Command::RemovePinner(pinner) => Payload::RemovePinner { pinner },
            Command::Ingest(_) => return Err(ControlError::NotIssued),
        };
        let op = self.access.issue(device, payload, self.shared.environment.now_ms())?;
        let id = op.id();
        self.access.insert(op, txn, device, self.shared.environment.now_ms())?;
        Ok(id)
    }

    /// The last commit of `author`'s log this device holds without a gap.
    fn cutoff(&self, author: &PublicKey) -> Result<Cutoff, ControlError> {
        let replica = &self.shared.replica;
        let seq = replica.heads()?.get(author).map_or(0, |h| h.contiguous);
        if seq == 0 {
            return Ok(Cutoff::NONE);
        }
        let last = replica.log(author)?.into_iter().find(|(s, _)| *s == seq).map(|(_, id)| id);
        Ok(Cutoff { seq, last })
    }

    /// Rotates every scope whose newest epoch is known to someone who no
    /// longer reads it, or that this device holds no key of
    /// (control-log.md §5.5): writers must never write under such a key.
    /// A device that is itself removed rotates nothing.
    fn heal(&mut self, txn: &mut Txn<'_, S>, device: &SecretKey) -> Result<(), DbError> {
        let state = self.access.state().clone();
        if !state.is_device(&device.public()) {
            return Ok(());
        }
        let mut stale: BTreeSet<ScopeId> = state.compromised().into_iter().collect();
        for (scope, epochs) in state.scopes() {
            let newest = epochs.current();
            if newest.is_some_and(|e| self.access.keys().scope_keys(scope, e).is_empty()) {
                stale.insert(*scope);
            }
        }
        for scope in stale {
            let rotation = self.rotation(device, &scope, None)?;
            let op = self
                .access
                .issue(device, Payload::RotateKey(rotation), self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
            self.access
                .insert(op, txn, device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        self.publish_schemas(txn, device)
    }

    /// Issues the schema of each namespace this device holds whose scope's
    /// winning schema op is older: sealed under an epoch before the
    /// current one (so that readers granted the current epoch only can
    /// read it), or a schema this device's extends (a migration that a
    /// concurrent schema op outstamped). So the log's schema converges to
    /// the most extended one, readable at the current epoch.
    fn publish_schemas(&mut self, txn: &mut Txn<'_, S>, device: &SecretKey) -> Result<(), DbError> {
        let namespaces: Vec<(Name, String)> = self
            .catalog
            .schemas()
            .map(|schema| (schema.namespace().clone(), schema.to_json()))
            .collect();
        for (namespace, text) in namespaces {
            let Some(scope) = self.access.scope_id(&namespace) else { return Ok(()) };
            let state = self.access.state().clone();
            let Some(current) = state.scopes().get(&scope).and_then(|s| s.current()) else {
                continue;
            };
            let winner = state.schemas().find(|(id, _)| **id == scope).map(|(_, op)| op.epoch);
            let logged = self.access.schemas().get(&scope).map(|(_, t)| t.as_str());
            let extends = match logged.and_then(|t| Schema::from_json_canonical(t).ok()) {
                Some(theirs) if logged != Some(text.as_str()) => {
                    let mut catalog = Catalog::default();
                    catalog.apply(theirs).is_ok()
                        && Schema::from_json_canonical(&text)
                            .is_ok_and(|mine| catalog.apply(mine).is_ok())
                }
                Some(_) => false,
                None => true,
            };
            if winner.is_some_and(|epoch| epoch >= current) && !extends {
                continue;
            }
            let op = self.schema_op(device, &scope, current, &namespace, &text)?;
            self.access
                .insert(op, txn, device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        Ok(())
    }

    /// A signed schema op of `namespace` (its scope `scope`), sealed under
    /// this device's key of `epoch`.
    fn schema_op(
        &mut self,
        device: &SecretKey,
        scope: &ScopeId,
        epoch: u32,
        namespace: &Name,
        text: &str,
    ) -> Result<ControlOp, ControlError> {
        let key = self
            .access
            .keys()
            .scope_key(scope, epoch)
            .ok_or_else(|| ControlError::NoEpochKey { namespace: namespace.clone(), epoch })?;
        let sealed = SealedSchema::seal(
            &key,
            self.shared.database,
            scope,
            epoch,
            namespace,
            text,
            &mut self.rng,
        );
        self.access
            .issue(
                device,
                Payload::Schema { scope: *scope, epoch, sealed },
                self.shared.environment.now_ms(),
            )
            .map_err(ControlError::from)
    }

    /// The scope id of `namespace`: a device names any; an app's replica
    /// only those of its grants.
    fn scope_id(&self, namespace: &Name) -> Result<ScopeId, ControlError> {
        self.access.scope_id(namespace).ok_or(ControlError::NotADevice)
    }

    /// A new epoch of `scope`, sealed to its readers except `leaving`.
    fn rotation(
        &mut self,
        device: &SecretKey,
        scope: &ScopeId,
        leaving: Option<&PublicKey>,
    ) -> Result<Rotation, ControlError> {
        let epoch = self
            .access
            .state()
            .scopes()
            .get(scope)
            .and_then(|s| s.current())
            .map_or(0, |current| current + 1);
        let readers: Vec<Party> =
            self.access.readers(scope).into_iter().filter(|p| Some(&p.key) != leaving).collect();
        let key = ScopeKey::generate(&mut self.rng);
        Ok(Rotation::seal(
            device,
            self.shared.database,
            *scope,
            epoch,
            &key,
            &readers,
            &mut self.rng,
        )?)
    }

    /// After the control log changed: recompute the rows of commits whose
    /// authorisation changed, merge commits that waited for keys this
    /// device just received, and publish the new state.
    fn after_control_change(
        &mut self,
        txn: &mut Txn<'_, S>,
        keys_before: &ScopeKeys,
    ) -> Result<(), DbError> {
        let holds = self.holds(self.access.state());
        txn.enforce_in(self.access.state(), self.access.keys(), holds)?;
        let new_epochs: BTreeSet<(ScopeId, u32)> = self
            .access
            .keys()
            .iter()
            .filter(|(scope, epoch, key)| !keys_before.scope_keys(scope, *epoch).contains(key))
            .map(|(scope, epoch, _)| (*scope, epoch))
            .collect();
        for (scope, epoch) in new_epochs {
            txn.open_waiting(&scope, epoch, self.access.keys())?;
        }
        self.published_stale = true;
        Ok(())
    }

    fn schema(
        &mut self,
        tx: &Connection,
        txn: &mut Txn<'_, S>,
        schema: Schema,
    ) -> Result<Migration, DbError> {
        if is_removed(self.access.state(), &self.shared.device) {
            return Err(DbError::DeviceRemoved);
        }
        let namespace = schema.namespace().clone();
        let scope = self.scope_id(&namespace)?;
        let text = schema.to_json();
        let mut catalog = self.catalog.clone();
        let migration = catalog.apply(schema)?;
        let device = self.log.secret().clone();
        let keys_before = self.access.keys().clone();
        // A new scope gets its first key (epoch 0), sealed to every device.
        if !self.access.state().scopes().contains_key(&scope) {
            let rotation = Rotation::seal(
                &device,
                self.shared.database,
                scope,
                0,
                &ScopeKey::generate(&mut self.rng),
                &self.access.readers(&scope),
                &mut self.rng,
            )
            .map_err(ControlError::from)?;
            let op = self
                .access
                .issue(&device, Payload::RotateKey(rotation), self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
            self.access
                .insert(op, txn, &device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        // The schema itself goes into the control log, sealed under the
        // scope's current key, so every reader of the scope gets it and no
        // one else learns its names.
        let logged = self.access.schemas().get(&scope).is_some_and(|(_, t)| *t == text);
        if !logged {
            let epoch = self.access.state().scopes().get(&scope).and_then(|s| s.current());
            let epoch = epoch.ok_or(ControlError::NoEpoch)?;
            let op = self.schema_op(&device, &scope, epoch, &namespace, &text)?;
            self.access
                .insert(op, txn, &device, self.shared.environment.now_ms())
                .map_err(ControlError::from)?;
        }
        self.after_control_change(txn, &keys_before)?;
        self.catalog = catalog;
        self.save_catalog(tx, txn)?;
        Ok(migration)
    }

    /// Adopts the schemas of the control log that extend this device's
    /// (a schema applied on another device); incompatible ones are skipped.
    fn adopt_schemas(&mut self, tx: &Connection, txn: &mut Txn<'_, S>) -> Result<(), DbError> {
        if adopt(&mut self.catalog, self.access.schemas()) {
            self.save_catalog(tx, txn)?;
        }
        Ok(())
    }

    /// Stores the catalog and brings the view's tables up to it (rows for
    /// new tables may already be in the replica, from peers or staged in
    /// this group).
    fn save_catalog(&mut self, tx: &Connection, txn: &mut Txn<'_, S>) -> Result<(), DbError> {
        txn.put_meta(meta::SCHEMAS, encode_catalog(&self.catalog));
        self.published_stale = true;
        self.flush_view(tx, txn)?;
        view::sync_schema(tx, &self.catalog, &self.shared.replica)?;
        Ok(())
    }
}

/// Applies to `catalog` every schema of the control log that extends it;
/// returns whether any did.
pub(super) fn adopt(catalog: &mut Catalog, schemas: &BTreeMap<ScopeId, (Name, String)>) -> bool {
    let mut adopted = false;
    for (namespace, text) in schemas.values() {
        let Ok(schema) = Schema::from_json_canonical(text) else { continue };
        if catalog.schema(namespace.as_str()) != Some(&schema) && catalog.apply(schema).is_ok() {
            adopted = true;
        }
    }
    adopted
}

/// Seals `ops` into commits of `log` (split further while one is too
/// large), every one before any is stored, so that a statement is all or
/// nothing: on an error `log` is as it was.
fn seal(
    log: &mut LogWriter,
    (scope, epoch, key): (&ScopeId, u32, &ScopeKey),
    ops: &[RowOp],
    now_ms: u64,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<(basic_proto::UnsignedCommit, Changes)>, DbError> {
    let before = log.clone();
    let mut commits = Vec::new();
    let mut pending: Vec<Vec<RowOp>> =
        ops.chunks(OPS_PER_COMMIT).rev().map(<[RowOp]>::to_vec).collect();
    while let Some(chunk) = pending.pop() {
        let changes = Changes::new(chunk.clone()).map_err(|e| {
            DbError::Commit(CommitError::BadChanges(codec::DecodeError::InvalidValue {
                field: "changes",
                reason: e.to_string(),
            }))
        })?;
        match log.seal(scope, epoch, key, &changes, now_ms, rng) {
            Ok(commit) => commits.push((commit, changes)),
            Err(CommitError::TooLarge { .. }) if chunk.len() > 1 => {
                let (left, right) = chunk.split_at(chunk.len() / 2);
                pending.push(right.to_vec());
                pending.push(left.to_vec());
            }
            Err(error) => {
                *log = before;
                return Err(error.into());
            }
        }
    }
    Ok(commits)
}

/// A custodial app's log writer, after the last commit of its log here
/// (only this node writes it).
fn resume_log<S: Store>(
    replica: &Replica<S>,
    secret: &SecretKey,
    database: DatabaseId,
) -> Result<LogWriter, DbError> {
    let Some((seq, last)) = replica.log(&secret.public())?.into_iter().max_by_key(|(s, _)| *s)
    else {
        return Ok(LogWriter::new(secret.clone(), database));
    };
    let stamp = replica.commit(&last)?.map(|commit| commit.header().hlc).unwrap_or_default();
    Ok(LogWriter::resume(secret.clone(), database, seq, Some(last), stamp))
}

/// Writes `changes` into the view; returns their tables.
fn write_view(
    tx: &Connection,
    catalog: &Catalog,
    plans: &mut RowPlans,
    changes: &[RowChange<'_>],
) -> Result<BTreeSet<Name>, DbError> {
    view::apply(tx, catalog, plans, changes)?;
    let mut tables = BTreeSet::new();
    for change in changes {
        if !tables.contains(change.table) {
            tables.insert(change.table.clone());
        }
    }
    Ok(tables)
}

/// The storage failure (`Store` or `View`) in `result`, taken out and
/// replaced by [`DbError::Closed`]: the reply is failed with it afterwards.
fn take_storage_failure<T>(result: &mut Result<T, DbError>) -> Option<DbError> {
    if !matches!(result, Err(DbError::Store(_) | DbError::View(_))) {
        return None;
    }
    std::mem::replace(result, Err(DbError::Closed)).err()
}
