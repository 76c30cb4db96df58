//! `peers.json`: the addresses of pinning peers that this device dials.
//!
//! `basic pin add pin_… --address ADDR` saves them; `basic up` dials them
//! (and redials them, as `--peer`), so that a device behind a NAT reaches
//! an always-on pinning peer without the pinning peer dialling it. The
//! file is small and bounded, written atomically, and checked whole when
//! it is read.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use basic_net::Multiaddr;
use basic_proto::keys::{Principal, Role};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::paths::write_atomic;

/// Pinning peers with saved addresses, at most.
pub const MAX_PINNERS: usize = 32;
/// Saved addresses of one pinning peer, at most.
pub const MAX_ADDRESSES: usize = 8;
/// Longest address, in bytes.
const MAX_ADDRESS_BYTES: usize = 512;
/// Largest `peers.json` read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// One pinning peer's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    /// Its id (`pin_…`).
    id: String,
    /// Where it listens, each ending in `/p2p/<its peer id>`.
    addresses: Vec<String>,
}

/// What `peers.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersFile {
    pinners: Vec<Saved>,
}

impl PeersFile {
    /// Fails with what is wrong unless every id and address is valid and
    /// within the bounds.
    fn check(&self) -> Result<(), String> {
        if self.pinners.len() > MAX_PINNERS {
            return Err(format!("more than {MAX_PINNERS} pinning peers with addresses"));
        }
        for (index, saved) in self.pinners.iter().enumerate() {
            Principal::parse_as(Role::Pinner, &saved.id)
                .map_err(|e| crate::ids::id_error(Role::Pinner, &saved.id, &e))?;
            if self.pinners[..index].iter().any(|other| other.id == saved.id) {
                return Err(format!("{} is listed twice", saved.id));
            }
            check_addresses(&saved.addresses)?;
        }
        Ok(())
    }
}

/// Parses a pinning peer's address: a multiaddr ending in `/p2p/<peer id>`.
pub fn parse_address(text: &str) -> Result<Multiaddr, String> {
    if text.len() > MAX_ADDRESS_BYTES {
        return Err(format!("an address longer than {MAX_ADDRESS_BYTES} bytes"));
    }
    let address = text.parse::<Multiaddr>().map_err(|e| {
        format!("{text:?} is not a network address ({e}; e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3…)")
    })?;
    if basic_net::peer_of(&address).is_none() {
        return Err(format!(
            "{text} does not end in /p2p/<peer id>: give the pinning peer's address as its log shows it"
        ));
    }
    Ok(address)
}

/// Checks a pinning peer's addresses: each valid, none twice, not too many.
fn check_addresses(addresses: &[String]) -> Result<(), String> {
    if addresses.len() > MAX_ADDRESSES {
        return Err(format!("more than {MAX_ADDRESSES} addresses for one pinning peer"));
    }
    for (index, text) in addresses.iter().enumerate() {
        parse_address(text)?;
        if addresses[..index].contains(text) {
            return Err(format!("{text} is given twice"));
        }
    }
    Ok(())
}

/// The saved addresses of pinning peers, loaded from `peers.json`.
#[derive(Debug)]
pub struct SavedPeers {
    path: PathBuf,
    file: Mutex<PeersFile>,
}

