//! Schemas: showing and applying them.
//!
//! A schema keeps the order of its file (tables, columns) on every path:
//! it travels as JSON text serialised from the [`Schema`] itself, never
//! through a `serde_json::Value`, whose maps would sort the columns.

use basic_store::{Format, Schema};
use serde::{Deserialize, Serialize};

use super::{Caller, Op, Route};
use crate::error::ApiError;
use crate::node::Node;

/// `GET /v0/schema`: every namespace's schema, in canonical JSON form
/// (tables and columns in their order), by namespace.
#[derive(Debug, Clone, Copy)]
pub struct ShowSchemas;

impl Op for ShowSchemas {
    type Output = Vec<Schema>;

    fn route(self) -> Route {
        Route::get("schema")
    }

    fn run(self, node: &Node, caller: &Caller) -> Result<Vec<Schema>, ApiError> {
        caller.require_owner()?;
        Ok(node.db.catalog().schemas().cloned().collect())
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
        Route::post("schema", &self.schema)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Body;

    #[test]
    fn the_request_keeps_the_column_order() {
        let text = r#"{"namespace": "n", "tables": {"t": {"primary_key": ["z"],
            "columns": {"z": "text", "b": "text", "a": "text"}}}}"#;
        let schema = Schema::parse(text, Format::Json).unwrap();
        let Some(Body::Json(body)) = ApplySchema { schema: schema.clone() }.route().body else {
            panic!("a JSON body");
        };
        assert_eq!(body, schema.to_json());
        assert_eq!(ApplySchema::from_json(&body).unwrap().schema, schema);
    }
}
