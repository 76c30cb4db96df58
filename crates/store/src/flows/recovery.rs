//! The recovery secret: the user's root identity as text to write down.
//!
//! Form: `basic-recovery-` followed by the 32-byte seed and a 4-byte
//! checksum in lowercase base32, in groups of four letters separated by
//! dashes, so a typo or a missing group is caught before anything is done.

use std::collections::BTreeMap;
use std::path::Path;

use basic_proto::control::{ControlLog, ControlOp, Inserted, Payload, seal_label, seal_naming};
use basic_proto::{KeyCache, NamingKey, Party, SealedKey, SecretKey};
use data_encoding::BASE32_NOPAD;

use crate::control_error::ControlError;
use crate::database::{
    self, CACHE_BYTES, Database, DbError, lock_dir, read_identity, write_identity,
};
use crate::environment::Environment;
use crate::replica::Replica;
use crate::replica::access::issue_on;
use crate::storage::device::{self, DeviceStore};

/// What every recovery secret starts with.
pub const PREFIX: &str = "basic-recovery-";

/// Why a recovery secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    /// Not the shape of a recovery secret.
    #[error(
        "not a recovery secret: it starts with {PREFIX} and has 15 groups of letters and digits"
    )]
    Shape,
    /// The checksum does not match: a typo.
    #[error("the recovery secret has a typo (its checksum does not match)")]
    Checksum,
}

fn checksum(seed: &[u8; 32]) -> [u8; 4] {
    let hash = blake3::derive_key("basic/v0 recovery secret checksum", seed);
    [hash[0], hash[1], hash[2], hash[3]]
}

/// The text of `root`'s recovery secret.
pub fn encode(root: &SecretKey) -> String {
    let body = [&root.seed()[..], &checksum(root.seed())].concat();
    let letters = BASE32_NOPAD.encode(&body).to_ascii_lowercase();
    let groups: Vec<&str> =
        letters.as_bytes().chunks(4).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!("{PREFIX}{}", groups.join("-"))
}

/// The root identity a recovery secret holds. Case, spaces and dashes
/// between groups do not matter.
pub fn decode(text: &str) -> Result<SecretKey, RecoveryError> {
    let text = text.trim().to_ascii_lowercase();
    let body = text.strip_prefix(PREFIX).ok_or(RecoveryError::Shape)?;
    let letters: String = body.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
    let bytes = BASE32_NOPAD
        .decode(letters.to_ascii_uppercase().as_bytes())
        .map_err(|_| RecoveryError::Shape)?;
    let (seed, sum) = bytes.split_at_checked(32).ok_or(RecoveryError::Shape)?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| RecoveryError::Shape)?;
    if sum != checksum(&seed) {
        return Err(RecoveryError::Checksum);
    }
    Ok(SecretKey::from_seed(seed))
}

