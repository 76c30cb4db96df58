//! The data directory: where the database and the node's own files live.
//!
//! ```text
//! DIR/
//!   replica/        the database (basic-store: commit logs, rows, control log)
//!   view.sqlite     the database's SQLite view, derived from the replica
//!   lock            held by the process that has the database open
//!   owner-token     the owner's API token (mode 0600), made by `basic init`
//!   apps.json       app access through the API: pending requests, token hashes
//!   api.json        the running node's API and sync addresses; removed on clean shutdown
//!   network-key     the node's libp2p identity (mode 0600), made by the first `basic up`
//!   pinner-key      a pinning peer's principal (mode 0600), made by `basic pinner init`
//!   peers.json      pinning peers' addresses this device dials (`basic pin add --address`)
//!   shown.json      what each peer showed of each author's log (rollback detection)
//!   status.json     a running pinning peer's status, for `basic status`; removed on clean shutdown
//! ```
//!
//! An `app-writes.jsonl` left by an older version (which signed API apps'
//! writes as the device and recorded here which app made them) is left
//! alone and never read: apps' writes are now told apart by their
//! signatures.
//!
//! The directory is mode 0700 and every file in it 0600: a directory that
//! other users can reach is refused ([`DataDir::secure`]).

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The files of the node in the data directory, all readable by their
/// owner only (the database's own are the store's to keep private).
const PRIVATE_FILES: [&str; 8] = [
    "owner-token",
    "apps.json",
    "api.json",
    "network-key",
    "pinner-key",
    "peers.json",
    "shown.json",
    "status.json",
];

