//! SQL run for a caller: an app reads only the tables of its granted
//! scopes, however the SQL is written, and no statement runs past its
//! budget or holds up writes and schema changes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basic_proto::{Name, Value};
use basic_store::QueryError;
use basic_store::WriteError;
use basic_store::{Caller, SqlError};
use basic_store::{DbError, Executed, MemStore, Schema};

type Database = basic_store::Database<MemStore>;
use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::common::examples;

/// What no app granted `todo` alone may ever see.
const SECRET: &str = "SECRET";

/// A database (in memory, view in `dir`) with `todo`, `contacts` (its
/// people marked secret) and `secrets.words`, a one-column table.
fn database(dir: &Path) -> Database {
    let db = Database::with_store(MemStore::new(), &dir.join("view.sqlite")).unwrap();
    for file in ["todo.toml", "contacts.json"] {
        db.apply_schema(Schema::from_file(examples().join(file)).unwrap()).unwrap();
    }
    let words = r#"{"namespace": "secrets", "tables": {"words": {"primary_key": ["word"], "columns": {"word": "text"}}}}"#;
    db.apply_schema(Schema::parse_either(words).unwrap()).unwrap();
    for sql in [
        "INSERT INTO contacts.people (id, name, nickname) VALUES ('SECRET-id', 'SECRET-name', 'SECRET-nick')",
        "INSERT INTO secrets.words (word) VALUES ('SECRET-word')",
        "INSERT INTO todo.lists (id, name) VALUES ('home', 'Home')",
    ] {
        db.execute(sql, &[], None).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    db
}

fn todo_app() -> Caller {
    let todo: BTreeSet<Name> = [Name::new("todo").unwrap()].into_iter().collect();
    Caller::App { readable: todo.clone(), writable: todo }
}

/// Fails if anything the app got back, rows or error, shows what it may
/// not read, or if `todo.lists` holds a copy of it.
fn leaked(db: &Database, sql: &str, result: &Result<Executed, DbError>) -> Option<String> {
    let shown = match result {
        Ok(Executed::Rows(rows)) => format!("{:?}", rows.rows),
        Ok(Executed::Written(_)) => String::new(),
        Err(error) => error.to_string(),
    };
    let copied = format!("{:?}", db.query("SELECT * FROM todo.lists", &[], None).ok()?.rows);
    [shown, copied]
        .into_iter()
        .find(|text| text.contains(SECRET) || text.contains("CREATE TABLE"))
        .map(|text| format!("{sql}\n  gave {text}"))
}

/// Names of tables (and table-like things) the app may read…
const GRANTED: [&str; 5] = ["todo.lists", "\"todo.lists\"", "lists", "TODO.Lists", "[todo.lists]"];
/// …and may not.
const DENIED: [&str; 12] = [
    "contacts.people",
    "\"contacts.people\"",
    "people",
    "\"CONTACTS.PEOPLE\"",
    "[contacts.people]",
    "`contacts.people`",
    "main.\"contacts.people\"",
    "\"main\".\"contacts.people\"",
    "sqlite_master",
    "_basic_meta",
    "pragma_table_list",
    "dbstat",
];
/// Names a `WITH` may try.
const CTES: [&str; 8] =
    ["x", "\"contacts.people\"", "people", "lists", "sqlite_master", "\"x.y\"", "r", "PEOPLE"];
/// String literals that parsers may read differently.
const STRINGS: [&str; 9] =
    ["'\\'''", "'\\''", "''''", "'a\\'", "'--'", "'/*'", "'\\\"'", "'\\\\'''", "'it''s'"];

/// A `SELECT` of two text columns with `t` somewhere in it.
fn select_with(t: &str, g: &str, c: &str, s: &str) -> Vec<String> {
    vec![
        format!("SELECT id, name FROM {t}"),
        format!("SELECT id, name FROM {g} UNION SELECT id, name FROM {t}"),
        format!("SELECT id, name FROM {g} WHERE EXISTS (SELECT 1 FROM {t})"),
        format!("SELECT a.id, b.name FROM {g} AS a JOIN {t} AS b ON 1"),
        format!("SELECT id, (SELECT name FROM {t} LIMIT 1) FROM {g}"),
        format!("SELECT id, name FROM {g} WHERE name IN (SELECT name FROM {t})"),
        format!("SELECT id, name FROM {g} WHERE 'SECRET-word' IN {t}"),
        format!("WITH {c} AS (SELECT 1 AS id, 2 AS name) SELECT id, name FROM {t}"),
        format!("SELECT id, name FROM {t} WHERE EXISTS (WITH {c} AS (SELECT 1) SELECT 1 FROM {c})"),
        format!("SELECT id, name FROM (SELECT * FROM {t}) AS s"),
        format!(
            "SELECT id, name FROM {g} WHERE name = {s} || ' UNION SELECT id, name FROM {t} --'"
        ),
        format!(
            "SELECT id, name FROM {g} WHERE name = {s} || ' UNION SELECT name, sql FROM {t} --'"
        ),
        format!("SELECT id, name FROM {g} /* {s} */ UNION SELECT id, name FROM {t}"),
        format!("SELECT id, name FROM {g} -- {s}\n UNION SELECT id, name FROM {t}"),
        format!(
            "WITH RECURSIVE {c}(id, name) AS (SELECT id, name FROM {t} UNION SELECT id, name FROM {c}) SELECT id, name FROM {c}"
        ),
        format!("SELECT count(*), 'n' FROM {t}"),
    ]
}

/// The same as reads and as writes into the app's own scope.
fn statements(t: &str, g: &str, c: &str, s: &str) -> Vec<String> {
    let mut all = Vec::new();
    for select in select_with(t, g, c, s) {
        all.push(format!("INSERT OR REPLACE INTO todo.lists (id, name) {select}"));
        all.push(format!("UPDATE todo.lists SET name = (SELECT name FROM ({select}) LIMIT 1)"));
        all.push(format!("DELETE FROM todo.lists WHERE EXISTS ({select})"));
        all.push(select);
    }
    all
}

proptest! {
    #![proptest_config(Config { cases: 64, ..Config::default() })]
    /// Rejections are fine; a row (or an error message, or a copy in
    /// `todo.lists`) from a table outside the grant is not.
    #[test]
    fn an_app_never_reads_outside_its_grant(
        denied in prop::sample::select(DENIED.to_vec()),
        granted in prop::sample::select(GRANTED.to_vec()),
        use_granted in any::<bool>(),
        cte in prop::sample::select(CTES.to_vec()),
        string in prop::sample::select(STRINGS.to_vec()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let app = todo_app();
        let table = if use_granted { granted } else { denied };
        for sql in statements(table, granted, cte, string) {
            let result = db.execute_as(&app, &sql, &[], None);
            prop_assert!(leaked(&db, &sql, &result).is_none(), "{}", leaked(&db, &sql, &result).unwrap_or_default());
        }
        // What the app may read, it still can.
        if use_granted {
            let sql = format!("SELECT id, name FROM {granted}");
            prop_assert!(db.execute_as(&app, &sql, &[], None).is_ok(), "{}", sql);
        }
    }
}

/// The fixed attacks of issue 10, and what an app granted `todo` may do.
#[test]
fn the_known_attacks_are_refused_and_the_grant_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let app = todo_app();
    for sql in [
        r#"SELECT * FROM "contacts.people" WHERE EXISTS (WITH "contacts.people" AS (SELECT 1) SELECT 1 FROM "contacts.people")"#,
        r#"SELECT id FROM todo.lists WHERE name = '\''' || ' UNION SELECT name FROM "contacts.people" --'"#,
        r#"INSERT INTO todo.lists (id, name) SELECT id, name FROM todo.lists WHERE name = '\''' || ' UNION SELECT name, sql FROM sqlite_master --'"#,
        r#"SELECT 'found' WHERE 'SECRET-word' IN "secrets.words""#,
    ] {
        let result = db.execute_as(&app, sql, &[], None);
        assert!(result.is_err(), "{sql}: {result:?}");
        assert_eq!(leaked(&db, sql, &result), None);
    }
    let rows = db
        .query_as(&app, "WITH l AS (SELECT name FROM lists) SELECT count(*) FROM l", &[], None)
        .unwrap();
    assert_eq!(rows.rows, [[Value::Integer(1)]]);
    db.execute_as(
        &app,
        "INSERT INTO todo.lists (id, name) SELECT 'w', upper(name) FROM lists",
        &[],
        None,
    )
    .unwrap();
    // The owner reaches every table.
    assert_eq!(
        db.query("SELECT name FROM contacts.people", &[], None).unwrap().rows,
        [[Value::Text("SECRET-name".into())]]
    );
    // Read-only: no write, even of its own tables.
    let reader = Caller::App {
        readable: [Name::new("todo").unwrap()].into_iter().collect(),
        writable: BTreeSet::new(),
    };
    assert!(matches!(
        db.execute_as(&reader, "DELETE FROM todo.lists", &[], None),
        Err(DbError::Sql(SqlError::Denied { action: "write", .. }))
    ));
    // An INSERT of bare parameters takes its rows without evaluating
    // anything in SQLite: the right to write is checked all the same.
    let params = [Value::Text("x".into()), Value::Text("X".into())];
    for (caller, sql) in [
        (&reader, "INSERT INTO todo.lists (id, name) VALUES (?, ?)"),
        (&app, "INSERT INTO contacts.people (id, name) VALUES (?, ?)"),
        (&app, "INSERT INTO secrets.words VALUES (?), (?)"),
    ] {
        let result = db.execute_as(caller, sql, &params, None);
        assert!(matches!(result, Err(DbError::Sql(SqlError::Denied { .. }))), "{sql}: {result:?}");
    }
    for (table, key) in [("todo.lists", "id"), ("contacts.people", "id"), ("secrets.words", "word")]
    {
        let sql = format!("SELECT count(*) FROM {table} WHERE lower({key}) = 'x'");
        assert_eq!(db.query(&sql, &[], None).unwrap().rows, [[Value::Integer(0)]], "{table}");
    }
}

const RUNAWAY: &str =
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r";
const RUNAWAY_N: &str =
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) AS n FROM r";

