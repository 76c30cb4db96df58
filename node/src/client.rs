//! A small blocking client of a running node's API, for the CLI.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use crate::error::ErrorBody;
use crate::ops::{Body, Method, Route};

/// How long to wait for a node to show it is there.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The API of the node at one address, with the owner token.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl ApiClient {
    /// A client of the API at `address`.
    pub fn new(address: SocketAddr, owner_token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .build()
            .new_agent();
        Self {
            base: format!("http://{address}/v0/"),
            authorization: format!("Bearer {owner_token}"),
            agent,
        }
    }

    /// Whether a node answers at the address.
    pub fn answers(&self) -> bool {
        self.agent
            .get(format!("{}health", self.base))
            .config()
            .timeout_global(Some(PING_TIMEOUT))
            .build()
            .call()
            .is_ok_and(|response| response.status().is_success())
    }

    /// Sends `route` and decodes the JSON answer.
    pub fn call<T: DeserializeOwned>(&self, route: Route) -> anyhow::Result<T> {
        let body = self.send(route)?;
        serde_json::from_slice(&body).context("the node's answer is not the JSON expected")
    }

    /// Sends `route` and returns the answer's body; an error answer becomes
    /// an error with the node's message.
    pub fn send(&self, route: Route) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{}", self.base, route.path);
        let auth = self.authorization.as_str();
        let response = match (route.method, route.body) {
            (Method::Get, _) => self.agent.get(&url).header("authorization", auth).call(),
            (Method::Delete, _) => self.agent.delete(&url).header("authorization", auth).call(),
            (Method::Post, None) => {
                self.agent.post(&url).header("authorization", auth).send_empty()
            }
            (Method::Post, Some(Body::Json(json))) => self
                .agent
                .post(&url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .send(json),
            (Method::Post, Some(Body::JsonLines(bytes))) => self
                .agent
                .post(&url)
                .header("authorization", auth)
                .header("content-type", "application/x-ndjson")
                .send(bytes),
        };
        let mut response =
            response.with_context(|| format!("cannot reach the node's API at {}", self.base))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .with_context(|| format!("cannot read the node's answer from {}", self.base))?;
        if status.is_success() {
            return Ok(body);
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => bail!(error),
            Err(_) => bail!("the node answered {status}"),
        }
    }
}
