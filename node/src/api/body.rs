//! Request bodies and query strings, with errors in the API's format, and
//! the error response itself.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorBody};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A failure of the node is an error; a refusal for load (503 busy:
        // too many live queries) is the client's, worth a line at most.
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{}", self.message);
        } else if status.is_server_error() {
            tracing::info!("refused: {}", self.message);
        }
        let mut response = (status, Json(ErrorBody { error: self })).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the connection ends
            // with this answer: said, so that no client sends its next
            // request on it and meets a reset.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The raw body, within the route's size limit.
#[derive(Debug)]
pub(super) struct RawBody(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "the request body is too large: {}",
                    rejection.body_text()
                ))
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })
    }
}

/// A JSON body of type `T`.
#[derive(Debug)]
pub(super) struct JsonBody<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the body is not the JSON expected: {e}")))
    }
}

/// A query string of type `T`.
#[derive(Debug)]
pub(super) struct QueryArgs<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::from_request_parts(parts, state)
            .await
            .map(|Query(args)| QueryArgs(args))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// A path parameter of type `T` (a percent-decoded id), with errors in the
/// API's format: a segment that is not UTF-8 is a 400 like any bad input.
#[derive(Debug)]
pub(super) struct PathArg<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArg<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::from_request_parts(parts, state).await.map(|Path(arg)| PathArg(arg)).map_err(
            |rejection| {
                if rejection.status().is_server_error() {
                    ApiError::internal(rejection.body_text())
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            },
        )
    }
}
