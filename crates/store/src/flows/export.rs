//! Export and import: a whole database, or one namespace, as JSON lines or
//! as a standalone SQLite file; and back from JSON lines.
//!
//! Data portability is a promise of Basic: what an app stored can leave in
//! formats every tool reads, and come back.
//!
//! ```
//! use std::io::Cursor;
//! use basic_store::{Database, Schema};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
//! let (here, there) = (tempfile::tempdir()?, tempfile::tempdir()?);
//! let db = Database::open(here.path())?;
//! db.apply_schema(Schema::from_file(examples.join("todo.toml"))?)?;
//! db.execute("INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')", &[], None)?;
//!
//! let mut file = Vec::new();
//! db.export_jsonl(None, &mut file)?;
//! let text = String::from_utf8(file.clone())?;
//! assert!(text.lines().nth(1).unwrap().starts_with(r#"{"table":"todo.lists","row":{"id":"home""#));
//!
//! let copy = Database::open(there.path())?;
//! let summary = copy.import_jsonl(Cursor::new(file), None)?;
//! assert_eq!(summary.rows, 1);
//! assert_eq!(copy.query("SELECT name FROM todo.lists", &[], None)?.rows.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # JSON lines
//!
//! ```text
//! {"basic_export":1,"database":"db_…","schemas":[{"namespace":"todo","tables":{…}}]}
//! {"table":"todo.lists","row":{"id":"home","name":"Home","created_at":null}}
//! {"table":"todo.items","row":{"id":"a","list":"home","title":"Buy milk","done":false,"priority":2,"due":1795824000000000,"notes":{"tags":["shop"]}}}
//! ```
//!
//! The first line is the header: the format version (`basic_export`,
//! [`FORMAT_VERSION`]), the id of the database exported (for information)
//! and the schemas, each in its canonical form ([`Schema::to_json`]) as a
//! JSON object. Then one line per live row: the table's full name and the
//! row, every column in schema order. Tables come in schema order, namespace
//! after namespace; rows in primary-key order (integers by value, text and
//! bytes by their bytes).
//!
//! A namespace export has the rows of that namespace only. Its header has
//! that namespace's schema and, if its references point into other
//! namespaces, theirs too, so that the file imports into an empty database.
//!
//! Values, by column type:
//!
//! | column    | JSON                                                        |
//! |-----------|-------------------------------------------------------------|
//! | integer   | number                                                      |
//! | real      | number, in the shortest form that reads back exactly (`0.1`, `-0.0`, `1e300`); infinities as the strings `"inf"` and `"-inf"` |
//! | bool      | `true` / `false`                                            |
//! | text      | string                                                      |
//! | bytes     | string: base64, standard alphabet, padded (RFC 4648 §4)     |
//! | timestamp | number: microseconds since 1970-01-01T00:00:00Z             |
//! | json      | the document itself, as stored: key order, repeated keys and the spelling of numbers are kept (numbers of any size); line breaks between tokens become spaces, whitespace around the document is dropped |
//! | reference | as its key's type                                           |
//! | NULL      | `null`                                                      |
//!
//! One value does not come back: the JSON document `null` in a *nullable*
//! json column is written `null`, which imports as SQL NULL. (In a json
//! column that is not nullable, `null` is the document.)
//!
//! # Import
//!
//! [`Database::import_jsonl`] reads the file twice. The first pass checks
//! the header's schemas against the database's (the usual additive rules
//! of [`Catalog::plan`]; a namespace whose schema in the database already
//! extends the file's is kept as it is) and then every row line: JSON
//! syntax, known table and columns, key columns present, required columns
//! present, value types and sizes. The first problem is returned with its
//! line number ([`ExportError::line`]) and *nothing* is imported, not even
//! the schemas. The second pass applies the schemas with
//! [`Database::apply_schema`] and writes the rows through the normal write
//! path: `INSERT OR REPLACE`, up to [`IMPORT_BATCH_ROWS`] rows a statement,
//! so every imported row is part of a commit signed by this device.
//!
//! A row whose key exists is replaced, so importing a file again is
//! harmless; within a file, a later line for the same key wins. A column
//! missing from a row line takes its default (or NULL), as in an `INSERT`.
//! Blank lines are skipped; CRLF line ends are accepted. The header line
//! may be up to [`MAX_HEADER_BYTES`] long, a row line [`MAX_LINE_BYTES`].
//! A line must be JSON as a whole (serde_json reads it; the error gives the
//! byte where it stops being JSON); an object of the format has each member
//! once and at most 1,024 of them; a json cell must also pass the
//! protocol's JSON rule (depth, numbers) and is kept as written.
//!
//! If the database fails during the second pass (the disk, a schema changed
//! by someone else meanwhile), the error gives the first line of the batch
//! that failed; the rows before that batch stay imported, and importing the
//! file again completes the import.
//!
//! # SQLite
//!
//! [`Database::export_sqlite`] writes a new SQLite file (it never
//! overwrites one) with the tables and indexes the view has: one `STRICT`
//! table per schema table, named `"namespace.table"` (quote it:
//! `SELECT * FROM "todo.items"`), with the same primary key and indexes.
//! Column types: text and json are `TEXT` (json as its text); integer,
//! bool (0 and 1) and timestamp (microseconds since 1970) are `INTEGER`;
//! real is `REAL`; bytes is `BLOB`; a reference takes its key's type. The
//! file has none of Basic's own bookkeeping.
//!
//! # Consistency
//!
//! An export reads every table inside one read transaction on the view, so
//! it is a snapshot of one moment: writes made while it runs are not in it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use basic_proto::{ColumnDef, ColumnType, Name, Value};
use rusqlite::{Connection, OpenFlags};
use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::error::Category;
use serde_json::value::RawValue;

