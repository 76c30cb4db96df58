//! Test helpers: a database with named principals, and builders of
//! operations and commits. Tests only.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::aead::ScopeKey;
use crate::change::{Changes, RowOp};
use crate::commit::{Commit, CommitDraft, CommitId};
use crate::hlc::Hlc;
use crate::keys::{DatabaseId, SecretKey};
use crate::scope::{NamingKey, ScopeId};
use crate::seal::Party;
use crate::value::{KeyPart, Name, RowKey, Value};

use super::log::{ControlLog, Inserted};
use super::op::{ControlOp, Cutoff, OpBody, OpId, Payload, Rights, Rotation, seal_naming};

pub(crate) const T0: u64 = 1_700_000_000_000;
/// A local clock past every stamp the tests make.
pub(crate) const NOW: u64 = u64::MAX;

pub(crate) fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// The scope id of namespace `s` in every test database (root `key(1)`).
pub(crate) fn scope(s: &str) -> ScopeId {
    NamingKey::of_root(&key(1)).scope_id(&name(s))
}

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// A database created by `root` with first device `laptop`.
pub(crate) struct World {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) root: SecretKey,
    pub(crate) laptop: SecretKey,
    pub(crate) db: DatabaseId,
    pub(crate) log: ControlLog,
    pub(crate) genesis: ControlOp,
    tick: u64,
}

impl World {
    pub(crate) fn new() -> Self {
        let root = key(1);
        let laptop = key(2);
        let genesis = ControlOp::create(
            &root,
            OpBody {
                database: DatabaseId([0; 32]),
                author: root.public(),
                parents: vec![],
                hlc: Hlc { wall_ms: T0, counter: 0 },
                payload: Payload::genesis(
                    &root,
                    &Party::of(&laptop),
                    &mut ChaCha20Rng::seed_from_u64(4),
                )
                .unwrap(),
            },
        )
        .unwrap();
        let db = genesis.database();
        let mut log = ControlLog::new(db);
        log.insert(genesis.clone(), NOW).unwrap();
        Self { rng: ChaCha20Rng::seed_from_u64(5), root, laptop, db, log, genesis, tick: 0 }
    }

    /// The wall time of the latest op built so far.
    pub(crate) fn now(&self) -> u64 {
        T0 + self.tick * 1000
    }

    /// An op by `author` on `parents`, stamped after everything so far.
    pub(crate) fn op_on(
        &mut self,
        author: &SecretKey,
        parents: Vec<OpId>,
        payload: Payload,
    ) -> ControlOp {
        self.tick += 1;
        ControlOp::create(
            author,
            OpBody {
                database: self.db,
                author: author.public(),
                parents,
                hlc: Hlc { wall_ms: T0 + self.tick * 1000, counter: 0 },
                payload,
            },
        )
        .unwrap()
    }

    /// An op by `author` on the current heads, inserted; panics unless admitted.
    pub(crate) fn issue(&mut self, author: &SecretKey, payload: Payload) -> ControlOp {
        let heads = self.log.heads();
        let op = self.op_on(author, heads, payload);
        assert!(matches!(self.log.insert(op.clone(), NOW), Ok(Inserted::Admitted(_))));
        op
    }

    pub(crate) fn rotation(
        &mut self,
        author: &SecretKey,
        scope: &str,
        epoch: u32,
        key: &ScopeKey,
        readers: &[&SecretKey],
    ) -> Rotation {
        let parties: Vec<Party> = readers.iter().map(|r| Party::of(r)).collect();
        Rotation::seal(author, self.db, self::scope(scope), epoch, key, &parties, &mut self.rng)
            .unwrap()
    }

    pub(crate) fn grant(
        &mut self,
        author: &SecretKey,
        app: &SecretKey,
        scope: &str,
        rights: Rights,
        epoch: u32,
        key: &ScopeKey,
    ) -> Payload {
        let rotation = self.rotation(author, scope, epoch, key, &[app]);
        Payload::Grant {
            app: app.public(),
            sealing: app.sealing_key(),
            scope: self::scope(scope),
            rights,
            epoch,
            key: rotation.seals[&app.public()].clone(),
        }
    }

    pub(crate) fn add_device(
        &mut self,
        author: &SecretKey,
        device: &SecretKey,
        keys: &[(&str, u32, &ScopeKey)],
    ) -> Payload {
        let mut sealed = BTreeMap::new();
        for (scope, epoch, key) in keys {
            let rotation = self.rotation(author, scope, *epoch, key, &[device]);
            sealed.insert((self::scope(scope), *epoch), rotation.seals[&device.public()].clone());
        }
        let naming = seal_naming(
            &NamingKey::of_root(&self.root),
            author,
            &self.root.public(),
            &Party::of(device),
            &mut self.rng,
        )
        .unwrap();
        Payload::AddDevice {
            device: device.public(),
            sealing: device.sealing_key(),
            naming,
            keys: sealed,
        }
    }

    /// A commit by `author` in its chain after `prev`.
    pub(crate) fn commit(
        &mut self,
        author: &SecretKey,
        prev: Option<&Commit>,
        wall_ms: u64,
        scope: &str,
        epoch: u32,
        key: &ScopeKey,
    ) -> Commit {
        let changes = Changes::new(vec![RowOp::Upsert {
            table: name("todo.items"),
            key: RowKey::single(KeyPart::Integer(wall_ms as i64)),
            generation: 1,
            cells: crate::LiteMap::from_iter([(name("title"), Value::Text("x".into()))]),
        }])
        .unwrap();
        let draft = CommitDraft {
            database: self.db,
            seq: prev.map_or(1, |p| p.header().seq + 1),
            prev: prev.map(Commit::id),
            hlc: Hlc { wall_ms, counter: 0 },
            scope: self::scope(scope),
            epoch,
        };
        Commit::create(author, draft, &changes, key, &mut self.rng).unwrap()
    }
}

/// The cut-off keeping `commit` and its ancestors.
pub(crate) fn cutoff_at(commit: Option<&Commit>) -> Cutoff {
    commit.map_or(Cutoff::NONE, |c| Cutoff { seq: c.header().seq, last: Some(c.id()) })
}

/// The id of `commit` (for check_commit).
pub(crate) fn id(commit: &Commit) -> CommitId {
    commit.id()
}
