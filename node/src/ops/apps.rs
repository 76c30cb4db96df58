//! Apps: asking for access, answering, listing, revoking.
//!
//! Through the API an app asks for scopes with rights and gets a request
//! id and a one-time secret. The owner approves or denies the request
//! (`basic app approve ID`); the app polls with its secret and, once
//! approved, receives its token, once. The node makes the app's key pair
//! when it asks and keeps it (a custodial app): the key names the app's
//! grants in the control log, and the node signs the app's writes with it,
//! so that every replica attributes them to the app and applies its
//! revocation cut-off from the signatures alone.
//!
//! An app that embeds the light client asks over the network instead
//! (`crate::access`), with its own key, at the addresses of the
//! access code that `basic app connect` prints; its request waits in
//! the same list and is answered the same way.

use std::collections::BTreeMap;

use basic_proto::control::Rights;
use basic_proto::keys::Role;
use basic_proto::{DatabaseId, Name};
use basic_store::now_ms;
use basic_store::{AccessCode, AccessRequest, RequestError, RequestId};
use serde::{Deserialize, Serialize};

use super::{Caller, Op, Route, encode};
use crate::error::ApiError;
use crate::ids::parse_principal;
use crate::node::Node;
use crate::ops::devices::reachable_addresses;
use crate::ops::status::{Status, StatusOutput};
use crate::tokens::app_id;

/// Rights on a scope, as the API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read the scope's tables.
    Read,
    /// Read and write them.
    ReadWrite,
}

impl From<Rights> for Access {
    fn from(rights: Rights) -> Self {
        match rights {
            Rights::Read => Access::Read,
            Rights::ReadWrite => Access::ReadWrite,
        }
    }
}

impl From<Access> for Rights {
    fn from(access: Access) -> Self {
        match access {
            Access::Read => Rights::Read,
            Access::ReadWrite => Rights::ReadWrite,
        }
    }
}

/// `POST /v0/apps/requests` (no token): an app asks for access.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestAccess {
    /// The name the user will see.
    pub name: String,
    /// The scopes (namespaces) asked for, with the rights wanted on each.
    pub scopes: BTreeMap<String, Access>,
    /// The `Origin` of the web page that asked, as its browser sent it (a
    /// header, never a body field); the token will be bound to it.
    #[serde(skip)]
    pub origin: Option<String>,
}

/// The answer to an app's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMade {
    /// The request's id, to poll and for the user to approve.
    pub id: String,
    /// The one-time secret to poll with; shown only here.
    pub secret: String,
    /// The app's id (`app_…`).
    pub app: String,
}

impl Op for RequestAccess {
    type Output = RequestMade;

    fn route(self) -> Route {
        Route::post("apps/requests", &self)
    }

