//! Who may call the API from a web page, and from which address.
//!
//! Every request passes [`guard`] before its route:
//!
//! - **Host.** The `Host` header must name the API: `localhost` or an IP
//!   address, with the API's port. A page that rebinds its own DNS name to
//!   127.0.0.1 reaches the port, but its requests carry its name, and are
//!   refused with 421 `wrong_host` before anything runs.
//! - **Owner routes** (everything but the app routes below, `/v0/health`
//!   and `/v0/openapi.json`) never answer a page: no CORS header ever, so
//!   a preflight fails (405) and a page cannot read an answer; and every
//!   token is refused on them from a page ([`super::auth`]: the owner
//!   token with any `Origin`, an app's token is not the owner's).
//! - **App routes** (`POST /v0/sql`, `GET /v0/live`, `POST
//!   /v0/apps/requests`, `GET /v0/apps/requests/{id}`) answer a CORS
//!   preflight with the exact origin of a pending or approved web app (any
//!   origin but `null` for `POST /v0/apps/requests`, where an app first
//!   asks), never `*`, and a Private Network Access preflight the same way;
//!   their answers carry `Access-Control-Allow-Origin` for such an origin
//!   only. Which token is accepted from which origin is checked with the
//!   token ([`super::auth`]).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, HOST,
    ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::error::ApiError;

/// The request header of a Private Network Access preflight.
const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";
/// Its answer.
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";
/// How long a browser may keep a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";
/// The longest origin taken.
const MAX_ORIGIN_LEN: usize = 256;

/// The `Host` values that name this API: `localhost` or an IP address,
/// with its port. DNS rebinding needs a name of the attacker's, so no
/// other name is taken; an IP address is, which keeps an API bound to a
/// LAN address (`--api-public`) reachable by its address.
#[derive(Debug, Clone, Copy)]
pub struct Hosts {
    port: u16,
}

impl Hosts {
    /// The names of an API bound to `address`.
    pub fn of(address: SocketAddr) -> Self {
        Self { port: address.port() }
    }

    /// Whether `host` (a `Host` header) names this API.
    fn allows(self, host: &str) -> bool {
        let Some((name, port)) = host.rsplit_once(':') else { return false };
        if port.parse() != Ok(self.port) {
            return false;
        }
        let address = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => name.parse::<Ipv4Addr>().is_ok(),
        };
        address || name.eq_ignore_ascii_case("localhost")
    }
}

/// What kind of route a path is, for CORS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `POST /v0/apps/requests`: where a web app first asks.
    Ask,
    /// A route an app uses once it asked.
    App(&'static str),
    /// Any other: no CORS.
    Other,
}

impl Route {
    fn of(method: &Method, path: &str) -> Self {
        let preflight = method == Method::OPTIONS;
        match path {
            "/v0/apps/requests" if preflight || method == Method::POST => Route::Ask,
            "/v0/sql" => Route::App("POST"),
            "/v0/live" => Route::App("GET"),
            _ => match path.strip_prefix("/v0/apps/requests/") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    if preflight || method == Method::GET {
                        Route::App("GET")
                    } else {
                        Route::Other
                    }
                }
                _ => Route::Other,
            },
        }
    }

    /// The methods a preflight for this route may allow.
    fn methods(self) -> &'static str {
        match self {
            Route::Ask => "POST",
            Route::App(method) => method,
            Route::Other => "",
        }
    }
}

/// A browser origin as its `Origin` header gives it: `scheme://host[:port]`
/// over http or https, no path. `null` (sandboxed pages, files) is none.
pub(super) fn parse_origin(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let rest = text.strip_prefix("http://").or_else(|| text.strip_prefix("https://"))?;
    let fine = text.len() <= MAX_ORIGIN_LEN
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    fine.then_some(text)
}

/// The refusal of a request from a page that may not make it: 403
/// `origin_refused`.
pub(super) fn origin_refused(message: impl Into<String>) -> ApiError {
    ApiError { status: 403, code: "origin_refused".into(), message: message.into() }
}

