use std::collections::BTreeMap;

use basic_proto::{DatabaseId, KeyPart, LiteMap, RowOp, SecretKey, Tables, Value};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::replica::author::LogWriter;
use crate::storage::device::DeviceStore;
use crate::storage::kv::MemStore;

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// The scope of namespace `app` in these tests.
const APP: ScopeId = ScopeId([7; 16]);

fn keyring() -> BTreeMap<(ScopeId, u32), ScopeKey> {
    BTreeMap::from([((APP, 0), ScopeKey::from_bytes([9; 32]))])
}

fn writer(n: u8) -> LogWriter {
    LogWriter::new(SecretKey::from_seed([n; 32]), DatabaseId([1; 32]))
}

/// One op on row `row` of `app.items`, writing column `column`.
fn op(row: i64, generation: u32, column: &str, value: i64) -> RowOp {
    let key = RowKey::single(KeyPart::Integer(row));
    if generation.is_multiple_of(2) {
        RowOp::Delete { table: name("app.items"), key, generation }
    } else {
        let cells = LiteMap::from_iter([(name(column), Value::Integer(value))]);
        RowOp::Upsert { table: name("app.items"), key, generation, cells }
    }
}

fn write(writer: &mut LogWriter, ops: Vec<RowOp>, now: u64, rng: &mut ChaCha20Rng) -> Commit {
    let changes = Changes::new(ops).unwrap();
    writer.write(&APP, 0, &ScopeKey::from_bytes([9; 32]), &changes, now, rng).unwrap()
}

fn expected(commits: &[Commit]) -> Tables {
    let mut tables = Tables::default();
    for commit in commits {
        let stamp = Stamp::of(commit.header());
        tables.apply(stamp, &commit.open(&ScopeKey::from_bytes([9; 32])).unwrap());
    }
    tables
}

fn stored_rows<S: Store>(replica: &Replica<S>) -> Vec<(Name, Vec<u8>, RowState)> {
    replica.row_states().collect::<Result<_, _>>().unwrap()
}

fn table_rows(tables: &Tables) -> Vec<(Name, Vec<u8>, RowState)> {
    tables.states().map(|(t, k, s)| (t.clone(), k.encode(), s.clone())).collect()
}

/// Every author's log and head, and every sync summary.
type HeldLogs =
    (BTreeMap<PublicKey, (Head, Vec<(u64, CommitId)>)>, Vec<(PublicKey, ScopeId, ScopeSummary)>);

fn logs_of<S: Store>(replica: &Replica<S>) -> HeldLogs {
    let heads = replica.heads().unwrap();
    let logs = heads.iter().map(|(a, h)| (*a, (*h, replica.log(a).unwrap()))).collect();
    (logs, replica.summaries().collect::<Result<_, _>>().unwrap())
}

fn insert_all<S: Store>(replica: &Replica<S>, commits: &[Commit]) -> Vec<Inserted> {
    let mut txn = replica.begin();
    let results = commits.iter().map(|c| txn.insert(c, &keyring()).unwrap()).collect();
    txn.commit().unwrap();
    results
}

#[test]
fn duplicates_change_nothing() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut a = writer(1);
    let commit = write(&mut a, vec![op(1, 1, "x", 5)], 1000, &mut rng);
    assert_eq!(insert_all(&replica, std::slice::from_ref(&commit))[0].outcome, Outcome::Applied);
    let before = stored_rows(&replica);
    let again = insert_all(&replica, &[commit.clone(), commit]);
    assert!(again.iter().all(|i| i.outcome == Outcome::Duplicate));
    assert_eq!(stored_rows(&replica), before);
}