    fn run(self, node: &Node, _caller: &Caller) -> Result<RequestMade, ApiError> {
        let scopes = self
            .scopes
            .into_iter()
            .map(|(scope, access)| {
                Name::new(scope.clone())
                    .map(|name| (name, Rights::from(access)))
                    .map_err(|e| ApiError::bad_request(format!("scope {scope:?}: {e}")))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let app = node.db.new_custodial_app()?;
        let request = AccessRequest { name: self.name, app, scopes };
        let id = node.db.request_access(request).map_err(|error| match error {
            RequestError::Store(error) => ApiError::from(error),
            RequestError::TooMany => ApiError::conflict(error.to_string()),
            _ => ApiError::bad_request(error.to_string()),
        })?;
        let id = id.to_string();
        let secret = node.apps.add_request(&id, &app.key, self.origin.as_deref())?;
        tracing::info!("app access requested: {id} (approve with `basic app approve {id}`)");
        Ok(RequestMade { id, secret, app: app_id(&app.key) })
    }
}

/// `GET /v0/apps/requests/{id}?secret=…` (no token): an app asks what
/// became of its request.
#[derive(Debug, Clone)]
pub struct PollRequest {
    /// The request id.
    pub id: String,
    /// The secret it was given.
    pub secret: String,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RequestState {
    /// Waiting for the user.
    Pending,
    /// Denied: nothing was granted.
    Denied,
    /// Approved: the token, given out this once.
    Approved {
        /// The app's token (`Authorization: Bearer …`).
        token: String,
        /// The app's id.
        app: String,
        /// What it was granted.
        scopes: BTreeMap<String, Access>,
    },
}

impl Op for PollRequest {
    type Output = RequestState;

    fn route(self) -> Route {
        Route::get(format!("apps/requests/{}?secret={}", encode(&self.id), encode(&self.secret)))
    }

    fn run(self, node: &Node, _caller: &Caller) -> Result<RequestState, ApiError> {
        let Some(app) = node.apps.check_request(&self.id, &self.secret) else {
            return Err(ApiError::not_found(format!(
                "no open request {} with this secret (a token is handed out once)",
                self.id
            )));
        };
        if find_pending(node, &self.id)?.is_some() {
            return Ok(RequestState::Pending);
        }
        let grants = node.db.live_grants(&app);
        if grants.is_empty() {
            node.apps.close_request(&self.id, None, now_ms())?;
            return Ok(RequestState::Denied);
        }
        let token = node.apps.close_request(&self.id, Some(&app), now_ms())?.unwrap_or_default();
        Ok(RequestState::Approved {
            token,
            app: app_id(&app),
            scopes: grants.into_iter().map(|(s, r)| (s.to_string(), r.into())).collect(),
        })
    }
}

/// The pending request whose id reads `id`.
fn find_pending(node: &Node, id: &str) -> Result<Option<(RequestId, AccessRequest)>, ApiError> {
    let id = id.trim();
    Ok(node.db.access_requests()?.into_iter().find(|(rid, _)| rid.to_string() == id))
}

/// A pending request, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// Its id.
    pub id: String,
    /// The name the app gave.
    pub name: String,
    /// The app's id.
    pub app: String,
    /// What it asks for.
    pub scopes: BTreeMap<String, Access>,
    /// The web page that asked (its `Origin`), if it asked from a browser.
    #[serde(default)]
    pub origin: Option<String>,
}

impl RequestInfo {
    fn of(node: &Node, id: RequestId, request: &AccessRequest) -> Self {
        let id = id.to_string();
        Self {
            origin: node.apps.request_origin(&id),
            id,
            name: request.name.clone(),
            app: app_id(&request.app.key),
            scopes: request.scopes.iter().map(|(s, r)| (s.to_string(), (*r).into())).collect(),
        }
    }
}

/// `GET /v0/apps/requests`: the requests waiting for the user.
#[derive(Debug, Clone, Copy)]
pub struct ListRequests;

impl Op for ListRequests {
    type Output = Vec<RequestInfo>;

    fn route(self) -> Route {
        Route::get("apps/requests")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Vec<RequestInfo>, ApiError> {
        caller.require_owner()?;
        Ok(node.db.access_requests()?.iter().map(|(id, r)| RequestInfo::of(node, *id, r)).collect())
    }
}

/// `POST /v0/apps/requests/{id}/approve` or `/deny`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The request id.
    pub id: String,
    /// Approve (grant what it asks) or deny.
    pub approve: bool,
}

impl Op for Answer {
    type Output = RequestInfo;

    fn route(self) -> Route {
        let verb = if self.approve { "approve" } else { "deny" };
        Route::post(format!("apps/requests/{}/{verb}", encode(&self.id)), &serde_json::json!({}))
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<RequestInfo, ApiError> {
        caller.require_owner()?;
        let Some((id, _)) = find_pending(node, &self.id)? else {
            return Err(ApiError::not_found(format!(
                "no pending request {} (see `basic app requests`)",
                self.id
            )));
        };
        let request = if self.approve {
            node.db.approve(id)?
        } else {
            let denied = node.db.deny(id)?;
            // A network ask's denial: the other devices tell the app too.
            if let Some(relay) = denied.relay {
                crate::access::relay_from(node, relay);
            }
            denied.request
        };
        Ok(RequestInfo::of(node, id, &request))
    }
}

/// `GET /v0/apps`: every app with its grants and what it wrote.
#[derive(Debug, Clone, Copy)]
pub struct ListApps;

/// One app's grant on one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// Its rights.
    pub rights: Access,
    /// Whether it was revoked (for good).
    pub revoked: bool,
}

/// What an app wrote, as this device knows it from the app's signed
/// commits (whichever device or client made them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenInfo {
    /// Its commits stored here (not those refused past a revocation's
    /// cut-off).
    pub commits: usize,
    /// The rows they touched, by table (of the commits this device can
    /// read; a table with none is absent).
    pub rows: BTreeMap<String, usize>,
}

/// One app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEntry {
    /// Its id (`app_…`).
    pub id: String,
    /// The name it asked under, if it asked on this device.
    pub name: Option<String>,
    /// Whether this node keeps its key and signs its writes for it (it
    /// uses this node's API); otherwise it signs its own writes (it embeds
    /// the client, or uses another device's API).
    pub custodial: bool,
    /// Its grants by scope.
    pub scopes: BTreeMap<String, GrantInfo>,
    /// What it wrote.
    pub written: WrittenInfo,
    /// When it last wrote (RFC 3339, UTC, from its last commit's clock);
    /// `None` if it wrote nothing.
    pub last_activity: Option<String>,
    /// The web page its token is bound to (its `Origin`), if a web app.
    #[serde(default)]
    pub origin: Option<String>,
}

impl Op for ListApps {
    type Output = Vec<AppEntry>;

