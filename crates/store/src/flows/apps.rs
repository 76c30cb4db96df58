//! Apps asking for access, and what the user sees of them.
//!
//! An app makes its own key and asks for scopes with rights, under a name
//! the user will recognise. The request waits, on this device, until the
//! user approves it — which grants each scope through the control log — or
//! denies it. The user can then list every app with its grants and see
//! what each one wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use basic_proto::codec::{self, Fields};
use basic_proto::control::Rights;
use basic_proto::{Name, Party, PublicKey, RowKey, SealingKey};
use ciborium::Value as Cbor;

use crate::control_error::ControlError;
use crate::database::{Database, DbError};
use crate::replica::Keyring;
use crate::storage::kv::{Batch, Store, StoreError, scan_prefix};
use crate::storage::layout;

/// Longest app name, in characters.
pub(crate) const MAX_APP_NAME: usize = 64;
/// Most scopes one request may ask for.
pub(crate) const MAX_REQUEST_SCOPES: usize = 32;
/// Most requests waiting at once.
pub(crate) const MAX_PENDING_REQUESTS: usize = 256;

/// An app's request for access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// The name the app shows the user.
    pub name: String,
    /// The app's keys.
    pub app: Party,
    /// The scopes it asks for, with the rights it wants on each.
    pub scopes: BTreeMap<Name, Rights>,
}

/// The id of a pending request: a hash of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub [u8; 32]);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0[..8]))
    }
}

/// One app as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// The app's key.
    pub key: PublicKey,
    /// The name it asked under, if this device saw its request.
    pub name: Option<String>,
    /// Its grants: rights, and whether revoked.
    pub scopes: BTreeMap<Name, (Rights, bool)>,
}

/// What an app wrote, as far as this device can read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Written {
    /// Its commits stored here.
    pub commits: usize,
    /// The rows they touched, by table.
    pub rows: BTreeMap<Name, BTreeSet<RowKey>>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The name is empty, too long, or has control characters.
    #[error("an app name is 1 to {MAX_APP_NAME} printable characters")]
    BadName,
    /// No scope asked for, or too many.
    #[error("a request asks for 1 to {MAX_REQUEST_SCOPES} scopes")]
    BadScopes,
    /// Too many requests already wait for the user.
    #[error("{MAX_PENDING_REQUESTS} requests already wait for an answer")]
    TooMany,
    /// No pending request has this id.
    #[error("no pending request {0}")]
    Unknown(RequestId),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn rights_code(rights: Rights) -> u64 {
    match rights {
        Rights::Read => 1,
        Rights::ReadWrite => 2,
    }
}

impl AccessRequest {
    fn encode(&self) -> Vec<u8> {
        codec::encode_value(&Cbor::Array(vec![
            Cbor::Text(self.name.clone()),
            Cbor::Bytes(self.app.key.as_bytes().to_vec()),
            Cbor::Bytes(self.app.sealing.0.to_vec()),
            Cbor::Array(
                self.scopes
                    .iter()
                    .map(|(scope, rights)| {
                        Cbor::Array(vec![
                            Cbor::Text(scope.as_str().to_owned()),
                            Cbor::Integer(rights_code(*rights).into()),
                        ])
                    })
                    .collect(),
            ),
        ]))
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { what: "access request", reason };
        let e = |e: codec::DecodeError| corrupt(e.to_string());
        let mut fields =
            Fields::new(codec::parse(bytes, "request", 64 << 10).map_err(e)?, "request", 4)
                .map_err(e)?;
        let name = fields.text("name", 1, MAX_APP_NAME * 4).map_err(e)?;
        let key = PublicKey::from_bytes(fields.fixed("app").map_err(e)?)
            .map_err(|k| corrupt(k.to_string()))?;
        let sealing = SealingKey(fields.fixed("sealing").map_err(e)?);
        let mut scopes = BTreeMap::new();
        for item in
            codec::as_array(fields.next("scopes").map_err(e)?, "scopes", 1, MAX_REQUEST_SCOPES)
                .map_err(e)?
        {
            let mut pair = Fields::new(item, "scope", 2).map_err(e)?;
            let scope = Name::new(pair.text("scope", 1, 64).map_err(e)?)
                .map_err(|n| corrupt(n.to_string()))?;
            let rights = match pair.uint("rights").map_err(e)? {
                1 => Rights::Read,
                2 => Rights::ReadWrite,
                other => return Err(corrupt(format!("rights {other}"))),
            };
            scopes.insert(scope, rights);
        }
        Ok(Self { name, app: Party { key, sealing }, scopes })
    }

