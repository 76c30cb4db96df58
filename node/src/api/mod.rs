//! The local HTTP API: JSON under `/v0/`, described by `node/openapi.json`.
//!
//! Every request carries `Authorization: Bearer <token>`: the owner token
//! (everything) or an app token (SQL and live queries within its grants).
//! Only an app asking for access, and polling its request, goes without.
//! Errors are `{"error": {"code", "message"}}` with a fitting status.
//! Database calls block, so operations run on tokio's blocking threads.
//! Web pages reach the app routes only, from the origin their app asked
//! from (`origin`); access requests are rate-limited (`throttle`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tokio::sync::{Semaphore, watch};

use crate::error::ApiError;
use crate::node::Node;
use crate::ops::{Caller, Op};

mod auth;
mod body;
mod limits;
mod live;
mod origin;
mod routes;
mod throttle;

/// Largest request body, except imports.
pub const BODY_LIMIT: usize = 2 << 20;
/// Largest import body.
pub const IMPORT_LIMIT: usize = 256 << 20;
/// Most live queries open at once.
pub const MAX_LIVE: usize = 64;
/// Most live queries one caller (the owner, or one app) may have open.
pub const MAX_LIVE_PER_CALLER: usize = 16;
/// Most `/v0/sql` statements one caller may have running at once: a
/// statement may run for its whole budget, so a few per token keep one
/// caller from taking every core.
pub const MAX_SQL_PER_CALLER: usize = 4;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// What every handler sees.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The node.
    pub node: Arc<Node>,
    /// Becomes true when the node shuts down: long requests end.
    pub stopping: watch::Receiver<bool>,
    /// Permits for live queries.
    pub live: Arc<Semaphore>,
    /// Live queries open per caller.
    pub live_per_caller: Arc<limits::PerCaller>,
    /// Statements running per caller.
    pub sql_per_caller: Arc<limits::PerCaller>,
    /// The `Host` values that name this API.
    pub hosts: origin::Hosts,
    /// How often apps may ask for access.
    pub throttle: Arc<throttle::Throttle>,
}

/// The API's routes, for an API bound to `address`.
pub fn router(node: Arc<Node>, stopping: watch::Receiver<bool>, address: SocketAddr) -> Router {
    let state = ApiState {
        hosts: origin::Hosts::of(address),
        throttle: Arc::new(throttle::Throttle::new(Instant::now())),
        node,
        stopping,
        live: Arc::new(Semaphore::new(MAX_LIVE)),
        live_per_caller: limits::PerCaller::new(
            MAX_LIVE_PER_CALLER,
            "live queries open",
            "close one first",
        ),
        sql_per_caller: limits::PerCaller::new(
            MAX_SQL_PER_CALLER,
            "statements running",
            "wait for one to end",
        ),
    };
    Router::new()
        .route("/v0/health", get(routes::health))
        .route("/v0/openapi.json", get(routes::openapi))
        .route("/v0/sql", post(routes::sql))
        .route("/v0/live", get(live::live))
        .route("/v0/schema", get(routes::show_schemas).post(routes::apply_schema))
        .route("/v0/apps", get(routes::list_apps))
        .route("/v0/apps/connect", get(routes::connect))
        .route("/v0/apps/{id}/revoke", post(routes::revoke))
        .route("/v0/apps/requests", get(routes::list_requests).post(routes::request_access))
        .route("/v0/apps/requests/{id}", get(routes::poll_request))
        .route("/v0/apps/requests/{id}/approve", post(routes::approve))
        .route("/v0/apps/requests/{id}/deny", post(routes::deny))
        .route("/v0/devices", get(routes::list_devices))
        .route("/v0/devices/invite", post(routes::invite))
        .route("/v0/devices/{id}", delete(routes::remove_device))
        .route("/v0/pins", get(routes::list_pins).post(routes::add_pin))
        .route("/v0/pins/{id}", delete(routes::remove_pin))
        .route("/v0/recovery", get(routes::show_recovery))
        .route("/v0/recovery/confirm", post(routes::confirm_recovery))
        .route("/v0/status", get(routes::status))
        .route("/v0/export", get(routes::export))
        .route("/v0/import", post(routes::import).layer(DefaultBodyLimit::max(IMPORT_LIMIT)))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), origin::guard))
        .with_state(state)
}

/// Runs `op` for `caller` on a blocking thread.
async fn run<O: Op>(state: &ApiState, caller: Caller, op: O) -> Result<O::Output, ApiError> {
    run_holding(state, caller, op, ()).await
}

/// Runs `op` for `caller` on a blocking thread, holding `held` (a slot of
/// the caller's) until the operation ends, even if the client goes away
/// before.
async fn run_holding<O: Op, H: Send + 'static>(
    state: &ApiState,
    caller: Caller,
    op: O,
    held: H,
) -> Result<O::Output, ApiError> {
    let node = Arc::clone(&state.node);
    tokio::task::spawn_blocking(move || {
        let output = op.run(&node, &caller);
        drop(held);
        output
    })
    .await
    .map_err(|error| ApiError::internal(format!("the operation failed: {error}")))?
}
