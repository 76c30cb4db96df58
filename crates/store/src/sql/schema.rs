//! Schemas: the tables of one namespace, and the catalog of a database.
//!
//! An app describes the tables of its *namespace* (such as `todo`) in a TOML
//! or JSON file. [`Schema::from_file`] and [`Schema::parse`] read it into a
//! checked [`Schema`]; a [`Catalog`] holds the schemas of every namespace of
//! one database and takes a new version of a namespace only if it adds to
//! the current one ([`Catalog::plan`], [`Catalog::apply`]).
//!
//! # The file
//!
//! ```toml
//! namespace = "todo"
//!
//! [tables.lists]
//! primary_key = ["id"]
//! [tables.lists.columns]
//! id = "text"                                   # shorthand: just the type
//! name = "text"
//! created_at = { type = "timestamp", nullable = true }
//!
//! [tables.items]
//! primary_key = ["id"]
//! [tables.items.columns]
//! id = "text"
//! list = { type = "reference", table = "lists" }   # or "other_namespace.table"
//! done = { type = "bool", default = false }
//! [[tables.items.indexes]]
//! columns = ["list", "done"]
//! ```
//!
//! The JSON form has the same shape (`{"namespace": "todo", "tables":
//! {"lists": {"primary_key": ["id"], "columns": {"id": "text"}}}}`).
//! Unknown keys are errors, so a typo such as `nulable` does not pass
//! silently.
//!
//! - **Names.** The namespace, table and column names are identifiers:
//!   1–32 characters of `a-z 0-9 _`, not starting with a digit. A table's
//!   full name is `namespace.table`.
//! - **Order.** Columns keep the order of the file (the order of
//!   `SELECT *`); so do tables. A new version keeps the existing columns
//!   first, in their order, and adds new ones after them.
//! - **Types**: `text`, `integer`, `real`, `bool`, `bytes`, `timestamp`
//!   (microseconds since 1970-01-01T00:00:00Z), `json`, and `reference`
//!   with `table = "t"` (same namespace) or `"namespace.t"`. A referenced
//!   table must exist and have a one-column key; a reference holds values of
//!   that key's type. Columns are not nullable unless `nullable = true`.
//! - **Primary key**: 1–8 columns of type integer, text, bytes or
//!   reference; never nullable, no default.
//! - **Defaults** must fit the column: `bool` true/false, `integer` an
//!   integer, `real` a number (integers are taken exactly), `text` a string,
//!   `bytes` a string of hex digits (`"00ff"`), `timestamp` integer
//!   microseconds or an RFC 3339 date-time with an offset
//!   (`"2024-01-31T09:00:00Z"`, or a TOML date-time), `json` a string of
//!   JSON text (`'{"a": 1}'`) or any other value, stored as compact JSON
//!   text. A reference has no default. In JSON, `"default": null` means no
//!   default. A column with no cell in a row reads as its default (or NULL).
//! - **Indexes**: 1–8 distinct columns each, named
//!   `namespace.table.by_col1_col2`. Unique indexes are refused: devices
//!   write concurrently and offline, so no device can enforce uniqueness
//!   for the others.
//!
//! # Changing a schema
//!
//! A new version of a namespace may add tables, columns that are nullable
//! or have a default, and indexes. Everything else is refused with a
//! [`Refusal`] saying why: rows written under the current version must stay
//! readable, with the same meaning, by every app and device.
//!
//! ```
//! use basic_store::{Catalog, Format, Schema};
//!
//! let v1 = r#"
//!     namespace = "todo"
//!     [tables.items]
//!     primary_key = ["id"]
//!     columns = { id = "text", title = "text" }
//! "#;
//! let mut catalog = Catalog::new();
//! catalog.apply(Schema::parse(v1, Format::Toml)?)?;
//!
//! let v2 = r#"
//!     namespace = "todo"
//!     [tables.items]
//!     primary_key = ["id"]
//!     columns = { id = "text", title = "text", done = { type = "bool", default = false } }
//! "#;
//! let migration = catalog.apply(Schema::parse(v2, Format::Toml)?)?;
//! assert_eq!(migration.columns[0].column.name.as_str(), "done");
//!
//! let v3 = r#"
//!     namespace = "todo"
//!     [tables.items]
//!     primary_key = ["id"]
//!     columns = { id = "text", done = { type = "bool", default = false } }
//! "#;
//! let refused = catalog.plan(&Schema::parse(v3, Format::Toml)?).unwrap_err();
//! assert!(refused.to_string().starts_with("todo.items.title: column dropped"));
//! # Ok::<(), basic_store::SchemaError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use basic_proto::value::{MAX_KEY_PARTS, MAX_VALUE_LEN};
use basic_proto::{ColumnDef, ColumnType, Name, Value};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::value::{Datetime, Offset};

/// Longest namespace, table or column name, in bytes.
pub(crate) const MAX_IDENT_LEN: usize = 32;
/// Most tables in one namespace.
pub(crate) const MAX_TABLES: usize = 256;
/// Most columns in one table.
pub(crate) const MAX_COLUMNS: usize = 256;
/// Most indexes on one table.
pub(crate) const MAX_INDEXES: usize = 32;
/// Most columns in one index.
pub(crate) const MAX_INDEX_COLUMNS: usize = 8;
/// Largest schema text, in bytes.
pub(crate) const MAX_SCHEMA_LEN: usize = 1 << 20;

/// The two file formats of a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format named by a path's extension (`.toml` or `.json`, in any
    /// case), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("toml") {
            Some(Format::Toml)
        } else if ext.eq_ignore_ascii_case("json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}

/// Why a schema was not read, or a new version of it not accepted.
///
/// Messages start with where the problem is: the file, then the namespace,
/// table (`todo.items`), column (`todo.items.list`) or index
/// (`todo.items index (list, done)`).
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file could not be read.
    #[error("{}: cannot read: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A problem in a file.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The problem.
        error: Box<SchemaError>,
    },
    /// The text is over 1 MiB.
    #[error("the schema is {len} bytes long; the limit is {MAX_SCHEMA_LEN}")]
    TooLarge {
        /// Its length, or `MAX_SCHEMA_LEN + 1` for a file that is longer.
        len: usize,
    },
    /// The file is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
    /// The text is not valid TOML or JSON, or not of the schema's shape
    /// (an unknown key, a missing `type`, a list where a table belongs).
    #[error("invalid {format}: {message}")]
    Syntax {
        /// The format it was read as.
        format: Format,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A file without a `.toml` or `.json` extension that neither format
    /// reads.
    #[error(
        "neither TOML nor JSON (name the file .toml or .json for one precise error)\n\
         as TOML: {toml}\nas JSON: {json}"
    )]
    UnknownFormat {
        /// The TOML parser's message.
        toml: String,
        /// The JSON parser's message.
        json: String,
    },
    /// A definition breaks a rule (see the module documentation).
    #[error("{at}: {reason}")]
    Invalid {
        /// Where: the namespace, table, column or index.
        at: String,
        /// What is wrong and why.
        reason: String,
    },
    /// A reference to a table that does not exist.
    #[error("{at}: references table {table}, which does not exist")]
    NoSuchTable {
        /// The referencing column.
        at: String,
        /// The full name of the missing table.
        table: String,
    },
    /// A new version of a namespace changes it in a way that is not an
    /// addition.
    #[error("{at}: {refusal}")]
    Refused {
        /// The table, column or index changed.
        at: String,
        /// What changed, and why that is refused.
        refusal: Refusal,
    },
}

/// A change that a new version of a schema may not make.
///
/// Rows written under the current version must stay readable, with the same
/// meaning, by every app and device, including those that have not seen the
/// new version yet; so a schema only grows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// A table is missing from the new version.
    #[error(
        "table dropped: rows written to it must stay readable by other apps and devices, \
         so tables cannot be dropped"
    )]
    TableDropped,
    /// A column is missing from the new version.
    #[error(
        "column dropped: rows written with it must stay readable by other apps and devices, \
         so columns cannot be dropped"
    )]
    ColumnDropped,
    /// A column's type changed.
    #[error(
        "type changed from {from} to {to}: rows already written hold values of the current \
         type, so a column's type cannot change"
    )]
    TypeChanged {
        /// The current type.
        from: ColumnType,
        /// The new type.
        to: ColumnType,
    },
    /// A non-nullable column became nullable.
    #[error(
        "made nullable: apps and devices on the current version expect a value in every row, \
         so a column cannot become nullable"
    )]
    BecameNullable,
    /// A nullable column became non-nullable.
    #[error("made non-nullable: existing rows may hold NULL in it")]
    BecameNotNullable,
    /// The primary key's columns changed.
    #[error(
        "primary key changed from ({from}) to ({to}): the key identifies each row on every \
         device, so it cannot change"
    )]
    KeyChanged {
        /// The current key columns, comma-separated.
        from: String,
        /// The new key columns, comma-separated.
        to: String,
    },
    /// A new column that is neither nullable nor has a default.
    #[error(
        "new column is not nullable and has no default: existing rows would have no value \
         for it; make it nullable or give it a default"
    )]
    NoDefault,
    /// A column's default changed (or was added or removed).
    #[error(
        "default changed from {from} to {to}: rows with no value in this column (written \
         before it existed, or by apps on an older version) read as its default, so changing \
         the default would change them"
    )]
    DefaultChanged {
        /// The current default, as JSON, or `none`.
        from: String,
        /// The new default, as JSON, or `none`.
        to: String,
    },
    /// An index is missing from the new version.
    #[error(
        "index dropped: apps and devices on the current version may rely on it for the speed \
         of their queries, and a new version may only add; keep it in the file"
    )]
    IndexDropped,
    /// An existing column is at another position.
    #[error(
        "existing column moved: columns keep their order, which is the order of SELECT *; \
         expected `{expected}` at position {position}"
    )]
    ColumnMoved {
        /// The column that belongs at this position.
        expected: String,
        /// The position, from 1.
        position: usize,
    },
    /// A new column placed before an existing one.
    #[error(
        "new column placed among existing ones: columns keep their order, which is the order \
         of SELECT *; add it after `{last}`"
    )]
    NewColumnNotLast {
        /// The current last column of the table.
        last: String,
    },
}

/// The tables of one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    namespace: Name,
    tables: Vec<TableDef>,
}

/// One table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    name: Name,
    columns: Vec<ColumnSpec>,
    primary_key: Vec<Name>,
    indexes: Vec<IndexDef>,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// The column's name (an identifier, without the table).
    pub name: Name,
    /// Its type and nullability.
    pub def: ColumnDef,
    /// The value of rows with no cell for this column; never NULL (a
    /// nullable column without a default reads as NULL).
    pub default: Option<Value>,
}

/// A (non-unique) index on a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// `namespace.table.by_col1_col2`: derived from the columns, so the
    /// same index has the same name on every device. May be longer than a
    /// [`Name`].
    pub name: String,
    /// The full name of the indexed table.
    pub table: Name,
    /// The indexed columns, in index order.
    pub columns: Vec<Name>,
}