#[test]
fn forks_are_recorded_and_both_sides_merge() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut original = writer(1);
    let first = write(&mut original, vec![op(1, 1, "x", 1)], 1000, &mut rng);
    // A restored backup of the same device writes seq 2 twice.
    let mut clone = LogWriter::resume(
        SecretKey::from_seed([1; 32]),
        DatabaseId([1; 32]),
        1,
        Some(first.id()),
        first.header().hlc,
    );
    let left = write(&mut original, vec![op(1, 1, "x", 2)], 2000, &mut rng);
    let right = write(&mut clone, vec![op(2, 1, "y", 3)], 2000, &mut rng);
    let results = insert_all(&replica, &[first.clone(), left.clone(), right.clone()]);
    assert_eq!(results.iter().map(|r| r.fork).collect::<Vec<_>>(), [false, false, true]);
    let author = first.header().author;
    assert_eq!(replica.forks().unwrap(), [(author, 2)]);
    assert_eq!(replica.log(&author).unwrap().len(), 3, "{:?}", replica.log(&author).unwrap());
    assert_eq!(replica.heads().unwrap()[&author], Head { contiguous: 2, max: 2 });
    assert_eq!(
        table_rows(&expected(&[first.clone(), left.clone(), right.clone()])),
        stored_rows(&replica)
    );
    // Either side received again, the second at its position too, is a
    // copy: nothing is added to the log, no fork is counted twice.
    let again = insert_all(&replica, &[right.clone(), left.clone(), first.clone()]);
    assert!(again.iter().all(|i| i.outcome == Outcome::Duplicate && !i.fork), "{again:?}");
    assert_eq!(replica.log(&author).unwrap().len(), 3);
    assert_eq!(table_rows(&expected(&[first, left, right])), stored_rows(&replica));
}

#[test]
fn heads_track_gaps() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut a = writer(1);
    let commits: Vec<_> =
        (0..4).map(|i| write(&mut a, vec![op(i, 1, "x", i)], 1000, &mut rng)).collect();
    let author = commits[0].header().author;
    insert_all(&replica, &[commits[0].clone(), commits[2].clone(), commits[3].clone()]);
    assert_eq!(replica.heads().unwrap()[&author], Head { contiguous: 1, max: 4 });
    insert_all(&replica, &[commits[1].clone()]);
    assert_eq!(replica.heads().unwrap()[&author], Head { contiguous: 4, max: 4 });
}

/// Whether a commit is held, asked at its position: as its id tells, for
/// commits stored, missing below the head (a gap) and past it, and of an
/// author with no head at all.
#[test]
fn a_commit_is_held_at_its_position_as_its_id_tells() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut a = writer(1);
    let commits: Vec<_> =
        (0..5).map(|i| write(&mut a, vec![op(i, 1, "x", i)], 1000, &mut rng)).collect();
    let stranger = write(&mut writer(2), vec![op(9, 1, "x", 9)], 1000, &mut rng);
    insert_all(&replica, &[commits[0].clone(), commits[2].clone()]);
    for commit in commits.iter().chain([&stranger]) {
        let header = commit.header();
        let at = replica.holds_applied_at(&commit.id(), &header.author, header.seq).unwrap();
        assert_eq!(at, replica.holds_applied(&commit.id()).unwrap(), "seq {}", header.seq);
    }
    assert_eq!(
        commits.iter().map(|c| replica.holds_applied(&c.id()).unwrap()).collect::<Vec<_>>(),
        [true, false, true, false, false]
    );
}

proptest! {
    /// A head is written as the general encoder writes it (the format of
    /// stores made before it was written in place), read back, and any
    /// bytes are read as the general decoder reads them.
    #[test]
    fn heads_are_written_and_read_as_in_general(
        contiguous in any::<u64>(),
        max in any::<u64>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let head = Head { contiguous, max };
        let bytes = head.encode();
        let general = basic_proto::codec::encode_value(&ciborium::Value::Array(vec![
            ciborium::Value::Integer(contiguous.into()),
            ciborium::Value::Integer(max.into()),
        ]));
        prop_assert_eq!(&bytes, &general);
        prop_assert_eq!(Head::decode(&bytes).unwrap(), head);
        let mut changed = bytes.clone();
        changed[at.index(bytes.len())] = byte;
        for bytes in [changed, bytes[..at.index(bytes.len())].to_vec()] {
            prop_assert_eq!(Head::decode(&bytes).ok(), Head::decode_in_general(&bytes).ok());
        }
    }
}

#[test]
fn commits_without_a_key_wait_and_apply_later() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut a = writer(1);
    let commit = write(&mut a, vec![op(1, 1, "x", 5)], 1000, &mut rng);
    let mut txn = replica.begin();
    let no_keys: BTreeMap<(ScopeId, u32), ScopeKey> = BTreeMap::new();
    assert_eq!(txn.insert(&commit, &no_keys).unwrap().outcome, Outcome::WaitingForKey);
    txn.commit().unwrap();
    assert!(stored_rows(&replica).is_empty());
    let mut txn = replica.begin();
    assert_eq!(txn.open_waiting(&APP, 0, &keyring()).unwrap(), 1);
    txn.commit().unwrap();
    assert_eq!(stored_rows(&replica), table_rows(&expected(&[commit])));
}

