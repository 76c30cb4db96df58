//! What each peer has shown of each author's log, kept in `shown.json`
//! across restarts, so that a peer that shows less than it did before
//! (data withheld, or a replica restored from an old copy) is reported
//! even after this node restarted (`Event::RolledBack`, sync.md).
//!
//! One entry per peer principal (with the peer id it last came from: a
//! session looks it up by peer id, before the handshake names the
//! principal), the most recently updated [`MAX_PEERS`] kept, each with the
//! heads of the database's authors only. The file is rewritten atomically
//! after a round that changed what a peer showed.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;
use basic_net::PeerId;
use basic_proto::PublicKey;
use basic_proto::control::AuthState;
use serde::{Deserialize, Serialize};

use crate::paths::write_atomic;
use basic_peer::{Heads, Shown};

/// Peers remembered, at most (the most recently updated).
const MAX_PEERS: usize = 64;
/// Authors remembered per peer, at most (more than any database has).
const MAX_AUTHORS: usize = 4096;
/// Largest `shown.json` read.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One author's head as a peer showed it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    /// The author's key, hex.
    author: String,
    /// The highest seq shown.
    max: u64,
    /// The most commits shown.
    count: u64,
}

/// One peer principal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The peer id it last came from.
    peer: String,
    /// Its principal's key, hex.
    principal: String,
    heads: Vec<Head>,
}

/// What `shown.json` holds: the least recently updated first.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShownFile {
    peers: Vec<Entry>,
}

fn key(text: &str) -> Result<PublicKey, String> {
    let bytes: [u8; 32] = hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| format!("{text:?} is not a key"))?;
    PublicKey::from_bytes(bytes).map_err(|e| format!("{text:?} is not a key: {e}"))
}

impl ShownFile {
    fn decode(self) -> Result<Vec<(PeerId, Shown)>, String> {
        if self.peers.len() > MAX_PEERS {
            return Err(format!("more than {MAX_PEERS} peers"));
        }
        self.peers
            .into_iter()
            .map(|entry| {
                let peer = entry
                    .peer
                    .parse::<PeerId>()
                    .map_err(|e| format!("{:?} is not a peer id: {e}", entry.peer))?;
                if entry.heads.len() > MAX_AUTHORS {
                    return Err(format!("more than {MAX_AUTHORS} authors for {peer}"));
                }
                let heads = entry
                    .heads
                    .into_iter()
                    .map(|h| Ok((key(&h.author)?, (h.max, h.count))))
                    .collect::<Result<Heads, String>>()?;
                Ok((peer, Shown { principal: key(&entry.principal)?, heads }))
            })
            .collect()
    }

    fn encode(entries: &[(PeerId, Shown)]) -> Self {
        let peers = entries
            .iter()
            .map(|(peer, shown)| Entry {
                peer: peer.to_string(),
                principal: hex::encode(shown.principal.as_bytes()),
                heads: shown
                    .heads
                    .iter()
                    .map(|(author, (max, count))| Head {
                        author: hex::encode(author.as_bytes()),
                        max: *max,
                        count: *count,
                    })
                    .collect(),
            })
            .collect();
        Self { peers }
    }
}

/// The heads each peer showed, in memory and in `shown.json`.
#[derive(Debug)]
pub(super) struct ShownStore {
    path: PathBuf,
    /// The least recently updated first; one per principal.
    entries: Mutex<Vec<(PeerId, Shown)>>,
    /// Held while writing the file: one write at a time, each of the
    /// entries as they are when it starts, so the last write is the latest.
    writing: Mutex<()>,
}