#[test]
fn a_runaway_statement_stops_at_its_budget_and_holds_up_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(database(dir.path()));
    assert_eq!(db.statement_budget(), Duration::from_secs(2));
    db.set_statement_budget(Duration::from_millis(600));

    let started = Instant::now();
    let reading = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || db.query(RUNAWAY, &[], None))
    };
    std::thread::sleep(Duration::from_millis(100));
    // A write and a schema change while the query runs.
    db.execute("INSERT INTO todo.lists (id, name) VALUES ('a', 'A')", &[], None).unwrap();
    let extra = r#"{"namespace": "extra", "tables": {"notes": {"primary_key": ["id"], "columns": {"id": "text"}}}}"#;
    db.apply_schema(Schema::parse_either(extra).unwrap()).unwrap();
    db.query("SELECT count(*) FROM extra.notes", &[], None).unwrap();
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(500), "held up {waited:?}");
    assert!(matches!(reading.join().unwrap(), Err(DbError::Query(QueryError::Timeout(_)))));
    assert!(started.elapsed() < Duration::from_secs(3));

    // In a write: refused, and the writer goes on.
    let write = format!("INSERT INTO todo.lists (id, name) SELECT n, n FROM ({RUNAWAY_N})");
    let started = Instant::now();
    let error = db.execute_as(&todo_app(), &write, &[], None).unwrap_err();
    assert!(matches!(error, DbError::Write(WriteError::Timeout(_))), "{error}");
    assert!(error.to_string().contains("budget"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
    db.execute("INSERT INTO todo.lists (id, name) VALUES ('b', 'B')", &[], None).unwrap();
    assert!(db.failure().is_none());
}

#[test]
fn a_live_query_that_turns_runaway_ends_and_holds_up_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    db.set_statement_budget(Duration::from_millis(500));
    // Cheap while todo.items is empty, endless once it is not.
    let grows = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r \
                 WHERE x < (SELECT count(*) FROM todo.items) * 1000000000000) SELECT count(*) FROM r";
    let live = db.subscribe_as(&todo_app(), grows, &[], None).unwrap();
    assert_eq!(live.recv_timeout(Duration::from_secs(5)).unwrap().rows, [[Value::Integer(1)]]);
    db.execute("INSERT INTO todo.items (id, list, title) VALUES ('a', 'home', 'A')", &[], None)
        .unwrap();
    // While the live thread runs it, a new subscription does not wait.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let other = db.subscribe("SELECT count(*) FROM todo.items", &[], None).unwrap();
    assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(other.recv_timeout(Duration::from_secs(5)).unwrap().rows, [[Value::Integer(1)]]);
    // The runaway one ends, with the reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.ended().is_none() && Instant::now() < deadline {
        assert!(live.recv_timeout(Duration::from_millis(100)).is_none());
    }
    let ended = live.ended().expect("the runaway live query ended");
    assert!(ended.to_string().contains("budget"), "{ended}");
    // The others go on.
    db.execute("INSERT INTO todo.items (id, list, title) VALUES ('b', 'home', 'B')", &[], None)
        .unwrap();
    assert_eq!(other.recv_timeout(Duration::from_secs(5)).unwrap().rows, [[Value::Integer(2)]]);
}