use crate::database::{Database, DbError, Executed};
use crate::sql::schema::{Catalog, Schema, SchemaError, TableDef};
use crate::sql::view::{self, Param, quote};
use crate::storage::kv::Store;
use crate::value_json::{JSON_WHITESPACE, decode, excerpt, write_string, write_value};

/// The version of the JSON lines format written, and the only one read.
pub(crate) const FORMAT_VERSION: u64 = 1;
/// Longest header line an import reads, in bytes.
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 20;
/// Longest row line an import reads, in bytes. A row fits in one commit
/// (1 MiB), so its line, even with every character escaped, fits in this.
pub(crate) const MAX_LINE_BYTES: usize = 8 << 20;
/// Most rows one import statement writes.
pub(crate) const IMPORT_BATCH_ROWS: usize = 500;

/// Most parameters in one import statement (SQLite allows 32766).
const MAX_BATCH_PARAMS: usize = 30_000;
/// Bytes of values one import statement carries, at most (about).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most members in one JSON object of a line.
const MAX_MEMBERS: usize = 1_024;

/// Why an export or an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database refused or failed an operation.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The namespace asked for has no schema in this database.
    #[error("no namespace {0} in this database")]
    UnknownNamespace(Name),
    /// The SQLite file exists already: an export never overwrites a file.
    #[error("{} already exists: export to a new file", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Creating the SQLite file failed.
    #[error("cannot create {}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Writing the SQLite file failed; the file was removed.
    #[error("cannot write {}: SQLite: {error}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// Reading the database's view failed.
    #[error("cannot read the database: SQLite: {0}")]
    Read(rusqlite::Error),
    /// Writing the JSON lines failed.
    #[error("cannot write the export: {0}")]
    Output(std::io::Error),
    /// Reading the file to import failed.
    #[error("cannot read the import: {0}")]
    Input(std::io::Error),
    /// A line is longer than the import reads.
    #[error("line {line}: longer than {limit} bytes")]
    TooLong {
        /// The line number, from 1.
        line: u64,
        /// The most bytes that line may have.
        limit: usize,
    },
    /// A line is not JSON, or not the shape the format gives it.
    #[error("line {line}: {reason}")]
    Malformed {
        /// The line number, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The first line is not a header this build reads.
    #[error("line {line}: not a Basic export header: {reason}")]
    Header {
        /// The line number, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A schema in the header does not fit this database's schemas; nothing
    /// was imported.
    #[error("the file's schema of {namespace} does not fit this database: {error}")]
    Schema {
        /// The namespace.
        namespace: Name,
        /// Why.
        #[source]
        error: SchemaError,
    },
    /// A row of a table that is not in the header's schemas.
    #[error("line {line}: unknown table {table}: the header's schemas have no such table")]
    UnknownTable {
        /// The line number, from 1.
        line: u64,
        /// The table as written.
        table: String,
    },
    /// A row with a column its table does not have.
    #[error("line {line}: {table} has no column {column}")]
    UnknownColumn {
        /// The line number, from 1.
        line: u64,
        /// The table.
        table: Name,
        /// The column as written.
        column: String,
    },
    /// A row without one of its key columns.
    #[error("line {line}: the row of {table} has no {column}, a primary key column")]
    MissingKey {
        /// The line number, from 1.
        line: u64,
        /// The table.
        table: Name,
        /// The key column.
        column: Name,
    },
    /// A row without a column that is not nullable and has no default.
    #[error("line {line}: {table}.{column} is required: it is not nullable and has no default")]
    MissingValue {
        /// The line number, from 1.
        line: u64,
        /// The table.
        table: Name,
        /// The column.
        column: Name,
    },
    /// A value that does not fit its column.
    #[error("line {line}: {table}.{column}: expected {expected}, got {found}")]
    Type {
        /// The line number, from 1.
        line: u64,
        /// The table.
        table: Name,
        /// The column.
        column: Name,
        /// What the column takes.
        expected: String,
        /// What the line has.
        found: String,
    },
    /// The database failed while the rows were written; the rows before
    /// this line's batch are imported.
    #[error(
        "import stopped at the batch starting on line {line}: {error} (the rows before it are imported; importing the file again is safe)"
    )]
    Stopped {
        /// The first line of the batch that failed.
        line: u64,
        /// What the database said.
        error: DbError,
    },
}

