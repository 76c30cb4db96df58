//! `GET /v0/live?sql=…&params=[…]`: a live query as Server-Sent Events.
//!
//! The first `rows` event carries the result now; another follows each
//! time a write or a received commit changes it. An app's stream ends with
//! an `error` event as soon as its grant no longer covers the query, and
//! any stream with an `error` event (`query_timeout`) when a run after a
//! change goes past the statement budget. The stream ends when the client
//! goes away or the node shuts down. Each caller may keep at most
//! [`super::MAX_LIVE_PER_CALLER`] open, and the node [`super::MAX_LIVE`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use basic_store::Subscription;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use super::ApiState;
use super::body::QueryArgs;
use super::limits::{PerCaller, Taken};
use crate::capability;
use crate::error::{ApiError, ErrorBody};
use crate::node::Node;
use crate::ops::Caller;
use crate::ops::sql::SqlOutput;
use basic_store::value_json;

/// How often the pump looks for a gone client, a shutdown or a revocation.
const TICK: Duration = Duration::from_millis(200);

/// The query string.
#[derive(Debug, Deserialize)]
pub(super) struct LiveQuery {
    /// The `SELECT`.
    sql: String,
    /// Its parameters as a JSON array, if any.
    params: Option<String>,
}

pub(super) async fn live(
    State(state): State<ApiState>,
    caller: Caller,
    QueryArgs(query): QueryArgs<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params: Vec<serde_json::Value> = match &query.params {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("params must be a JSON array: {e}")))?,
        None => Vec::new(),
    };
    let params =
        value_json::params_from_json(&params).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let own = PerCaller::take(&state.live_per_caller, &caller)?;
    let permit = Arc::clone(&state.live).try_acquire_owned().map_err(|_| ApiError {
        status: 503,
        code: "busy".into(),
        message: format!("{} live queries are open already: close one first", super::MAX_LIVE),
    })?;
    let node = Arc::clone(&state.node);
    let sql = query.sql;
    // The permits go with the first run, so that a client gone before it
    // ends frees them only once it has ended.
    let (subscription, permits) = {
        let (node, sql, caller) = (Arc::clone(&node), sql.clone(), caller.clone());
        tokio::task::spawn_blocking(move || {
            let subscribe = || {
                let runs_as = match &caller {
                    Caller::App(app) => {
                        capability::check(&node.db, app, &sql)?;
                        capability::caller(&node.db, app)?
                    }
                    Caller::Owner => basic_store::Caller::Owner,
                    Caller::Anyone => return Err(ApiError::unauthorized("this needs a token")),
                };
                node.db
                    .subscribe_as(&runs_as, &sql, &params, None)
                    .map_err(|e| crate::ops::sql::statement_error(e, params.len()))
            };
            (subscribe(), (permit, own))
        })
        .await
        .map_err(|e| ApiError::internal(format!("the live query failed: {e}")))?
    };
    let subscription = subscription?;
    let (events, received) = mpsc::channel::<Event>(4);
    let pump = Pump { node, caller, sql, subscription, events, stopping: state.stopping.clone() };
    tokio::task::spawn_blocking(move || pump.run(permits));
    let stream = futures::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|event| (Ok(event), received))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Moves a subscription's results to the client, on a blocking thread.
struct Pump {
    node: Arc<Node>,
    caller: Caller,
    sql: String,
    subscription: Subscription,
    events: mpsc::Sender<Event>,
    stopping: watch::Receiver<bool>,
}

impl Pump {
    fn run(self, _permits: (OwnedSemaphorePermit, Taken)) {
        let mut checked = self.node.db.auth_state();
        loop {
            if self.events.is_closed() || *self.stopping.borrow() {
                return;
            }
            if let Caller::App(app) = &self.caller {
                let now = self.node.db.auth_state();
                if !Arc::ptr_eq(&now, &checked) {
                    checked = now;
                    if let Err(error) = capability::check(&self.node.db, app, &self.sql) {
                        let _ =
                            self.events.blocking_send(json_event("error", &ErrorBody { error }));
                        return;
                    }
                }
            }
            if let Some(rows) = self.subscription.recv_timeout(TICK) {
                let rows = SqlOutput::from(rows);
                if self.events.blocking_send(json_event("rows", &rows)).is_err() {
                    return;
                }
            } else if let Some(ended) = self.subscription.ended() {
                let error = ApiError::query_timeout(ended.to_string());
                let _ = self.events.blocking_send(json_event("error", &ErrorBody { error }));
                return;
            }
        }
    }
}

/// An event named `name` with `data` as JSON.
fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default().event(name).json_data(data).unwrap_or_else(|_| Event::default().event(name))
}