impl SavedPeers {
    /// Loads `path` (an absent file holds nothing); fails, naming the
    /// file, if it is too large or not valid.
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        let file = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                anyhow::bail!(
                    "{} is damaged: larger than {MAX_FILE_BYTES} bytes (remove it and add the addresses again)",
                    path.display()
                );
            }
            Ok(_) => {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let file: PeersFile = serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is damaged (remove it and add the addresses again)", path.display())
                })?;
                file.check().map_err(|e| {
                    anyhow::anyhow!(
                        "{} is damaged: {e} (remove it and add the addresses again)",
                        path.display()
                    )
                })?;
                file
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => PeersFile::default(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Ok(Self { path, file: Mutex::new(file) })
    }

    /// The saved addresses of pinning peer `id`.
    pub fn addresses_of(&self, id: &str) -> Vec<String> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.pinners.iter().find(|s| s.id == id).map(|s| s.addresses.clone()).unwrap_or_default()
    }

    /// Every saved address, to dial.
    pub fn all(&self) -> Vec<Multiaddr> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked on load and on every change.
        file.pinners.iter().flat_map(|s| &s.addresses).filter_map(|a| a.parse().ok()).collect()
    }

    /// Checks that [`SavedPeers::save`] would take `addresses` for `id`,
    /// without saving: a 400 naming what is wrong.
    pub fn check(&self, id: &str, addresses: &[String]) -> Result<(), ApiError> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        Self::next(&file, id, addresses.to_vec()).map(drop)
    }

    /// `file` with `addresses` as `id`'s, checked.
    fn next(file: &PeersFile, id: &str, addresses: Vec<String>) -> Result<PeersFile, ApiError> {
        let mut next = file.clone();
        next.pinners.retain(|s| s.id != id);
        if !addresses.is_empty() {
            next.pinners.push(Saved { id: id.to_owned(), addresses });
        }
        next.check().map_err(ApiError::bad_request)?;
        Ok(next)
    }

    /// Saves `addresses` as pinning peer `id`'s, replacing any it had;
    /// no addresses forgets it. Nothing changes if the file cannot be
    /// written.
    pub fn save(&self, id: &str, addresses: Vec<String>) -> Result<(), ApiError> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let next = Self::next(&file, id, addresses)?;
        if next == *file {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&next).map_err(anyhow::Error::from)?;
        write_atomic(&self.path, &bytes, false)?;
        *file = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(n: u8) -> String {
        Principal { role: Role::Pinner, key: basic_proto::SecretKey::from_seed([n; 32]).public() }
            .to_string()
    }

    fn address(port: u16) -> String {
        let peer = basic_net::Keypair::ed25519_from_bytes([7; 32]).unwrap().public().to_peer_id();
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
    }

    #[test]
    fn saves_forgets_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let peers = SavedPeers::open(path.clone()).unwrap();
        assert!(peers.all().is_empty());
        peers.save(&pin(1), vec![address(1), address(2)]).unwrap();
        peers.save(&pin(2), vec![address(3)]).unwrap();
        let again = SavedPeers::open(path.clone()).unwrap();
        assert_eq!(again.addresses_of(&pin(1)), [address(1), address(2)]);
        assert_eq!(again.all().len(), 3);
        again.save(&pin(1), Vec::new()).unwrap();
        let again = SavedPeers::open(path).unwrap();
        assert!(again.addresses_of(&pin(1)).is_empty());
        assert_eq!(again.addresses_of(&pin(2)), [address(3)]);
    }

    #[test]
    fn refuses_bad_addresses_and_too_many() {
        assert!(parse_address("/ip4/127.0.0.1/tcp/1").unwrap_err().contains("/p2p/"));
        assert!(parse_address("not an address").unwrap_err().contains("not a network address"));
        let dir = tempfile::tempdir().unwrap();
        let peers = SavedPeers::open(dir.path().join("peers.json")).unwrap();
        assert!(peers.check(&pin(1), &[address(1), address(1)]).is_err());
        let many: Vec<String> = (0..=MAX_ADDRESSES as u16).map(address).collect();
        assert!(peers.check(&pin(1), &many).is_err());
        for n in 0..MAX_PINNERS as u8 {
            peers.save(&pin(n), vec![address(1)]).unwrap();
        }
        let error = peers.check(&pin(200), &[address(1)]).unwrap_err();
        assert!(error.message.contains("more than"), "{error}");
        assert!(peers.save(&pin(200), vec![address(1)]).is_err());
        peers.check(&pin(0), &[address(2)]).expect("replacing one stays within the bounds");
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        for text in [
            "{".to_owned(),
            format!(r#"{{"pinners":[{{"id":"{}","addresses":["/ip4/1.2.3.4/tcp/1"]}}]}}"#, pin(1)),
            r#"{"pinners":[{"id":"nope","addresses":[]}]}"#.to_owned(),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = SavedPeers::open(path.clone()).unwrap_err();
            assert!(format!("{error:#}").contains("peers.json is damaged"), "{error:#}");
        }
    }
}