impl ExportError {
    /// The line of the import file the error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            ExportError::TooLong { line, .. }
            | ExportError::Malformed { line, .. }
            | ExportError::Header { line, .. }
            | ExportError::UnknownTable { line, .. }
            | ExportError::UnknownColumn { line, .. }
            | ExportError::MissingKey { line, .. }
            | ExportError::MissingValue { line, .. }
            | ExportError::Type { line, .. }
            | ExportError::Stopped { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The namespaces whose tables were exported.
    pub namespaces: Vec<Name>,
    /// Rows written per table, every exported table included.
    pub tables: BTreeMap<Name, u64>,
    /// Rows written in all.
    pub rows: u64,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// The namespaces whose schema the import applied (new, or extended).
    pub schemas_applied: Vec<Name>,
    /// Rows imported per table.
    pub tables: BTreeMap<Name, u64>,
    /// Rows imported in all.
    pub rows: u64,
    /// Commits written.
    pub commits: usize,
}

impl<S: Store> Database<S> {
    /// Writes the database, or the namespace `namespace`, to `out` as JSON
    /// lines (the format: README, *Export and import*). `out` is buffered here.
    pub fn export_jsonl(
        &self,
        namespace: Option<&Name>,
        out: &mut impl Write,
    ) -> Result<ExportSummary, ExportError> {
        let catalog = self.catalog();
        let exported = selected(&catalog, namespace)?;
        let header_schemas = with_dependencies(&catalog, &exported);
        let snapshot = self.snapshot()?;
        let mut out = BufWriter::new(out);
        let mut line = String::new();
        line.push_str("{\"basic_export\":");
        let _ = write!(line, "{FORMAT_VERSION}");
        line.push_str(",\"database\":");
        write_string(&mut line, &self.id().to_string());
        line.push_str(",\"schemas\":[");
        for (i, schema) in header_schemas.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&schema.to_json());
        }
        line.push_str("]}\n");
        out.write_all(line.as_bytes()).map_err(ExportError::Output)?;
        let mut summary = summary(&exported);
        for table in exported.iter().flat_map(|schema| schema.tables()) {
            let mut prefix = String::from("{\"table\":");
            write_string(&mut prefix, table.name().as_str());
            prefix.push_str(",\"row\":{");
            // `"name":` of every column, with its separator.
            let keys: Vec<String> = table
                .columns()
                .iter()
                .enumerate()
                .map(|(i, column)| {
                    let mut key = String::from(if i > 0 { "," } else { "" });
                    write_string(&mut key, column.name.as_str());
                    key.push(':');
                    key
                })
                .collect();
            let rows = for_each_row(&snapshot, &catalog, table, |row| {
                line.clear();
                line.push_str(&prefix);
                for (key, value) in keys.iter().zip(row) {
                    line.push_str(key);
                    write_value(&mut line, value);
                }
                line.push_str("}}\n");
                out.write_all(line.as_bytes()).map_err(ExportError::Output)
            })?;
            summary.count(table.name(), rows);
        }
        out.flush().map_err(ExportError::Output)?;
        Ok(summary)
    }

    /// Writes the database, or the namespace `namespace`, to a new SQLite
    /// file at `path` (the format: README, *Export and import*). Refuses to overwrite
    /// an existing file; on failure, removes the file it created.
    pub fn export_sqlite(
        &self,
        namespace: Option<&Name>,
        path: &Path,
    ) -> Result<ExportSummary, ExportError> {
        let catalog = self.catalog();
        let exported = selected(&catalog, namespace)?;
        // Creating the file first makes the refusal to overwrite atomic;
        // SQLite takes an empty file as an empty database.
        std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                ExportError::Exists { path: path.to_owned() }
            } else {
                ExportError::File { path: path.to_owned(), error }
            }
        })?;
        let result = self.fill_sqlite(&catalog, &exported, path);
        if result.is_err() {
            // Best effort: the file is ours and incomplete.
            let _ = std::fs::remove_file(path);
            let mut journal = path.as_os_str().to_owned();
            journal.push("-journal");
            let _ = std::fs::remove_file(journal);
        }
        result
    }

    /// Imports a JSON lines export (the format: README, *Export and import*): checks
    /// the whole input first, then applies its schemas and writes its rows
    /// as commits of this device. `progress`, if given, is called with the
    /// number of rows written so far after each batch.
    pub fn import_jsonl<R: BufRead + Seek>(
        &self,
        mut input: R,
        mut progress: Option<&mut dyn FnMut(u64)>,
    ) -> Result<ImportSummary, ExportError> {
        let start = input.stream_position().map_err(ExportError::Input)?;
        // First pass: everything is checked, nothing is written.
        let mut lines = Lines::new(&mut input);
        let Some((line, text)) = lines.next(MAX_HEADER_BYTES)? else {
            return Err(header_error(1, "the file is empty"));
        };
        let schemas = parse_header(line, text)?;
        let current = self.catalog();
        let (catalog, to_apply) = merge_schemas(&current, schemas.clone())?;
        let file = FileTables::new(&catalog, &schemas);
        let mut namespaces_with_rows = BTreeSet::new();
        while let Some((line, text)) = lines.next(MAX_LINE_BYTES)? {
            let row = file.parse_row(line, text)?;
            namespaces_with_rows.insert(row.table.namespace().to_owned());
        }
        let keys = self.scope_keys();
        for namespace in &namespaces_with_rows {
            if let Ok(name) = Name::new(namespace.as_str())
                && current.schema(namespace).is_some()
                && self.scope_id(&name).is_none_or(|scope| keys.current(&scope).is_none())
            {
                return Err(DbError::NoScopeKey(name).into());
            }
        }

        // Second pass: the schemas, then the rows.
        let mut summary = ImportSummary::default();
        for schema in to_apply {
            let namespace = schema.namespace().clone();
            self.apply_schema(schema).map_err(|error| match error {
                DbError::Schema(error) => {
                    ExportError::Schema { namespace: namespace.clone(), error }
                }
                error => ExportError::Db(error),
            })?;
            summary.schemas_applied.push(namespace);
        }
        input.seek(SeekFrom::Start(start)).map_err(ExportError::Input)?;
        let mut lines = Lines::new(&mut input);
        lines.next(MAX_HEADER_BYTES)?;
        let mut batch: Option<Batch<'_>> = None;
        while let Some((line, text)) = lines.next(MAX_LINE_BYTES)? {
            let row = file.parse_row(line, text)?;
            if let Some(pending) = batch.take_if(|b| !b.takes(&row)) {
                self.write_batch(pending, &mut summary, &mut progress)?;
            }
            batch.get_or_insert_with(|| Batch::new(line, &row)).push(row);
        }
        if let Some(pending) = batch {
            self.write_batch(pending, &mut summary, &mut progress)?;
        }
        Ok(summary)
    }

    /// A read-only connection inside one read transaction: every table an
    /// export reads comes from the same moment.
    fn snapshot(&self) -> Result<Connection, ExportError> {
        let conn = Connection::open_with_flags(
            self.view_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(ExportError::Read)?;
        conn.execute_batch("BEGIN").map_err(ExportError::Read)?;
        Ok(conn)
    }

    fn fill_sqlite(
        &self,
        catalog: &Catalog,
        exported: &[&Schema],
        path: &Path,
    ) -> Result<ExportSummary, ExportError> {
        let sqlite = |error| ExportError::Sqlite { path: path.to_owned(), error };
        let snapshot = self.snapshot()?;
        let mut conn = Connection::open(path).map_err(sqlite)?;
        let tx = conn.transaction().map_err(sqlite)?;
        let mut summary = summary(exported);
        for table in exported.iter().flat_map(|schema| schema.tables()) {
            tx.execute_batch(&view::create_table_sql(catalog, table)).map_err(sqlite)?;
            for index in table.indexes() {
                tx.execute_batch(&view::create_index_sql(index)).map_err(sqlite)?;
            }
            let columns: Vec<String> =
                table.columns().iter().map(|c| quote(c.name.as_str())).collect();
            let mut insert = tx
                .prepare(&format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    quote(table.name().as_str()),
                    columns.join(", "),
                    vec!["?"; columns.len()].join(", ")
                ))
                .map_err(sqlite)?;
            let rows = for_each_row(&snapshot, catalog, table, |row| {
                insert
                    .execute(rusqlite::params_from_iter(row.iter().map(Param)))
                    .map_err(sqlite)?;
                Ok(())
            })?;
            summary.count(table.name(), rows);
        }
        tx.commit().map_err(sqlite)?;
        conn.close().map_err(|(_, error)| sqlite(error))?;
        Ok(summary)
    }

    fn write_batch(
        &self,
        batch: Batch<'_>,
        summary: &mut ImportSummary,
        progress: &mut Option<&mut dyn FnMut(u64)>,
    ) -> Result<(), ExportError> {
        let table = batch.table;
        let columns: Vec<String> = batch
            .columns
            .iter()
            .filter_map(|&i| table.columns().get(i))
            .map(|c| quote(c.name.as_str()))
            .collect();
        let row = format!("({})", vec!["?"; columns.len()].join(", "));
        let sql = format!(
            "INSERT OR REPLACE INTO {} ({}) VALUES {}",
            quote(table.name().as_str()),
            columns.join(", "),
            vec![row; batch.rows].join(", ")
        );
        let stopped = |error| ExportError::Stopped { line: batch.first_line, error };
        match self.execute(&sql, &batch.params, None).map_err(stopped)? {
            Executed::Written(outcome) => summary.commits += outcome.commits.len(),
            Executed::Rows(_) => {}
        }
        summary.rows += batch.rows as u64;
        *summary.tables.entry(table.name().clone()).or_default() += batch.rows as u64;
        if let Some(progress) = progress {
            progress(summary.rows);
        }
        Ok(())
    }
}

