//! The Basic node: the `basic` command line, the node it runs (`basic up`)
//! and its local HTTP API.
//!
//! Operations ([`ops`]) run against a [`node::Node`] — the database and the
//! node's files in the data directory ([`paths`]). The API ([`api`]) runs
//! them for HTTP requests, checking tokens ([`tokens`]) and app grants
//! ([`capability`]); the CLI ([`commands`]) runs them through the running
//! node's API or directly on the database ([`backend`]).

pub mod api;
pub mod attribution;
pub mod backend;
pub mod capability;
pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod join;
pub mod node;
pub mod ops;
pub mod paths;
pub mod status;
pub mod tokens;
pub mod wire;