/// Checks `Host` and `Origin`, answers CORS preflights, and adds CORS
/// headers to the answers of app routes for origins they serve.
pub(super) async fn guard(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|host| state.hosts.allows(host)) {
        return ApiError {
            status: 421,
            code: "wrong_host".into(),
            message: "the Host header does not name this API: localhost or an IP address, \
                with its port"
                .into(),
        }
        .into_response();
    }
    let route = Route::of(request.method(), request.uri().path());
    let app_route = matches!(route, Route::Ask | Route::App(_));
    let preflight = app_route && request.method() == Method::OPTIONS;
    let origin = request.headers().get(ORIGIN).cloned();
    let allowed = match (route, origin.as_ref().and_then(parse_origin)) {
        (Route::Ask, Some(_)) => true,
        (Route::App(_), Some(text)) => state.node.apps.knows_origin(text),
        _ => false,
    };
    let origin = match (origin, app_route) {
        (Some(origin), true) => origin,
        (None, true) if preflight => {
            return origin_refused("a preflight names its origin").into_response();
        }
        // Not from a page; or not an app route: the owner's routes and the
        // public ones get no CORS header, so no page reads their answers,
        // and the owner's refuse every token from a page (`super::auth`).
        _ => return next.run(request).await,
    };
    if preflight {
        if !allowed {
            return origin_refused("this origin has no pending or approved app").into_response();
        }
        let method = request.headers().get(ACCESS_CONTROL_REQUEST_METHOD);
        if method.is_none_or(|method| method.as_bytes() != route.methods().as_bytes()) {
            return origin_refused(format!("this route takes {} only", route.methods()))
                .into_response();
        }
        let private = request.headers().get(REQUEST_PRIVATE_NETWORK);
        if private.is_some_and(|value| value != "true") {
            return origin_refused(format!("{REQUEST_PRIVATE_NETWORK} is `true` or absent"))
                .into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow(headers, origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(route.methods()));
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
        if private.is_some() {
            headers.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        return response;
    }
    let mut response: Response<Body> = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("origin"));
    if allowed {
        allow(headers, origin);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
    }
    response
}

/// Lets `origin`, exactly, read the answer.
fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_must_name_the_api() {
        let hosts = Hosts::of("127.0.0.1:7878".parse().unwrap());
        for fine in
            ["127.0.0.1:7878", "localhost:7878", "LOCALHOST:7878", "[::1]:7878", "192.0.2.7:7878"]
        {
            assert!(hosts.allows(fine), "{fine}");
        }
        for refused in [
            "evil.example:7878",
            "localhost.evil.example:7878",
            "127.0.0.1:7879",
            "localhost",
            "127.0.0.1",
            "::1:7878",
            "[127.0.0.1]:7878",
            "127.1:7878",
            "",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }

    #[test]
    fn origins_are_http_or_https_without_a_path() {
        let parse =
            |text: &'static str| parse_origin(&HeaderValue::from_static(text)).map(str::to_owned);
        assert_eq!(parse("http://localhost:5173").as_deref(), Some("http://localhost:5173"));
        assert_eq!(parse("https://app.example").as_deref(), Some("https://app.example"));
        for refused in ["null", "file://", "http://", "http://a/b", "ftp://a", "http://a b"] {
            assert_eq!(parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn routes_are_classified_by_method_and_path() {
        assert_eq!(Route::of(&Method::POST, "/v0/apps/requests"), Route::Ask);
        assert_eq!(Route::of(&Method::GET, "/v0/apps/requests"), Route::Other);
        assert_eq!(Route::of(&Method::GET, "/v0/apps/requests/ab12"), Route::App("GET"));
        assert_eq!(Route::of(&Method::POST, "/v0/apps/requests/ab12/approve"), Route::Other);
        assert_eq!(Route::of(&Method::OPTIONS, "/v0/sql"), Route::App("POST"));
        assert_eq!(Route::of(&Method::GET, "/v0/status"), Route::Other);
        assert_eq!(Route::of(&Method::GET, "/v0/health"), Route::Other);
    }
}