impl Schema {
    /// Reads a schema from text in `format`, checking everything that does
    /// not depend on other namespaces. References to other namespaces are
    /// checked by [`Catalog::plan`].
    pub fn parse(text: &str, format: Format) -> Result<Schema, SchemaError> {
        if text.len() > MAX_SCHEMA_LEN {
            return Err(SchemaError::TooLarge { len: text.len() });
        }
        match format {
            Format::Toml => build(read_toml(text)?),
            Format::Json => build(read_json(text)?),
        }
    }

    /// Reads a schema of unknown format: as TOML if it is TOML, else as
    /// JSON; if it is neither, the error gives both parsers' messages.
    pub fn parse_either(text: &str) -> Result<Schema, SchemaError> {
        if text.len() > MAX_SCHEMA_LEN {
            return Err(SchemaError::TooLarge { len: text.len() });
        }
        match read_toml(text) {
            Ok(raw) => build(raw),
            Err(toml) => match read_json(text) {
                Ok(raw) => build(raw),
                Err(json) => Err(SchemaError::UnknownFormat {
                    toml: syntax_message(toml),
                    json: syntax_message(json),
                }),
            },
        }
    }

    /// Reads a schema file: TOML or JSON by its extension, otherwise
    /// [`Schema::parse_either`]. Errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Schema, SchemaError> {
        let path = path.as_ref();
        let in_file = |error| SchemaError::InFile { path: path.to_owned(), error: Box::new(error) };
        let io = |error| SchemaError::Io { path: path.to_owned(), error };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_SCHEMA_LEN as u64 + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        if bytes.len() > MAX_SCHEMA_LEN {
            return Err(in_file(SchemaError::TooLarge { len: bytes.len() }));
        }
        let text = String::from_utf8(bytes).map_err(|_| in_file(SchemaError::NotText))?;
        match Format::from_path(path) {
            Some(format) => Schema::parse(&text, format),
            None => Schema::parse_either(&text),
        }
        .map_err(in_file)
    }

    /// The canonical form for storage: compact JSON in the file's shape,
    /// every column in long form, references by full name, defaults in
    /// their canonical form (bytes as lowercase hex, timestamps as
    /// microseconds, JSON as text). The same schema always gives the same
    /// text, and [`Schema::from_json_canonical`] reads it back.
    pub fn to_json(&self) -> String {
        // Invariant: serialising these structs cannot fail: every map key is
        // a string and serde_json::Value and the derived impls never error.
        #[allow(clippy::expect_used)]
        serde_json::to_string(&self.to_raw()).expect("serialising a schema to JSON")
    }

    fn to_raw(&self) -> RawSchema<serde_json::Value> {
        RawSchema {
            namespace: self.namespace.to_string(),
            tables: Ordered(self.tables.iter().map(TableDef::to_raw).collect()),
        }
    }

    /// Reads the text [`Schema::to_json`] wrote (or any JSON schema).
    pub fn from_json_canonical(text: &str) -> Result<Schema, SchemaError> {
        Schema::parse(text, Format::Json)
    }

    /// The namespace.
    pub fn namespace(&self) -> &Name {
        &self.namespace
    }

    /// The tables, in file order.
    pub fn tables(&self) -> &[TableDef] {
        &self.tables
    }

    /// The table with local name `name` (`items`, not `todo.items`).
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|table| table.local_name() == name)
    }
}

/// Serialises as the canonical form of [`Schema::to_json`]: tables and
/// columns in the file's order (a JSON object's members in that order), so
/// that what is serialised applies back unchanged.
impl Serialize for Schema {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_raw().serialize(serializer)
    }
}

/// Reads a schema in the JSON shape (the canonical form or any other), in
/// the order its members come, checked as [`Schema::parse`] checks it.
impl<'de> Deserialize<'de> for Schema {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        let raw = RawSchema::<serde_json::Value>::deserialize(deserializer)?;
        build(raw).map_err(de::Error::custom)
    }
}

impl TableDef {
    /// The full name, `namespace.table`.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The name without the namespace.
    pub fn local_name(&self) -> &str {
        self.name.as_str().split_once('.').map_or(self.name.as_str(), |(_, local)| local)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.name.as_str().split_once('.').map_or(self.name.as_str(), |(namespace, _)| namespace)
    }

    /// The columns, in order (the order of `SELECT *`).
    pub fn columns(&self) -> &[ColumnSpec] {
        &self.columns
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|column| column.name.as_str() == name)
    }

    /// The position of column `name` in [`TableDef::columns`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name.as_str() == name)
    }

    /// The names of the primary key's columns, in key order.
    pub fn primary_key(&self) -> &[Name] {
        &self.primary_key
    }

    /// The primary key's columns, in key order.
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnSpec> {
        self.primary_key.iter().filter_map(|name| self.column(name.as_str()))
    }

    /// The indexes, in file order.
    pub fn indexes(&self) -> &[IndexDef] {
        &self.indexes
    }

    fn to_raw(&self) -> (String, RawTable<serde_json::Value>) {
        let columns = self
            .columns
            .iter()
            .map(|column| {
                let table = match &column.def.ty {
                    ColumnType::Reference { table } => Some(table.to_string()),
                    _ => None,
                };
                let long = RawColumnLong {
                    ty: type_keyword(&column.def.ty).to_owned(),
                    table,
                    nullable: column.def.nullable,
                    default: column.default.as_ref().map(default_to_json),
                };
                (column.name.to_string(), RawColumn::Long(long))
            })
            .collect();
        let indexes = self
            .indexes
            .iter()
            .map(|index| RawIndex {
                columns: index.columns.iter().map(Name::to_string).collect(),
                unique: None,
            })
            .collect();
        let raw = RawTable {
            primary_key: Some(self.primary_key.iter().map(Name::to_string).collect()),
            columns: Ordered(columns),
            indexes,
        };
        (self.local_name().to_owned(), raw)
    }
}

/// The schemas of all namespaces of one database.
#[derive(Debug, Clone)]
pub struct Catalog {
    schemas: BTreeMap<String, Schema>,
    /// Taken anew from a process-wide count whenever the schemas change:
    /// catalogs of one generation hold the same schemas.
    generation: u64,
}

impl Default for Catalog {
    fn default() -> Self {
        Self { schemas: BTreeMap::new(), generation: next_generation() }
    }
}

/// Catalogs are equal when their schemas are, whatever their generations.
impl PartialEq for Catalog {
    fn eq(&self, other: &Self) -> bool {
        self.schemas == other.schemas
    }
}

/// A generation no catalog of this process had before (never 0).
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What a new version of a namespace adds: the work for the SQL layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// The namespace.
    pub namespace: Name,
    /// New tables, in file order.
    pub tables: Vec<TableDef>,
    /// New columns of existing tables, each added after the table's last
    /// column, in file order.
    pub columns: Vec<AddedColumn>,
    /// Every index to create, including the indexes of the new tables.
    pub indexes: Vec<IndexDef>,
}

/// A column added to an existing table.
#[derive(Debug, Clone, PartialEq)]
pub struct AddedColumn {
    /// The table's full name.
    pub table: Name,
    /// The column.
    pub column: ColumnSpec,
}

impl Migration {
    /// Whether the new version adds nothing.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.columns.is_empty() && self.indexes.is_empty()
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// A catalog of stored schemas (each read with
    /// [`Schema::from_json_canonical`]), in any order; checks that every
    /// reference resolves and each namespace appears once.
    pub fn from_schemas(schemas: impl IntoIterator<Item = Schema>) -> Result<Self, SchemaError> {
        let mut catalog = Catalog::new();
        for schema in schemas {
            let namespace = schema.namespace.to_string();
            if catalog.schemas.insert(namespace.clone(), schema).is_some() {
                return Err(SchemaError::Invalid {
                    at: namespace,
                    reason: "the namespace appears twice".into(),
                });
            }
        }
        for schema in catalog.schemas.values() {
            check_references(schema, &|name| catalog.lookup(name))?;
        }
        Ok(catalog)
    }

    /// The schema of `namespace`.
    pub fn schema(&self, namespace: &str) -> Option<&Schema> {
        self.schemas.get(namespace)
    }

    /// All schemas, by namespace.
    pub fn schemas(&self) -> impl Iterator<Item = &Schema> {
        self.schemas.values()
    }

    /// The table with full name `name` (`todo.items`).
    pub fn table(&self, name: &Name) -> Option<&TableDef> {
        let (namespace, local) = name.as_str().split_once('.')?;
        self.schemas.get(namespace)?.table(local)
    }

    /// The type of the values of `table.column`: its type, or for a
    /// reference the type of the referenced key (integer, text or bytes),
    /// following references to references.
    pub fn value_type(&self, table: &Name, column: &str) -> Option<ColumnType> {
        Some(self.value_def(table, column)?.ty)
    }

    /// The column's definition with references resolved to the key type
    /// ([`Catalog::value_type`]): `value_def(t, c)?.check(value)` checks a
    /// value strictly, where the column's own [`ColumnDef::check`] takes any
    /// key type for a reference.
    pub fn value_def(&self, table: &Name, column: &str) -> Option<ColumnDef> {
        self.value_def_in(self.table(table)?, column)
    }

    /// [`Catalog::value_def`] of a column of `table`, a table of this
    /// catalog already looked up.
    pub fn value_def_in(&self, table: &TableDef, column: &str) -> Option<ColumnDef> {
        let def = &table.column(column)?.def;
        let ty = match &def.ty {
            ColumnType::Reference { table } => {
                resolve(&|name| self.lookup(name), table).ok().flatten()?
            }
            ty => ty.clone(),
        };
        Some(ColumnDef { ty, nullable: def.nullable })
    }

    /// Checks `new`, a version of one namespace, against the current one (if
    /// any) and the other namespaces, and lists what it adds.
    pub fn plan(&self, new: &Schema) -> Result<Migration, SchemaError> {
        let namespace = new.namespace.as_str();
        check_references(new, &|name| match name.as_str().split_once('.') {
            Some((ns, local)) if ns == namespace => {
                new.table(local).map_or(Lookup::Missing, Lookup::Found)
            }
            _ => self.lookup(name),
        })?;
        let mut migration = Migration {
            namespace: new.namespace.clone(),
            tables: Vec::new(),
            columns: Vec::new(),
            indexes: Vec::new(),
        };
        let old = self.schemas.get(namespace);
        let dropped = old.and_then(|old| {
            old.tables.iter().find(|table| new.table(table.local_name()).is_none())
        });
        if let Some(dropped) = dropped {
            return Err(refused(&dropped.name, Refusal::TableDropped));
        }
        for table in &new.tables {
            match old.and_then(|old| old.table(table.local_name())) {
                Some(current) => diff_table(current, table, &mut migration)?,
                None => {
                    migration.tables.push(table.clone());
                    migration.indexes.extend(table.indexes.iter().cloned());
                }
            }
        }
        Ok(migration)
    }

    /// [`Catalog::plan`]s `new` and, if it is accepted, makes it the current
    /// version of its namespace. On error the catalog is unchanged.
    pub fn apply(&mut self, new: Schema) -> Result<Migration, SchemaError> {
        let migration = self.plan(&new)?;
        self.schemas.insert(new.namespace.to_string(), new);
        self.generation = next_generation();
        Ok(migration)
    }