#[test]
fn unreadable_commits_are_kept_but_not_applied() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut a = writer(1);
    let changes = Changes::new(vec![op(1, 1, "x", 5)]).unwrap();
    // Encrypted under a key other than the one the replica holds for app/0.
    let commit =
        a.write(&APP, 0, &ScopeKey::from_bytes([8; 32]), &changes, 1000, &mut rng).unwrap();
    let result = &insert_all(&replica, std::slice::from_ref(&commit))[0];
    assert_eq!(result.outcome, Outcome::Unreadable(CommitError::Undecryptable));
    assert!(replica.commit(&commit.id()).unwrap().is_some());
    assert!(stored_rows(&replica).is_empty());
}

#[test]
fn held_commits_wait_outside_the_log_until_their_time() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut a = writer(1);
    let commit = write(&mut a, vec![op(1, 1, "x", 5)], 500_000, &mut rng);
    let author = commit.header().author;
    let mut txn = replica.begin();
    let held = txn.hold(&commit, 440_000).unwrap();
    assert_eq!(held.outcome, Outcome::HeldBack { apply_at_ms: 440_000 });
    assert_eq!(txn.hold(&commit, 440_000).unwrap().outcome, Outcome::Duplicate);
    txn.commit().unwrap();
    assert_eq!(replica.held_count().unwrap(), 1);
    assert_eq!(replica.next_held_due().unwrap(), Some(440_000));
    assert!(replica.log(&author).unwrap().is_empty());
    assert!(stored_rows(&replica).is_empty());
    // Not yet due: nothing moves.
    let mut txn = replica.begin();
    assert!(txn.take_due(439_999).unwrap().is_empty());
    txn.commit().unwrap();
    // Due: taken out, then inserted like any received commit.
    let mut txn = replica.begin();
    let released = txn.take_due(440_000).unwrap();
    assert_eq!(released, std::slice::from_ref(&commit));
    assert_eq!(txn.insert(&released[0], &keyring()).unwrap().outcome, Outcome::Applied);
    txn.commit().unwrap();
    assert_eq!(replica.held_count().unwrap(), 0);
    assert_eq!(stored_rows(&replica), table_rows(&expected(&[commit])));
}

#[test]
fn recompute_rebuilds_only_the_rows_invalid_commits_touched() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (mut good, mut bad) = (writer(1), writer(2));
    let commits = vec![
        write(&mut good, vec![op(1, 1, "x", 1), op(2, 1, "x", 1)], 1000, &mut rng),
        write(&mut bad, vec![op(1, 1, "x", 2)], 2000, &mut rng),
        write(&mut bad, vec![op(1, 2, "x", 0)], 3000, &mut rng),
        write(&mut good, vec![op(3, 1, "y", 7)], 4000, &mut rng),
    ];
    insert_all(&replica, &commits);
    let bad_author = commits[1].header().author;
    // The bad author's commits from seq 2 on become invalid (a cut-off at 1).
    let admits = |h: &CommitHeader| !(h.author == bad_author && h.seq >= 2);
    let mut txn = replica.begin();
    let changed = txn.recompute(&[commits[2].id()], &keyring(), &|h, _| admits(h)).unwrap();
    txn.commit().unwrap();
    assert_eq!(changed, 1);
    let admitted: Vec<_> = commits.iter().filter(|c| admits(c.header())).cloned().collect();
    assert_eq!(stored_rows(&replica), table_rows(&expected(&admitted)));
}

/// Commits by three writers over a few rows, with generations a real
/// writer could pick or an adversarial one could claim.
fn commit_set() -> impl Strategy<Value = Vec<Commit>> {
    proptest::collection::vec(
        (
            0u8..3,
            proptest::collection::vec((0i64..4, 1u32..5, 0usize..3, any::<i64>()), 1..4),
            0u64..3000,
        ),
        1..20,
    )
    .prop_map(|spec| {
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let mut writers = [writer(1), writer(2), writer(3)];
        spec.into_iter()
            .map(|(w, ops, now)| {
                let mut seen = BTreeSet::new();
                let ops = ops
                    .into_iter()
                    .filter(|(row, ..)| seen.insert(*row))
                    .map(|(row, generation, column, value)| {
                        op(row, generation, ["a", "b", "c"][column], value)
                    })
                    .collect();
                write(&mut writers[w as usize], ops, now, &mut rng)
            })
            .collect()
    })
}