/// The schemas whose tables an export writes.
fn selected<'c>(
    catalog: &'c Catalog,
    namespace: Option<&Name>,
) -> Result<Vec<&'c Schema>, ExportError> {
    match namespace {
        None => Ok(catalog.schemas().collect()),
        Some(namespace) => catalog
            .schema(namespace.as_str())
            .map(|schema| vec![schema])
            .ok_or_else(|| ExportError::UnknownNamespace(namespace.clone())),
    }
}

/// `schemas` and the schemas their references point into, transitively,
/// in namespace order.
fn with_dependencies<'c>(catalog: &'c Catalog, schemas: &[&'c Schema]) -> Vec<&'c Schema> {
    let mut wanted: BTreeSet<&str> = schemas.iter().map(|s| s.namespace().as_str()).collect();
    let mut todo: Vec<&Schema> = schemas.to_vec();
    while let Some(schema) = todo.pop() {
        for column in schema.tables().iter().flat_map(|t| t.columns()) {
            let ColumnType::Reference { table } = &column.def.ty else { continue };
            let namespace = table.as_str().split('.').next().unwrap_or_default();
            if let Some(other) = catalog.schema(namespace)
                && wanted.insert(other.namespace().as_str())
            {
                todo.push(other);
            }
        }
    }
    catalog.schemas().filter(|s| wanted.contains(s.namespace().as_str())).collect()
}

fn summary(exported: &[&Schema]) -> ExportSummary {
    ExportSummary {
        namespaces: exported.iter().map(|s| s.namespace().clone()).collect(),
        tables: BTreeMap::new(),
        rows: 0,
    }
}

impl ExportSummary {
    fn count(&mut self, table: &Name, rows: u64) {
        self.tables.insert(table.clone(), rows);
        self.rows += rows;
    }
}

/// About how many bytes a value takes.
/// Calls `f` with every row of `table`, in key order, typed by the schema.
fn for_each_row(
    snapshot: &Connection,
    catalog: &Catalog,
    table: &TableDef,
    mut f: impl FnMut(&[Value]) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let columns: Vec<String> = table.columns().iter().map(|c| quote(c.name.as_str())).collect();
    let types: Vec<Option<ColumnType>> =
        table.columns().iter().map(|c| catalog.value_type(table.name(), c.name.as_str())).collect();
    let order: Vec<String> = table.primary_key().iter().map(|k| quote(k.as_str())).collect();
    let mut statement = snapshot
        .prepare(&format!(
            "SELECT {} FROM {} ORDER BY {}",
            columns.join(", "),
            quote(table.name().as_str()),
            order.join(", ")
        ))
        .map_err(ExportError::Read)?;
    let mut rows = statement.query([]).map_err(ExportError::Read)?;
    let mut values = Vec::with_capacity(columns.len());
    let mut count = 0;
    while let Some(row) = rows.next().map_err(ExportError::Read)? {
        values.clear();
        for (i, ty) in types.iter().enumerate() {
            values.push(view::from_sql(row.get_ref(i).map_err(ExportError::Read)?, ty.as_ref()));
        }
        f(&values)?;
        count += 1;
    }
    Ok(count)
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Text(t) | Value::Json(t) => t.len() + 2,
        Value::Bytes(b) => b.len() * 4 / 3 + 4,
        _ => 8,
    }
}

