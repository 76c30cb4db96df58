//! Who is asking: the bearer token of a request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiState;
use crate::error::ApiError;
use crate::ops::Caller;

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing the header Authorization: Bearer <token>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be: Bearer <token>")
            })?;
        if state.node.owner.matches(token) {
            return Ok(Caller::Owner);
        }
        match state.node.apps.app_of(token) {
            Some(app) => Ok(Caller::App(Box::new(app))),
            None => Err(ApiError::unauthorized("unknown token")),
        }
    }
}
