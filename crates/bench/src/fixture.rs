//! The benchmark database: a schema, a temporary directory, generated rows.

use basic_proto::control::Rights;
use basic_proto::{
    Changes, Commit, KeyPart, LiteMap, Name, Party, RowKey, RowOp, ScopeId, ScopeKey, SecretKey,
    Value,
};
use basic_store::{Database, LogWriter, Schema};

/// `bench.lists` (1,000 rows in the query scenario) and `bench.items`:
/// a key and ten value columns of mixed types, indexed on `n`.
pub(crate) const SCHEMA: &str = r#"
namespace = "bench"

[tables.lists]
primary_key = ["id"]
[tables.lists.columns]
id = "integer"
name = "text"

[tables.items]
primary_key = ["id"]
[tables.items.columns]
id = "integer"
list_id = { type = "reference", table = "lists", nullable = true }
title = { type = "text", nullable = true }
done = { type = "bool", nullable = true }
n = { type = "integer", nullable = true }
c5 = { type = "text", nullable = true }
c6 = { type = "integer", nullable = true }
c7 = { type = "bool", nullable = true }
c8 = { type = "real", nullable = true }
c9 = { type = "text", nullable = true }
c10 = { type = "integer", nullable = true }
[[tables.items.indexes]]
columns = ["n"]

[tables.rows]
primary_key = ["id"]
[tables.rows.columns]
id = "text"
c1 = "text"
c2 = "text"
c3 = "text"
c4 = "text"
c5 = "text"
c6 = "integer"
c7 = "integer"
c8 = "integer"
c9 = "integer"
c10 = "integer"
"#;

/// The ten value columns of `bench.items`.
pub(crate) const COLUMNS: [&str; 10] =
    ["list_id", "title", "done", "n", "c5", "c6", "c7", "c8", "c9", "c10"];

/// A fresh database in a temporary directory, with the bench schema and
/// apps granted read-write on it (the other authors of `ingest`).
pub(crate) struct Bench {
    pub(crate) db: Database,
    pub(crate) key: ScopeKey,
    /// How many apps are granted (and sign [`commits`]).
    pub(crate) authors: u8,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// Closes the database and hands back its directory (removed when
    /// dropped), for another process to open.
    pub(crate) fn close(self) -> tempfile::TempDir {
        drop(self.db);
        self._dir
    }
}

/// [`open_with`] four apps.
pub(crate) fn open() -> Result<Bench, Box<dyn std::error::Error>> {
    open_with(4)
}

/// A fresh database with `authors` apps granted on `bench` (at most 100).
pub(crate) fn open_with(authors: u8) -> Result<Bench, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path())?;
    db.apply_schema(Schema::parse(SCHEMA, basic_store::Format::Toml)?)?;
    for author in author_keys(authors) {
        db.grant(Party::of(&author), scope(), Rights::ReadWrite)?;
    }
    let id = db.scope_id(&scope()).ok_or("the bench scope has no id")?;
    let key = db
        .auth_state()
        .scope_keys(&author_keys(1)[0], &id, 0)
        .into_iter()
        .next()
        .ok_or("the grant sealed no key")?;
    Ok(Bench { db, key, authors, _dir: dir })
}

/// The other authors: apps granted on `bench`.
fn author_keys(count: u8) -> Vec<SecretKey> {
    (0..count.min(100)).map(|i| SecretKey::from_seed([100 + i; 32])).collect()
}

pub(crate) fn scope() -> Name {
    name("bench")
}

pub(crate) fn name(text: &str) -> Name {
    // Every name here is a constant that satisfies the grammar.
    Name::new(text).unwrap_or_else(|e| panic!("bench name: {e}"))
}

/// The value of column `column` (0–9) of row `row`: 20-byte texts,
/// integers, bools and reals, as a typical app row.
pub(crate) fn cell(row: i64, column: usize) -> Value {
    match column {
        0 => Value::Integer(row % 1000),
        1 | 4 | 8 => Value::Text(format!("{:0>20}", row * 31 + column as i64)),
        2 | 6 => Value::Bool((row + column as i64) % 2 == 0),
        7 => Value::Real(row as f64 / 3.0),
        _ => Value::Integer(row * 7 + column as i64),
    }
}