impl ShownStore {
    /// Loads `path` (an absent file holds nothing); fails, naming the
    /// file, if it is too large or not valid.
    pub(super) fn open(path: PathBuf) -> anyhow::Result<Self> {
        let damaged = |why: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "{} is damaged: {why} (remove it: what peers showed before is then forgotten)",
                path.display()
            )
        };
        let entries = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                return Err(damaged(&format!("larger than {MAX_FILE_BYTES} bytes")));
            }
            Ok(_) => {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let file: ShownFile = serde_json::from_slice(&bytes).map_err(|e| damaged(&e))?;
                file.decode().map_err(|e| damaged(&e))?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Ok(Self { path, entries: Mutex::new(entries), writing: Mutex::new(()) })
    }

    /// What `peer` showed before.
    pub(super) fn get(&self, peer: &PeerId) -> Option<Shown> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().find(|(p, _)| p == peer).map(|(_, shown)| shown.clone())
    }

    /// Records what `peer` showed, keeping only the heads of `auth`'s
    /// authors; returns whether anything changed (then [`ShownStore::save`]).
    pub(super) fn remember(&self, peer: PeerId, mut shown: Shown, auth: &AuthState) -> bool {
        shown.heads.retain(|author, _| is_author(auth, author));
        while shown.heads.len() > MAX_AUTHORS {
            shown.heads.pop_last();
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let last = entries.last().is_some_and(|(p, s)| {
            *p == peer && s.principal == shown.principal && s.heads == shown.heads
        });
        if last {
            return false;
        }
        entries.retain(|(p, s)| *p != peer && s.principal != shown.principal);
        entries.push((peer, shown));
        let excess = entries.len().saturating_sub(MAX_PEERS);
        entries.drain(..excess);
        true
    }

    /// Writes the file.
    pub(super) fn save(&self) -> anyhow::Result<()> {
        let _one = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let file = {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            ShownFile::encode(&entries)
        };
        write_atomic(&self.path, &serde_json::to_vec(&file)?, false)
    }
}

/// Whether `key` may author commits in the database: the user, a device
/// or an app.
fn is_author(auth: &AuthState, key: &PublicKey) -> bool {
    auth.root().is_some_and(|root| root.key == *key)
        || auth.devices().contains_key(key)
        || auth.apps().contains_key(key)
}

#[cfg(test)]
mod tests {
    use basic_proto::SecretKey;
    use basic_store::Database;

    use super::*;

    fn peer(n: u8) -> PeerId {
        basic_net::Keypair::ed25519_from_bytes([n; 32]).unwrap().public().to_peer_id()
    }

    fn principal(n: u8) -> PublicKey {
        SecretKey::from_seed([n; 32]).public()
    }

    #[test]
    fn round_trips_keeping_only_authors_and_the_latest_peers() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        let auth = db.auth_state();
        let path = dir.path().join("shown.json");
        let store = ShownStore::open(path.clone()).unwrap();
        let heads: Heads = [(db.device(), (7, 8)), (principal(99), (1, 1))].into();
        assert!(store.remember(peer(1), Shown { principal: principal(1), heads }, &auth));
        let same: Heads = [(db.device(), (7, 8))].into();
        assert!(!store.remember(peer(1), Shown { principal: principal(1), heads: same }, &auth));
        store.save().unwrap();

        let again = ShownStore::open(path.clone()).unwrap();
        let shown = again.get(&peer(1)).expect("remembered");
        assert_eq!(shown.principal, principal(1));
        assert_eq!(shown.heads, [(db.device(), (7, 8))].into(), "a non-author is not kept");
        assert!(again.get(&peer(2)).is_none());

        // One entry per principal: a new peer id replaces the old one.
        assert!(again.remember(
            peer(2),
            Shown { principal: principal(1), heads: Heads::new() },
            &auth
        ));
        assert!(again.get(&peer(1)).is_none());
        // At most MAX_PEERS, the least recently updated forgotten.
        for n in 0..=MAX_PEERS as u8 {
            let shown = Shown { principal: principal(n + 100), heads: Heads::new() };
            again.remember(peer(n + 100), shown, &auth);
        }
        again.save().unwrap();
        let again = ShownStore::open(path).unwrap();
        assert!(again.get(&peer(100)).is_none() && again.get(&peer(2)).is_none());
        assert!(again.get(&peer(MAX_PEERS as u8 + 100)).is_some());
        assert_eq!(again.entries.lock().unwrap().len(), MAX_PEERS);
    }

    #[test]
    fn a_damaged_file_or_one_over_the_bounds_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shown.json");
        let too_many = ShownFile::encode(
            &(0..=MAX_PEERS as u8)
                .map(|n| (peer(n), Shown { principal: principal(n), heads: Heads::new() }))
                .collect::<Vec<_>>(),
        );
        for text in [
            "[".to_owned(),
            r#"{"peers":[{"peer":"nope","principal":"00","heads":[]}]}"#.to_owned(),
            serde_json::to_string(&too_many).unwrap(),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = ShownStore::open(path.clone()).unwrap_err();
            assert!(error.to_string().contains("shown.json is damaged"), "{error:#}");
        }
    }
}