    fn id(&self) -> RequestId {
        RequestId(blake3::derive_key("basic/v0 access request id", &self.encode()))
    }
}

impl<S: Store> Database<S> {
    /// Records an app's request for access, for the user to answer.
    pub fn request_access(&self, request: AccessRequest) -> Result<RequestId, RequestError> {
        let name = request.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_APP_NAME
            || name.chars().any(char::is_control)
        {
            return Err(RequestError::BadName);
        }
        if request.scopes.is_empty() || request.scopes.len() > MAX_REQUEST_SCOPES {
            return Err(RequestError::BadScopes);
        }
        if self.access_requests()?.len() >= MAX_PENDING_REQUESTS {
            return Err(RequestError::TooMany);
        }
        let request = AccessRequest { name: name.to_owned(), ..request };
        let id = request.id();
        let mut batch = Batch::default();
        batch.put(layout::request(&id.0), request.encode());
        let store = self.replica().store();
        store.apply(batch)?;
        store.flush()?;
        Ok(id)
    }

    /// The requests waiting for the user, oldest id first.
    pub fn access_requests(&self) -> Result<Vec<(RequestId, AccessRequest)>, StoreError> {
        scan_prefix(self.replica().store(), &[layout::REQUEST])
            .map(|entry| {
                let (key, bytes) = entry?;
                let id: [u8; 32] =
                    key.get(1..33).and_then(|b| b.try_into().ok()).ok_or(StoreError::Corrupt {
                        what: "access request",
                        reason: "short key".into(),
                    })?;
                Ok((RequestId(id), AccessRequest::decode(&bytes)?))
            })
            .collect()
    }

    /// Approves a request: grants the app every scope it asked for, with
    /// the rights it asked for, and remembers its name.
    pub fn approve(&self, id: RequestId) -> Result<AccessRequest, DbError> {
        let request = self.pending(id)?;
        for (scope, rights) in &request.scopes {
            self.grant(request.app, scope.clone(), *rights)?;
        }
        let mut batch = Batch::default();
        batch.delete(layout::request(&id.0));
        batch.put(layout::app_name(&request.app.key), request.name.clone().into_bytes());
        let store = self.replica().store();
        store.apply(batch)?;
        store.flush()?;
        Ok(request)
    }

    /// Denies a request: it is forgotten and nothing is granted.
    pub fn deny(&self, id: RequestId) -> Result<AccessRequest, DbError> {
        let request = self.pending(id)?;
        let mut batch = Batch::default();
        batch.delete(layout::request(&id.0));
        let store = self.replica().store();
        store.apply(batch)?;
        store.flush()?;
        Ok(request)
    }

    fn pending(&self, id: RequestId) -> Result<AccessRequest, DbError> {
        match self.replica().store().get(&layout::request(&id.0))? {
            Some(bytes) => Ok(AccessRequest::decode(&bytes)?),
            None => Err(ControlError::from(RequestError::Unknown(id)).into()),
        }
    }

    /// Every app of the control log, with its name (if known here) and grants.
    pub fn apps(&self) -> Result<Vec<AppInfo>, StoreError> {
        let state = self.auth_state();
        let namespaces = self.namespaces();
        state
            .apps()
            .iter()
            .map(|(key, app)| {
                let name = self
                    .replica()
                    .store()
                    .get(&layout::app_name(key))?
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                let scopes = app
                    .scopes
                    .iter()
                    .filter_map(|(scope, grant)| {
                        let namespace = namespaces.get(scope)?.clone();
                        Some((namespace, (grant.rights, grant.revoked.is_some())))
                    })
                    .collect();
                Ok(AppInfo { key: *key, name, scopes })
            })
            .collect()
    }

    /// What `app` wrote: its commits stored here and the rows they touched
    /// (of the commits this device can read).
    pub fn written_by(&self, app: &PublicKey) -> Result<Written, StoreError> {
        let keys = self.scope_keys();
        let mut written = Written::default();
        for (_, id) in self.replica().log(app)? {
            let Some(commit) = self.replica().commit(&id)? else { continue };
            written.commits += 1;
            let Some(Ok(changes)) = keys.open(&commit) else { continue };
            for op in changes.ops() {
                written.rows.entry(op.table().clone()).or_default().insert(op.key().clone());
            }
        }
        Ok(written)
    }
}
