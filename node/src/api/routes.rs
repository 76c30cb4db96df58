//! The API's handlers: each turns a request into an operation and runs it.

use axum::Json;
use axum::extract::State;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::body::{JsonBody, PathArg, QueryArgs, RawBody};
use super::limits::PerCaller;
use super::origin::parse_origin;
use super::{ApiState, OPENAPI, run, run_holding};
use crate::error::ApiError;
use crate::ops::Caller;
use crate::ops::apps::{
    Answer, Connect, ListApps, ListRequests, PollRequest, RequestAccess, RequestMade, Revoke,
};
use crate::ops::devices::{Invite, ListDevices, RemoveDevice};
use crate::ops::pins::{AddPin, ListPins, RemovePin};
use crate::ops::schema::{ApplySchema, ShowSchemas};
use crate::ops::sql::Sql;
use crate::ops::status::Status;
use crate::ops::transfer::{Export, ExportFormat, Import};

type Answered<T> = Result<Json<T>, ApiError>;

/// `GET /v0/health` (no token): whether the node answers, and whether its
/// database still takes writes (503 with the reason once a storage failure
/// has stopped it; `removed` once this device learnt it was removed).
pub(super) async fn health(State(state): State<ApiState>) -> Response {
    match state.node.db.failure() {
        None if state.node.db.is_removed() => Json(json!({
            "status": "removed",
            "reason": crate::ops::status::REMOVED,
        }))
        .into_response(),
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "failed",
                "reason": format!(
                    "the database stopped after a storage failure ({reason}); restart the node"
                ),
            })),
        )
            .into_response(),
    }
}

/// `GET /v0/openapi.json` (no token).
pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Unknown paths.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /v0/openapi.json)")
}

/// Known paths with another method.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError {
        status: 405,
        code: "method_not_allowed".into(),
        message: "this endpoint does not take this method (see /v0/openapi.json)".into(),
    }
}

/// `POST /v0/sql`: at most [`super::MAX_SQL_PER_CALLER`] at once per
/// token (503 `busy` beyond).
pub(super) async fn sql(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(op): JsonBody<Sql>,
) -> Answered<crate::ops::sql::SqlOutput> {
    let slot = PerCaller::take(&state.sql_per_caller, &caller)?;
    run_holding(&state, caller, op, slot).await.map(Json)
}

