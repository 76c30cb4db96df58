//! The replica under a control log: a revocation that arrives after the
//! revoked app's commits removes exactly their effects, and a grant that
//! arrives after an app's commits brings them in.

use std::collections::{BTreeMap, BTreeSet};

use basic_proto::control::{ControlLog, ControlOp, Cutoff, OpBody, Payload, Rights, Rotation};
use basic_proto::{
    Changes, Commit, DatabaseId, Hlc, KeyPart, LiteMap, Name, Party, RowKey, RowOp, ScopeId,
    ScopeKey, SealedKey, SecretKey, Value,
};
use basic_store::{LogWriter, MemStore, Replica};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The scope of namespace `todo` (its id does not matter to the replica).
const TODO: ScopeId = ScopeId([5; 16]);

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

struct World {
    root: SecretKey,
    laptop: SecretKey,
    app: SecretKey,
    log: ControlLog,
    clock: u64,
    rng: ChaCha20Rng,
    k0: ScopeKey,
    k1: ScopeKey,
}

impl World {
    /// A database with a `todo` scope at epoch 0, made by the laptop.
    fn new() -> Self {
        let (root, laptop, app) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let genesis = ControlOp::create(
            &root,
            OpBody {
                database: DatabaseId([0; 32]),
                author: root.public(),
                parents: vec![],
                hlc: Hlc { wall_ms: 1_000, counter: 0 },
                payload: Payload::genesis(
                    &root,
                    &Party::of(&laptop),
                    &mut ChaCha20Rng::seed_from_u64(8),
                )
                .unwrap(),
            },
        )
        .unwrap();
        let mut log = ControlLog::new(genesis.database());
        log.insert(genesis, u64::MAX).unwrap();
        let mut world = World {
            root,
            laptop,
            app,
            log,
            clock: 1_000,
            rng: ChaCha20Rng::seed_from_u64(9),
            k0: ScopeKey::from_bytes([10; 32]),
            k1: ScopeKey::from_bytes([11; 32]),
        };
        let rotation = world.rotation(0, &[]);
        world.issue(Payload::RotateKey(rotation));
        world
    }

    fn database(&self) -> DatabaseId {
        self.log.database()
    }

    /// Epoch `epoch` of `todo`, sealed by the laptop to itself and `others`.
    fn rotation(&mut self, epoch: u32, others: &[Party]) -> Rotation {
        let key = if epoch == 0 { self.k0.clone() } else { self.k1.clone() };
        let mut readers = vec![Party::of(&self.laptop)];
        readers.extend_from_slice(others);
        Rotation::seal(&self.laptop, self.database(), TODO, epoch, &key, &readers, &mut self.rng)
            .unwrap()
    }

    /// An op by the laptop on the current heads.
    fn op(&mut self, payload: Payload) -> ControlOp {
        self.clock += 1;
        let body = OpBody {
            database: self.database(),
            author: self.laptop.public(),
            parents: self.log.heads(),
            hlc: Hlc { wall_ms: self.clock, counter: 0 },
            payload,
        };
        ControlOp::create(&self.laptop, body).unwrap()
    }

    fn issue(&mut self, payload: Payload) -> ControlOp {
        let op = self.op(payload);
        self.log.insert(op.clone(), u64::MAX).unwrap();
        op
    }

    fn grant(&mut self) -> Payload {
        let app = Party::of(&self.app);
        let label = basic_proto::control::seal_label(self.database(), &TODO, 0, &app.key);
        let key = SealedKey::seal(&self.k0, &self.laptop, &app, &label, &mut self.rng).unwrap();
        Payload::Grant {
            app: app.key,
            sealing: app.sealing,
            scope: TODO,
            rights: Rights::ReadWrite,
            epoch: 0,
            key,
        }
    }

    fn keyring(&self) -> BTreeMap<(ScopeId, u32), ScopeKey> {
        BTreeMap::from([((TODO, 0), self.k0.clone()), ((TODO, 1), self.k1.clone())])
    }
}

fn write(writer: &mut LogWriter, row: i64, key: &ScopeKey, epoch: u32) -> Commit {
    let op = RowOp::Upsert {
        table: name("todo.items"),
        key: RowKey::single(KeyPart::Integer(row)),
        generation: 1,
        cells: LiteMap::from_iter([(name("title"), Value::Text(format!("row {row}")))]),
    };
    let changes = Changes::new(vec![op]).unwrap();
    writer.write(&TODO, epoch, key, &changes, 5_000 + row as u64, &mut rand::rng()).unwrap()
}