    /// Changes whenever the schemas change; a copy keeps it. What was
    /// derived from a catalog holds for every catalog of its generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn lookup(&self, name: &Name) -> Lookup<'_> {
        self.table(name).map_or(Lookup::Missing, Lookup::Found)
    }
}

/// Compares one table's new version with its current one.
fn diff_table(
    current: &TableDef,
    new: &TableDef,
    migration: &mut Migration,
) -> Result<(), SchemaError> {
    if current.primary_key != new.primary_key {
        let list = |key: &[Name]| key.iter().map(Name::as_str).collect::<Vec<_>>().join(", ");
        let refusal =
            Refusal::KeyChanged { from: list(&current.primary_key), to: list(&new.primary_key) };
        return Err(refused(&current.name, refusal));
    }
    for old in &current.columns {
        let at = format!("{}.{}", current.name, old.name);
        let Some(column) = new.column(old.name.as_str()) else {
            return Err(SchemaError::Refused { at, refusal: Refusal::ColumnDropped });
        };
        let refusal = if column.def.ty != old.def.ty {
            Refusal::TypeChanged { from: old.def.ty.clone(), to: column.def.ty.clone() }
        } else if column.def.nullable && !old.def.nullable {
            Refusal::BecameNullable
        } else if !column.def.nullable && old.def.nullable {
            Refusal::BecameNotNullable
        } else if !same_default(&old.default, &column.default) {
            let show = |default: &Option<Value>| {
                default.as_ref().map_or("none".into(), |v| default_to_json(v).to_string())
            };
            Refusal::DefaultChanged { from: show(&old.default), to: show(&column.default) }
        } else {
            continue;
        };
        return Err(SchemaError::Refused { at, refusal });
    }
    // Every current column is in the new version, so it has at least as many.
    for (position, (old, column)) in current.columns.iter().zip(&new.columns).enumerate() {
        if old.name == column.name {
            continue;
        }
        let refusal = if current.column(column.name.as_str()).is_some() {
            Refusal::ColumnMoved { expected: old.name.to_string(), position: position + 1 }
        } else {
            let last = current.columns.last().map_or(String::new(), |c| c.name.to_string());
            Refusal::NewColumnNotLast { last }
        };
        let at = format!("{}.{}", new.name, column.name);
        return Err(SchemaError::Refused { at, refusal });
    }
    for column in new.columns.iter().skip(current.columns.len()) {
        if !column.def.nullable && column.default.is_none() {
            let at = format!("{}.{}", new.name, column.name);
            return Err(SchemaError::Refused { at, refusal: Refusal::NoDefault });
        }
        migration.columns.push(AddedColumn { table: new.name.clone(), column: column.clone() });
    }
    for index in &current.indexes {
        if !new.indexes.iter().any(|i| i.columns == index.columns) {
            let at = index_location(&current.name, index.columns.iter().map(Name::as_str));
            return Err(SchemaError::Refused { at, refusal: Refusal::IndexDropped });
        }
    }
    for index in &new.indexes {
        if !current.indexes.iter().any(|i| i.columns == index.columns) {
            migration.indexes.push(index.clone());
        }
    }
    Ok(())
}

/// Defaults compare by encoding, so that `-0.0` and `0.0` differ.
fn same_default(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.encode() == b.encode(),
        (None, None) => true,
        _ => false,
    }
}

fn refused(table: &Name, refusal: Refusal) -> SchemaError {
    SchemaError::Refused { at: table.to_string(), refusal }
}

fn invalid(at: impl fmt::Display, reason: impl Into<String>) -> SchemaError {
    SchemaError::Invalid { at: at.to_string(), reason: reason.into() }
}

fn index_location<'a>(table: &Name, columns: impl Iterator<Item = &'a str>) -> String {
    format!("{table} index ({})", columns.map(short).collect::<Vec<_>>().join(", "))
}

// ---------------------------------------------------------------------------
// References

/// What a table name refers to while checking references.
enum Lookup<'a> {
    Found(&'a TableDef),
    Missing,
    /// In another namespace, checked later (by [`Catalog::plan`]).
    Deferred,
}

/// Why a reference does not resolve.
enum RefProblem {
    Missing(Name),
    NotOneColumnKey(Name, usize),
    Cycle(Name),
}

/// Checks that every reference column of `schema` resolves.
fn check_references<'a>(
    schema: &Schema,
    lookup: &dyn Fn(&Name) -> Lookup<'a>,
) -> Result<(), SchemaError> {
    for table in &schema.tables {
        for column in &table.columns {
            let ColumnType::Reference { table: target } = &column.def.ty else { continue };
            let at = format!("{}.{}", table.name, column.name);
            resolve(lookup, target).map_err(|problem| match problem {
                RefProblem::Missing(table) => {
                    SchemaError::NoSuchTable { at, table: table.to_string() }
                }
                RefProblem::NotOneColumnKey(table, n) => invalid(
                    at,
                    format!(
                        "references table {table}, whose primary key has {n} columns; \
                         a reference needs a table with a one-column key"
                    ),
                ),
                RefProblem::Cycle(table) => invalid(
                    at,
                    format!(
                        "references table {table}, whose key is a reference that leads back \
                         to it; some table in the chain needs an integer, text or bytes key"
                    ),
                ),
            })?;
        }
    }
    Ok(())
}

/// The type of the key of `target`, following references; `None` if the
/// chain leaves for a namespace that cannot be checked yet.
fn resolve<'a>(
    lookup: &dyn Fn(&Name) -> Lookup<'a>,
    target: &Name,
) -> Result<Option<ColumnType>, RefProblem> {
    let mut seen = BTreeSet::new();
    let mut target = target.clone();
    loop {
        if !seen.insert(target.clone()) {
            return Err(RefProblem::Cycle(target));
        }
        let table = match lookup(&target) {
            Lookup::Found(table) => table,
            Lookup::Missing => return Err(RefProblem::Missing(target)),
            Lookup::Deferred => return Ok(None),
        };
        let [key] = table.primary_key.as_slice() else {
            return Err(RefProblem::NotOneColumnKey(target, table.primary_key.len()));
        };
        let Some(key) = table.column(key.as_str()) else {
            // A built table's key columns exist; treat a broken one as missing.
            return Err(RefProblem::Missing(target));
        };
        match &key.def.ty {
            ColumnType::Reference { table } => target = table.clone(),
            ty => return Ok(Some(ty.clone())),
        }
    }
}

// ---------------------------------------------------------------------------
// The file's shape, before checking

/// A schema as written, with defaults still in the file's value type `D`
/// (`toml::Value` or `serde_json::Value`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
struct RawSchema<D> {
    namespace: String,
    #[serde(default)]
    tables: Ordered<RawTable<D>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
struct RawTable<D> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    primary_key: Option<Vec<String>>,
    #[serde(default)]
    columns: Ordered<RawColumn<D>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    indexes: Vec<RawIndex>,
}

/// `"text"`, or `{ type = "text", nullable = true, ... }`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum RawColumn<D> {
    Short(String),
    Long(RawColumnLong<D>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
struct RawColumnLong<D> {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    #[serde(default)]
    nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<D>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unique: Option<bool>,
}

impl<'de, D: Deserialize<'de>> Deserialize<'de> for RawColumn<D> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct ColumnVisitor<D>(PhantomData<D>);
        impl<'de, D: Deserialize<'de>> Visitor<'de> for ColumnVisitor<D> {
            type Value = RawColumn<D>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type such as \"text\", or a table such as { type = \"text\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawColumn::Short(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawColumnLong::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawColumn::Long)
            }
        }
        deserializer.deserialize_any(ColumnVisitor(PhantomData))
    }
}

/// A map that keeps the file's order and refuses duplicate keys.
#[derive(Debug)]
struct Ordered<V>(Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, value)| (key, value)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table (a JSON object) of names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = BTreeSet::new();
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format_args!("duplicate name `{key}`")));
                    }
                    entries.push((key, value));
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

fn read_toml(text: &str) -> Result<RawSchema<toml::Value>, SchemaError> {
    toml::from_str(text).map_err(|e| SchemaError::Syntax {
        format: Format::Toml,
        message: e.to_string().trim_end().to_owned(),
    })
}

fn read_json(text: &str) -> Result<RawSchema<serde_json::Value>, SchemaError> {
    serde_json::from_str(text)
        .map_err(|e| SchemaError::Syntax { format: Format::Json, message: e.to_string() })
}

