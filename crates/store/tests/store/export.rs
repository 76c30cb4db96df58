//! Export and import end to end: JSON lines round trips, namespace exports,
//! SQLite files, and imports refused line by line before anything is written.

use std::io::Cursor;
use std::path::Path;

use basic_proto::{Name, Value};
use basic_store::{Database, Executed, ExportError, Format, ImportSummary, Schema};

use crate::common::examples;

fn example(file: &str) -> Schema {
    Schema::from_file(examples().join(file)).unwrap()
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// A namespace with a column of every type, infinities and a bytes key.
const LAB: &str = r#"
namespace = "lab"
[tables.samples]
primary_key = ["id"]
[tables.samples.columns]
id = "integer"
reading = "real"
maybe = { type = "real", nullable = true }
blob = { type = "bytes", nullable = true }
doc = { type = "json", nullable = true }
strict_doc = { type = "json", default = "{}" }
at = "timestamp"
flag = "bool"
count = { type = "integer", nullable = true }
label = { type = "text", nullable = true }
[tables.tags]
primary_key = ["key"]
[tables.tags.columns]
key = "bytes"
sample = { type = "reference", table = "samples" }
"#;

/// A namespace whose references point into another one.
const NOTES: &str = r#"
namespace = "notes"
[tables.pages]
primary_key = ["id"]
[tables.pages.columns]
id = "integer"
item = { type = "reference", table = "todo.items" }
body = "text"
"#;

fn write(db: &Database, sql: &str, params: &[Value]) {
    match db.execute(sql, params, None) {
        Ok(Executed::Written(_)) => {}
        other => panic!("{sql}: {other:?}"),
    }
}

fn seeded(dir: &Path) -> Database {
    let db = Database::open(dir).unwrap();
    db.apply_schema(example("todo.toml")).unwrap();
    db.apply_schema(example("contacts.json")).unwrap();
    db.apply_schema(Schema::parse(LAB, Format::Toml).unwrap()).unwrap();
    write(
        &db,
        "INSERT INTO todo.lists (id, name, created_at) VALUES ('home', 'Home', 1700000000000000), ('work', 'Work', NULL)",
        &[],
    );
    write(
        &db,
        "INSERT INTO todo.items (id, list, title, done, priority, due, notes) VALUES
           ('a', 'home', 'Buy milk', false, 2, 1795824000000000, '{\"tags\":[\"shop\"]}'),
           ('b', 'home', 'Fix bike', true, 1, NULL, NULL),
           ('c', 'work', 'Write \"report\"
on two lines', false, -3, -1, '[1, 2.50, {\"z\": null, \"a\": true}]')",
        &[],
    );
    write(
        &db,
        "INSERT INTO contacts.people (id, name, nickname, birthday, photo, starred, extra) VALUES (?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?)",
        &[
            text("ada"),
            text("Ada Lovelace"),
            text("Ada"),
            Value::Timestamp(-4_937_270_400_000_000),
            Value::Bytes((0..=255).collect()),
            Value::Bool(true),
            Value::Json("{\"big\": 123456789012345678901234567890, \"k\": 1, \"k\": 2}".into()),
            text("bob"),
            text("Bob 🦀 \u{1}\t"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Bool(false),
            // The JSON document null, in a column that is not nullable.
            Value::Json("null".into()),
        ],
    );
    // Enough rows on a two-column key to take several pages, in an order
    // that is not the key's.
    for chunk in (0..1200).collect::<Vec<u32>>().chunks(300) {
        let mut params = Vec::new();
        for i in chunk {
            params.push(text(if i % 2 == 0 { "ada" } else { "bob" }));
            params.push(text(&format!("user{:04}@example.org", (i * 7919) % 1200)));
            params.push(text(["home", "work", "other"][*i as usize % 3]));
        }
        let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
        write(
            &db,
            &format!("INSERT INTO contacts.emails (person, address, label) VALUES {rows}"),
            &params,
        );
    }
    let samples = [
        (1, 0.1, Value::Real(f64::INFINITY), Value::Bytes(vec![]), "{\"a\": [1e400, -0.0]}"),
        (2, -0.0, Value::Real(f64::NEG_INFINITY), Value::Null, "\"just a string\""),
        (3, 1e300, Value::Null, Value::Bytes(vec![0, 1, 2]), "null"),
        (-4, 2.0, Value::Real(-1.5e-300), Value::Bytes(b"\xff\xfe".to_vec()), "[]"),
    ];
    for (id, reading, maybe, blob, doc) in samples {
        write(
            &db,
            "INSERT INTO lab.samples (id, reading, maybe, blob, doc, strict_doc, at, flag, count, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                Value::Integer(id),
                Value::Real(reading),
                maybe,
                blob,
                // The document null of a nullable column would import as NULL.
                if doc == "null" { Value::Null } else { Value::Json(doc.into()) },
                Value::Json(doc.into()),
                Value::Timestamp(i64::MIN + id.abs()),
                Value::Bool(id % 2 == 0),
                if id == 1 { Value::Integer(i64::MAX) } else { Value::Null },
                if id == 2 { text("é\n\"\\") } else { Value::Null },
            ],
        );
    }
    write(
        &db,
        "INSERT INTO lab.tags (key, sample) VALUES (X'00', 1), (X'', 2), (X'ff00', -4)",
        &[],
    );
    db
}

fn export(db: &Database, namespace: Option<&str>) -> String {
    let mut out = Vec::new();
    db.export_jsonl(namespace.map(name).as_ref(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn import(db: &Database, file: &str) -> Result<ImportSummary, ExportError> {
    db.import_jsonl(Cursor::new(file.as_bytes()), None)
}

/// Every table's rows, by key, printed exactly (`-0.0` is not `0.0`).
fn contents(db: &Database) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for schema in db.catalog().schemas() {
        for table in schema.tables() {
            let key: Vec<String> = table.primary_key().iter().map(|k| format!("\"{k}\"")).collect();
            let sql = format!("SELECT * FROM \"{}\" ORDER BY {}", table.name(), key.join(", "));
            let rows = db.query(&sql, &[], None).unwrap();
            all.push((table.name().to_string(), format!("{:?} {:?}", rows.columns, rows.rows)));
        }
    }
    all
}

fn header(file: &str) -> serde_json::Value {
    serde_json::from_str(file.lines().next().unwrap()).unwrap()
}

fn commits(db: &Database) -> usize {
    db.replica().commits().count()
}

#[test]
fn a_database_round_trips_through_json_lines() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = seeded(a.path());
    let file = export(&db, None);
    let lines: Vec<&str> = file.lines().collect();
    assert_eq!(lines.len(), 1 + 2 + 3 + 2 + 1200 + 4 + 3);
    let head = header(&file);
    assert_eq!(head["basic_export"], 1);
    assert_eq!(head["database"], db.id().to_string());
    let namespaces: Vec<&str> = head["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["contacts", "lab", "todo"]);
    // Natural JSON per type, columns in schema order.
    assert!(lines.contains(&r#"{"table":"todo.items","row":{"id":"a","list":"home","title":"Buy milk","done":false,"priority":2,"due":1795824000000000,"notes":{"tags":["shop"]}}}"#));
    assert!(lines.contains(&r#"{"table":"todo.items","row":{"id":"c","list":"work","title":"Write \"report\"\non two lines","done":false,"priority":-3,"due":-1,"notes":[1, 2.50, {"z": null, "a": true}]}}"#));
    assert!(lines.contains(&r#"{"table":"lab.samples","row":{"id":1,"reading":0.1,"maybe":"inf","blob":"","doc":{"a": [1e400, -0.0]},"strict_doc":{"a": [1e400, -0.0]},"at":-9223372036854775807,"flag":false,"count":9223372036854775807,"label":null}}"#));
    assert!(lines.contains(&r#"{"table":"lab.samples","row":{"id":3,"reading":1e+300,"maybe":null,"blob":"AAEC","doc":null,"strict_doc":null,"at":-9223372036854775805,"flag":false,"count":null,"label":null}}"#));
    assert!(lines.contains(&r#"{"table":"lab.tags","row":{"key":"/wA=","sample":-4}}"#));
    assert!(
        lines
            .iter()
            .any(|l| l
                .contains(r#""extra":{"big": 123456789012345678901234567890, "k": 1, "k": 2}"#))
    );
    // Rows come in key order. (Not every line reads with serde_json: it
    // cannot hold 1e400.)
    let emails: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l.starts_with(r#"{"table":"contacts.emails""#))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|l| (l["row"]["person"].to_string(), l["row"]["address"].to_string()))
        .collect();
    assert_eq!(emails.len(), 1200);
    assert!(emails.is_sorted());
    assert!(
        lines.iter().position(|l| l.contains("lab.samples\",\"row\":{\"id\":-4")).unwrap()
            < lines.iter().position(|l| l.contains("lab.samples\",\"row\":{\"id\":1")).unwrap()
    );

    let copy = Database::open(b.path()).unwrap();
    let mut progress = Vec::new();
    let summary =
        copy.import_jsonl(Cursor::new(file.as_bytes()), Some(&mut |n| progress.push(n))).unwrap();
    assert_eq!(summary.rows, 1214);
    assert_eq!(summary.tables[&name("contacts.emails")], 1200);
    assert_eq!(summary.schemas_applied, [name("contacts"), name("lab"), name("todo")]);
    assert!(summary.commits >= 7, "{summary:?}");
    assert!(progress.is_sorted() && progress.len() >= 7, "{progress:?}");
    assert_eq!(progress.last(), Some(&1214));
    // Every row is the same, to the bit; the rows are commits of the new device.
    assert_eq!(contents(&copy), contents(&db));
    assert_eq!(copy.replica().log(&copy.device()).unwrap().len(), summary.commits);
    // Exporting the copy gives the same file, but for the database id.
    let again = export(&copy, None);
    assert_eq!(again.lines().skip(1).collect::<Vec<_>>(), lines[1..]);
    assert_eq!(
        again.lines().next().unwrap().replace(&copy.id().to_string(), "ID"),
        lines[0].replace(&db.id().to_string(), "ID")
    );
    // Importing again changes nothing. (One namespace: rewriting existing
    // rows is slow in debug builds.)
    let twice = import(&copy, &export(&db, Some("todo"))).unwrap();
    assert_eq!((twice.rows, twice.schemas_applied.len()), (5, 0));
    assert_eq!(contents(&copy), contents(&db));
}

#[test]
fn a_namespace_exports_alone_with_the_schemas_it_references() {
    let (a, b, c) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = seeded(a.path());
    let file = export(&db, Some("todo"));
    let schemas = header(&file)["schemas"].as_array().unwrap().len();
    assert_eq!(schemas, 1);
    assert_eq!(file.lines().count(), 1 + 5);
    assert!(file.lines().skip(1).all(|l| l.starts_with(r#"{"table":"todo."#)));
    let copy = Database::open(b.path()).unwrap();
    import(&copy, &file).unwrap();
    assert_eq!(copy.catalog().schemas().count(), 1);
    assert_eq!(
        contents(&copy),
        contents(&db).into_iter().filter(|(t, _)| t.starts_with("todo.")).collect::<Vec<_>>()
    );

    // A namespace whose references point into another carries that schema.
    db.apply_schema(Schema::parse(NOTES, Format::Toml).unwrap()).unwrap();
    write(&db, "INSERT INTO notes.pages (id, item, body) VALUES (1, 'a', 'Semi-skimmed')", &[]);
    let file = export(&db, Some("notes"));
    let head = header(&file);
    let namespaces: Vec<&str> = head["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["notes", "todo"]);
    assert_eq!(
        file.lines().skip(1).collect::<Vec<_>>(),
        [r#"{"table":"notes.pages","row":{"id":1,"item":"a","body":"Semi-skimmed"}}"#]
    );
    let copy = Database::open(c.path()).unwrap();
    let summary = import(&copy, &file).unwrap();
    assert_eq!(summary.schemas_applied, [name("todo"), name("notes")]);
    assert_eq!(summary.rows, 1);

    let missing = db.export_jsonl(Some(&name("nope")), &mut Vec::new()).unwrap_err();
    assert!(matches!(missing, ExportError::UnknownNamespace(_)), "{missing}");
}

#[test]
fn a_sqlite_export_has_the_typed_tables_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded(&dir.path().join("db"));
    let path = dir.path().join("all.sqlite");
    let summary = db.export_sqlite(None, &path).unwrap();
    assert_eq!(summary.rows, 1214);
    assert_eq!(summary.tables.len(), 6);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let names = |kind: &str| -> Vec<String> {
        let mut statement = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = ?1 AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        statement.query_map([kind], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(
        names("table"),
        [
            "contacts.emails",
            "contacts.people",
            "lab.samples",
            "lab.tags",
            "todo.items",
            "todo.lists"
        ]
    );
    assert_eq!(
        names("index"),
        ["contacts.emails.by_address", "contacts.people.by_name", "todo.items.by_list_done"]
    );
    let strict: String = conn
        .query_row("SELECT sql FROM sqlite_master WHERE name = 'todo.items'", [], |row| row.get(0))
        .unwrap();
    assert!(strict.ends_with("STRICT"), "{strict}");
    let items: Vec<(String, i64, Option<i64>, Option<String>)> = conn
        .prepare(r#"SELECT id, done, due, notes FROM "todo.items" ORDER BY id"#)
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        items[0],
        ("a".into(), 0, Some(1795824000000000), Some(r#"{"tags":["shop"]}"#.into()))
    );
    assert_eq!(items[1], ("b".into(), 1, None, None));
    let (reading, maybe, blob): (f64, f64, Vec<u8>) = conn
        .query_row(r#"SELECT reading, maybe, blob FROM "lab.samples" WHERE id = 1"#, [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    assert_eq!((reading, maybe, blob), (0.1, f64::INFINITY, vec![]));
    let emails: i64 =
        conn.query_row(r#"SELECT count(*) FROM "contacts.emails""#, [], |row| row.get(0)).unwrap();
    assert_eq!(emails, 1200);

    let path = dir.path().join("contacts.sqlite");
    db.export_sqlite(Some(&name("contacts")), &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tables, ["contacts.emails", "contacts.people"]);
}

#[test]
fn a_sqlite_export_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded(&dir.path().join("db"));
    let path = dir.path().join("taken.sqlite");
    std::fs::write(&path, "keep me").unwrap();
    let error = db.export_sqlite(None, &path).unwrap_err();
    assert!(matches!(&error, ExportError::Exists { path: p } if *p == path), "{error}");
    assert!(error.to_string().ends_with("already exists: export to a new file"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    let error = db.export_sqlite(None, &dir.path().join("no/such/dir.sqlite")).unwrap_err();
    assert!(matches!(error, ExportError::File { .. }), "{error}");
}

/// The export of `seeded` with line `number` (from 1) replaced.
fn with_line(file: &str, number: usize, line: &str) -> String {
    let mut lines: Vec<&str> = file.lines().collect();
    lines[number - 1] = line;
    lines.join("\n") + "\n"
}

#[test]
fn bad_lines_are_named_and_nothing_is_imported() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = seeded(a.path());
    let file = export(&db, None);
    let last = file.lines().count();
    let copy = Database::open(b.path()).unwrap();
    let cases: Vec<(String, u64, &str)> = vec![
        (with_line(&file, 3, r#"{"table":"todo.items","row":{"id":"x""#), 3, "not valid JSON"),
        (
            with_line(&file, 2, r#"{"table":"todo.nope","row":{"id":"x"}}"#),
            2,
            "unknown table todo.nope",
        ),
        (
            with_line(
                &file,
                last,
                r#"{"table":"todo.items","row":{"id":"x","list":"home","title":"t","done":"yes"}}"#,
            ),
            last as u64,
            r#"todo.items.done: expected bool, got string "yes""#,
        ),
        (
            with_line(&file, 5, r#"{"table":"todo.items","row":{"list":"home","title":"t"}}"#),
            5,
            "the row of todo.items has no id, a primary key column",
        ),
        (
            with_line(
                &file,
                6,
                r#"{"table":"lab.samples","row":{"id":9,"reading":1,"at":0,"flag":true,"blob":"AB=C"}}"#,
            ),
            6,
            r#"lab.samples.blob: expected bytes or null, got string "AB=C" (not base64)"#,
        ),
        (with_line(&file, 7, "\u{feff}"), 7, "not valid JSON"),
        (with_line(&file, 1, r#"{"basic_export":2,"schemas":[]}"#), 1, "format version 2"),
        (String::new(), 1, "the file is empty"),
    ];
    for (bad, line, message) in cases {
        let error = import(&copy, &bad).unwrap_err();
        assert_eq!(error.line(), Some(line), "{error}");
        assert!(error.to_string().starts_with(&format!("line {line}: ")), "{error}");
        assert!(error.to_string().contains(message), "{error}");
        assert_eq!(copy.catalog().schemas().count(), 0, "{error}");
        assert_eq!(commits(&copy), 0, "{error}");
    }
    let error = import(
        &copy,
        &with_line(
            &file,
            4,
            r#"{"table":"todo.items","row":{"id":"x","list":"home","title":"t","done":"yes"}}"#,
        ),
    )
    .unwrap_err();
    assert!(matches!(error, ExportError::Type { line: 4, .. }), "{error}");
    // Blank lines and CRLF line ends are fine.
    let loose = file.replace('\n', "\r\n\r\n");
    assert_eq!(import(&copy, &loose).unwrap().rows, 1214);
    assert_eq!(contents(&copy), contents(&db));
}

#[test]
fn a_conflicting_schema_fails_before_any_row_is_written() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = seeded(a.path());
    let file = export(&db, None);
    let other = Database::open(b.path()).unwrap();
    let changed = Schema::parse(
        "namespace = \"todo\"\n[tables.lists]\nprimary_key = [\"id\"]\n[tables.lists.columns]\nid = \"integer\"\nname = \"text\"\n",
        Format::Toml,
    )
    .unwrap();
    other.apply_schema(changed).unwrap();
    write(&other, "INSERT INTO todo.lists (id, name) VALUES (1, 'One')", &[]);
    let before = commits(&other);
    let error = import(&other, &file).unwrap_err();
    match &error {
        ExportError::Schema { namespace, .. } => assert_eq!(namespace.as_str(), "todo"),
        other => panic!("{other}"),
    }
    assert!(error.to_string().contains("todo.lists"), "{error}");
    assert_eq!(commits(&other), before);
    assert_eq!(other.catalog().schemas().count(), 1);
}

#[test]
fn an_older_export_imports_into_a_newer_schema() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = seeded(a.path());
    let file = export(&db, Some("todo"));
    let newer = Database::open(b.path()).unwrap();
    newer.apply_schema(example("todo-v2.toml")).unwrap();
    let summary = import(&newer, &file).unwrap();
    assert!(summary.schemas_applied.is_empty());
    assert_eq!(summary.rows, 5);
    let rows = newer.query("SELECT id, archived FROM todo.lists ORDER BY id", &[], None).unwrap();
    assert_eq!(rows.rows, [[text("home"), Value::Bool(false)], [text("work"), Value::Bool(false)]]);
}