/// `rows` rows of `cells_per_row` cells each, starting at row `first`.
pub(crate) fn upserts(first: i64, rows: i64, cells_per_row: usize) -> Changes {
    let ops = (first..first + rows)
        .map(|row| {
            let cells: LiteMap<Name, Value> =
                (0..cells_per_row).map(|c| (name(COLUMNS[c]), cell(row, c))).collect();
            RowOp::Upsert {
                table: name("bench.items"),
                key: RowKey::single(KeyPart::Integer(row)),
                generation: 1,
                cells,
            }
        })
        .collect();
    Changes::new(ops).unwrap_or_else(|e| panic!("bench changes: {e}"))
}

/// `count` commits by 4 other authors, each of `rows` rows × `cells_per_row`
/// cells, rows numbered from 0, in round-robin author order.
pub(crate) fn foreign_commits(
    db: &Database,
    key: &ScopeKey,
    count: usize,
    rows: i64,
    cells_per_row: usize,
) -> Vec<Commit> {
    sign(db, key, 4, (0..count).map(|i| upserts(i as i64 * rows, rows, cells_per_row)))
}

/// A second device of `bench`'s database, joined by invite (it holds the
/// control log, no commit yet), in its own temporary directory.
pub(crate) fn second_device(
    bench: &Bench,
) -> Result<(tempfile::TempDir, Database), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let invite = bench.db.invite(Vec::new(), 60_000)?;
    let request = Database::prepare_join(dir.path(), &invite)?;
    bench.db.accept_join(&request)?;
    let device = Database::finish_join(dir.path(), &bench.db.control_ops()?)?;
    Ok((dir, device))
}

/// One commit per change set, signed in turn by the bench's apps.
pub(crate) fn commits(bench: &Bench, changes: impl Iterator<Item = Changes>) -> Vec<Commit> {
    Signers::new(bench).sign(changes)
}

/// The bench's apps, each continuing its own log across calls of
/// [`Signers::sign`].
pub(crate) struct Signers<'a> {
    key: &'a ScopeKey,
    scope: ScopeId,
    writers: Vec<LogWriter>,
}

impl<'a> Signers<'a> {
    pub(crate) fn new(bench: &'a Bench) -> Self {
        Self::of(&bench.db, &bench.key, bench.authors)
    }

    fn of(db: &'a Database, key: &'a ScopeKey, authors: u8) -> Self {
        let writers = author_keys(authors)
            .into_iter()
            .map(|secret| LogWriter::new(secret, db.id()))
            .collect();
        let scope = db.scope_id(&scope()).unwrap_or_else(|| panic!("the bench scope has no id"));
        Self { key, scope, writers }
    }

    /// One commit per change set, by the apps in turn.
    pub(crate) fn sign(&mut self, changes: impl Iterator<Item = Changes>) -> Vec<Commit> {
        let mut rng = rand::rng();
        let now = basic_store::now_ms();
        let count = self.writers.len();
        changes
            .enumerate()
            .map(|(i, changes)| {
                self.writers[i % count]
                    .write(&self.scope, 0, self.key, &changes, now, &mut rng)
                    .unwrap_or_else(|e| panic!("bench commit: {e}"))
            })
            .collect()
    }
}

fn sign(
    db: &Database,
    key: &ScopeKey,
    authors: u8,
    changes: impl Iterator<Item = Changes>,
) -> Vec<Commit> {
    Signers::of(db, key, authors).sign(changes)
}

/// Row operations on `table`: each row a key and its cells by column name.
pub(crate) fn changes(table: &str, rows: Vec<(KeyPart, Vec<(&str, Value)>)>) -> Changes {
    let ops = rows
        .into_iter()
        .map(|(key, cells)| RowOp::Upsert {
            table: name(table),
            key: RowKey::single(key),
            generation: 1,
            cells: cells.into_iter().map(|(column, value)| (name(column), value)).collect(),
        })
        .collect();
    Changes::new(ops).unwrap_or_else(|e| panic!("bench changes: {e}"))
}
