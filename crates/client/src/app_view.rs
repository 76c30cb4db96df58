//! The app's side of its replica: what it may read and write now, by the
//! same rule as the node applies to apps (its unrevoked grants), whatever
//! drives the replica — the client's network, or the simulator.

use std::collections::BTreeMap;

use basic_proto::control::Rights;
use basic_proto::{Name, PublicKey, Value};
use basic_store::{Caller, Database, Executed, Rows, Store, Subscription};

use crate::error::ClientError;

/// What the app may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Its unrevoked grants: namespace → rights.
    Granted(BTreeMap<Name, Rights>),
    /// Every grant was revoked: it reads and writes nothing new.
    Revoked,
}

/// An app's replica, as the app uses it.
#[derive(Debug)]
pub struct AppView<'a, S: Store> {
    db: &'a Database<S>,
    app: PublicKey,
}

impl<'a, S: Store> AppView<'a, S> {
    /// The replica `db`, held by an app.
    pub fn new(db: &'a Database<S>) -> Result<Self, ClientError> {
        Ok(Self::with_key(db, db.member_key()?.public()))
    }

    /// The replica `db`, held by the app `app`.
    pub(crate) fn with_key(db: &'a Database<S>, app: PublicKey) -> Self {
        Self { db, app }
    }

    /// What the app may do now, by its replica's control log.
    pub fn access(&self) -> Access {
        let grants = self.db.live_grants(&self.app);
        if grants.is_empty() { Access::Revoked } else { Access::Granted(grants) }
    }

    /// The app as a caller of its replica, and its namespace when it holds
    /// grants on exactly one (for unqualified table names).
    fn caller(&self) -> Result<(Caller, Option<Name>), ClientError> {
        let caller = self.db.app_caller(&self.app).ok_or(ClientError::Revoked)?;
        let namespace = match &caller {
            Caller::App { readable, .. } if readable.len() == 1 => readable.first().cloned(),
            _ => None,
        };
        Ok((caller, namespace))
    }

    /// Runs one statement; a write is on disk when this returns.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<Executed, ClientError> {
        let (caller, namespace) = self.caller()?;
        Ok(self.db.execute_as(&caller, sql, params, namespace.as_ref())?)
    }

    /// Runs a `SELECT`.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, ClientError> {
        let (caller, namespace) = self.caller()?;
        Ok(self.db.query_as(&caller, sql, params, namespace.as_ref())?)
    }

    /// Subscribes to a `SELECT`.
    pub fn subscribe(&self, sql: &str, params: &[Value]) -> Result<Subscription, ClientError> {
        let (caller, namespace) = self.caller()?;
        Ok(self.db.subscribe_as(&caller, sql, params, namespace.as_ref())?)
    }
}
