//! Apps asking for access, and what the user sees of them.
//!
//! An app makes its own key and asks for scopes with rights, under a name
//! the user will recognise: through the node's API, or over the network
//! with a signed [`AccessAsk`](crate::AccessAsk) (`protocol-spec/apps.md`).
//! Either way the request waits, on this device and one per app, until the
//! user approves it — which grants each scope through the control log — or
//! denies it, or it expires after [`REQUEST_TTL_MS`]. A denial or an
//! expiry is remembered for [`ANSWER_KEPT_MS`], so that the app is told.
//! A device relays a network ask it records to the user's other devices,
//! and its user's denial of one ([`Answered::relay`], [`Denied::relay`]),
//! so that the user answers on any device; a request whose app the
//! control log grants everything it asked (the user approved it on
//! another device) is closed.
//! The user can then list every app with its grants and see what each one
//! wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use basic_proto::codec::{self, Fields};
use basic_proto::control::Rights;
use basic_proto::{Name, Party, PublicKey, RowKey, SealingKey};
use ciborium::Value as Cbor;

use crate::control_error::ControlError;
use crate::database::{Database, DbError};
use crate::flows::access::{
    ACCESS_FRESHNESS_MS, AccessAnswer, AccessAsk, AccessDenial, AccessFrame, AccessRefusal,
    AccessRelay, MAX_ACCESS_FRAME,
};
use crate::replica::Keyring;
use crate::storage::kv::{Batch, Store, StoreError, scan_prefix};
use crate::storage::layout;

/// Longest app name, in characters.
pub const MAX_APP_NAME: usize = 64;
/// Most scopes one request may ask for.
pub const MAX_REQUEST_SCOPES: usize = 32;
/// Most requests waiting at once on one device.
pub const MAX_PENDING_REQUESTS: usize = 256;

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
    /// Whether this node keeps its key and signs its writes for it (an
    /// app of this node's API, see [`Database::new_custodial_app`]);
    /// otherwise the app signs its own writes, or another device keeps
    /// its key.
    pub custodial: bool,
}

/// What an app wrote, as far as this device can read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Written {
    /// Its commits stored here and authorised (not set aside past a
    /// revocation's cut-off).
    pub commits: usize,
    /// The rows they touched, by table.
    pub rows: BTreeMap<Name, BTreeSet<RowKey>>,
    /// Its last activity: the latest wall time (ms since 1970) of its
    /// commits' clocks, read from their signed headers; `None` if it
    /// wrote nothing.
    pub last_ms: Option<u64>,
}

/// A device's answer to one access frame, and what it tells the user's
/// other devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The answer to the sender.
    pub answer: AccessAnswer,
    /// For an app's ask recorded here for the first time: its relay (an
    /// encoded [`AccessFrame::Relay`] signed by this device), for every
    /// other device.
    pub relay: Option<Vec<u8>>,
}

impl Answered {
    fn only(answer: AccessAnswer) -> Self {
        Self { answer, relay: None }
    }
}

/// A request the user denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The request.
    pub request: AccessRequest,
    /// For a request that came over the network: the denial (an encoded
    /// [`AccessFrame::Denial`] signed by this device), for every other
    /// device.
    pub relay: Option<Vec<u8>>,
}

/// What became of an ask that passed every check.
enum Taken {
    /// The app's live grants already cover it: nothing waits.
    Covered,
    /// It waits for the user; `new` unless it was waiting already.
    Waits { new: bool },
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
    /// The database has no namespace of this name.
    #[error("the database has no namespace {0}")]
    UnknownScope(Name),
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

/// The code of `rights` in requests and asks.
pub(crate) fn rights_code(rights: Rights) -> u64 {
    match rights {
        Rights::Read => 1,
        Rights::ReadWrite => 2,
    }
}

/// The rights of a code, if it is one.
pub(crate) fn rights_of(code: u64) -> Option<Rights> {
    match code {
        1 => Some(Rights::Read),
        2 => Some(Rights::ReadWrite),
        _ => None,
    }
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt { what: "access request", reason }
}

/// `[name, app key, app sealing key, [* [scope, rights]]]`: what a stored
/// request and an app's signed ask both begin with.
pub(crate) fn request_fields(
    name: &str,
    app: &Party,
    scopes: &BTreeMap<Name, Rights>,
) -> Vec<Cbor> {
    vec![
        Cbor::Text(name.to_owned()),
        Cbor::Bytes(app.key.as_bytes().to_vec()),
        Cbor::Bytes(app.sealing.0.to_vec()),
        Cbor::Array(
            scopes
                .iter()
                .map(|(scope, rights)| {
                    Cbor::Array(vec![
                        Cbor::Text(scope.as_str().to_owned()),
                        Cbor::Integer(rights_code(*rights).into()),
                    ])
                })
                .collect(),
        ),
    ]
}

impl AccessRequest {
    fn fields(&self) -> Vec<Cbor> {
        request_fields(&self.name, &self.app, &self.scopes)
    }