fn shuffled(
    commits: &[Commit],
    order: &[proptest::sample::Index],
    dups: &[proptest::sample::Index],
) -> Vec<Commit> {
    let mut out: Vec<Commit> = commits.to_vec();
    out.extend(dups.iter().map(|d| commits[d.index(commits.len())].clone()));
    for (i, index) in order.iter().enumerate() {
        let len = out.len();
        out.swap(i % len, index.index(len));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The stored tables equal a from-scratch replay of the logs, and the
    /// logs, heads and sync summaries those of the commits stored one at a
    /// time, whatever the arrival order, duplicates and transaction
    /// boundaries.
    #[test]
    fn materialised_tables_equal_a_replay_of_the_logs(
        commits in commit_set(),
        order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..30),
        dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
        chunk in 1usize..6,
        on_disk in any::<bool>(),
    ) {
        let arrival = shuffled(&commits, &order, &dups);
        let want = table_rows(&expected(&commits));
        let one_at_a_time = Replica::new(MemStore::new());
        for commit in &commits { insert_all(&one_at_a_time, std::slice::from_ref(commit)); }
        let (got, got_logs) = if on_disk {
            let dir = tempfile::tempdir().unwrap();
            let replica = Replica::new(DeviceStore::open(dir.path(), 1 << 20).unwrap());
            for part in arrival.chunks(chunk) { insert_all(&replica, part); }
            (stored_rows(&replica), logs_of(&replica))
        } else {
            let replica = Replica::new(MemStore::new());
            for part in arrival.chunks(chunk) { insert_all(&replica, part); }
            (stored_rows(&replica), logs_of(&replica))
        };
        prop_assert_eq!(got, want);
        prop_assert_eq!(got_logs, logs_of(&one_at_a_time));
    }

    /// Recomputing after invalidating an author's tail gives exactly the
    /// tables of the admitted commits.
    #[test]
    fn recompute_equals_a_replay_of_the_admitted_commits(commits in commit_set(), cut in 0u64..4, who in 0u8..3) {
        let replica = Replica::new(MemStore::new());
        insert_all(&replica, &commits);
        let author = SecretKey::from_seed([who + 1; 32]).public();
        let admits = |h: &CommitHeader| !(h.author == author && h.seq > cut);
        let invalid: Vec<CommitId> = commits.iter().filter(|c| !admits(c.header())).map(Commit::id).collect();
        let mut txn = replica.begin();
        txn.recompute(&invalid, &keyring(), &|h, _| admits(h)).unwrap();
        txn.commit().unwrap();
        let admitted: Vec<_> = commits.iter().filter(|c| admits(c.header())).cloned().collect();
        // Rows only invalid commits ever wrote remain as empty generation-0 states.
        let got: Vec<_> = stored_rows(&replica).into_iter().filter(|(_, _, s)| s.generation > 0).collect();
        prop_assert_eq!(got, table_rows(&expected(&admitted)));
    }
}

#[test]
fn apply_while_hands_over_the_rows_changed_since_the_last_take_and_stores_all() {
    // Below and above the count from which the batch is applied on
    // another thread.
    for rows in [6, 2 * PARALLEL_COMMIT_ROWS as i64] {
        let replica = Replica::new(MemStore::new());
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut w = writer(1);
        let half = rows / 2;
        let first = write(&mut w, (0..half).map(|r| op(r, 1, "a", r)).collect(), 1_000, &mut rng);
        let mut ops: Vec<RowOp> = (half..rows).map(|r| op(r, 1, "a", r)).collect();
        ops.push(op(0, 1, "b", -1));
        let second = write(&mut w, ops, 2_000, &mut rng);

        let mut txn = replica.begin();
        txn.insert(&first, &keyring()).unwrap();
        assert_eq!(txn.take_changes().len(), half as usize);
        txn.insert(&second, &keyring()).unwrap();
        let (applied, handed) = txn.apply_while(|changes| {
            changes.iter().map(|c| (c.table.clone(), c.key.clone())).collect::<Vec<_>>()
        });
        let unsettled = applied.unwrap();
        // Applied: seen by reads at once, by settled readers only once flushed.
        assert!(
            replica
                .row(&name("app.items"), &RowKey::single(KeyPart::Integer(0)))
                .unwrap()
                .is_some()
        );
        assert!(replica.unsettled.try_read().is_err(), "a settled reader waits, {rows} rows");
        replica.flush().unwrap();
        drop(unsettled);
        assert!(replica.unsettled.try_read().is_ok(), "{rows} rows");
        let wanted: Vec<(Name, RowKey)> = [0]
            .into_iter()
            .chain(half..rows)
            .map(|r| (name("app.items"), RowKey::single(KeyPart::Integer(r))))
            .collect();
        assert_eq!(handed, wanted, "{rows} rows");
        assert_eq!(stored_rows(&replica), table_rows(&expected(&[first, second])), "{rows} rows");
    }
}

