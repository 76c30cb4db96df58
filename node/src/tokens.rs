//! API tokens: the owner's, and the ones apps receive once approved.
//!
//! A token is 32 random bytes in hex. The owner token is kept in the
//! `owner-token` file (mode 0600) for the CLI to read. App tokens are shown
//! to their app once and only their BLAKE3 hashes are kept (in `apps.json`),
//! as are the hashes of the one-time secrets with which an app that asked
//! for access fetches its token.
//!
//! A request made from a web page keeps the page's `Origin`, and the token
//! issued for it is bound to that origin: the API accepts it only on
//! requests that carry the same `Origin` (see [`crate::api`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use basic_proto::PublicKey;
use basic_proto::keys::{Principal, Role};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::paths::write_atomic;

/// A fresh random secret, in hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What is kept of a secret: its hash, in hex.
fn digest(secret: &str) -> String {
    blake3::hash(secret.trim().as_bytes()).to_hex().to_string()
}

/// The owner's token: full access to the API.
#[derive(Debug, Clone)]
pub struct OwnerToken {
    hash: String,
}

impl OwnerToken {
    /// Makes a new owner token at `path`, replacing any.
    pub fn generate(path: &Path) -> anyhow::Result<()> {
        write_atomic(path, format!("{}\n", random_secret()).as_bytes(), true)
    }

    /// Reads the token at `path`.
    pub fn read(path: &Path) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the owner token {} (made by `basic init`)", path.display())
        })?;
        Ok(text.trim().to_owned())
    }

    /// Loads the token at `path` for checking.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Ok(Self { hash: digest(&Self::read(path)?) })
    }

    /// Whether `presented` is the owner token.
    pub fn matches(&self, presented: &str) -> bool {
        // Comparing hashes: timing reveals nothing about the token itself.
        digest(presented) == self.hash
    }
}

/// An app's pending request, as this node remembers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// Hash of the one-time secret the app fetches its token with.
    secret: String,
    /// The app's principal id (`app_…`).
    app: String,
    /// The web page's origin, for a request made from a browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
}

/// An issued app token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Issued {
    /// The app's principal id (`app_…`).
    app: String,
    /// When it was issued, ms since 1970.
    issued_ms: u64,
    /// The origin the token is bound to (a web app's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
}

/// Who holds an app token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The app's key.
    pub app: PublicKey,
    /// The only origin the token is accepted from; `None`: a token of a
    /// non-browser app, refused on any request that carries an `Origin`.
    pub origin: Option<String>,
}

/// The content of `apps.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AppsFile {
    /// Pending requests by request id.
    requests: BTreeMap<String, Pending>,
    /// Issued tokens by token hash.
    tokens: BTreeMap<String, Issued>,
}

/// App requests made through the API and the tokens issued for them.
#[derive(Debug)]
pub struct AppTokens {
    path: PathBuf,
    file: Mutex<AppsFile>,
}

impl AppTokens {
    /// Loads `path` (an absent file is empty).
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => AppsFile::default(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Ok(Self { path, file: Mutex::new(file) })
    }

    /// Changes the file with `change` and saves it; nothing changes if
    /// saving fails.
    fn update<T>(&self, change: impl FnOnce(&mut AppsFile) -> T) -> anyhow::Result<T> {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = AppsFile { requests: file.requests.clone(), tokens: file.tokens.clone() };
        let result = change(&mut next);
        write_atomic(&self.path, &serde_json::to_vec_pretty(&next)?, true)?;
        *file = next;
        Ok(result)
    }

    /// Remembers request `id` of `app`, made from a page of `origin` if
    /// any; returns the secret the app will fetch its token with.
    pub fn add_request(
        &self,
        id: &str,
        app: &PublicKey,
        origin: Option<&str>,
    ) -> anyhow::Result<String> {
        let secret = random_secret();
        let pending =
            Pending { secret: digest(&secret), app: app_id(app), origin: origin.map(Into::into) };
        self.update(|file| file.requests.insert(id.to_owned(), pending))?;
        Ok(secret)
    }

    /// The app of request `id` if `secret` is its secret.
    pub fn check_request(&self, id: &str, secret: &str) -> Option<PublicKey> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = file.requests.get(id).filter(|p| p.secret == digest(secret))?;
        Principal::parse_as(Role::App, &pending.app).ok()
    }

    /// Forgets request `id` and, if `app` is given, issues it a token.
    pub fn close_request(
        &self,
        id: &str,
        app: Option<&PublicKey>,
        now_ms: u64,
    ) -> anyhow::Result<Option<String>> {
        let token = app.map(|_| random_secret());
        self.update(|file| {
            let origin = file.requests.remove(id).and_then(|pending| pending.origin);
            if let (Some(token), Some(app)) = (&token, app) {
                let issued = Issued { app: app_id(app), issued_ms: now_ms, origin };
                file.tokens.insert(digest(token), issued);
            }
        })?;
        Ok(token)
    }

    /// Who holds a token.
    pub fn holder(&self, token: &str) -> Option<Holder> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let issued = file.tokens.get(&digest(token))?;
        let app = Principal::parse_as(Role::App, &issued.app).ok()?;
        Some(Holder { app, origin: issued.origin.clone() })
    }

    /// The origin request `id` was made from, if from a web page.
    pub fn request_origin(&self, id: &str) -> Option<String> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.requests.get(id).and_then(|pending| pending.origin.clone())
    }

    /// The origin app `app`'s tokens are bound to, if any.
    pub fn app_origin(&self, app: &str) -> Option<String> {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.tokens.values().find(|issued| issued.app == app).and_then(|i| i.origin.clone())
    }

    /// Whether `origin` is the origin of a pending request or of an issued
    /// token (revoked or not: a page whose access was revoked must still
    /// be able to read that it was).
    pub fn knows_origin(&self, origin: &str) -> bool {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.requests.values().any(|p| p.origin.as_deref() == Some(origin))
            || file.tokens.values().any(|i| i.origin.as_deref() == Some(origin))
    }
}

/// An app's principal id (`app_…`).
pub fn app_id(key: &PublicKey) -> String {
    Principal { role: Role::App, key: *key }.to_string()
}
