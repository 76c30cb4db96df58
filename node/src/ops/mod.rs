//! The node's operations, one type per operation.
//!
//! Each operation runs against a [`Node`] on behalf of a [`Caller`] and
//! knows its HTTP route. The API server runs them for requests; the CLI
//! runs the same ones either directly on the database (no node running)
//! or by sending them to the running node's API
//! ([`crate::backend::Backend`]). So there is one code path per command.

use basic_proto::PublicKey;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::node::Node;

pub mod apps;
pub mod devices;
pub mod pins;
pub mod recovery;
pub mod schema;
pub mod sql;
pub mod status;
pub mod transfer;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The owner: the CLI, or a holder of the owner token.
    Owner,
    /// An app, by the key its token was issued for.
    App(Box<PublicKey>),
    /// No token: only an app asking for access, or polling its request.
    Anyone,
}

impl Caller {
    /// Fails unless the caller is the owner.
    pub fn require_owner(&self) -> Result<(), ApiError> {
        match self {
            Caller::Owner => Ok(()),
            Caller::App(_) => Err(ApiError::forbidden("this needs the owner token")),
            Caller::Anyone => Err(ApiError::unauthorized("this needs the owner token")),
        }
    }
}

/// An HTTP method of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// JSON text, as serialised from the operation: never through a
    /// `serde_json::Value`, whose maps would sort the members (a schema's
    /// columns, for one).
    Json(String),
    /// A JSON lines file.
    JsonLines(Vec<u8>),
}

/// Where an operation goes in the API.
#[derive(Debug, Clone)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path and query, from `/v0/`.
    pub path: String,
    /// The body, if any.
    pub body: Option<Body>,
}

impl Route {
    /// A GET of `path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self { method: Method::Get, path: path.into(), body: None }
    }

    /// A POST to `path` with `body` as JSON, its members in the order
    /// `body` serialises them.
    pub fn post(path: impl Into<String>, body: &impl Serialize) -> Self {
        // Invariant: the operations' bodies are plain structs with string
        // keys, which serialise to JSON without fail.
        let body = serde_json::to_string(body).unwrap_or_else(|_| "null".to_owned());
        Self { method: Method::Post, path: path.into(), body: Some(Body::Json(body)) }
    }

    /// A DELETE of `path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self { method: Method::Delete, path: path.into(), body: None }
    }
}

/// `text` made safe as a URL path segment or query value: characters
/// other than ASCII letters, digits, `-`, `_` and `.` are percent-encoded.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One operation of the node.
pub trait Op: Send + 'static {
    /// What it returns (JSON in the API).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Its request in the API.
    fn route(self) -> Route;

    /// Runs it. Blocking: the API calls it on a blocking thread.
    fn run(self, node: &Node, caller: &Caller) -> Result<Self::Output, ApiError>;
}

/// An empty JSON object, for operations with nothing to say.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Done {}