    fn route(self) -> Route {
        Route::get("apps")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Vec<AppEntry>, ApiError> {
        caller.require_owner()?;
        node.db
            .apps()?
            .into_iter()
            .map(|app| {
                let id = app_id(&app.key);
                let written = node.db.written_by(&app.key)?;
                Ok(AppEntry {
                    origin: node.apps.app_origin(&id),
                    id,
                    name: app.name,
                    custodial: app.custodial,
                    scopes: app
                        .scopes
                        .into_iter()
                        .map(|(scope, (rights, revoked))| {
                            (scope.to_string(), GrantInfo { rights: rights.into(), revoked })
                        })
                        .collect(),
                    last_activity: written.last_ms.and_then(rfc3339),
                    written: WrittenInfo {
                        commits: written.commits,
                        rows: written
                            .rows
                            .into_iter()
                            .map(|(table, rows)| (table.to_string(), rows.len()))
                            .collect(),
                    },
                })
            })
            .collect()
    }
}

/// Milliseconds since 1970 as an RFC 3339 UTC time to the second
/// (`2026-12-03T19:04:05Z`); `None` past the year 9999, which RFC 3339
/// cannot write (no commit clock gets there: a replica refuses stamps far
/// ahead of its own clock).
fn rfc3339(ms: u64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(ms / 1000).ok()?).ok()?;
    (at.year() <= 9999).then(|| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )
    })
}

/// `POST /v0/apps/{id}/revoke`: revokes one scope of an app, or all.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoke {
    /// The app's id (`app_…`).
    #[serde(skip)]
    pub id: String,
    /// The scope to revoke; every scope it holds if absent.
    #[serde(default)]
    pub scope: Option<String>,
}

/// What was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The scopes revoked.
    pub scopes: Vec<String>,
}

impl Op for Revoke {
    type Output = Revoked;

    fn route(self) -> Route {
        Route::post(format!("apps/{}/revoke", encode(&self.id)), &self)
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Revoked, ApiError> {
        caller.require_owner()?;
        let key = parse_principal(Role::App, &self.id)?;
        if !node.db.auth_state().apps().contains_key(&key) {
            return Err(ApiError::not_found(format!("no app {} (see `basic app list`)", self.id)));
        }
        let held = node.db.live_grants(&key);
        let scopes: Vec<Name> = match &self.scope {
            Some(scope) => {
                let scope = Name::new(scope.clone())
                    .map_err(|e| ApiError::bad_request(format!("scope {scope:?}: {e}")))?;
                if !held.contains_key(&scope) {
                    return Err(ApiError::conflict(format!(
                        "{} holds no unrevoked grant on {scope}",
                        self.id
                    )));
                }
                vec![scope]
            }
            None => held.into_keys().collect(),
        };
        if scopes.is_empty() {
            return Err(ApiError::conflict(format!("{} holds no unrevoked grant", self.id)));
        }
        for scope in &scopes {
            node.db.revoke(key, scope.clone())?;
        }
        Ok(Revoked { scopes: scopes.iter().map(ToString::to_string).collect() })
    }
}

/// `GET /v0/apps/connect` (owner): the access code an app embedding the
/// light client asks this device with — its database and the addresses
/// its node listens on (`basic app connect` prints it).
#[derive(Debug, Clone, Copy)]
pub struct Connect;

/// An access code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectCode {
    /// The one-line code (`basic-access:…`).
    pub code: String,
}

impl Op for Connect {
    type Output = ConnectCode;

    fn route(self) -> Route {
        Route::get("apps/connect")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<ConnectCode, ApiError> {
        let status = Status.run(node, caller)?;
        Ok(ConnectCode { code: access_code(&status)?.to_string() })
    }
}

/// The access code of the device whose status is `status`: its database
/// and the addresses its running node listens on, for an app to ask there.
fn access_code(status: &StatusOutput) -> Result<AccessCode, ApiError> {
    if status.removed {
        return Err(ApiError::conflict(
            "this device was removed from the database: make the code on another of your devices",
        ));
    }
    let listening = status.network.as_ref().map(|n| n.state.listening.as_slice()).unwrap_or(&[]);
    let addresses = reachable_addresses(listening);
    if addresses.is_empty() {
        return Err(ApiError::conflict(
            "the node listens on no network address, so an app could not reach it: start it with `basic up` (without --listen none)",
        ));
    }
    let database: DatabaseId = status.database.parse().map_err(|e| {
        ApiError::internal(format!("the node reports database {:?}: {e}", status.database))
    })?;
    Ok(AccessCode { database, addresses })
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_are_rfc_3339_in_utc() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339(951_825_599_999).as_deref(), Some("2000-02-29T11:59:59Z"));
        assert_eq!(rfc3339(253_402_300_799_000).as_deref(), Some("9999-12-31T23:59:59Z"));
        assert_eq!(rfc3339(253_402_300_800_000), None);
        assert_eq!(rfc3339(u64::MAX), None);
    }
}
