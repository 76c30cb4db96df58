//! Who is asking: the bearer token of a request, and the page it comes
//! from.
//!
//! The owner token is refused on any request that carries an `Origin`: a
//! web page never holds it. An app token issued to a web app is accepted
//! only with the exact `Origin` its app asked from; any other app token
//! only without an `Origin`. So a token stolen from a page is of no use to
//! a page of another origin, nor to a request that leaves the header out.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, ORIGIN};
use axum::http::request::Parts;

use super::ApiState;
use super::origin::origin_refused as refused;
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
        // Raw bytes: an origin that is not text still counts as present.
        let origin = parts.headers.get(ORIGIN).map(|value| value.as_bytes());
        if state.node.owner.matches(token) {
            return match origin {
                None => Ok(Caller::Owner),
                Some(_) => Err(refused("the owner token is not accepted from a web page")),
            };
        }
        let Some(holder) = state.node.apps.holder(token) else {
            return Err(ApiError::unauthorized("unknown token"));
        };
        match (holder.origin.as_deref(), origin) {
            (None, None) => Ok(Caller::App(Box::new(holder.app))),
            (Some(bound), Some(origin)) if bound.as_bytes() == origin => {
                Ok(Caller::App(Box::new(holder.app)))
            }
            (Some(bound), _) => {
                Err(refused(format!("this token works only from the web page at {bound}")))
            }
            (None, Some(_)) => {
                Err(refused("this token is of an app outside a browser: no web page may use it"))
            }
        }
    }
}
