//! A platform keystore installed: the device and root secrets go there, the
//! replica's files hold neither, and forgetting the recovery secret removes
//! it from the keystore (basic_store::secrets). A binary of its own: the
//! keystore, once installed, is every database's in the process.

use std::path::Path;
use std::sync::Arc;

use basic_store::Database;
use basic_store::secrets::{self, MemSecrets, SecretStore};

/// Whether any file under `dir` contains `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return found_in_files(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[test]
fn secrets_live_in_the_keystore_and_not_in_the_files() {
    let keystore = Arc::new(MemSecrets::default());
    assert!(secrets::install(keystore.clone()));
    assert!(!secrets::install(Arc::new(MemSecrets::default())), "once per process");

    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let device = db.member_key().unwrap();
    let root = db.root_secret().unwrap().expect("held until confirmed");
    assert_eq!(keystore.names().len(), 2, "{:?}", keystore.names());
    drop(db);
    assert!(!found_in_files(dir.path(), device.seed()), "the device seed is in a file");
    assert!(!found_in_files(dir.path(), root.seed()), "the root seed is in a file");

    // Reopened, the same keys, from the keystore.
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.member_key().unwrap().public(), device.public());
    assert_eq!(db.root_secret().unwrap().map(|r| r.public()), Some(root.public()));
    // Forgetting the recovery secret removes it from the keystore.
    db.forget_recovery_secret().unwrap();
    assert!(db.root_secret().unwrap().is_none());
    assert_eq!(keystore.names().len(), 1, "{:?}", keystore.names());
    drop(db);

    // A keystore that lost the device key: opening says so, and makes no
    // new identity.
    for name in keystore.names() {
        keystore.delete(&name).unwrap();
    }
    let error = Database::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("keystore: the memory no longer has this device's key"), "{error}");
}