#[test]
fn a_storage_failure_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    assert!(db.failure().is_none());
    // Break the view behind the database's back.
    let other = rusqlite::Connection::open(dir.path().join("view.sqlite")).unwrap();
    other.execute_batch(r#"DROP TABLE "todo.lists""#).unwrap();
    drop(other);
    let error = db.execute("INSERT INTO todo.lists (id, name) VALUES ('x', 'X')", &[], None);
    assert!(matches!(error, Err(DbError::Stopped(_))), "{error:?}");
    // The cause is kept typed: the view's error, as SQLite gave it.
    let failure = db.failure().expect("the failure is reported");
    assert!(matches!(*failure, DbError::View(_)), "{failure:?}");
    if let Err(DbError::Stopped(cause)) = &error {
        assert!(std::sync::Arc::ptr_eq(cause, &failure), "the caller hears the same cause");
    }
    let failure = failure.to_string();
    assert!(failure.contains("no such table"), "{failure}");
    assert!(!failure.contains("stopped after"), "said once: {failure}");
}

/// A namespace SQLite keeps for itself is refused, not a storage failure.
#[test]
fn a_reserved_namespace_is_refused_before_it_reaches_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    for namespace in ["sqlite_x", "_x"] {
        let text = format!(
            r#"{{"namespace": "{namespace}", "tables": {{"t": {{"primary_key": ["id"], "columns": {{"id": "text"}}}}}}}}"#
        );
        let error = Schema::parse_either(&text).unwrap_err();
        assert!(error.to_string().contains("reserved"), "{error}");
    }
    db.execute("INSERT INTO todo.lists (id, name) VALUES ('x', 'X')", &[], None).unwrap();
    assert!(db.failure().is_none());
}