// SQLite file

// Reading the file

/// The lines of an import, numbered from 1; blank lines are skipped.
struct Lines<R> {
    input: R,
    number: u64,
    buffer: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    fn new(input: R) -> Self {
        Self { input, number: 0, buffer: Vec::new() }
    }

    /// The next line that is not blank, without its line end, and its
    /// number; `None` at the end of the input.
    fn next(&mut self, limit: usize) -> Result<Option<(u64, &str)>, ExportError> {
        loop {
            self.buffer.clear();
            let read = (&mut self.input)
                .take(limit as u64 + 2)
                .read_until(b'\n', &mut self.buffer)
                .map_err(ExportError::Input)?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            let ended = self.buffer.last() == Some(&b'\n');
            if ended {
                self.buffer.pop();
                if self.buffer.last() == Some(&b'\r') {
                    self.buffer.pop();
                }
            }
            if self.buffer.len() > limit || (!ended && read == limit + 2) {
                return Err(ExportError::TooLong { line: self.number, limit });
            }
            if !self.buffer.iter().all(|b| JSON_WHITESPACE.contains(&char::from(*b))) {
                break;
            }
        }
        let line = self.number;
        let text = std::str::from_utf8(&self.buffer)
            .map_err(|_| ExportError::Malformed { line, reason: "not UTF-8 text".into() })?;
        Ok(Some((line, text)))
    }
}

fn header_error(line: u64, reason: impl Into<String>) -> ExportError {
    ExportError::Header { line, reason: reason.into() }
}

