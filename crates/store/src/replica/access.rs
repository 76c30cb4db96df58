//! The control log as one device uses it: the stored operations, the
//! authorisation state they give, the scope keys this device can open, and
//! issuing new operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use basic_proto::control::{
    AuthState, ControlLog, ControlOp, InsertError, Inserted, OpBody, OpError, Payload,
};
use basic_proto::{DatabaseId, Hlc, Name, NamingKey, Party, ScopeId, SecretKey};

use crate::replica::scope_keys::ScopeKeys;
use crate::replica::{Keyring, Replica, Txn};
use crate::sql::schema::Catalog;
use crate::storage::kv::{Store, StoreError};

/// A device's view of its database's control log.
#[derive(Debug)]
pub(crate) struct Access {
    log: ControlLog,
    state: Arc<AuthState>,
    keys: ScopeKeys,
    /// The naming key, for a device (apps and pinning peers have none).
    naming: Option<NamingKey>,
    /// The winning schema of each scope this device can open: namespace
    /// and text.
    schemas: BTreeMap<ScopeId, (Name, String)>,
}

impl Access {
    /// The stored operations of `database`, as seen by `device`.
    pub(crate) fn load<S: Store>(
        replica: &Replica<S>,
        database: DatabaseId,
        device: &SecretKey,
    ) -> Result<Self, StoreError> {
        let log = replica.control_log(database)?;
        let state = Arc::new(log.state());
        let mut access =
            Self { log, state, keys: ScopeKeys::default(), naming: None, schemas: BTreeMap::new() };
        access.refresh(device);
        Ok(access)
    }

    /// The current authorisation state.
    pub(crate) fn state(&self) -> &Arc<AuthState> {
        &self.state
    }

    /// The control log.
    pub(crate) fn log(&self) -> &ControlLog {
        &self.log
    }

    /// The scope keys this device can open.
    pub(crate) fn keys(&self) -> &ScopeKeys {
        &self.keys
    }

    /// Admits `ops` received at local wall time `now_ms` (and any held
    /// operation they unblock), stages the admitted ones in `txn`, and
    /// refreshes the state and keys once for the whole batch. One result
    /// per operation.
    pub(crate) fn insert_all<S: Store>(
        &mut self,
        ops: Vec<ControlOp>,
        txn: &mut Txn<'_, S>,
        device: &SecretKey,
        now_ms: u64,
    ) -> Vec<Result<Inserted, InsertError>> {
        let mut changed = false;
        let results = ops
            .into_iter()
            .map(|op| {
                let inserted = self.log.insert(op, now_ms)?;
                if let Inserted::Admitted(ids) = &inserted {
                    changed = true;
                    for id in ids {
                        if let Some(op) = self.log.get(id) {
                            txn.insert_op(op);
                        }
                    }
                }
                Ok(inserted)
            })
            .collect();
        if changed {
            self.state = Arc::new(self.log.state());
            self.refresh(device);
        }
        results
    }

    /// Recomputes what `device` derives from the state: its keys, the
    /// naming key, and the schemas it can open.
    fn refresh(&mut self, device: &SecretKey) {
        self.keys = keys_of(&self.state, device);
        self.naming = self.state.naming_key(device);
        self.schemas = open_schemas(&self.state, &self.keys, self.naming.as_ref());
    }

    /// The scope id of `namespace`: named with the naming key on a device;
    /// elsewhere (an app's replica), the scope of an opened schema of that
    /// namespace; `None` if neither.
    pub(crate) fn scope_id(&self, namespace: &Name) -> Option<ScopeId> {
        match &self.naming {
            Some(naming) => Some(naming.scope_id(namespace)),
            None => self.schemas.iter().find(|(_, (n, _))| n == namespace).map(|(id, _)| *id),
        }
    }

    /// The naming key, if this replica is a device's.
    pub(crate) fn naming(&self) -> Option<&NamingKey> {
        self.naming.as_ref()
    }

