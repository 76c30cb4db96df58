//! The control log as one device uses it: the stored operations, the
//! authorisation state they give, the scope keys this device can open, and
//! issuing new operations.

use std::sync::Arc;

use basic_proto::control::{
    AuthState, ControlLog, ControlOp, InsertError, Inserted, OpBody, OpError, Payload,
};
use basic_proto::{DatabaseId, Hlc, Name, Party, SecretKey};

use crate::kv::{Store, StoreError};
use crate::replica::{Replica, Txn};
use crate::scope_keys::ScopeKeys;

/// A device's view of its database's control log.
#[derive(Debug)]
pub(crate) struct Access {
    log: ControlLog,
    state: Arc<AuthState>,
    keys: ScopeKeys,
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
        let keys = keys_of(&state, device);
        Ok(Self { log, state, keys })
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
            self.keys = keys_of(&self.state, device);
        }
        results
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
    pub(crate) fn readers(&self, scope: &Name) -> Vec<Party> {
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
                keys.insert(scope.clone(), *epoch, key);
            }
        }
    }
    keys
}
