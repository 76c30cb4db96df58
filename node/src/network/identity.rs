//! The node's libp2p identity: an ed25519 key of its own, kept in the data
//! directory (`network-key`, mode 0600) and made on the first `basic up`.
//!
//! It is not the device key. The peer id is visible to anyone on the LAN
//! (mDNS) and to every peer that connects, before the sync handshake has
//! shown that the other side is a member; a separate key keeps that id
//! from naming the device in the database's control log, and keeps the
//! device key out of a second protocol (noise) that signs its own
//! messages with it. The sync proof binds the two keys for each session.

use std::path::Path;

use anyhow::{Context, bail};
use basic_net::Keypair;
use rand::Rng;

use crate::paths::write_atomic;

/// Length of the stored seed.
const SEED_LEN: usize = 32;

/// Loads the key at `path`, or makes and stores a new one.
pub(super) fn load_or_create(path: &Path) -> anyhow::Result<Keypair> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let seed = hex::decode(text.trim())
                .ok()
                .filter(|seed| seed.len() == SEED_LEN)
                .with_context(|| {
                    format!(
                        "{} is damaged: remove it to make a new network identity",
                        path.display()
                    )
                })?;
            keypair(seed)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; SEED_LEN];
            rand::rng().fill_bytes(&mut seed);
            write_atomic(path, format!("{}\n", hex::encode(seed)).as_bytes(), true)?;
            keypair(seed.to_vec())
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn keypair(mut seed: Vec<u8>) -> anyhow::Result<Keypair> {
    match Keypair::ed25519_from_bytes(&mut seed) {
        Ok(keypair) => Ok(keypair),
        Err(error) => bail!("not an ed25519 seed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network-key");
        let first = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "zz").unwrap();
        assert!(load_or_create(&path).unwrap_err().to_string().contains("damaged"));
    }
}