    /// The namespace of every scope this replica can name: those of the
    /// schemas it opened and, with the naming key, those of `catalog`.
    pub(crate) fn namespaces(&self, catalog: &Catalog) -> BTreeMap<ScopeId, Name> {
        let mut out: BTreeMap<ScopeId, Name> =
            self.schemas.iter().map(|(id, (namespace, _))| (*id, namespace.clone())).collect();
        for schema in catalog.schemas() {
            if let Some(id) = self.scope_id(schema.namespace()) {
                out.insert(id, schema.namespace().clone());
            }
        }
        out
    }

    /// The winning schema of each scope this replica can open.
    pub(crate) fn schemas(&self) -> &BTreeMap<ScopeId, (Name, String)> {
        &self.schemas
    }

    /// [`Access::insert_all`] of one operation.
    pub(crate) fn insert<S: Store>(
        &mut self,
        op: ControlOp,
        txn: &mut Txn<'_, S>,
        device: &SecretKey,
        now_ms: u64,
    ) -> Result<Inserted, InsertError> {
        self.insert_all(vec![op], txn, device, now_ms).pop().unwrap_or(Ok(Inserted::Duplicate))
    }

    /// Signs an operation by `author` on the log's current heads.
    pub(crate) fn issue(
        &self,
        author: &SecretKey,
        payload: Payload,
        now_ms: u64,
    ) -> Result<ControlOp, OpError> {
        issue_on(&self.log, author, payload, now_ms)
    }

    /// Who reads `scope` now: the root identity (so that the recovery
    /// secret opens every key), every device not removed, and every app
    /// with a grant on it that is not revoked.
    pub(crate) fn readers(&self, scope: &ScopeId) -> Vec<Party> {
        let devices = self
            .state
            .devices()
            .iter()
            .filter(|(_, device)| device.removed.is_none())
            .map(|(key, device)| Party { key: *key, sealing: device.sealing });
        let apps = self.state.apps().iter().filter_map(|(key, app)| {
            let grant = app.scopes.get(scope)?;
            grant.revoked.is_none().then_some(Party { key: *key, sealing: app.sealing })
        });
        self.state.root().into_iter().chain(devices).chain(apps).collect()
    }
}

/// Signs an operation by `author` on `log`'s current heads, stamped after
/// its parents and no earlier than `now_ms`.
pub(crate) fn issue_on(
    log: &ControlLog,
    author: &SecretKey,
    payload: Payload,
    now_ms: u64,
) -> Result<ControlOp, OpError> {
    let parents = log.heads();
    let after = parents
        .iter()
        .filter_map(|id| log.get(id))
        .map(|op| op.body().hlc.successor())
        .max()
        .unwrap_or_default();
    let hlc = after.max(Hlc { wall_ms: now_ms, counter: 0 });
    ControlOp::create(
        author,
        OpBody { database: log.database(), author: author.public(), parents, hlc, payload },
    )
}

/// Every scope key sealed to `device` that it can open, several for an
/// epoch when concurrent rotations made several.
fn keys_of(state: &AuthState, device: &SecretKey) -> ScopeKeys {
    let mut keys = ScopeKeys::default();
    for (scope, epochs) in state.scopes() {
        for epoch in epochs.epochs.keys() {
            for key in state.scope_keys(device, scope, *epoch) {
                keys.insert(*scope, *epoch, key);
            }
        }
    }
    keys
}

/// Opens the winning schema of every scope with a key of its epoch. With
/// the naming key, a schema is taken only if its namespace hashes to its
/// scope id: a device cannot pass one scope off as another namespace.
fn open_schemas(
    state: &AuthState,
    keys: &ScopeKeys,
    naming: Option<&NamingKey>,
) -> BTreeMap<ScopeId, (Name, String)> {
    let mut out = BTreeMap::new();
    for (scope, schema) in state.schemas() {
        let opened = keys
            .scope_keys(scope, schema.epoch)
            .into_iter()
            .find_map(|key| schema.sealed.open(&key, state.database(), scope, schema.epoch).ok());
        if let Some((namespace, text)) = opened
            && naming.is_none_or(|naming| naming.scope_id(&namespace) == *scope)
        {
            out.insert(*scope, (namespace, text));
        }
    }
    out
}