fn syntax_message(error: SchemaError) -> String {
    match error {
        SchemaError::Syntax { message, .. } => message,
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Checking

/// Turns the file's shape into a checked schema.
fn build<D: RawDefault>(raw: RawSchema<D>) -> Result<Schema, SchemaError> {
    let namespace = ident(&raw.namespace).and_then(not_reserved).map_err(|reason| {
        invalid("namespace", format!("invalid namespace {}: {reason}", quoted(&raw.namespace)))
    })?;
    let count = raw.tables.0.len();
    if count == 0 {
        return Err(invalid(&namespace, "a schema needs at least one table, e.g. [tables.items]"));
    }
    if count > MAX_TABLES {
        return Err(invalid(&namespace, format!("{count} tables; at most {MAX_TABLES} allowed")));
    }
    let tables = raw
        .tables
        .0
        .into_iter()
        .map(|(name, table)| build_table(&namespace, &name, table))
        .collect::<Result<_, _>>()?;
    let schema = Schema { namespace, tables };
    check_references(&schema, &|name| match name.as_str().split_once('.') {
        Some((ns, local)) if ns == schema.namespace.as_str() => {
            schema.table(local).map_or(Lookup::Missing, Lookup::Found)
        }
        _ => Lookup::Deferred,
    })?;
    Ok(schema)
}

fn build_table<D: RawDefault>(
    namespace: &Name,
    local: &str,
    raw: RawTable<D>,
) -> Result<TableDef, SchemaError> {
    ident(local).map_err(|reason| {
        invalid(namespace, format!("invalid table name {}: {reason}", quoted(local)))
    })?;
    let name = Name::new(format!("{namespace}.{local}"))
        .map_err(|e| invalid(namespace, format!("table {namespace}.{local}: {}", e.reason)))?;
    let count = raw.columns.0.len();
    if count == 0 {
        return Err(invalid(&name, "a table needs at least one column"));
    }
    if count > MAX_COLUMNS {
        return Err(invalid(&name, format!("{count} columns; at most {MAX_COLUMNS} allowed")));
    }
    let mut columns = Vec::with_capacity(count);
    for (column, raw) in raw.columns.0 {
        let column = ident(&column).map_err(|reason| {
            invalid(&name, format!("invalid column name {}: {reason}", quoted(&column)))
        })?;
        let at = format!("{name}.{column}");
        columns.push(build_column(namespace, column, raw).map_err(|reason| invalid(at, reason))?);
    }
    let table = TableDef { name, columns, primary_key: Vec::new(), indexes: Vec::new() };
    let primary_key = build_key(&table, raw.primary_key)?;
    let indexes = build_indexes(&table, raw.indexes)?;
    Ok(TableDef { primary_key, indexes, ..table })
}

fn build_column<D: RawDefault>(
    namespace: &Name,
    name: Name,
    raw: RawColumn<D>,
) -> Result<ColumnSpec, String> {
    let (ty, table, nullable, default) = match raw {
        RawColumn::Short(ty) => (ty, None, false, None),
        RawColumn::Long(long) => (long.ty, long.table, long.nullable, long.default),
    };
    let ty = match (ty.as_str(), table) {
        ("reference", Some(table)) => {
            ColumnType::Reference { table: reference(namespace, &table)? }
        }
        ("reference", None) => {
            return Err(
                "a reference needs a table: { type = \"reference\", table = \"lists\" }".into()
            );
        }
        (_, Some(_)) => return Err("`table` is only for columns of type reference".into()),
        ("text", None) => ColumnType::Text,
        ("integer", None) => ColumnType::Integer,
        ("real", None) => ColumnType::Real,
        ("bool", None) => ColumnType::Bool,
        ("bytes", None) => ColumnType::Bytes,
        ("timestamp", None) => ColumnType::Timestamp,
        ("json", None) => ColumnType::Json,
        (other, None) => {
            return Err(format!(
                "unknown type {}; the types are text, integer, real, bool, bytes, timestamp, \
                 json and reference",
                quoted(other)
            ));
        }
    };
    let default = default.map(|default| default_value(&ty, &default)).transpose()?;
    Ok(ColumnSpec { name, def: ColumnDef { ty, nullable }, default })
}

/// The full name of a referenced table: `table` in `namespace`, or
/// `other_namespace.table`.
fn reference(namespace: &Name, table: &str) -> Result<Name, String> {
    let bad = |reason: &str| format!("invalid referenced table {}: {reason}", quoted(table));
    let full = match table.split('.').collect::<Vec<_>>().as_slice() {
        [local] => {
            ident(local).map_err(bad)?;
            format!("{namespace}.{local}")
        }
        [ns, local] => {
            ident(ns).map_err(bad)?;
            ident(local).map_err(bad)?;
            table.to_owned()
        }
        _ => return Err(bad("expected `table` or `namespace.table`")),
    };
    Name::new(full).map_err(|e| bad(e.reason))
}

fn build_key(table: &TableDef, key: Option<Vec<String>>) -> Result<Vec<Name>, SchemaError> {
    let Some(key) = key else {
        return Err(invalid(
            &table.name,
            "primary_key is missing: name the column(s) that identify a row, \
             e.g. primary_key = [\"id\"]",
        ));
    };
    if key.is_empty() || key.len() > MAX_KEY_PARTS {
        let n = key.len();
        return Err(invalid(
            &table.name,
            format!("primary_key has {n} columns; it needs 1 to {MAX_KEY_PARTS}"),
        ));
    }
    let mut names: Vec<Name> = Vec::with_capacity(key.len());
    for column in &key {
        let Some(spec) = table.column(column) else {
            return Err(invalid(
                &table.name,
                format!("primary_key names column {}, which does not exist", quoted(column)),
            ));
        };
        if names.contains(&spec.name) {
            return Err(invalid(&table.name, format!("primary_key names `{column}` twice")));
        }
        let at = format!("{}.{column}", table.name);
        if spec.def.nullable {
            return Err(invalid(at, "a primary key column cannot be nullable"));
        }
        if !matches!(
            spec.def.ty,
            ColumnType::Integer
                | ColumnType::Text
                | ColumnType::Bytes
                | ColumnType::Reference { .. }
        ) {
            let ty = &spec.def.ty;
            return Err(invalid(
                at,
                format!(
                    "a primary key column must be integer, text, bytes or a reference, not {ty}"
                ),
            ));
        }
        if spec.default.is_some() {
            return Err(invalid(
                at,
                "a primary key column cannot have a default: each row gives its own key",
            ));
        }
        names.push(spec.name.clone());
    }
    Ok(names)
}

fn build_indexes(table: &TableDef, raw: Vec<RawIndex>) -> Result<Vec<IndexDef>, SchemaError> {
    if raw.len() > MAX_INDEXES {
        let n = raw.len();
        return Err(invalid(&table.name, format!("{n} indexes; at most {MAX_INDEXES} allowed")));
    }
    let mut indexes: Vec<IndexDef> = Vec::with_capacity(raw.len());
    for index in raw {
        let at = index_location(&table.name, index.columns.iter().map(String::as_str));
        if index.unique == Some(true) {
            return Err(invalid(
                at,
                "unique indexes are not supported: devices write concurrently and offline, so \
                 no device can enforce uniqueness for the others; rows with equal primary keys \
                 merge instead, so make the unique columns the primary key",
            ));
        }
        if index.columns.is_empty() || index.columns.len() > MAX_INDEX_COLUMNS {
            let n = index.columns.len();
            return Err(invalid(
                at,
                format!("an index has {n} columns; it needs 1 to {MAX_INDEX_COLUMNS}"),
            ));
        }
        let mut columns: Vec<Name> = Vec::with_capacity(index.columns.len());
        for column in &index.columns {
            let Some(spec) = table.column(column) else {
                let reason = format!("column {} does not exist", quoted(column));
                return Err(invalid(at, reason));
            };
            if columns.contains(&spec.name) {
                return Err(invalid(at, format!("names column `{column}` twice")));
            }
            columns.push(spec.name.clone());
        }
        let suffix = columns.iter().map(Name::as_str).collect::<Vec<_>>().join("_");
        let name = format!("{}.by_{suffix}", table.name);
        if let Some(other) = indexes.iter().find(|other| other.name == name) {
            let reason = if other.columns == columns {
                "the same index appears twice".to_owned()
            } else {
                let list = other.columns.iter().map(Name::as_str).collect::<Vec<_>>().join(", ");
                format!(
                    "its name {name} is also the name of index ({list}); index names are made \
                     from column names, so these two cannot both exist"
                )
            };
            return Err(invalid(at, reason));
        }
        indexes.push(IndexDef { name, table: table.name.clone(), columns });
    }
    Ok(indexes)
}

/// Refuses a namespace SQLite or the view keeps for itself: every table
/// and index name starts with the namespace, SQLite refuses names that
/// start with `sqlite_`, and the view keeps names that start with `_`.
fn not_reserved(namespace: Name) -> Result<Name, &'static str> {
    if namespace.as_str().starts_with("sqlite_") || namespace.as_str().starts_with('_') {
        return Err("is reserved: a namespace may not start with sqlite_ or _");
    }
    Ok(namespace)
}

/// Checks an identifier: `[a-z_][a-z0-9_]{0,31}`.
fn ident(name: &str) -> Result<Name, &'static str> {
    if name.is_empty() || name.len() > MAX_IDENT_LEN {
        return Err("must be 1 to 32 characters long");
    }
    if name.starts_with(|c: char| c.is_ascii_digit())
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err("must be lowercase letters, digits and '_', not starting with a digit");
    }
    Name::new(name).map_err(|e| e.reason)
}

/// `text` quoted for a message, cut to 40 characters.
fn quoted(text: &str) -> String {
    format!("{:?}", short(text))
}

fn short(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_owned()
    } else {
        text.chars().take(39).chain(['…']).collect()
    }
}

// ---------------------------------------------------------------------------
// Defaults

/// A default as written in TOML or JSON.
trait RawDefault {
    /// The value, for the scalar types.
    fn literal(&self) -> Literal<'_>;
    /// The value as JSON text, for a json column: a string is taken as JSON
    /// text; anything else is written as compact JSON.
    fn json_text(&self) -> Result<String, String>;
}

/// A scalar default as written.
enum Literal<'a> {
    Bool(bool),
    Integer(i64),
    /// An integer over `i64::MAX` (JSON only).
    Huge(u64),
    Float(f64),
    Str(&'a str),
    Datetime(&'a Datetime),
    /// An array, table or null.
    Other(&'static str),
}

impl fmt::Display for Literal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Integer(i) => write!(f, "{i}"),
            Literal::Huge(u) => write!(f, "{u}"),
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Str(s) => f.write_str(&quoted(s)),
            Literal::Datetime(d) => write!(f, "{d}"),
            Literal::Other(kind) => f.write_str(kind),
        }
    }
}

impl RawDefault for toml::Value {
    fn literal(&self) -> Literal<'_> {
        match self {
            toml::Value::String(s) => Literal::Str(s),
            toml::Value::Integer(i) => Literal::Integer(*i),
            toml::Value::Float(x) => Literal::Float(*x),
            toml::Value::Boolean(b) => Literal::Bool(*b),
            toml::Value::Datetime(d) => Literal::Datetime(d),
            toml::Value::Array(_) => Literal::Other("an array"),
            toml::Value::Table(_) => Literal::Other("a table"),
        }
    }

    fn json_text(&self) -> Result<String, String> {
        match self {
            toml::Value::String(text) => json_string(text),
            other => serde_json::to_string(&toml_to_json(other)?).map_err(|e| e.to_string()),
        }
    }
}

impl RawDefault for serde_json::Value {
    fn literal(&self) -> Literal<'_> {
        match self {
            serde_json::Value::Null => Literal::Other("null"),
            serde_json::Value::Bool(b) => Literal::Bool(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Literal::Integer(i),
                (None, Some(u), _) => Literal::Huge(u),
                (None, None, Some(x)) => Literal::Float(x),
                (None, None, None) => Literal::Other("a number"),
            },
            serde_json::Value::String(s) => Literal::Str(s),
            serde_json::Value::Array(_) => Literal::Other("an array"),
            serde_json::Value::Object(_) => Literal::Other("an object"),
        }
    }

    fn json_text(&self) -> Result<String, String> {
        match self {
            serde_json::Value::String(text) => json_string(text),
            other => serde_json::to_string(other).map_err(|e| e.to_string()),
        }
    }
}

/// A string given as JSON text: checked as `Value::Json` requires.
fn json_string(text: &str) -> Result<String, String> {
    match serde_json::from_str::<de::IgnoredAny>(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(e) => Err(format!(
            "default {} is not JSON text ({e}); to store a JSON string, quote it: '\"…\"'",
            quoted(text)
        )),
    }
}

fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(J::Number)
            .ok_or_else(|| format!("{x:?} is not a JSON number"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => {
            return Err(format!("the date-time {d} is not JSON; quote it to store a string"));
        }
        toml::Value::Array(items) => {
            J::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => J::Object(
            table
                .iter()
                .map(|(key, value)| Ok((key.clone(), toml_to_json(value)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Converts a default to a value of column type `ty`.
fn default_value(ty: &ColumnType, raw: &impl RawDefault) -> Result<Value, String> {
    let literal = raw.literal();
    let value = match (ty, &literal) {
        (ColumnType::Reference { .. }, _) => {
            return Err("a reference cannot have a default; make it nullable instead".into());
        }
        (ColumnType::Bool, Literal::Bool(b)) => Value::Bool(*b),
        (ColumnType::Integer, Literal::Integer(i)) => Value::Integer(*i),
        (ColumnType::Integer, Literal::Huge(_)) => {
            return Err(format!("default {literal} is over the largest integer, 2^63-1"));
        }
        (ColumnType::Real, Literal::Float(x)) if x.is_nan() => {
            return Err("default NaN is not a value".into());
        }
        (ColumnType::Real, Literal::Float(x)) if x.is_infinite() => {
            return Err(format!("default {literal} is not finite"));
        }
        (ColumnType::Real, Literal::Float(x)) => Value::Real(*x),
        (ColumnType::Real, Literal::Integer(i)) => {
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
            let (real, exact) =
                (*i as f64, (*i as f64) as i64 == *i && i.unsigned_abs() <= 1 << 53);
            if !exact {
                return Err(format!("default {literal} cannot be held exactly by a real"));
            }
            Value::Real(real)
        }
        (ColumnType::Text, Literal::Str(s)) => Value::Text((*s).to_owned()),
        (ColumnType::Bytes, Literal::Str(s)) => Value::Bytes(
            hex::decode(s)
                .map_err(|e| format!("default {literal} is not hex bytes such as \"00ff\": {e}"))?,
        ),
        (ColumnType::Timestamp, Literal::Integer(i)) => Value::Timestamp(*i),
        (ColumnType::Timestamp, Literal::Str(s)) => {
            let datetime = s.parse::<Datetime>().map_err(|e| {
                format!(
                    "default {literal} is not an RFC 3339 date-time such as \
                     \"2024-01-31T09:00:00Z\": {e}"
                )
            })?;
            Value::Timestamp(micros(&datetime).map_err(|e| format!("default {literal}: {e}"))?)
        }
        (ColumnType::Timestamp, Literal::Datetime(datetime)) => {
            Value::Timestamp(micros(datetime).map_err(|e| format!("default {literal}: {e}"))?)
        }
        (ColumnType::Json, _) => Value::Json(raw.json_text()?),
        (ty, _) => {
            let expected = match ty {
                ColumnType::Bool => "true or false",
                ColumnType::Integer => "an integer",
                ColumnType::Real => "a number",
                ColumnType::Text => "a string",
                ColumnType::Bytes => "a string of hex digits such as \"00ff\"",
                ColumnType::Timestamp => {
                    "integer microseconds since 1970-01-01T00:00:00Z, or an RFC 3339 date-time \
                     with an offset such as \"2024-01-31T09:00:00Z\""
                }
                ColumnType::Json | ColumnType::Reference { .. } => "a value",
            };
            return Err(format!("default {literal} does not fit type {ty}: expected {expected}"));
        }
    };
    let len = value.payload_len();
    if len > MAX_VALUE_LEN {
        return Err(format!("the default is {len} bytes long; values are at most {MAX_VALUE_LEN}"));
    }
    Ok(value)
}

/// Microseconds since the Unix epoch of an RFC 3339 date-time written as
/// text (`2026-11-28T10:00:00Z`, `2026-11-28 10:00:00.5+01:00`).
pub(crate) fn timestamp_from_text(text: &str) -> Result<i64, String> {
    let datetime: Datetime = text
        .parse()
        .map_err(|_| "is not an RFC 3339 date-time such as 2026-11-28T10:00:00Z".to_owned())?;
    micros(&datetime)
}

/// Microseconds since the Unix epoch of an RFC 3339 date-time.
fn micros(datetime: &Datetime) -> Result<i64, String> {
    let (Some(date), Some(time), Some(offset)) = (datetime.date, datetime.time, datetime.offset)
    else {
        return Err("needs a date, a time and an offset (Z or ±hh:mm)".into());
    };
    let Some(second) = time.second else {
        return Err("needs seconds".into());
    };
    if second == 60 {
        return Err("a leap second cannot be held by a timestamp".into());
    }
    let nanos = time.nanosecond.unwrap_or(0);
    if nanos % 1000 != 0 {
        return Err("is more precise than a microsecond".into());
    }
    let offset_minutes = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i32::from(minutes),
    };
    // The parser checked every field's range, leap years included; the
    // date crate only counts.
    let range = |e: time::error::ComponentRange| format!("is out of range: {e}");
    let month = time::Month::try_from(date.month).map_err(range)?;
    let date =
        time::Date::from_calendar_date(i32::from(date.year), month, date.day).map_err(range)?;
    let time =
        time::Time::from_hms_micro(time.hour, time.minute, second, nanos / 1000).map_err(range)?;
    let offset = time::UtcOffset::from_whole_seconds(offset_minutes * 60).map_err(range)?;
    let at = time::PrimitiveDateTime::new(date, time).assume_offset(offset);
    // Years 0000–9999 are about ±3·10^17 µs: far inside i64.
    i64::try_from(at.unix_timestamp_nanos() / 1000).map_err(|_| "is out of range".to_owned())
}

/// A default in its canonical JSON form.
fn default_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Integer(i) | Value::Timestamp(i) => J::from(*i),
        // Defaults are finite; NaN and infinities were refused.
        Value::Real(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Bool(b) => J::Bool(*b),
        Value::Text(t) | Value::Json(t) => J::String(t.clone()),
        Value::Bytes(b) => J::String(hex::encode(b)),
    }
}

fn type_keyword(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "integer",
        ColumnType::Real => "real",
        ColumnType::Bool => "bool",
        ColumnType::Bytes => "bytes",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Json => "json",
        ColumnType::Reference { .. } => "reference",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn example_path(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(file)
    }

    fn example(file: &str) -> Schema {
        Schema::from_file(example_path(file)).unwrap()
    }

    fn example_text(file: &str) -> String {
        std::fs::read_to_string(example_path(file)).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn toml(text: &str) -> Schema {
        Schema::parse(text, Format::Toml).unwrap()
    }

    fn toml_err(text: &str) -> String {
        Schema::parse(text, Format::Toml).unwrap_err().to_string()
    }

    fn column_names(table: &TableDef) -> Vec<&str> {
        table.columns().iter().map(|c| c.name.as_str()).collect()
    }

    /// A one-table `todo` schema with `columns` (TOML inline-table body)
    /// and extra TOML after the table header.
    fn items(columns: &str, extra: &str) -> String {
        format!(
            "namespace = \"todo\"\n[tables.items]\nprimary_key = [\"id\"]\n{extra}\n\
             [tables.items.columns]\nid = \"text\"\n{columns}\n"
        )
    }

    fn refusal(from: &str, to: &str) -> String {
        let mut catalog = Catalog::new();
        catalog.apply(toml(from)).unwrap();
        catalog.plan(&toml(to)).unwrap_err().to_string()
    }

    #[test]
    fn todo_example() {
        let todo = example("todo.toml");
        assert_eq!(todo.namespace().as_str(), "todo");
        let tables: Vec<_> = todo.tables().iter().map(|t| t.name().as_str()).collect();
        assert_eq!(tables, ["todo.lists", "todo.items"]);

        let items = todo.table("items").unwrap();
        assert_eq!(
            column_names(items),
            ["id", "list", "title", "done", "priority", "due", "notes"]
        );
        assert_eq!(items.primary_key(), [name("id")]);
        assert_eq!(items.key_columns().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id"]);
        assert_eq!(items.local_name(), "items");
        assert_eq!(items.namespace(), "todo");
        assert_eq!(items.position("done"), Some(3));

        let list = items.column("list").unwrap();
        assert_eq!(
            list.def,
            ColumnDef { ty: ColumnType::Reference { table: name("todo.lists") }, nullable: false }
        );
        assert_eq!(items.column("done").unwrap().default, Some(Value::Bool(false)));
        assert_eq!(items.column("priority").unwrap().default, Some(Value::Integer(0)));
        let due = items.column("due").unwrap();
        assert_eq!(due.def, ColumnDef { ty: ColumnType::Timestamp, nullable: true });
        assert_eq!(due.default, None);

        assert_eq!(
            items.indexes(),
            [IndexDef {
                name: "todo.items.by_list_done".into(),
                table: name("todo.items"),
                columns: vec![name("list"), name("done")],
            }]
        );
        let lists = todo.table("lists").unwrap();
        assert_eq!(column_names(lists), ["id", "name", "created_at"]);
        assert!(lists.indexes().is_empty());
    }

    #[test]
    fn contacts_example() {
        let contacts = example("contacts.json");
        assert_eq!(contacts.namespace().as_str(), "contacts");
        let people = contacts.table("people").unwrap();
        assert_eq!(
            column_names(people),
            ["id", "name", "nickname", "birthday", "photo", "starred", "extra"]
        );
        assert_eq!(people.column("extra").unwrap().default, Some(Value::Json("{}".into())));
        let emails = contacts.table("emails").unwrap();
        assert_eq!(column_names(emails), ["person", "address", "label", "preferred"]);
        assert_eq!(emails.primary_key(), [name("person"), name("address")]);
        assert_eq!(emails.column("label").unwrap().default, Some(Value::Text("home".into())));
        assert_eq!(emails.indexes()[0].name, "contacts.emails.by_address");
    }

    #[test]
    fn column_order_is_the_file_order() {
        let toml_text = items("zeta = \"text\"\nalpha = \"integer\"\nmid = \"bool\"", "");
        let json_text = r#"{"namespace": "todo", "tables": {"items": {"primary_key": ["id"],
            "columns": {"id": "text", "zeta": "text", "alpha": "integer", "mid": "bool"}}}}"#;
        for schema in [toml(&toml_text), Schema::parse(json_text, Format::Json).unwrap()] {
            let items = schema.table("items").unwrap();
            assert_eq!(column_names(items), ["id", "zeta", "alpha", "mid"]);
            let back = Schema::from_json_canonical(&schema.to_json()).unwrap();
            assert_eq!(column_names(back.table("items").unwrap()), ["id", "zeta", "alpha", "mid"]);
        }
        // Inline tables keep their order too, and so do tables.
        let inline = toml(
            r#"namespace = "n"
               [tables.z]
               primary_key = ["b"]
               columns = { b = "text", a = "text" }
               [tables.a]
               primary_key = ["y"]
               columns = { y = "text", x = "text" }"#,
        );
        let tables: Vec<_> = inline.tables().iter().map(|t| t.local_name()).collect();
        assert_eq!(tables, ["z", "a"]);
        assert_eq!(column_names(&inline.tables()[0]), ["b", "a"]);
    }

    #[test]
    fn canonical_json_round_trips() {
        for file in ["todo.toml", "todo-v2.toml", "contacts.json"] {
            let schema = example(file);
            let json = schema.to_json();
            let back = Schema::from_json_canonical(&json).unwrap();
            assert_eq!(back, schema, "{file}");
            assert_eq!(back.to_json(), json, "{file}");
        }
        let todo = concat!(
            r#"{"namespace":"todo","tables":{"#,
            r#""lists":{"primary_key":["id"],"columns":{"#,
            r#""id":{"type":"text","nullable":false},"#,
            r#""name":{"type":"text","nullable":false},"#,
            r#""created_at":{"type":"timestamp","nullable":true}}},"#,
            r#""items":{"primary_key":["id"],"columns":{"#,
            r#""id":{"type":"text","nullable":false},"#,
            r#""list":{"type":"reference","table":"todo.lists","nullable":false},"#,
            r#""title":{"type":"text","nullable":false},"#,
            r#""done":{"type":"bool","nullable":false,"default":false},"#,
            r#""priority":{"type":"integer","nullable":false,"default":0},"#,
            r#""due":{"type":"timestamp","nullable":true},"#,
            r#""notes":{"type":"json","nullable":true}},"#,
            r#""indexes":[{"columns":["list","done"]}]}}}"#,
        );
        assert_eq!(example("todo.toml").to_json(), todo);
    }

    #[test]
    fn serde_keeps_the_file_order_and_checks() {
        let json_text = r#"{"namespace": "todo", "tables": {
            "zz": {"primary_key": ["id"], "columns": {"id": "text", "zeta": "text", "alpha": "integer"}},
            "aa": {"primary_key": ["k"], "columns": {"k": "text"}}}}"#;
        let schema = Schema::parse(json_text, Format::Json).unwrap();
        let text = serde_json::to_string(&[&schema]).unwrap();
        assert_eq!(text, format!("[{}]", schema.to_json()));
        let back: Vec<Schema> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, [schema]);
        let error = serde_json::from_str::<Schema>(r#"{"namespace": "Bad", "tables": {}}"#);
        assert!(error.unwrap_err().to_string().contains("invalid namespace"));
    }

    #[test]
    fn defaults_of_every_type() {
        let schema = toml(&items(
            r#"b = { type = "bool", default = true }
i = { type = "integer", default = -7 }
r = { type = "real", default = 1.5 }
r0 = { type = "real", default = 3 }
rn = { type = "real", default = -0.0 }
t = { type = "text", default = "x" }
y = { type = "bytes", default = "00FFa0" }
ts = { type = "timestamp", default = 1700000000000000 }
tz = { type = "timestamp", default = "2024-01-31T09:00:00.5+01:00" }
td = { type = "timestamp", default = 1979-05-27T07:32:00Z }
js = { type = "json", default = '{"a": [1, 2]}' }
jv = { type = "json", default = { b = [1, "two", false], a = 1.5 } }
jn = { type = "json", default = 3 }
ns = { type = "text", nullable = true, default = "" }"#,
            "",
        ));
        let items = schema.table("items").unwrap();
        let default = |c: &str| items.column(c).unwrap().default.clone().unwrap();
        assert_eq!(default("b"), Value::Bool(true));
        assert_eq!(default("i"), Value::Integer(-7));
        assert_eq!(default("r"), Value::Real(1.5));
        assert_eq!(default("r0"), Value::Real(3.0));
        assert_eq!(default("rn").encode(), Value::Real(-0.0).encode());
        assert_eq!(default("t"), Value::Text("x".into()));
        assert_eq!(default("y"), Value::Bytes(vec![0, 0xff, 0xa0]));
        assert_eq!(default("ts"), Value::Timestamp(1_700_000_000_000_000));
        assert_eq!(default("tz"), Value::Timestamp(1_706_688_000_500_000));
        assert_eq!(default("td"), Value::Timestamp(296_638_320_000_000));
        assert_eq!(default("js"), Value::Json(r#"{"a": [1, 2]}"#.into()));
        assert_eq!(default("jv"), Value::Json(r#"{"a":1.5,"b":[1,"two",false]}"#.into()));
        assert_eq!(default("jn"), Value::Json("3".into()));
        assert_eq!(default("ns"), Value::Text(String::new()));
        // Every default fits its column by the protocol's own check.
        for column in items.columns() {
            if let Some(value) = &column.default {
                column.def.check(value).unwrap();
            }
        }
        // And survives the canonical form.
        let back = Schema::from_json_canonical(&schema.to_json()).unwrap();
        assert_eq!(back.to_json(), schema.to_json());
        assert_eq!(back, schema);
        assert!(
            schema
                .to_json()
                .contains(r#""y":{"type":"bytes","nullable":false,"default":"00ffa0"}"#)
        );

        // JSON defaults, including a structured JSON value.
        let json = Schema::parse(
            r#"{"namespace": "n", "tables": {"t": {"primary_key": ["id"], "columns": {
                "id": "integer",
                "j": {"type": "json", "default": {"k": [true, null]}},
                "r": {"type": "real", "default": 2},
                "ts": {"type": "timestamp", "default": "1970-01-01T00:00:01Z"},
                "n": {"type": "text", "nullable": true, "default": null}}}}}"#,
            Format::Json,
        )
        .unwrap();
        let t = json.table("t").unwrap();
        assert_eq!(
            t.column("j").unwrap().default,
            Some(Value::Json(r#"{"k":[true,null]}"#.into()))
        );
        assert_eq!(t.column("r").unwrap().default, Some(Value::Real(2.0)));
        assert_eq!(t.column("ts").unwrap().default, Some(Value::Timestamp(1_000_000)));
        assert_eq!(t.column("n").unwrap().default, None);
    }

    #[test]
    fn rfc3339_conversion() {
        let at = |s: &str| micros(&s.parse::<Datetime>().unwrap());
        assert_eq!(at("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(at("2000-01-01T00:00:00Z"), Ok(946_684_800_000_000));
        assert_eq!(at("2000-03-01T00:00:00Z"), Ok(951_868_800_000_000));
        assert_eq!(at("1969-12-31T23:59:59.999999Z"), Ok(-1));
        assert_eq!(at("0000-01-01T00:00:00Z"), Ok(-62_167_219_200_000_000));
        assert_eq!(at("9999-12-31T23:59:59Z"), Ok(253_402_300_799_000_000));
        assert_eq!(at("2024-02-29T12:00:00-05:30"), Ok(1_709_227_800_000_000));
        assert_eq!(at("2024-01-31 09:00:00Z"), Ok(1_706_691_600_000_000));
        assert!(at("2024-01-31T09:00:00").unwrap_err().contains("offset"));
        assert!(at("2024-01-31").is_err());
        assert!(at("2024-01-31T09:00Z").unwrap_err().contains("seconds"));
        assert!(at("2016-12-31T23:59:60Z").unwrap_err().contains("leap second"));
        assert!(at("2024-01-31T09:00:00.0000001Z").unwrap_err().contains("microsecond"));
        // Leap years: every fourth, but not every hundredth, but every 400th.
        assert_eq!(at("2024-03-01T00:00:00Z"), Ok(1_709_251_200_000_000));
        assert_eq!(at("2000-02-29T00:00:00Z"), Ok(951_782_400_000_000));
        assert_eq!(at("1900-03-01T00:00:00Z"), Ok(-2_203_891_200_000_000));
        for not_a_day in ["2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-04-31T00:00:00Z"] {
            assert!(not_a_day.parse::<Datetime>().is_err(), "{not_a_day}");
            assert!(timestamp_from_text(not_a_day).is_err(), "{not_a_day}");
        }
        // Offsets move the instant, to the far ends of the years held.
        assert_eq!(at("1970-01-01T00:00:00+01:00"), Ok(-3_600_000_000));
        assert_eq!(at("1970-01-01T00:00:00-00:01"), Ok(60_000_000));
        assert_eq!(at("9999-12-31T23:59:59-23:59"), Ok(253_402_387_139_000_000));
        assert_eq!(at("0000-01-01T00:00:00+23:59"), Ok(-62_167_305_540_000_000));
        assert_eq!(at("1969-12-31T19:00:00.000001-05:00"), Ok(1));
        assert!(timestamp_from_text("2024-01-31T09:00:00+24:00").is_err());
        assert!(timestamp_from_text("10000-01-01T00:00:00Z").is_err());
        assert!(timestamp_from_text("2024-13-01T00:00:00Z").is_err());
        assert!(timestamp_from_text("2024-01-31T24:00:00Z").is_err());
    }

    /// Asserts that TOML `text` is refused with `message`.
    fn fails(text: &str, message: &str) {
        assert_eq!(toml_err(text), message, "{text}");
    }

    /// A `todo` schema of one table `items` with `key` and inline `columns`.
    fn one_table(key: &str, columns: &str) -> String {
        format!(
            "namespace = \"todo\"\n[tables.items]\nprimary_key = {key}\ncolumns = {{ {columns} }}"
        )
    }

    #[test]
    fn bad_defaults() {
        let column = |c: &str| items(c, "");
        fails(
            &column(r#"d = { type = "bool", default = "no" }"#),
            "todo.items.d: default \"no\" does not fit type bool: expected true or false",
        );
        fails(
            &column(r#"d = { type = "integer", default = 1.5 }"#),
            "todo.items.d: default 1.5 does not fit type integer: expected an integer",
        );
        fails(
            &column(r#"d = { type = "real", default = nan }"#),
            "todo.items.d: default NaN is not a value",
        );
        fails(
            &column(r#"d = { type = "real", default = -inf }"#),
            "todo.items.d: default -inf is not finite",
        );
        fails(
            &column(r#"d = { type = "real", default = 9007199254740993 }"#),
            "todo.items.d: default 9007199254740993 cannot be held exactly by a real",
        );
        fails(
            &column(r#"d = { type = "text", default = 1 }"#),
            "todo.items.d: default 1 does not fit type text: expected a string",
        );
        fails(
            &column(r#"d = { type = "bytes", default = "xyz" }"#),
            "todo.items.d: default \"xyz\" is not hex bytes such as \"00ff\": Odd number of digits",
        );
        fails(
            &column(r#"d = { type = "timestamp", default = 1.0 }"#),
            "todo.items.d: default 1.0 does not fit type timestamp: expected integer \
             microseconds since 1970-01-01T00:00:00Z, or an RFC 3339 date-time with an offset \
             such as \"2024-01-31T09:00:00Z\"",
        );
        fails(
            &column(r#"d = { type = "timestamp", default = "yesterday" }"#),
            "todo.items.d: default \"yesterday\" is not an RFC 3339 date-time such as \
             \"2024-01-31T09:00:00Z\": invalid datetime, expected year or hour",
        );
        fails(
            &column(r#"d = { type = "timestamp", default = 2024-01-31T09:00:00 }"#),
            "todo.items.d: default 2024-01-31T09:00:00: needs a date, a time and an offset \
             (Z or ±hh:mm)",
        );
        fails(
            &column(r#"d = { type = "json", default = "hello" }"#),
            "todo.items.d: default \"hello\" is not JSON text (expected value at line 1 \
             column 1); to store a JSON string, quote it: '\"…\"'",
        );
        fails(
            &column(r#"d = { type = "json", default = [1979-05-27] }"#),
            "todo.items.d: the date-time 1979-05-27 is not JSON; quote it to store a string",
        );
        fails(
            &column(r#"d = { type = "reference", table = "items", default = "x" }"#),
            "todo.items.d: a reference cannot have a default; make it nullable instead",
        );
        let huge = r#"{"namespace": "n", "tables": {"t": {"primary_key": ["id"],
            "columns": {"id": "text", "d": {"type": "integer", "default": 18446744073709551615}}}}}"#;
        assert_eq!(
            Schema::parse(huge, Format::Json).unwrap_err().to_string(),
            "n.t.d: default 18446744073709551615 is over the largest integer, 2^63-1"
        );
    }

    #[test]
    fn bad_columns() {
        fails(
            &items(r#"list = { type = "reference", table = "listz" }"#, ""),
            "todo.items.list: references table todo.listz, which does not exist",
        );
        fails(
            &items(r#"x = "float""#, ""),
            "todo.items.x: unknown type \"float\"; the types are text, integer, real, bool, \
             bytes, timestamp, json and reference",
        );
        fails(
            &items(r#"x = "reference""#, ""),
            "todo.items.x: a reference needs a table: { type = \"reference\", table = \"lists\" }",
        );
        fails(
            &items(r#"x = { type = "text", table = "items" }"#, ""),
            "todo.items.x: `table` is only for columns of type reference",
        );
        fails(
            &items(r#"x = { type = "reference", table = "a.b.c" }"#, ""),
            "todo.items.x: invalid referenced table \"a.b.c\": expected `table` or \
             `namespace.table`",
        );
        fails(
            &items(r#"Title = "text""#, ""),
            "todo.items: invalid column name \"Title\": must be lowercase letters, digits and \
             '_', not starting with a digit",
        );
        fails(
            &items(&format!("{} = \"text\"", "a".repeat(33)), ""),
            "todo.items: invalid column name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be 1 to \
             32 characters long",
        );
    }

    #[test]
    fn bad_keys_and_tables() {
        fails(
            "namespace = \"todo\"\n[tables.items]\ncolumns = { id = \"text\" }",
            "todo.items: primary_key is missing: name the column(s) that identify a row, e.g. \
             primary_key = [\"id\"]",
        );
        fails(
            &one_table(r#"["idd"]"#, r#"id = "text""#),
            "todo.items: primary_key names column \"idd\", which does not exist",
        );
        fails(
            &one_table("[]", r#"id = "text""#),
            "todo.items: primary_key has 0 columns; it needs 1 to 8",
        );
        fails(
            &one_table(r#"["id", "id"]"#, r#"id = "text""#),
            "todo.items: primary_key names `id` twice",
        );
        fails(
            &one_table(r#"["id"]"#, r#"id = { type = "text", nullable = true }"#),
            "todo.items.id: a primary key column cannot be nullable",
        );
        fails(
            &one_table(r#"["id"]"#, r#"id = "real""#),
            "todo.items.id: a primary key column must be integer, text, bytes or a reference, \
             not real",
        );
        fails(
            &one_table(r#"["id"]"#, r#"id = { type = "integer", default = 1 }"#),
            "todo.items.id: a primary key column cannot have a default: each row gives its own key",
        );
        fails(&one_table(r#"["id"]"#, ""), "todo.items: a table needs at least one column");
        fails(
            "namespace = \"todo\"",
            "todo: a schema needs at least one table, e.g. [tables.items]",
        );
        fails(
            &one_table(r#"["id"]"#, r#"id = "text""#).replace("\"todo\"", "\"To-do\""),
            "namespace: invalid namespace \"To-do\": must be lowercase letters, digits and '_', \
             not starting with a digit",
        );
        for reserved in ["sqlite_x", "_x"] {
            fails(
                &one_table(r#"["id"]"#, r#"id = "text""#)
                    .replace("\"todo\"", &format!("\"{reserved}\"")),
                &format!(
                    "namespace: invalid namespace \"{reserved}\": is reserved: a namespace may not \
                     start with sqlite_ or _"
                ),
            );
        }
        fails(
            &one_table(r#"["id"]"#, r#"id = "text""#).replace("tables.items", "tables.1items"),
            "todo: invalid table name \"1items\": must be lowercase letters, digits and '_', not \
             starting with a digit",
        );
        let n32 = "n".repeat(32);
        fails(
            &format!(
                "namespace = \"{n32}\"\n[tables.{n32}]\nprimary_key = [\"id\"]\ncolumns = {{ id = \"text\" }}"
            ),
            &format!("{n32}: table {n32}.{n32}: must be 1 to 64 bytes long"),
        );
        fails(
            r#"namespace = "n"
               [tables.pairs]
               primary_key = ["a", "b"]
               columns = { a = "text", b = "text" }
               [tables.t]
               primary_key = ["id"]
               columns = { id = "text", p = { type = "reference", table = "pairs" } }"#,
            "n.t.p: references table n.pairs, whose primary key has 2 columns; a reference \
             needs a table with a one-column key",
        );
        // Keys that reference each other never reach a type.
        fails(
            r#"namespace = "n"
               [tables.a]
               primary_key = ["id"]
               columns = { id = { type = "reference", table = "b" } }
               [tables.b]
               primary_key = ["id"]
               columns = { id = { type = "reference", table = "a" } }"#,
            "n.a.id: references table n.b, whose key is a reference that leads back to it; some \
             table in the chain needs an integer, text or bytes key",
        );
    }

    #[test]
    fn bad_indexes() {
        let index = |indexes: &str| items("a = \"text\"\nb = \"text\"\na_b = \"text\"", indexes);
        fails(
            &index(r#"indexes = [{ columns = ["a"], unique = true }]"#),
            "todo.items index (a): unique indexes are not supported: devices write concurrently \
             and offline, so no device can enforce uniqueness for the others; rows with equal \
             primary keys merge instead, so make the unique columns the primary key",
        );
        fails(
            &index(r#"indexes = [{ columns = ["nope"] }]"#),
            "todo.items index (nope): column \"nope\" does not exist",
        );
        fails(
            &index("indexes = [{ columns = [] }]"),
            "todo.items index (): an index has 0 columns; it needs 1 to 8",
        );
        fails(
            &index(r#"indexes = [{ columns = ["a", "a"] }]"#),
            "todo.items index (a, a): names column `a` twice",
        );
        fails(
            &index(r#"indexes = [{ columns = ["a"] }, { columns = ["a"] }]"#),
            "todo.items index (a): the same index appears twice",
        );
        fails(
            &index(r#"indexes = [{ columns = ["a", "b"] }, { columns = ["a_b"] }]"#),
            "todo.items index (a_b): its name todo.items.by_a_b is also the name of index (a, b); \
             index names are made from column names, so these two cannot both exist",
        );
        // `unique = false` is merely redundant.
        let plain = toml(&index(r#"indexes = [{ columns = ["b", "a"], unique = false }]"#));
        assert_eq!(plain.table("items").unwrap().indexes()[0].name, "todo.items.by_b_a");
    }

    #[test]
    fn syntax_errors_say_where() {
        let typo = toml_err(&items("x = { type = \"text\", nulable = true }", ""));
        assert!(typo.starts_with("invalid TOML: TOML parse error at line 7, column 22"), "{typo}");
        assert!(typo.contains("unknown field `nulable`"), "{typo}");
        let duplicate = r#"{"namespace": "n", "tables": {"t": {"primary_key": ["id"],
            "columns": {"id": "text", "id": "integer"}}}}"#;
        assert_eq!(
            Schema::parse(duplicate, Format::Json).unwrap_err().to_string(),
            "invalid JSON: duplicate name `id` at line 2 column 54"
        );
        let list = Schema::parse(r#"{"namespace": "n", "tables": []}"#, Format::Json);
        assert_eq!(
            list.unwrap_err().to_string(),
            "invalid JSON: invalid type: sequence, expected a table (a JSON object) of names at line 1 column 29"
        );
        let neither = Schema::parse_either("namespace: todo").unwrap_err().to_string();
        assert!(neither.starts_with("neither TOML nor JSON"), "{neither}");
        assert!(neither.contains("\nas JSON: expected ident at line 1 column 2"), "{neither}");
        assert_eq!(
            Schema::parse_either(&example_text("contacts.json")).unwrap(),
            example("contacts.json")
        );
        assert_eq!(Schema::parse_either(&example_text("todo.toml")).unwrap(), example("todo.toml"));
        let big = " ".repeat(MAX_SCHEMA_LEN + 1);
        assert!(matches!(Schema::parse(&big, Format::Toml), Err(SchemaError::TooLarge { .. })));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("todo.toml");
        std::fs::write(&path, items("list = { type = \"reference\", table = \"listz\" }", ""))
            .unwrap();
        assert_eq!(
            Schema::from_file(&path).unwrap_err().to_string(),
            format!(
                "{}: todo.items.list: references table todo.listz, which does not exist",
                path.display()
            )
        );
        let missing = dir.path().join("missing.toml");
        let error = Schema::from_file(&missing).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{}: cannot read: ", missing.display())), "{error}");
        // No extension: TOML, then JSON.
        let path = dir.path().join("contacts");
        std::fs::write(&path, example_text("contacts.json")).unwrap();
        assert_eq!(Schema::from_file(&path).unwrap(), example("contacts.json"));
        std::fs::write(&path, b"\xff\xfe").unwrap();
        assert_eq!(
            Schema::from_file(&path).unwrap_err().to_string(),
            format!("{}: not UTF-8 text", path.display())
        );
    }

    #[test]
    fn plan_todo_v2_lists_exactly_the_additions() {
        let mut catalog = Catalog::new();
        let first = catalog.apply(example("todo.toml")).unwrap();
        assert_eq!(first.tables.len(), 2);
        assert_eq!(first.indexes.len(), 1);
        assert!(first.columns.is_empty());

        let v2 = example("todo-v2.toml");
        let migration = catalog.plan(&v2).unwrap();
        assert_eq!(migration.namespace, name("todo"));
        assert_eq!(migration.tables, [v2.table("comments").unwrap().clone()]);
        let columns: Vec<_> =
            migration.columns.iter().map(|c| (c.table.as_str(), c.column.name.as_str())).collect();
        assert_eq!(columns, [("todo.lists", "archived"), ("todo.items", "tags")]);
        assert_eq!(migration.columns[0].column.default, Some(Value::Bool(false)));
        assert_eq!(
            migration.columns[1].column.def,
            ColumnDef { ty: ColumnType::Json, nullable: true }
        );
        let indexes: Vec<_> = migration.indexes.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(indexes, ["todo.items.by_due", "todo.comments.by_item_written_at"]);
        assert!(!migration.is_empty());

        // Planning changes nothing; applying does, and then v2 adds nothing.
        assert_eq!(catalog.schema("todo"), Some(&example("todo.toml")));
        assert_eq!(catalog.apply(v2.clone()).unwrap(), migration);
        assert_eq!(catalog.schema("todo"), Some(&v2));
        assert!(catalog.plan(&v2).unwrap().is_empty());
        // Going back to v1 drops what v2 added.
        assert_eq!(
            catalog.plan(&example("todo.toml")).unwrap_err().to_string(),
            "todo.comments: table dropped: rows written to it must stay readable by other apps \
             and devices, so tables cannot be dropped"
        );
    }

    #[test]
    fn refusals() {
        const TITLE: &str = r#"title = "text""#;
        const DONE: &str = r#"done = { type = "bool", default = false }"#;
        const DUE: &str = r#"due = { type = "timestamp", nullable = true }"#;
        const INDEX: &str = r#"indexes = [{ columns = ["done"] }]"#;
        let version = |columns: &[&str]| items(&columns.join("\n"), INDEX);
        let base = version(&[TITLE, DONE, DUE]);
        let refused = |new: String, message: &str| assert_eq!(refusal(&base, &new), message);

        refused(
            one_table(r#"["id"]"#, r#"id = "text""#).replace("tables.items", "tables.other"),
            "todo.items: table dropped: rows written to it must stay readable by other apps and \
             devices, so tables cannot be dropped",
        );
        refused(
            version(&[DONE, DUE]),
            "todo.items.title: column dropped: rows written with it must stay readable by other \
             apps and devices, so columns cannot be dropped",
        );
        refused(
            version(&[r#"title = "json""#, DONE, DUE]),
            "todo.items.title: type changed from text to json: rows already written hold values \
             of the current type, so a column's type cannot change",
        );
        refused(
            version(&[r#"title = { type = "text", nullable = true }"#, DONE, DUE]),
            "todo.items.title: made nullable: apps and devices on the current version expect a \
             value in every row, so a column cannot become nullable",
        );
        refused(
            version(&[TITLE, DONE, r#"due = { type = "timestamp", default = 0 }"#]),
            "todo.items.due: made non-nullable: existing rows may hold NULL in it",
        );
        refused(
            version(&[TITLE, r#"done = { type = "bool", default = true }"#, DUE]),
            "todo.items.done: default changed from false to true: rows with no value in this \
             column (written before it existed, or by apps on an older version) read as its \
             default, so changing the default would change them",
        );
        refused(
            version(&[r#"title = { type = "text", default = "untitled" }"#, DONE, DUE]),
            "todo.items.title: default changed from none to \"untitled\": rows with no value in \
             this column (written before it existed, or by apps on an older version) read as its \
             default, so changing the default would change them",
        );
        refused(
            version(&[TITLE, DONE, DUE, r#"owner = "text""#]),
            "todo.items.owner: new column is not nullable and has no default: existing rows would \
             have no value for it; make it nullable or give it a default",
        );
        refused(
            items(&[TITLE, DONE, DUE].join("\n"), ""),
            "todo.items index (done): index dropped: apps and devices on the current version may \
             rely on it for the speed of their queries, and a new version may only add; keep it \
             in the file",
        );
        refused(
            version(&[DONE, TITLE, DUE]),
            "todo.items.done: existing column moved: columns keep their order, which is the order \
             of SELECT *; expected `title` at position 2",
        );
        refused(
            version(&[TITLE, r#"note = { type = "text", nullable = true }"#, DONE, DUE]),
            "todo.items.note: new column placed among existing ones: columns keep their order, \
             which is the order of SELECT *; add it after `due`",
        );
        refused(
            version(&[TITLE, DONE, DUE])
                .replace(r#"primary_key = ["id"]"#, r#"primary_key = ["id", "title"]"#),
            "todo.items: primary key changed from (id) to (id, title): the key identifies each \
             row on every device, so it cannot change",
        );

        // A reference to another table is a different type.
        let v1 = r#"namespace = "n"
            [tables.a]
            primary_key = ["id"]
            columns = { id = "text" }
            [tables.b]
            primary_key = ["id"]
            columns = { id = "text", r = { type = "reference", table = "a" } }"#;
        let v2 = v1.replace(r#"table = "a""#, r#"table = "b""#);
        assert_eq!(
            refusal(v1, &v2),
            "n.b.r: type changed from reference to n.a to reference to n.b: rows already written \
             hold values of the current type, so a column's type cannot change"
        );

        // Refused changes leave the catalog as it was.
        let mut catalog = Catalog::new();
        catalog.apply(toml(&base)).unwrap();
        assert!(catalog.apply(toml(&items("", ""))).is_err());
        assert_eq!(catalog.schema("todo"), Some(&toml(&base)));
    }

    #[test]
    fn allowed_changes() {
        let mut catalog = Catalog::new();
        catalog.apply(toml(&items("a = \"text\"", "indexes = [{ columns = [\"a\"] }]"))).unwrap();
        // Reordering tables and indexes, and re-spelling a column, adds nothing.
        let same =
            items("a = { type = \"text\", nullable = false }", "indexes = [{ columns = [\"a\"] }]");
        assert!(catalog.plan(&toml(&same)).unwrap().is_empty());
        let two = items(
            "a = \"text\"",
            "indexes = [{ columns = [\"id\", \"a\"] }, { columns = [\"a\"] }]",
        );
        let migration = catalog.apply(toml(&two)).unwrap();
        assert_eq!(migration.indexes.len(), 1);
        assert_eq!(migration.indexes[0].name, "todo.items.by_id_a");
    }

    #[test]
    fn references_across_namespaces() {
        let calendar = toml(
            r#"namespace = "calendar"
[tables.events]
primary_key = ["id"]
[tables.events.columns]
id = "integer"
organizer = { type = "reference", table = "contacts.people", nullable = true }
task = { type = "reference", table = "todo.items", nullable = true }
"#,
        );
        // Parsing alone cannot see other namespaces; the catalog can.
        let mut catalog = Catalog::new();
        assert_eq!(
            catalog.plan(&calendar).unwrap_err().to_string(),
            "calendar.events.organizer: references table contacts.people, which does not exist"
        );
        catalog.apply(example("contacts.json")).unwrap();
        assert_eq!(
            catalog.plan(&calendar).unwrap_err().to_string(),
            "calendar.events.task: references table todo.items, which does not exist"
        );
        catalog.apply(example("todo.toml")).unwrap();
        catalog.apply(calendar.clone()).unwrap();

        let events = name("calendar.events");
        assert_eq!(catalog.value_type(&events, "organizer"), Some(ColumnType::Text));
        assert_eq!(catalog.value_type(&events, "id"), Some(ColumnType::Integer));
        assert_eq!(catalog.value_type(&events, "nope"), None);
        assert_eq!(catalog.value_type(&name("calendar.nope"), "id"), None);
        assert_eq!(catalog.value_type(&name("todo.items"), "list"), Some(ColumnType::Text));
        assert_eq!(catalog.value_type(&name("contacts.emails"), "person"), Some(ColumnType::Text));
        // Strict checks resolve the reference; the column's own check does not.
        let strict = catalog.value_def(&events, "organizer").unwrap();
        assert_eq!(strict, ColumnDef { ty: ColumnType::Text, nullable: true });
        assert!(strict.check(&Value::Text("p1".into())).is_ok());
        assert!(strict.check(&Value::Null).is_ok());
        assert!(strict.check(&Value::Integer(1)).is_err());
        let own = &catalog.table(&events).unwrap().column("organizer").unwrap().def;
        assert!(own.check(&Value::Integer(1)).is_ok());

        // A key that is a reference resolves through to the base type.
        let profiles = toml(
            r#"namespace = "profiles"
[tables.cards]
primary_key = ["person"]
columns = { person = { type = "reference", table = "contacts.people" }, bio = "text" }
[tables.notes]
primary_key = ["id"]
columns = { id = "bytes", card = { type = "reference", table = "cards" } }
"#,
        );
        catalog.apply(profiles).unwrap();
        assert_eq!(catalog.value_type(&name("profiles.notes"), "card"), Some(ColumnType::Text));
        assert_eq!(catalog.value_type(&name("profiles.notes"), "id"), Some(ColumnType::Bytes));

        // Stored schemas load in any order, and must still resolve.
        let mut stored: Vec<_> =
            catalog.schemas().map(|s| Schema::from_json_canonical(&s.to_json()).unwrap()).collect();
        stored.reverse();
        assert_eq!(Catalog::from_schemas(stored.clone()).unwrap(), catalog);
        let without_contacts =
            stored.iter().filter(|s| s.namespace().as_str() != "contacts").cloned();
        assert_eq!(
            Catalog::from_schemas(without_contacts).unwrap_err().to_string(),
            "calendar.events.organizer: references table contacts.people, which does not exist"
        );
        let twice = [example("todo.toml"), example("todo.toml")];
        assert_eq!(
            Catalog::from_schemas(twice).unwrap_err().to_string(),
            "todo: the namespace appears twice"
        );
    }

    /// TOML text for a one-table schema with the given columns; the first
    /// is the key.
    fn generated(columns: &[(String, usize, bool, Option<String>)]) -> String {
        let mut text = String::from(
            "namespace = \"gen\"\n[tables.t]\nprimary_key = [\"k\"]\n[tables.t.columns]\nk = \"integer\"\n",
        );
        for (name, ty, nullable, default) in columns {
            let ty = ["text", "integer", "real", "bool", "bytes", "timestamp", "json"][*ty];
            text += &format!("{name} = {{ type = \"{ty}\", nullable = {nullable}");
            if let Some(default) = default {
                text += &format!(", default = {default}");
            }
            text += " }\n";
        }
        text
    }

    fn any_column() -> impl Strategy<Value = (String, usize, bool, Option<String>)> {
        let default = |ty: usize| -> BoxedStrategy<String> {
            match ty {
                0 => ".{0,12}"
                    .prop_map(|s| serde_json::to_string(&s).unwrap().replace('\u{7f}', "\\u007f"))
                    .boxed(),
                1 | 5 => any::<i64>().prop_map(|i| i.to_string()).boxed(),
                2 => any::<f64>()
                    .prop_filter("finite", |x| x.is_finite())
                    .prop_map(|x| format!("{x:?}"))
                    .boxed(),
                3 => any::<bool>().prop_map(|b| b.to_string()).boxed(),
                4 => proptest::collection::vec(any::<u8>(), 0..8)
                    .prop_map(|b| format!("\"{}\"", hex::encode(b)))
                    .boxed(),
                _ => prop_oneof![
                    Just("'{\"a\": [1, null]}'".to_owned()),
                    Just("[1, \"x\", { y = false }]".to_owned()),
                    any::<i32>().prop_map(|i| i.to_string()),
                ]
                .boxed(),
            }
        };
        ("[a-z_][a-z0-9_]{0,10}", 0..7usize, any::<bool>()).prop_flat_map(
            move |(name, ty, nullable)| {
                (Just(name), Just(ty), Just(nullable), proptest::option::of(default(ty)))
            },
        )
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = Schema::parse(&text, Format::Toml);
            let _ = Schema::parse(&text, Format::Json);
            let _ = Schema::parse_either(&text);
        }

        #[test]
        fn mangled_examples_never_panic(
            file in prop::sample::select(vec!["todo.toml", "todo-v2.toml", "contacts.json"]),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0..6usize, "[ -~]{0,3}"),
                1..4,
            ),
        ) {
            let mut text = example_text(file);
            crate::test_edits::apply_edits(&mut text, edits);
            let mut catalog = Catalog::new();
            for format in [Format::Toml, Format::Json] {
                if let Ok(schema) = Schema::parse(&text, format) {
                    let back = Schema::from_json_canonical(&schema.to_json()).unwrap();
                    prop_assert_eq!(&back, &schema);
                    let _ = catalog.apply(schema);
                }
            }
        }

        #[test]
        fn generated_schemas_round_trip(columns in proptest::collection::vec(any_column(), 0..12)) {
            let mut seen = BTreeSet::from(["k".to_owned()]);
            let columns: Vec<_> =
                columns.into_iter().filter(|c| seen.insert(c.0.clone())).collect();
            let schema = toml(&generated(&columns));
            let names: Vec<_> = column_names(&schema.tables()[0]).into_iter().skip(1).collect();
            prop_assert_eq!(names, columns.iter().map(|c| c.0.as_str()).collect::<Vec<_>>());
            let json = schema.to_json();
            let back = Schema::from_json_canonical(&json).unwrap();
            prop_assert_eq!(back.to_json(), json);
            // Defaults compare by encoding (-0.0 is not 0.0).
            for (a, b) in back.tables()[0].columns().iter().zip(schema.tables()[0].columns()) {
                prop_assert_eq!(&a.name, &b.name);
                prop_assert_eq!(&a.def, &b.def);
                prop_assert!(same_default(&a.default, &b.default));
            }
        }
    }
}