/// The schemas of a header line.
fn parse_header(line: u64, text: &str) -> Result<Vec<Schema>, ExportError> {
    let members = object(text).map_err(|reason| header_error(line, reason))?;
    let mut version = None;
    let mut schemas = None;
    for (name, raw) in members {
        match name.as_str() {
            "basic_export" => version = Some(raw),
            "database" => {
                serde_json::from_str::<String>(raw)
                    .map_err(|_| header_error(line, "database is not a string"))?;
            }
            "schemas" => schemas = Some(raw),
            other => return Err(header_error(line, format!("unknown member {other:?}"))),
        }
    }
    let version = version.ok_or_else(|| header_error(line, "no basic_export member"))?;
    if serde_json::from_str::<u64>(version).ok() != Some(FORMAT_VERSION) {
        return Err(header_error(
            line,
            format!(
                "format version {}, this build reads version {FORMAT_VERSION}",
                excerpt(version)
            ),
        ));
    }
    let schemas = schemas.ok_or_else(|| header_error(line, "no schemas member"))?;
    array(schemas)
        .map_err(|reason| header_error(line, format!("schemas: {reason}")))?
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            Schema::from_json_canonical(raw)
                .map_err(|error| header_error(line, format!("schema {}: {error}", i + 1)))
        })
        .collect()
}

/// Adds the file's schemas to a copy of `catalog`, in an order where their
/// references resolve. Returns the copy and the schemas to apply, in order.
fn merge_schemas(
    catalog: &Catalog,
    schemas: Vec<Schema>,
) -> Result<(Catalog, Vec<Schema>), ExportError> {
    let mut merged = catalog.clone();
    let mut to_apply = Vec::new();
    let mut pending = schemas;
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        let mut first_error = None;
        let before = pending.len();
        for schema in pending {
            match fit(&merged, &schema) {
                Ok(false) => {}
                Ok(true) => {
                    merged.apply(schema.clone()).map_err(|error| ExportError::Schema {
                        namespace: schema.namespace().clone(),
                        error,
                    })?;
                    to_apply.push(schema);
                }
                Err(error) => {
                    first_error.get_or_insert((schema.namespace().clone(), error));
                    waiting.push(schema);
                }
            }
        }
        // A schema may wait for another one its references point into; if
        // none of them could go in, none ever will.
        if waiting.len() == before
            && let Some((namespace, error)) = first_error
        {
            return Err(ExportError::Schema { namespace, error });
        }
        pending = waiting;
    }
    Ok((merged, to_apply))
}

/// Whether `schema` has to be applied to `catalog`: `Ok(false)` if the
/// catalog has it already, or a newer version of it.
fn fit(catalog: &Catalog, schema: &Schema) -> Result<bool, SchemaError> {
    let error = match catalog.plan(schema) {
        Ok(migration) => return Ok(!migration.is_empty()),
        Err(error) => error,
    };
    let Some(current) = catalog.schema(schema.namespace().as_str()) else { return Err(error) };
    let others = catalog.schemas().filter(|s| s.namespace() != schema.namespace()).cloned();
    match Catalog::from_schemas(others.chain([schema.clone()])) {
        Ok(older) if older.plan(current).is_ok() => Ok(false),
        _ => Err(error),
    }
}

/// The tables rows may go into: those of the header's schemas, as the
/// catalog will have them once the schemas are applied.
struct FileTables<'c> {
    catalog: &'c Catalog,
    namespaces: BTreeSet<String>,
}

/// One row line, checked.
#[derive(Debug)]
struct Row<'c> {
    table: &'c TableDef,
    /// Positions of the columns given, in schema order.
    columns: Vec<usize>,
    /// Their values.
    values: Vec<Value>,
}

impl<'c> FileTables<'c> {
    fn new(catalog: &'c Catalog, schemas: &[Schema]) -> Self {
        Self { catalog, namespaces: schemas.iter().map(|s| s.namespace().to_string()).collect() }
    }

    fn parse_row(&self, line: u64, text: &str) -> Result<Row<'c>, ExportError> {
        let malformed = |reason: String| ExportError::Malformed { line, reason };
        let mut table = None;
        let mut row = None;
        for (name, raw) in object(text).map_err(malformed)? {
            match name.as_str() {
                "table" => table = Some(raw),
                "row" => row = Some(raw),
                other => return Err(malformed(format!("unknown member {other:?}"))),
            }
        }
        let table = table.ok_or_else(|| malformed("no table member".into()))?;
        let row = row.ok_or_else(|| malformed("no row member".into()))?;
        let table: String = serde_json::from_str(table)
            .map_err(|_| malformed(format!("table is not a string: {}", excerpt(table))))?;
        let unknown = || ExportError::UnknownTable { line, table: table.clone() };
        let name = Name::new(table.as_str()).map_err(|_| unknown())?;
        let def = self
            .catalog
            .table(&name)
            .filter(|def| self.namespaces.contains(def.namespace()))
            .ok_or_else(unknown)?;
        let mut given: Vec<(usize, Value)> = Vec::new();
        for (column, raw) in object(row).map_err(|reason| malformed(format!("row: {reason}")))? {
            let position = def.position(&column).ok_or_else(|| ExportError::UnknownColumn {
                line,
                table: name.clone(),
                column: column.clone(),
            })?;
            let spec = &def.columns()[position];
            let column_def = self
                .catalog
                .value_def(&name, &column)
                .unwrap_or(ColumnDef { ty: ColumnType::Bytes, nullable: spec.def.nullable });
            let value = decode(raw, &column_def).map_err(|found| ExportError::Type {
                line,
                table: name.clone(),
                column: spec.name.clone(),
                expected: if column_def.nullable {
                    format!("{} or null", column_def.ty)
                } else {
                    column_def.ty.to_string()
                },
                found,
            })?;
            given.push((position, value));
        }
        given.sort_by_key(|(position, _)| *position);
        for (position, spec) in def.columns().iter().enumerate() {
            if given.binary_search_by_key(&position, |(p, _)| *p).is_ok() {
                continue;
            }
            if def.primary_key().contains(&spec.name) {
                return Err(ExportError::MissingKey {
                    line,
                    table: name.clone(),
                    column: spec.name.clone(),
                });
            }
            if !spec.def.nullable && spec.default.is_none() {
                return Err(ExportError::MissingValue {
                    line,
                    table: name.clone(),
                    column: spec.name.clone(),
                });
            }
        }
        let (columns, values) = given.into_iter().unzip();
        Ok(Row { table: def, columns, values })
    }
}