/// The data directory of one database on this device.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// `flag` (from `--data` or `BASIC_DATA`), else the platform's data
    /// directory for Basic (`~/.local/share/basic` on Linux).
    pub fn resolve(flag: Option<PathBuf>) -> anyhow::Result<Self> {
        let root = match flag {
            Some(dir) => dir,
            None => directories::ProjectDirs::from("", "", "basic")
                .map(|dirs| dirs.data_dir().to_owned())
                .context("no home directory to keep the data in: pass --data DIR")?,
        };
        Ok(Self { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes sure that no other user can reach the directory: it holds this
    /// device's secrets and the database in plaintext. When `create` (a
    /// command that makes a database), a missing or empty directory is
    /// made mode 0700. A directory that holds a database (or is to hold
    /// one, not empty) and that others may read, write or traverse is
    /// refused, saying how to fix it (as ssh does with `~/.ssh`). The files
    /// this program keeps in it are made 0600, whatever the umask made them.
    pub fn secure(&self, create: bool) -> anyhow::Result<()> {
        let root = &self.root;
        let meta = match fs::metadata(root) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if create {
                    let mut builder = fs::DirBuilder::new();
                    builder.recursive(true);
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                    builder
                        .create(root)
                        .with_context(|| format!("cannot create {}", root.display()))?;
                    basic_store::make_private(root)
                        .with_context(|| format!("cannot make {} private", root.display()))?;
                }
                return Ok(());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", root.display()));
            }
        };
        if !meta.is_dir() {
            bail!("{} is not a directory: pass --data DIR", root.display());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            let holds = self.holds_database() || self.is_pinner();
            let empty = fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_none());
            if mode & 0o077 != 0 && create && !holds && empty {
                // An empty directory (a fresh `mkdir`) becomes ours.
                basic_store::make_private(root)
                    .with_context(|| format!("cannot make {} private", root.display()))?;
            } else if mode & 0o077 != 0 && (holds || create) {
                bail!(
                    "{} is open to other users (mode {mode:03o}), and it holds this device's secrets and your data in plaintext: run `chmod 700 {}` (or pass --data DIR)",
                    root.display(),
                    root.display()
                );
            }
        }
        for name in PRIVATE_FILES {
            let path = root.join(name);
            basic_store::make_private(&path)
                .with_context(|| format!("cannot make {} private", path.display()))?;
        }
        Ok(())
    }

    /// The owner's API token.
    pub fn owner_token(&self) -> PathBuf {
        self.root.join("owner-token")
    }

    /// App requests and app token hashes.
    pub fn apps(&self) -> PathBuf {
        self.root.join("apps.json")
    }

    /// The running node's API address.
    pub fn api(&self) -> PathBuf {
        self.root.join("api.json")
    }

    /// The node's libp2p identity.
    pub fn network_key(&self) -> PathBuf {
        self.root.join("network-key")
    }

    /// The pinning peers' addresses this device dials.
    pub fn peers(&self) -> PathBuf {
        self.root.join("peers.json")
    }

    /// What each peer has shown of each author's log.
    pub fn shown(&self) -> PathBuf {
        self.root.join("shown.json")
    }

    /// A running pinning peer's status (it serves no API to ask).
    pub fn pinner_status(&self) -> PathBuf {
        self.root.join("status.json")
    }

    /// A pinning peer's principal key.
    pub fn pinner_key(&self) -> PathBuf {
        self.root.join("pinner-key")
    }

    /// Whether this is a pinning peer's directory (`basic pinner init`).
    pub fn is_pinner(&self) -> bool {
        self.pinner_key().exists()
    }

    /// The database's replica (what `basic init` creates).
    fn replica(&self) -> PathBuf {
        self.root.join("replica")
    }

    /// Fails if this directory holds a database or a pinning peer already.
    pub fn refuse_existing(&self) -> anyhow::Result<()> {
        if self.is_pinner() {
            bail!(
                "{} is a pinning peer's directory; nothing changed (pass --data DIR to use another)",
                self.root().display()
            );
        }
        if self.holds_database() {
            bail!(
                "{} already holds a database; nothing changed (pass --data DIR to make another)",
                self.root().display()
            );
        }
        Ok(())
    }

    /// Whether a database was created (or a join started) here.
    pub fn holds_database(&self) -> bool {
        self.replica().exists()
    }

    /// Fails with what to do if no database was created here.
    pub fn require_database(&self) -> anyhow::Result<()> {
        if !self.holds_database() {
            bail!(
                "no database in {}: run `basic init` first (or pass --data DIR / set BASIC_DATA)",
                self.root.display()
            );
        }
        Ok(())
    }

    /// Removes what a failed `basic init --join` left behind.
    pub fn remove_database(&self) -> anyhow::Result<()> {
        fs::remove_dir_all(self.replica())
            .with_context(|| format!("cannot remove {}", self.replica().display()))?;
        // Only made by the store; absent if it never got that far.
        for file in ["lock", "view.sqlite"] {
            let _ = fs::remove_file(self.root.join(file));
        }
        Ok(())
    }

    /// Bytes on disk under the directory.
    pub fn size_on_disk(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = fs::read_dir(dir) else { return 0 };
            entries
                .filter_map(Result::ok)
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => walk(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.root)
    }
}

/// What `api.json` says about the running node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiInfo {
    /// Where its HTTP API listens; none for a pinning peer, which serves
    /// no API.
    pub address: Option<SocketAddr>,
    /// Its process id.
    pub pid: u32,
    /// The network addresses it listens on for sync, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
}

impl ApiInfo {
    /// Reads `api.json`, `None` if there is none.
    pub fn read(dir: &DataDir) -> anyhow::Result<Option<Self>> {
        let path = dir.api();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is damaged: remove it", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes `api.json`.
    pub fn write(&self, dir: &DataDir) -> anyhow::Result<()> {
        write_atomic(&dir.api(), &serde_json::to_vec_pretty(self)?, false)
    }
}

/// Writes `bytes` to `path` so that readers see the old file or the new
/// one, never a part: a temporary file, flushed, then renamed over it.
/// Every file is readable by its owner only (mode 0600): `private` says
/// that it holds a secret, which it must not be readable otherwise either.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let context = || format!("cannot write {}", path.display());
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    let mut file = options.open(&temp).with_context(context)?;
    file.write_all(bytes).with_context(context)?;
    file.sync_all().with_context(context)?;
    fs::rename(&temp, path).with_context(context)?;
    Ok(())
}