    fn read(fields: &mut Fields) -> Result<Self, StoreError> {
        let e = |e: codec::DecodeError| corrupt(e.to_string());
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
            let code = pair.uint("rights").map_err(e)?;
            let rights = rights_of(code).ok_or_else(|| corrupt(format!("rights {code}")))?;
            scopes.insert(scope, rights);
        }
        Ok(Self { name, app: Party { key, sealing }, scopes })
    }

    /// The id the user sees: a hash of the name, keys and scopes.
    fn id(&self) -> RequestId {
        RequestId(blake3::derive_key(
            "basic/v0 access request id",
            &codec::encode_value(&Cbor::Array(self.fields())),
        ))
    }
}

/// How long a request waits for the user before it expires.
pub const REQUEST_TTL_MS: u64 = 60 * 60_000;
/// How long a device remembers that a request was denied or expired.
pub const ANSWER_KEPT_MS: u64 = 24 * 60 * 60_000;

/// A request waiting for the user, as stored (`q` · app key):
/// `[name, app key, sealing key, scopes, received_ms, ask]`, where `ask`
/// is `[ask id, issued_ms]` for an ask that came over the network and
/// null for one made through the API. A record of four items is a request
/// stored before requests expired (under its id): it counts as expired.
struct Pending {
    request: AccessRequest,
    received_ms: u64,
    ask: Option<([u8; 32], u64)>,
}

impl Pending {
    fn encode(&self) -> Vec<u8> {
        let mut fields = self.request.fields();
        fields.push(Cbor::Integer(self.received_ms.into()));
        fields.push(match self.ask {
            Some((id, issued)) => {
                Cbor::Array(vec![Cbor::Bytes(id.to_vec()), Cbor::Integer(issued.into())])
            }
            None => Cbor::Null,
        });
        codec::encode_value(&Cbor::Array(fields))
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let e = |e: codec::DecodeError| corrupt(e.to_string());
        let mut fields =
            Fields::between(codec::parse(bytes, "request", 64 << 10).map_err(e)?, "request", 4, 6)
                .map_err(e)?;
        let request = AccessRequest::read(&mut fields)?;
        if fields.remaining() == 0 {
            return Ok(Self { request, received_ms: 0, ask: None });
        }
        let received_ms = fields.uint("received").map_err(e)?;
        let ask = match fields.next("ask").map_err(e)? {
            Cbor::Null => None,
            ask => {
                let mut ask = Fields::new(ask, "ask", 2).map_err(e)?;
                Some((ask.fixed("id").map_err(e)?, ask.uint("issued").map_err(e)?))
            }
        };
        Ok(Self { request, received_ms, ask })
    }
}

/// How a request ended without a grant (`d` · app key): `[outcome, at_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Denied,
    Expired,
}

fn ended(outcome: Ended, at_ms: u64) -> Vec<u8> {
    let code: u64 = match outcome {
        Ended::Denied => 1,
        Ended::Expired => 2,
    };
    codec::encode_value(&Cbor::Array(vec![Cbor::Integer(code.into()), Cbor::Integer(at_ms.into())]))
}

fn read_ended(bytes: &[u8]) -> Result<(Ended, u64), StoreError> {
    let e = |e: codec::DecodeError| corrupt(e.to_string());
    let mut fields =
        Fields::new(codec::parse(bytes, "answer", 64).map_err(e)?, "answer", 2).map_err(e)?;
    let outcome = match fields.uint("outcome").map_err(e)? {
        1 => Ended::Denied,
        2 => Ended::Expired,
        other => return Err(corrupt(format!("outcome {other}"))),
    };
    Ok((outcome, fields.uint("at").map_err(e)?))
}