#[test]
fn retake_changes_gives_every_changed_row_again_and_starts_a_new_take() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let mut w = writer(1);
    let first = write(&mut w, (0..3).map(|r| op(r, 1, "a", r)).collect(), 1_000, &mut rng);
    let second = write(&mut w, vec![op(2, 1, "b", 7), op(5, 1, "a", 5)], 2_000, &mut rng);
    let mut txn = replica.begin();
    txn.insert(&first, &keyring()).unwrap();
    assert_eq!(txn.take_changes().len(), 3);
    txn.insert(&second, &keyring()).unwrap();
    let keys = |changes: Vec<RowChange<'_>>| -> Vec<RowKey> {
        changes.into_iter().map(|c| c.key.clone()).collect()
    };
    let every: Vec<RowKey> = [0, 1, 2, 5].map(|r| RowKey::single(KeyPart::Integer(r))).into();
    assert_eq!(keys(txn.retake_changes()), every);
    assert!(txn.take_changes().is_empty(), "nothing changed since the retake");
    assert_eq!(keys(txn.retake_changes()), every, "a retake gives them all again");
}

/// An own commit staged before its signature reads as held, merges at
/// once, and is stored with its signed bytes; a transaction missing a
/// signature, or given one it did not stage, stores nothing.
#[test]
fn own_commits_are_staged_before_they_are_signed() {
    let replica = Replica::new(MemStore::new());
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = ScopeKey::from_bytes([9; 32]);
    let mut a = writer(1);
    let secret = a.secret().clone();
    let mut seal = |a: &mut LogWriter, row: i64| {
        let changes = Changes::new(vec![op(row, 1, "x", row)]).unwrap();
        (a.seal(&APP, 0, &key, &changes, 1000, &mut rng).unwrap(), changes)
    };

    // Signed after the next is chained and staged: both are stored whole.
    let mut txn = replica.begin();
    let (first, first_changes) = seal(&mut a, 1);
    let (second, second_changes) = seal(&mut a, 2);
    assert_eq!(second.header().prev, Some(first.id()));
    assert_eq!(
        txn.insert_unsigned(&first, first_changes.clone()).unwrap().outcome,
        Outcome::Applied
    );
    assert_eq!(txn.insert_unsigned(&first, first_changes).unwrap().outcome, Outcome::Duplicate);
    txn.insert_unsigned(&second, second_changes).unwrap();
    assert!(txn.row(&name("app.items"), &RowKey::single(KeyPart::Integer(2))).unwrap().is_live());
    let signed = [first.sign(&secret).unwrap(), second.sign(&secret).unwrap()];
    for commit in &signed {
        txn.put_signed(commit).unwrap();
    }
    txn.commit().unwrap();
    for commit in &signed {
        assert_eq!(replica.commit(&commit.id()).unwrap().as_ref(), Some(commit));
    }
    assert_eq!(stored_rows(&replica), table_rows(&expected(&signed)));

    // One left unsigned: nothing of the transaction is stored.
    let before = stored_rows(&replica);
    let mut txn = replica.begin();
    let (third, changes) = seal(&mut a, 3);
    let third_id = third.id();
    txn.insert_unsigned(&third, changes).unwrap();
    assert!(matches!(txn.commit(), Err(StoreError::Unsigned(id)) if id == third_id));
    assert_eq!(replica.commit(&third_id).unwrap(), None);
    assert_eq!(stored_rows(&replica), before);

    // A signature for a commit the transaction did not stage is refused.
    let mut txn = replica.begin();
    let stray = third.sign(&secret).unwrap();
    assert!(matches!(txn.put_signed(&stray), Err(StoreError::Unsigned(id)) if id == third_id));
}