/// A row batch for one import statement: rows of one table giving the same
/// columns.
struct Batch<'c> {
    table: &'c TableDef,
    columns: Vec<usize>,
    first_line: u64,
    rows: usize,
    params: Vec<Value>,
    bytes: usize,
}

impl<'c> Batch<'c> {
    fn new(first_line: u64, row: &Row<'c>) -> Self {
        Self {
            table: row.table,
            columns: row.columns.clone(),
            first_line,
            rows: 0,
            params: Vec::new(),
            bytes: 0,
        }
    }

    /// Whether `row` can go into this batch.
    fn takes(&self, row: &Row<'_>) -> bool {
        let max_rows = IMPORT_BATCH_ROWS.min(MAX_BATCH_PARAMS / self.columns.len().max(1)).max(1);
        std::ptr::eq(self.table, row.table)
            && self.columns == row.columns
            && self.rows < max_rows
            && self.bytes < MAX_BATCH_BYTES
    }

    fn push(&mut self, row: Row<'_>) {
        self.bytes += row.values.iter().map(value_size).sum::<usize>();
        self.params.extend(row.values);
        self.rows += 1;
    }
}

// Splitting JSON lines

/// The members of the JSON object `text`, each value as its JSON text
/// (exactly as written, without the whitespace around it); a name given
/// twice, or more than [`MAX_MEMBERS`] members, is an error.
fn object(text: &str) -> Result<Vec<(String, &str)>, String> {
    let mut json = serde_json::Deserializer::from_str(text);
    let members = json.deserialize_map(Members).map_err(|e| syntax(text, &e))?;
    json.end().map_err(|e| syntax(text, &e))?;
    Ok(members?.into_iter().map(|(name, value)| (name, value.get())).collect())
}

/// The elements of the JSON array `text`, each as its JSON text.
fn array(text: &str) -> Result<Vec<&str>, String> {
    let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| syntax(text, &e))?;
    Ok(elements.into_iter().map(RawValue::get).collect())
}

/// What is wrong with the JSON `text`, and where (the byte, from 1).
fn syntax(text: &str, error: &serde_json::Error) -> String {
    // The line has no line break, so serde_json's column is the byte.
    let position = format!(" at line {} column {}", error.line(), error.column());
    let what = error.to_string();
    let what = what.strip_suffix(&position).unwrap_or(&what);
    let prefix = match error.classify() {
        Category::Data => "",
        Category::Io | Category::Syntax | Category::Eof => "not valid JSON: ",
    };
    if error.is_eof() || error.column() > text.len() {
        format!("{prefix}{what} at the end of the line")
    } else {
        format!("{prefix}{what} at byte {}", error.column().max(1))
    }
}