fn live_rows(replica: &Replica<MemStore>) -> Vec<i64> {
    let table = name("todo.items");
    (0..20)
        .filter(|row| {
            replica
                .row(&table, &RowKey::single(KeyPart::Integer(*row)))
                .unwrap()
                .is_some_and(|state| state.is_live())
        })
        .collect()
}

/// Stores `commits` and the log's operations, then enforces the log's state.
fn sync(
    replica: &Replica<MemStore>,
    world: &World,
    commits: &[Commit],
) -> BTreeSet<basic_proto::CommitId> {
    let mut txn = replica.begin();
    for commit in commits {
        txn.insert(commit, &world.keyring()).unwrap();
    }
    for op in world.log.ordered() {
        txn.insert_op(op);
    }
    let refused = txn.enforce(&world.log.state(), &world.keyring()).unwrap();
    txn.commit().unwrap();
    refused
}

#[test]
fn a_late_revocation_removes_exactly_the_commits_after_the_cutoff() {
    let mut world = World::new();
    let grant = world.grant();
    world.issue(grant);
    let db = world.database();
    let mut app = LogWriter::new(world.app.clone(), db);
    let mut laptop = LogWriter::new(world.laptop.clone(), db);
    let c1 = write(&mut app, 1, &world.k0, 0);
    let c2 = write(&mut app, 2, &world.k0, 0);
    let c3 = write(&mut app, 3, &world.k0, 0);
    let l1 = write(&mut laptop, 10, &world.k0, 0);
    let replica = Replica::new(MemStore::new());
    assert!(sync(&replica, &world, &[c1.clone(), c2.clone(), c3.clone(), l1.clone()]).is_empty());
    assert_eq!(live_rows(&replica), [1, 2, 3, 10]);

    // The laptop had seen only c1 when it revoked the app.
    let rotation = world.rotation(1, &[]);
    world.issue(Payload::Revoke {
        app: world.app.public(),
        cutoff: Cutoff { seq: 1, last: Some(c1.id()) },
        rotation,
    });
    let refused = sync(&replica, &world, &[]);
    assert_eq!(refused, BTreeSet::from([c2.id(), c3.id()]));
    assert_eq!(replica.rejected().unwrap(), refused);
    assert_eq!(
        live_rows(&replica),
        [1, 10],
        "the app's rows before its cut-off and the laptop's stay"
    );

    // The stored operations rebuild the same log and state.
    let reloaded = replica.control_log(db).unwrap();
    assert_eq!(reloaded.state(), world.log.state());
    let _ = &world.root;
}

#[test]
fn a_late_grant_brings_in_the_commits_that_came_first() {
    let mut world = World::new();
    let db = world.database();
    let mut app = LogWriter::new(world.app.clone(), db);
    let commits = [write(&mut app, 1, &world.k0, 0), write(&mut app, 2, &world.k0, 0)];
    let replica = Replica::new(MemStore::new());
    // Without a grant, the app's commits are stored but have no effect.
    assert_eq!(sync(&replica, &world, &commits).len(), 2);
    assert!(live_rows(&replica).is_empty());
    let grant = world.grant();
    world.issue(grant);
    assert!(sync(&replica, &world, &[]).is_empty());
    assert_eq!(live_rows(&replica), [1, 2]);
}

#[test]
fn refusing_a_commit_keeps_what_others_wrote_to_the_same_row_in_the_same_transaction() {
    let mut world = World::new();
    let db = world.database();
    let mut app = LogWriter::new(world.app.clone(), db);
    let mut laptop = LogWriter::new(world.laptop.clone(), db);
    // Both write row 5; the app has no grant.
    let commits = [write(&mut laptop, 5, &world.k0, 0), write(&mut app, 5, &world.k0, 0)];
    let replica = Replica::new(MemStore::new());
    assert_eq!(sync(&replica, &world, &commits), BTreeSet::from([commits[1].id()]));
    let state =
        replica.row(&name("todo.items"), &RowKey::single(KeyPart::Integer(5))).unwrap().unwrap();
    assert!(state.is_live());
    let author = state.cells[&name("title")].stamp.author;
    assert_eq!(author, world.laptop.public().into());
    let _ = &mut world;
}
