//! `GET /v0/live?sql=…&params=[…]`: a live query as Server-Sent Events.
//!
//! The first `rows` event carries the result now; another follows each
//! time a write or a received commit changes it. An app's stream ends with
//! an `error` event as soon as its grant no longer covers the query. The
//! stream ends when the client goes away or the node shuts down.

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
use crate::capability;
use crate::error::{ApiError, ErrorBody};
use crate::node::Node;
use crate::ops::Caller;
use crate::ops::sql::SqlOutput;
use crate::wire;

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
    let params = wire::params_from_json(&params).map_err(ApiError::bad_request)?;
    let permit = Arc::clone(&state.live).try_acquire_owned().map_err(|_| ApiError {
        status: 503,
        code: "busy".into(),
        message: format!("{} live queries are open already: close one first", super::MAX_LIVE),
    })?;
    let node = Arc::clone(&state.node);
    let sql = query.sql;
    let subscription = {
        let (node, sql, caller) = (Arc::clone(&node), sql.clone(), caller.clone());
        tokio::task::spawn_blocking(move || {
            if let Caller::App(app) = &caller {
                capability::check(&node.db, app, &sql)?;
            }
            node.db
                .subscribe(&sql, &params, None)
                .map_err(|e| crate::ops::sql::statement_error(e, params.len()))
        })
        .await
        .map_err(|e| ApiError::internal(format!("the live query failed: {e}")))??
    };
    let (events, received) = mpsc::channel::<Event>(4);
    let pump = Pump { node, caller, sql, subscription, events, stopping: state.stopping.clone() };
    tokio::task::spawn_blocking(move || pump.run(permit));
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
    fn run(self, _permit: OwnedSemaphorePermit) {
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
            }
        }
    }
}

/// An event named `name` with `data` as JSON.
fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default().event(name).json_data(data).unwrap_or_else(|_| Event::default().event(name))
}