/// Reads an object's members in order, each value left as its text.
/// Problems of the format (a repeated name, too many members) come as the
/// inner error, once the whole object is read and known to be JSON.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Result<Vec<(String, &'de RawValue)>, String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        let mut names = BTreeSet::new();
        let mut problem = None;
        while let Some(name) = map.next_key::<String>()? {
            if problem.is_some() {
                map.next_value::<IgnoredAny>()?;
            } else if !names.insert(name.clone()) {
                problem = Some(format!("{name:?} is given twice"));
                map.next_value::<IgnoredAny>()?;
            } else if members.len() == MAX_MEMBERS {
                problem = Some(format!("more than {MAX_MEMBERS} members"));
                map.next_value::<IgnoredAny>()?;
            } else {
                members.push((name, map.next_value::<&RawValue>()?));
            }
        }
        Ok(match problem {
            Some(problem) => Err(problem),
            None => Ok(members),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn catalog() -> Catalog {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut catalog = Catalog::new();
        catalog.apply(Schema::from_file(examples.join("todo.toml")).unwrap()).unwrap();
        catalog.apply(Schema::from_file(examples.join("contacts.json")).unwrap()).unwrap();
        catalog
    }

    const GOOD_ROW: &str = r#"{"table":"todo.items","row":{"id":"a","list":"home","title":"Buy milk","done":false,"priority":2,"due":1795824000000000,"notes":{"tags":["shop"]}}}"#;

    #[test]
    fn rows_are_split_and_typed() {
        let catalog = catalog();
        let schemas: Vec<Schema> = catalog.schemas().cloned().collect();
        let file = FileTables::new(&catalog, &schemas);
        let row = file.parse_row(2, GOOD_ROW).unwrap();
        assert_eq!(row.table.name().as_str(), "todo.items");
        assert_eq!(row.columns, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(row.values[3], Value::Bool(false));
        assert_eq!(row.values[5], Value::Timestamp(1795824000000000));
        assert_eq!(row.values[6], Value::Json(r#"{"tags":["shop"]}"#.into()));
        // Whitespace, member order and escapes are free.
        let row = file
            .parse_row(
                2,
                " { \"row\" : { \"title\" : \"a\\u0062\\\"\" , \"list\":\"h\", \"id\":\"x\", \"notes\": [1 , {\"a\" : null}] } , \"table\" : \"todo.items\" } ",
            )
            .unwrap();
        assert_eq!(row.columns, [0, 1, 2, 6]);
        assert_eq!(row.values[2], Value::Text("ab\"".into()));
        assert_eq!(row.values[3], Value::Json(r#"[1 , {"a" : null}]"#.into()));
        let error = |text: &str| file.parse_row(7, text).unwrap_err().to_string();
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"id":"x","list":"h","title":"t","done":"yes"}}"#),
            r#"line 7: todo.items.done: expected bool, got string "yes""#
        );
        assert_eq!(
            error(
                r#"{"table":"todo.items","row":{"id":"x","list":"h","title":"t","priority":1.5}}"#
            ),
            "line 7: todo.items.priority: expected integer, got number 1.5"
        );
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"list":"h","title":"t"}}"#),
            "line 7: the row of todo.items has no id, a primary key column"
        );
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"id":"x","list":"h"}}"#),
            "line 7: todo.items.title is required: it is not nullable and has no default"
        );
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"id":"x","id":"y"}}"#),
            r#"line 7: row: "id" is given twice"#
        );
        // Spelt apart by an escape, a name is still the same name.
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"id":"x","i\u0064":"y"}}"#),
            r#"line 7: row: "id" is given twice"#
        );
        assert_eq!(
            error(r#"{"table":"todo.items","table":"todo.lists","row":{}}"#),
            r#"line 7: "table" is given twice"#
        );
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"id":"x"}"#),
            "line 7: not valid JSON: EOF while parsing an object at the end of the line"
        );
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"id":"x","notes":{"a":}}}"#),
            "line 7: not valid JSON: expected value at byte 52"
        );
        // Values that serde_json reads but the protocol's JSON rule refuses
        // are the column's to refuse.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            error(&format!(r#"{{"table":"todo.items","row":{{"id":"x","notes":{deep}}}}}"#))
                .starts_with(
                    "line 7: todo.items.notes: expected json or null, got text that is not JSON"
                )
        );
        assert_eq!(
            error(r#"{"table":"todo.items","row":{"id":"x","done":yes}}"#),
            "line 7: not valid JSON: expected value at byte 46"
        );
        assert_eq!(error("[1]"), "line 7: invalid type: sequence, expected an object at byte 1");
        assert_eq!(
            error(""),
            "line 7: not valid JSON: EOF while parsing a value at the end of the line"
        );
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!(r#""c{i}":1"#)).collect();
        assert_eq!(
            error(&format!(r#"{{"table":"todo.items","row":{{{}}}}}"#, many.join(","))),
            format!("line 7: row: more than {MAX_MEMBERS} members")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(text in ".{0,300}") {
            let catalog = catalog();
            let schemas: Vec<Schema> = catalog.schemas().cloned().collect();
            let file = FileTables::new(&catalog, &schemas);
            let _ = file.parse_row(1, &text);
            let _ = parse_header(1, &text);
        }

        #[test]
        fn mangled_rows_never_panic(
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0..4usize, "[ -~]{0,3}|[\u{80}-\u{10ffff}]"),
                1..4,
            ),
        ) {
            let catalog = catalog();
            let schemas: Vec<Schema> = catalog.schemas().cloned().collect();
            let file = FileTables::new(&catalog, &schemas);
            let mut text = GOOD_ROW.to_owned();
            crate::test_edits::apply_edits(&mut text, edits);
            if let Ok(row) = file.parse_row(1, &text) {
                // Whatever it accepts fits the table.
                for (&position, value) in row.columns.iter().zip(&row.values) {
                    let column = &row.table.columns()[position];
                    let def = catalog.value_def(row.table.name(), column.name.as_str()).unwrap();
                    prop_assert!(def.check(value).is_ok());
                }
            }
        }

        #[test]
        fn lines_of_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut lines = Lines::new(std::io::Cursor::new(bytes));
            for _ in 0..200 {
                match lines.next(16) {
                    Ok(Some(_)) | Err(ExportError::Malformed { .. } | ExportError::TooLong { .. }) => {}
                    Ok(None) => break,
                    Err(other) => prop_assert!(false, "{other}"),
                }
            }
        }
    }
}