pub(super) async fn show_schemas(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<Vec<basic_store::Schema>> {
    run(&state, caller, ShowSchemas).await.map(Json)
}

pub(super) async fn apply_schema(
    State(state): State<ApiState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Answered<crate::ops::schema::Applied> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the schema is not UTF-8 text"))?;
    run(&state, caller, ApplySchema::from_json(text)?).await.map(Json)
}

/// `POST /v0/apps/requests` (no token): records the page's `Origin` (a
/// header, never a body field), within the rate limits of
/// [`super::throttle`].
pub(super) async fn request_access(
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(op): JsonBody<RequestAccess>,
) -> Result<Response, ApiError> {
    let origin = match headers.get(header::ORIGIN) {
        None => None,
        Some(value) => Some(parse_origin(value).ok_or_else(|| {
            ApiError::bad_request(
                "a web app asks from a page with an http or https origin (not `null`)",
            )
        })?),
    };
    if let Err(wait) = state.throttle.take(origin.unwrap_or(""), Instant::now()) {
        let error = ApiError {
            status: 429,
            code: "too_many_requests".into(),
            message: format!(
                "too many access requests{}: ask again in {} s",
                if origin.is_some() { " from this origin" } else { "" },
                wait.as_secs()
            ),
        };
        return Ok(([(header::RETRY_AFTER, wait.as_secs().to_string())], error).into_response());
    }
    let op = RequestAccess { origin: origin.map(str::to_owned), ..op };
    let made: RequestMade = run(&state, Caller::Anyone, op).await?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// The query of a poll.
#[derive(Debug, Deserialize)]
pub(super) struct Secret {
    secret: String,
}

pub(super) async fn poll_request(
    State(state): State<ApiState>,
    PathArg(id): PathArg<String>,
    QueryArgs(Secret { secret }): QueryArgs<Secret>,
) -> Answered<crate::ops::apps::RequestState> {
    run(&state, Caller::Anyone, PollRequest { id, secret }).await.map(Json)
}

pub(super) async fn list_requests(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<Vec<crate::ops::apps::RequestInfo>> {
    run(&state, caller, ListRequests).await.map(Json)
}

pub(super) async fn approve(
    State(state): State<ApiState>,
    caller: Caller,
    PathArg(id): PathArg<String>,
) -> Answered<crate::ops::apps::RequestInfo> {
    run(&state, caller, Answer { id, approve: true }).await.map(Json)
}

pub(super) async fn deny(
    State(state): State<ApiState>,
    caller: Caller,
    PathArg(id): PathArg<String>,
) -> Answered<crate::ops::apps::RequestInfo> {
    run(&state, caller, Answer { id, approve: false }).await.map(Json)
}

pub(super) async fn connect(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<crate::ops::apps::ConnectCode> {
    run(&state, caller, Connect).await.map(Json)
}

pub(super) async fn list_apps(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<Vec<crate::ops::apps::AppEntry>> {
    run(&state, caller, ListApps).await.map(Json)
}

pub(super) async fn revoke(
    State(state): State<ApiState>,
    caller: Caller,
    PathArg(id): PathArg<String>,
    JsonBody(op): JsonBody<Revoke>,
) -> Answered<crate::ops::apps::Revoked> {
    run(&state, caller, Revoke { id, ..op }).await.map(Json)
}

pub(super) async fn list_devices(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<Vec<crate::ops::devices::DeviceInfo>> {
    run(&state, caller, ListDevices).await.map(Json)
}

pub(super) async fn invite(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(op): JsonBody<Invite>,
) -> Answered<crate::ops::devices::InviteOutput> {
    run(&state, caller, op).await.map(Json)
}

pub(super) async fn remove_device(
    State(state): State<ApiState>,
    caller: Caller,
    PathArg(id): PathArg<String>,
) -> Answered<crate::ops::Done> {
    run(&state, caller, RemoveDevice { id }).await.map(Json)
}

pub(super) async fn list_pins(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<Vec<crate::ops::pins::PinInfo>> {
    run(&state, caller, ListPins).await.map(Json)
}

pub(super) async fn add_pin(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(op): JsonBody<AddPin>,
) -> Answered<crate::ops::Done> {
    run(&state, caller, op).await.map(Json)
}

pub(super) async fn remove_pin(
    State(state): State<ApiState>,
    caller: Caller,
    PathArg(id): PathArg<String>,
) -> Answered<crate::ops::Done> {
    run(&state, caller, RemovePin { id }).await.map(Json)
}

pub(super) async fn show_recovery(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<crate::ops::recovery::RecoveryInfo> {
    run(&state, caller, crate::ops::recovery::ShowRecovery).await.map(Json)
}

pub(super) async fn confirm_recovery(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<crate::ops::recovery::Confirmed> {
    run(&state, caller, crate::ops::recovery::ConfirmRecovery).await.map(Json)
}

pub(super) async fn status(
    State(state): State<ApiState>,
    caller: Caller,
) -> Answered<crate::ops::status::StatusOutput> {
    run(&state, caller, Status).await.map(Json)
}

pub(super) async fn export(
    State(state): State<ApiState>,
    caller: Caller,
    QueryArgs(export): QueryArgs<Export>,
) -> Result<Response, ApiError> {
    let content_type = match export.format {
        ExportFormat::Jsonl => "application/x-ndjson",
        ExportFormat::Sqlite => "application/vnd.sqlite3",
    };
    let node = std::sync::Arc::clone(&state.node);
    let bytes = tokio::task::spawn_blocking(move || export.run(&node, &caller))
        .await
        .map_err(|error| ApiError::internal(format!("the export failed: {error}")))??;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

pub(super) async fn import(
    State(state): State<ApiState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Answered<crate::ops::transfer::Imported> {
    run(&state, caller, Import { jsonl: body.to_vec() }).await.map(Json)
}
