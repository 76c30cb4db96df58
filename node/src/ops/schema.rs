//! Schemas: showing and applying them.

use basic_store::{Format, Schema};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{Caller, Op, Route};
use crate::error::ApiError;
use crate::node::Node;

/// `GET /v0/schema`: every namespace's schema, in canonical JSON form.
#[derive(Debug, Clone, Copy)]
pub struct ShowSchemas;

impl Op for ShowSchemas {
    type Output = Vec<Json>;

    fn route(self) -> Route {
        Route::get("schema")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Vec<Json>, ApiError> {
        caller.require_owner()?;
        node.db
            .catalog()
            .schemas()
            .map(|schema| {
                serde_json::from_str(&schema.to_json())
                    .map_err(|e| ApiError::internal(e.to_string()))
            })
            .collect()
    }
}

/// `POST /v0/schema`: applies a schema (the body is the schema as JSON).
#[derive(Debug, Clone)]
pub struct ApplySchema {
    /// The schema.
    pub schema: Schema,
}

impl ApplySchema {
    /// Reads a schema document sent as JSON.
    pub fn from_json(text: &str) -> Result<Self, ApiError> {
        Schema::parse(text, Format::Json)
            .map(|schema| Self { schema })
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

/// What applying a schema added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The namespace.
    pub namespace: String,
    /// New tables.
    pub tables: Vec<String>,
    /// New columns, as `namespace.table.column`.
    pub columns: Vec<String>,
    /// New indexes.
    pub indexes: Vec<String>,
}

impl Op for ApplySchema {
    type Output = Applied;

    fn route(self) -> Route {
        // Invariant: `Schema::to_json` writes a JSON document.
        let body: Json = serde_json::from_str(&self.schema.to_json()).unwrap_or(Json::Null);
        Route::post("schema", &body)
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Applied, ApiError> {
        caller.require_owner()?;
        let migration = node.db.apply_schema(self.schema)?;
        Ok(Applied {
            namespace: migration.namespace.to_string(),
            tables: migration.tables.iter().map(|t| t.name().to_string()).collect(),
            columns: migration
                .columns
                .iter()
                .map(|c| format!("{}.{}", c.table, c.column.name))
                .collect(),
            indexes: migration.indexes.iter().map(|i| i.name.clone()).collect(),
        })
    }
}
