//! Export and import.

use std::collections::BTreeMap;
use std::io::Cursor;

use basic_proto::Name;
use serde::{Deserialize, Serialize};

use super::{Body, Caller, Method, Op, Route, encode};
use crate::error::ApiError;
use crate::node::Node;
use crate::tokens::random_secret;

/// `GET /v0/export?namespace=N&format=jsonl|sqlite`: the database, or one
/// namespace, as a file. Not an [`Op`]: its answer is the file itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Export {
    /// Only this namespace (and the schemas it references).
    pub namespace: Option<String>,
    /// The file's format.
    #[serde(default)]
    pub format: ExportFormat,
}

/// The format of an export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// JSON lines: a header with the schemas, then one line per row.
    #[default]
    Jsonl,
    /// A standalone SQLite file.
    Sqlite,
}

impl Export {
    /// Its request in the API.
    pub fn route(&self) -> Route {
        let format = match self.format {
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Sqlite => "sqlite",
        };
        let namespace = self
            .namespace
            .as_ref()
            .map(|n| format!("&namespace={}", encode(n)))
            .unwrap_or_default();
        Route::get(format!("export?format={format}{namespace}"))
    }

    /// The exported file.
    pub fn run(self, node: &Node, caller: &Caller) -> Result<Vec<u8>, ApiError> {
        caller.require_owner()?;
        let namespace = self
            .namespace
            .map(|n| Name::new(n.clone()).map_err(|e| ApiError::bad_request(format!("{n:?}: {e}"))))
            .transpose()?;
        match self.format {
            ExportFormat::Jsonl => {
                let mut out = Vec::new();
                node.db.export_jsonl(namespace.as_ref(), &mut out)?;
                Ok(out)
            }
            ExportFormat::Sqlite => {
                // The store writes SQLite files only to a path of its own.
                let path = node.data.root().join(format!("export-{}.sqlite", random_secret()));
                let result = node.db.export_sqlite(namespace.as_ref(), &path);
                let bytes = result.map_err(ApiError::from).and_then(|_| {
                    std::fs::read(&path).map_err(|e| ApiError::internal(e.to_string()))
                });
                // Best effort: the file is ours and temporary.
                let _ = std::fs::remove_file(&path);
                bytes
            }
        }
    }
}

/// `POST /v0/import` with a JSON lines export as the body.
#[derive(Debug, Clone)]
pub struct Import {
    /// The file.
    pub jsonl: Vec<u8>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// Namespaces whose schema it applied.
    pub schemas_applied: Vec<String>,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// Rows in all.
    pub rows: u64,
    /// Commits written.
    pub commits: usize,
}

impl Op for Import {
    type Output = Imported;

    fn route(self) -> Route {
        Route {
            method: Method::Post,
            path: "import".into(),
            body: Some(Body::JsonLines(self.jsonl)),
        }
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Imported, ApiError> {
        caller.require_owner()?;
        let summary = node.db.import_jsonl(Cursor::new(self.jsonl), None)?;
        Ok(Imported {
            schemas_applied: summary.schemas_applied.iter().map(ToString::to_string).collect(),
            tables: summary.tables.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            rows: summary.rows,
            commits: summary.commits,
        })
    }
}