/// One change of the request store at a time in this process: each reads,
/// decides and writes (caps, idempotence, replays).
static REQUESTS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    REQUESTS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Store> Database<S> {
    /// Records an app's request for access, for the user to answer. The
    /// request of an app replaces the one it had waiting, if any.
    pub fn request_access(&self, request: AccessRequest) -> Result<RequestId, RequestError> {
        let request = self.check_request(request)?;
        let _one = one_at_a_time();
        let now = self.environment().now_ms();
        self.prune(now)?;
        Ok(self.record(request, None, now)?.0)
    }

    /// `request` with its name trimmed, if the database could grant it.
    fn check_request(&self, request: AccessRequest) -> Result<AccessRequest, RequestError> {
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
        let namespaces = self.namespaces();
        if let Some(scope) = request.scopes.keys().find(|s| !namespaces.values().any(|n| n == *s)) {
            return Err(RequestError::UnknownScope(scope.clone()));
        }
        Ok(AccessRequest { name: name.to_owned(), ..request })
    }

    /// Stores `request` (received at `now`, from the network ask `ask`) as
    /// its app's pending request, and says whether it is new: the same ask
    /// again changes nothing.
    fn record(
        &self,
        request: AccessRequest,
        ask: Option<([u8; 32], u64)>,
        now: u64,
    ) -> Result<(RequestId, bool), RequestError> {
        let store = self.replica().store();
        let key = layout::request(&request.app.key);
        let existing = store.get(&key)?.map(|bytes| Pending::decode(&bytes)).transpose()?;
        let mut batch = Batch::default();
        match &existing {
            Some(old) if ask.is_some() && old.ask.map(|a| a.0) == ask.map(|a| a.0) => {
                return Ok((old.request.id(), false));
            }
            Some(Pending { ask: Some((id, issued)), .. }) => {
                batch.put(layout::asked(id), issued.to_be_bytes().to_vec());
            }
            Some(_) => {}
            None if self.pending_requests()?.len() >= MAX_PENDING_REQUESTS => {
                return Err(RequestError::TooMany);
            }
            None => {}
        }
        let id = request.id();
        batch.delete(layout::answered(&request.app.key));
        batch.put(key, Pending { request, received_ms: now, ask }.encode());
        store.apply(batch)?;
        store.flush()?;
        Ok((id, true))
    }

    /// Every stored request, with its key.
    fn pending_requests(&self) -> Result<Vec<(Vec<u8>, Pending)>, StoreError> {
        scan_prefix(self.replica().store(), &[layout::REQUEST])
            .map(|entry| {
                let (key, bytes) = entry?;
                Ok((key, Pending::decode(&bytes)?))
            })
            .collect()
    }

    /// Forgets what is over: requests not answered in
    /// [`REQUEST_TTL_MS`] (they expire, and the app is told so), requests
    /// whose app the control log grants all they ask (approved on another
    /// device), answers older than [`ANSWER_KEPT_MS`], and answered asks
    /// too old to be anything but stale.
    fn prune(&self, now: u64) -> Result<(), StoreError> {
        let store = self.replica().store();
        let mut batch = Batch::default();
        let mut changed = false;
        for (key, pending) in self.pending_requests()? {
            let app = pending.request.app.key;
            if now > pending.received_ms.saturating_add(REQUEST_TTL_MS) {
                close(&mut batch, key, &pending);
                batch.put(layout::answered(&app), ended(Ended::Expired, now));
                changed = true;
            } else if self.covers(&app, &pending.request.scopes) {
                close(&mut batch, key, &pending);
                batch.delete(layout::answered(&app));
                batch.put(layout::app_name(&app), pending.request.name.clone().into_bytes());
                changed = true;
            }
        }
        for entry in scan_prefix(store, &[layout::ANSWERED]) {
            let (key, bytes) = entry?;
            if now > read_ended(&bytes)?.1.saturating_add(ANSWER_KEPT_MS) {
                batch.delete(key);
                changed = true;
            }
        }
        for entry in scan_prefix(store, &[layout::ASKED]) {
            let (key, bytes) = entry?;
            let issued: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("an answered ask's time is not 8 bytes".into()))?;
            if now > u64::from_be_bytes(issued).saturating_add(ACCESS_FRESHNESS_MS) {
                batch.delete(key);
                changed = true;
            }
        }
        if changed {
            store.apply(batch)?;
            store.flush()?;
        }
        Ok(())
    }

    /// The requests waiting for the user, oldest first.
    pub fn access_requests(&self) -> Result<Vec<(RequestId, AccessRequest)>, StoreError> {
        let _one = one_at_a_time();
        self.prune(self.environment().now_ms())?;
        let mut pending = self.pending_requests()?;
        pending.sort_by_key(|(_, p)| (p.received_ms, p.request.id()));
        Ok(pending.into_iter().map(|(_, p)| (p.request.id(), p.request)).collect())
    }

    /// Approves a request: grants the app every scope it asked for, with
    /// the rights it asked for, and remembers its name.
    pub fn approve(&self, id: RequestId) -> Result<AccessRequest, DbError> {
        let _one = one_at_a_time();
        let (key, pending) = self.pending(id)?;
        for (scope, rights) in &pending.request.scopes {
            self.grant(pending.request.app, scope.clone(), *rights)?;
        }
        let app = pending.request.app.key;
        let mut batch = Batch::default();
        close(&mut batch, key, &pending);
        batch.delete(layout::answered(&app));
        batch.put(layout::app_name(&app), pending.request.name.clone().into_bytes());
        let store = self.replica().store();
        store.apply(batch)?;
        store.flush()?;
        Ok(pending.request)
    }

    /// Denies a request: nothing is granted, and the app is told so when it
    /// asks what became of it — here, and on the other devices the
    /// returned relay reaches.
    pub fn deny(&self, id: RequestId) -> Result<Denied, DbError> {
        let _one = one_at_a_time();
        let (key, pending) = self.pending(id)?;
        let now = self.environment().now_ms();
        let app = pending.request.app.key;
        let relay = match pending.ask {
            Some((ask, _)) => {
                let denial = AccessDenial::sign(&self.member_key()?, app, ask, now);
                Some(AccessFrame::Denial(denial).to_bytes())
            }
            None => None,
        };
        let mut batch = Batch::default();
        close(&mut batch, key, &pending);
        batch.put(layout::answered(&app), ended(Ended::Denied, now));
        let store = self.replica().store();
        store.apply(batch)?;
        store.flush()?;
        Ok(Denied { request: pending.request, relay })
    }

    /// The request `id`, if it still waits (an expired one does not).
    fn pending(&self, id: RequestId) -> Result<(Vec<u8>, Pending), DbError> {
        self.prune(self.environment().now_ms())?;
        self.pending_requests()?
            .into_iter()
            .find(|(_, p)| p.request.id() == id)
            .ok_or_else(|| ControlError::from(RequestError::Unknown(id)).into())
    }

    /// The scopes (namespaces) `app` holds unrevoked grants on, with their
    /// rights.
    pub fn live_grants(&self, app: &PublicKey) -> BTreeMap<Name, Rights> {
        let namespaces = self.namespaces();
        self.auth_state()
            .apps()
            .get(app)
            .map(|info| {
                info.scopes
                    .iter()
                    .filter(|(_, grant)| grant.revoked.is_none())
                    .filter_map(|(scope, grant)| {
                        Some((namespaces.get(scope)?.clone(), grant.rights))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `app`'s live grants give it every scope of `scopes` with at
    /// least the rights asked.
    fn covers(&self, app: &PublicKey, scopes: &BTreeMap<Name, Rights>) -> bool {
        let grants = self.live_grants(app);
        scopes.iter().all(|(scope, rights)| {
            matches!(
                (grants.get(scope), rights),
                (Some(Rights::ReadWrite), _) | (Some(Rights::Read), Rights::Read)
            )
        })
    }

    /// The device side of `/basic/access/0` (blocking): answers one frame
    /// received from an app or another device against the database.
    /// `device_transport` is this device's libp2p peer id bytes, which an
    /// app signs.
    pub fn answer_access(&self, frame: &[u8], device_transport: &[u8]) -> Answered {
        self.try_answer_access(frame, device_transport)
            .unwrap_or_else(|refusal| Answered::only(AccessAnswer::Refused(refusal)))
    }

    fn try_answer_access(
        &self,
        frame: &[u8],
        device_transport: &[u8],
    ) -> Result<Answered, AccessRefusal> {
        if self.is_removed() {
            return Err(AccessRefusal::NotADevice);
        }
        let frame = AccessFrame::from_bytes(frame)?;
        let now = self.environment().now_ms();
        let check = |verifies: bool, issued_ms: u64| {
            if !verifies {
                return Err(AccessRefusal::BadSignature);
            }
            if now.abs_diff(issued_ms) > ACCESS_FRESHNESS_MS {
                return Err(AccessRefusal::Stale);
            }
            Ok(())
        };
        match &frame {
            AccessFrame::Ask(ask) => check(ask.verifies(device_transport), ask.issued_ms)?,
            AccessFrame::Poll(poll) => check(poll.verifies(device_transport), poll.issued_ms)?,
            AccessFrame::Relay(relay) => {
                self.signed_by_a_device(&relay.device)?;
                check(relay.verifies(), relay.issued_ms)?;
                check(relay.ask.verifies(&relay.transport), relay.ask.issued_ms)?;
            }
            AccessFrame::Denial(denial) => {
                self.signed_by_a_device(&denial.device)?;
                check(denial.verifies(), denial.issued_ms)?;
            }
        }
        let _one = one_at_a_time();
        self.prune(now).map_err(device_error)?;
        match frame {
            AccessFrame::Ask(ask) => self.take_app_ask(ask, device_transport, now),
            AccessFrame::Poll(poll) => self.take_poll(&poll.app).map(Answered::only),
            // Another device's: taken as if the app had asked here.
            AccessFrame::Relay(relay) => {
                self.take_ask(&relay.ask, now).map(|_| Answered::only(AccessAnswer::Pending))
            }
            AccessFrame::Denial(denial) => {
                self.take_denial(&denial, now).map(|()| Answered::only(AccessAnswer::Pending))
            }
        }
    }

    /// Refuses a relay or a denial signed by anyone but a device of the
    /// database that is not removed.
    fn signed_by_a_device(&self, signer: &PublicKey) -> Result<(), AccessRefusal> {
        match self.auth_state().is_device(signer) {
            true => Ok(()),
            false => Err(AccessRefusal::NotFromADevice),
        }
    }

    /// An app's own ask: taken, and relayed to the other devices if it is
    /// new here.
    fn take_app_ask(
        &self,
        ask: AccessAsk,
        device_transport: &[u8],
        now: u64,
    ) -> Result<Answered, AccessRefusal> {
        let key = self.member_key().map_err(device_error)?;
        match self.take_ask(&ask, now)? {
            Taken::Covered => self.granted().map(Answered::only),
            Taken::Waits { new } => Ok(Answered {
                answer: AccessAnswer::Pending,
                // Only an ask padded with white space makes a relay over
                // the cap: it stays here.
                relay: new
                    .then(|| {
                        let relay = AccessRelay::sign(&key, device_transport.to_vec(), ask, now);
                        AccessFrame::Relay(relay).to_bytes()
                    })
                    .filter(|relay| relay.len() <= MAX_ACCESS_FRAME),
            }),
        }
    }

    /// The checks of an ask whose signature and time hold, wherever it
    /// came from, and its recording.
    fn take_ask(&self, ask: &AccessAsk, now: u64) -> Result<Taken, AccessRefusal> {
        let id = ask.id();
        let request =
            AccessRequest { name: ask.name.clone(), app: ask.app, scopes: ask.scopes.clone() };
        let request = self.check_request(request).map_err(refusal)?;
        if self.replica().store().get(&layout::asked(&id)).map_err(device_error)?.is_some() {
            return Err(AccessRefusal::Replayed);
        }
        if let Some(scope) = self.revoked_on(&request.app.key, &request.scopes) {
            return Err(AccessRefusal::Revoked(scope.to_string()));
        }
        if self.covers(&request.app.key, &request.scopes) {
            return Ok(Taken::Covered);
        }
        let (_, new) = self.record(request, Some((id, ask.issued_ms)), now).map_err(refusal)?;
        Ok(Taken::Waits { new })
    }

    /// The first of `scopes` on which `app`'s key was revoked, if any.
    fn revoked_on(&self, app: &PublicKey, scopes: &BTreeMap<Name, Rights>) -> Option<Name> {
        let namespaces = self.namespaces();
        let state = self.auth_state();
        let grants = &state.apps().get(app)?.scopes;
        grants
            .iter()
            .filter(|(_, grant)| grant.revoked.is_some())
            .filter_map(|(scope, _)| namespaces.get(scope))
            .find(|namespace| scopes.contains_key(*namespace))
            .cloned()
    }

    /// Another device's user denied an ask: the app is told so here too,
    /// and the request goes if it is the one waiting here.
    fn take_denial(&self, denial: &AccessDenial, now: u64) -> Result<(), AccessRefusal> {
        let store = self.replica().store();
        if store.get(&layout::asked(&denial.ask)).map_err(device_error)?.is_some() {
            return Err(AccessRefusal::Replayed);
        }
        let key = layout::request(&denial.app);
        let waiting = store
            .get(&key)
            .map_err(device_error)?
            .map(|bytes| Pending::decode(&bytes))
            .transpose()
            .map_err(device_error)?;
        let mut batch = Batch::default();
        // Remembered until both the ask and the denial are stale.
        let mut until = denial.issued_ms;
        match waiting.map(|pending| pending.ask) {
            Some(Some((ask, issued))) if ask == denial.ask => {
                batch.delete(key);
                until = until.max(issued);
                batch.put(layout::answered(&denial.app), ended(Ended::Denied, now));
            }
            // Another request of the app waits here (a newer ask): it stays.
            Some(_) => {}
            None => batch.put(layout::answered(&denial.app), ended(Ended::Denied, now)),
        }
        batch.put(layout::asked(&denial.ask), until.to_be_bytes().to_vec());
        store.apply(batch).and_then(|()| store.flush()).map_err(device_error)
    }

    fn take_poll(&self, app: &PublicKey) -> Result<AccessAnswer, AccessRefusal> {
        let store = self.replica().store();
        // A request covered by the app's grants was closed by `prune`.
        if store.get(&layout::request(app)).map_err(device_error)?.is_some() {
            return Ok(AccessAnswer::Pending);
        }
        match store.get(&layout::answered(app)).map_err(device_error)? {
            Some(bytes) => match read_ended(&bytes).map_err(device_error)?.0 {
                Ended::Denied => Ok(AccessAnswer::Denied),
                Ended::Expired => Ok(AccessAnswer::Expired),
            },
            None if !self.live_grants(app).is_empty() => self.granted(),
            None => Err(AccessRefusal::NoRequest),
        }
    }

    fn granted(&self) -> Result<AccessAnswer, AccessRefusal> {
        self.control_ops().map(AccessAnswer::Granted).map_err(device_error)
    }

    /// Every app of the control log, with its name (if known here) and grants.
    pub fn apps(&self) -> Result<Vec<AppInfo>, StoreError> {
        let state = self.auth_state();
        let namespaces = self.namespaces();
        state
            .apps()
            .iter()
            .map(|(key, app)| {
                let store = self.replica().store();
                let name = store
                    .get(&layout::app_name(key))?
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
                let custodial = store.get(&layout::custodial(key))?.is_some();
                let scopes = app
                    .scopes
                    .iter()
                    .filter_map(|(scope, grant)| {
                        let namespace = namespaces.get(scope)?.clone();
                        Some((namespace, (grant.rights, grant.revoked.is_some())))
                    })
                    .collect();
                Ok(AppInfo { key: *key, name, scopes, custodial })
            })
            .collect()
    }

    /// What `app` wrote: its authorised commits stored here, when it last
    /// wrote, and the rows they touched (of the commits this device can
    /// read).
    pub fn written_by(&self, app: &PublicKey) -> Result<Written, StoreError> {
        let keys = self.scope_keys();
        let mut written = Written::default();
        for (_, id) in self.replica().log(app)? {
            // A commit the control log does not authorise (past a
            // revocation's cut-off) is set aside: the app did not write it.
            if !self.replica().holds_applied(&id)? {
                continue;
            }
            let Some(commit) = self.replica().commit(&id)? else { continue };
            written.commits += 1;
            written.last_ms = written.last_ms.max(Some(commit.header().hlc.wall_ms));
            let Some(Ok(changes)) = keys.open(&commit) else { continue };
            for op in changes.ops() {
                written.rows.entry(op.table().clone()).or_default().insert(op.key().clone());
            }
        }
        Ok(written)
    }
}

/// Adds to `batch` the closing of the request stored at `key`: the
/// request goes, its ask (if any) is remembered as answered.
fn close(batch: &mut Batch, key: Vec<u8>, pending: &Pending) {
    batch.delete(key);
    if let Some((id, issued)) = pending.ask {
        batch.put(layout::asked(&id), issued.to_be_bytes().to_vec());
    }
}

fn device_error(error: impl fmt::Display) -> AccessRefusal {
    AccessRefusal::DeviceError(error.to_string())
}

fn refusal(error: RequestError) -> AccessRefusal {
    match error {
        RequestError::BadName => AccessRefusal::BadName,
        RequestError::BadScopes => AccessRefusal::BadScopes,
        RequestError::UnknownScope(scope) => AccessRefusal::UnknownScope(scope.to_string()),
        RequestError::TooMany => AccessRefusal::TooMany,
        error @ (RequestError::Unknown(_) | RequestError::Store(_)) => device_error(error),
    }
}