impl Database<DeviceStore> {
    /// Regains a database on a new device, in the empty directory `dir`,
    /// with the recovery secret and the database's control operations (from
    /// any surviving device or pinning peer). The root identity adds this
    /// device and seals it every scope key; every commit it receives is
    /// readable again. The device keeps the root secret (see
    /// [`Database::forget_recovery_secret`]), to remove the lost devices
    /// with root-signed removals ([`Database::remove_device_as_root`])
    /// once their data has synced.
    pub fn recover(dir: &Path, secret: &str, ops: &[Vec<u8>]) -> Result<Self, DbError> {
        let root = decode(secret)?;
        let lock = lock_dir(dir)?;
        let replica = Replica::new(device::open(&dir.join("replica"), CACHE_BYTES)?);
        if read_identity(&replica)?.is_some() {
            return Err(ControlError::HoldsDatabase(dir.to_owned()).into());
        }
        let authors = KeyCache::default();
        let ops = ops
            .iter()
            .map(|bytes| ControlOp::decode_with(bytes, &authors))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ControlError::from)?;
        let database = ops
            .iter()
            .find(|op| {
                matches!(op.body().payload, Payload::Genesis { .. })
                    && op.body().author == root.public()
            })
            .map(ControlOp::database)
            .ok_or(ControlError::OtherDatabase)?;
        let environment = Environment::system();
        let mut rng = environment.rng();
        let mut log = ControlLog::new(database);
        let mut txn = replica.begin();
        let now = environment.now_ms();
        for op in ops {
            if let Ok(Inserted::Admitted(ids)) = log.insert(op, now) {
                for id in ids {
                    if let Some(op) = log.get(&id) {
                        txn.insert_op(op);
                    }
                }
            }
        }
        // The root opens every scope key (it is sealed each one) and seals
        // them to the new device, which it adds.
        let state = log.state();
        let device = SecretKey::generate(&mut rng);
        let party = Party::of(&device);
        let mut keys = BTreeMap::new();
        for (scope, epochs) in state.scopes() {
            for epoch in epochs.epochs.keys() {
                if let Some(key) = state.scope_keys(&root, scope, *epoch).into_iter().next() {
                    let label = seal_label(database, scope, *epoch, &party.key);
                    let sealed = SealedKey::seal(&key, &root, &party, &label, &mut rng)
                        .map_err(ControlError::from)?;
                    keys.insert((*scope, *epoch), sealed);
                }
            }
        }
        let naming = NamingKey::of_root(&root);
        let naming = seal_naming(&naming, &root, &root.public(), &party, &mut rng)
            .map_err(ControlError::from)?;
        let add = issue_on(
            &log,
            &root,
            Payload::AddDevice { device: party.key, sealing: party.sealing, naming, keys },
            now,
        )
        .map_err(ControlError::from)?;
        log.insert(add.clone(), now).map_err(ControlError::from)?;
        txn.insert_op(&add);
        // The root secret stays until the lost devices are removed with it
        // (their cut-off is set once their data has synced: §9.4).
        write_identity(&mut txn, database, &device, Some(&root))?;
        txn.commit()?;
        drop((replica, lock));
        database::Database::open(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basic_proto::Value;

    fn count(db: &Database) -> Value {
        let rows = db.query("SELECT count(*) FROM todo.lists", &[], None).unwrap().rows;
        rows[0][0].clone()
    }

    fn commits(db: &Database) -> Vec<Vec<u8>> {
        db.replica().commits().map(|c| c.unwrap().as_bytes().to_vec()).collect()
    }

    /// A thief's device removes the owner's with cut-off 0 (a mutual
    /// removal's half): the owner's rows vanish from a replica that held
    /// them. The root, removing the owner's device again with the cut-off
    /// at what that replica holds, brings them back (control-log.md §6: the
    /// root's end decides).
    #[test]
    fn a_root_signed_removal_repairs_a_thiefs_cutoff_zero() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let owner = Database::open(dirs[0].path()).unwrap();
        let schema = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/todo.toml"));
        owner.apply_schema(crate::Schema::from_file(schema).unwrap()).unwrap();
        let insert = "INSERT INTO todo.lists (id, name) VALUES ('a', 'A'), ('b', 'B')";
        owner.execute(insert, &[], None).unwrap();
        let secret = owner.recovery_secret().unwrap().expect("held");
        // The thief's device joined, and never synced the owner's commits.
        let invite = owner.invite(Vec::new(), 60_000).unwrap();
        let request = Database::prepare_join(dirs[1].path(), &invite).unwrap();
        owner.accept_join(&request).unwrap();
        let thief = Database::finish_join(dirs[1].path(), &owner.control_ops().unwrap()).unwrap();

        // A new device, recovered, holds the owner's rows...
        let new =
            Database::recover(dirs[2].path(), &secret, &owner.control_ops().unwrap()).unwrap();
        assert!(new.root_secret().unwrap().is_some(), "kept until the lost devices are removed");
        for result in new.ingest(&commits(&owner)).unwrap() {
            result.unwrap();
        }
        assert_eq!(count(&new), Value::Integer(2));
        // ...until the thief's removal of the owner, cut off at 0, arrives.
        thief.remove_device(owner.device()).unwrap();
        for outcome in new.ingest_ops(&thief.control_ops().unwrap()).unwrap() {
            outcome.unwrap();
        }
        assert_eq!(count(&new), Value::Integer(0));
        // The root removes both, the owner's old device at what is held.
        let root = decode(&secret).unwrap();
        new.remove_device_as_root(thief.device(), root.clone()).unwrap();
        new.remove_device_as_root(owner.device(), root).unwrap();
        assert_eq!(count(&new), Value::Integer(2), "the root's end decides");
        let state = new.auth_state();
        assert!(!state.is_device(&owner.device()) && !state.is_device(&thief.device()));
        assert!(state.compromised().is_empty());
        new.forget_recovery_secret().unwrap();
        assert!(new.root_secret().unwrap().is_none());
        new.execute("INSERT INTO todo.lists (id, name) VALUES ('c', 'C')", &[], None).unwrap();
        assert_eq!(count(&new), Value::Integer(3));
    }

    #[test]
    fn round_trips_and_catches_typos() {
        let root = SecretKey::from_seed([7; 32]);
        let text = encode(&root);
        assert!(text.starts_with(PREFIX));
        assert_eq!(decode(&text).unwrap().public(), root.public());
        assert_eq!(
            decode(&format!("  {}  ", text.to_uppercase().replace("BASIC-RECOVERY-", PREFIX)))
                .unwrap()
                .public(),
            root.public()
        );
        let mut typo = text.clone().into_bytes();
        let at = PREFIX.len() + 2;
        typo[at] = if typo[at] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            decode(std::str::from_utf8(&typo).unwrap()).map(|k| k.public()),
            Err(RecoveryError::Checksum)
        );
        assert!(matches!(decode("hello"), Err(RecoveryError::Shape)));
        assert!(matches!(
            decode(&text[..text.len() - 5]),
            Err(RecoveryError::Shape | RecoveryError::Checksum)
        ));
    }
}
