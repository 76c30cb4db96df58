//! SQL statements: parsed, checked against the schema, and rewritten for
//! the SQLite view.
//!
//! Reads run as they are, in SQLite, on the derived view. Writes never do:
//! an `INSERT`, `UPDATE` or `DELETE` is turned into a query that SQLite
//! evaluates (its `VALUES`, its assignments, its `WHERE`), and the rows it
//! yields become row operations in a signed commit. Anything that would
//! bypass commits (DDL, `ATTACH`, `PRAGMA`, transactions) is refused.
//!
//! Table names: `namespace.table` in SQL is rewritten to the view's quoted
//! `"namespace.table"` with the alias `table`, so `table.column` works; a
//! bare `table` resolves within the caller's namespace, or anywhere if it
//! is unambiguous.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use basic_proto::Name;
use sqlparser::ast::{
    self, Expr, FromTable, Ident, ObjectName, ObjectNamePart, OnConflictAction, OnInsert, SetExpr,
    SqliteOnConflict, TableAlias, TableFactor, TableObject, VisitMut, VisitorMut,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

/// Table-valued functions allowed in `FROM`.
const TABLE_FUNCTIONS: [&str; 2] = ["json_each", "json_tree"];

/// Longest SQL statement accepted, in bytes.
pub const MAX_SQL_LEN: usize = 1 << 20;

/// Why a statement was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The statement text is longer than [`MAX_SQL_LEN`].
    #[error(
        "the statement is {0} bytes long; the most is {MAX_SQL_LEN} (pass large values as parameters)"
    )]
    TooLong(usize),
    /// Not valid SQL.
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// No statement, or more than one.
    #[error("expected exactly one SQL statement, got {0}")]
    StatementCount(usize),
    /// A statement or clause Basic does not run.
    #[error("{what} is not supported: {hint}")]
    Unsupported {
        /// What was refused.
        what: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// A table that is not in the schema.
    #[error("no table {0} in the schema (tables are created by applying a schema file)")]
    UnknownTable(String),
    /// A bare table name found in several namespaces.
    #[error("table name {name} is ambiguous: qualify it as one of {candidates}")]
    AmbiguousTable {
        /// The name as written.
        name: String,
        /// The qualified names it could mean.
        candidates: String,
    },
}

/// What to do when an `INSERT` meets a live row with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse the statement (plain `INSERT`).
    Fail,
    /// Skip that row (`INSERT OR IGNORE`, `ON CONFLICT DO NOTHING`).
    Ignore,
    /// Replace the row (`INSERT OR REPLACE`, `REPLACE INTO`).
    Replace,
}

/// A checked statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// A read, rewritten for the view.
    Select {
        /// SQL to run on the view.
        sql: String,
        /// Tables it reads.
        tables: BTreeSet<Name>,
    },
    /// `INSERT`: the rows of `source` go into `columns` of `table`.
    Insert {
        /// The table written.
        table: Name,
        /// Columns given, in order; empty means every column in schema order.
        columns: Vec<String>,
        /// A query (`VALUES …` or `SELECT …`) yielding the new rows.
        source: String,
        /// What to do with existing rows.
        on_conflict: OnConflict,
    },
    /// `UPDATE`: set `assignments` on the rows of `table` matching `filter`.
    Update {
        /// The table written.
        table: Name,
        /// Alias under which `filter` and the expressions see the table.
        alias: String,
        /// Column and SQL expression of its new value.
        assignments: Vec<(String, String)>,
        /// The `WHERE` condition, if any.
        filter: Option<String>,
    },
    /// `DELETE`: remove the rows of `table` matching `filter`.
    Delete {
        /// The table written.
        table: Name,
        /// Alias under which `filter` sees the table.
        alias: String,
        /// The `WHERE` condition, if any.
        filter: Option<String>,
    },
}

impl Statement {
    /// The table a write changes, `None` for a read.
    pub fn written_table(&self) -> Option<&Name> {
        match self {
            Statement::Select { .. } => None,
            Statement::Insert { table, .. }
            | Statement::Update { table, .. }
            | Statement::Delete { table, .. } => Some(table),
        }
    }
}

/// Parses and checks one statement. `tables` are the schema's tables;
/// `namespace` is the caller's own namespace, for bare table names.
pub fn parse(
    sql: &str,
    tables: &BTreeSet<Name>,
    namespace: Option<&Name>,
) -> Result<Statement, SqlError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(SqlError::TooLong(sql.len()));
    }
    let mut statements =
        Parser::parse_sql(&SQLiteDialect {}, sql).map_err(|e| SqlError::Syntax(e.to_string()))?;
    if statements.len() != 1 {
        return Err(SqlError::StatementCount(statements.len()));
    }
    let mut statement = statements.remove(0);
    let mut resolver = Resolver {
        tables,
        namespace,
        ctes: cte_names(&statement),
        used: BTreeSet::new(),
        error: None,
    };
    let _ = statement.visit(&mut resolver);
    if let Some(error) = resolver.error {
        return Err(error);
    }
    match statement {
        ast::Statement::Query(query) => {
            Ok(Statement::Select { sql: query.to_string(), tables: resolver.used })
        }
        ast::Statement::Insert(insert) => insert_statement(insert),
        ast::Statement::Update(update) => update_statement(update),
        ast::Statement::Delete(delete) => delete_statement(delete),
        other => Err(refuse(&other)),
    }
}

fn unsupported(what: impl Into<String>, hint: &'static str) -> SqlError {
    SqlError::Unsupported { what: what.into(), hint }
}

fn refuse(statement: &ast::Statement) -> SqlError {
    let text = statement.to_string();
    let keyword: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let hint = match statement {
        ast::Statement::CreateTable(_)
        | ast::Statement::AlterTable(_)
        | ast::Statement::Drop { .. }
        | ast::Statement::CreateIndex(_)
        | ast::Statement::CreateView(_) => {
            "tables and indexes come from the schema file: edit it and apply it (basic schema apply FILE)"
        }
        ast::Statement::AttachDatabase { .. } | ast::Statement::Pragma { .. } => {
            "the database is managed by Basic; only SELECT, INSERT, UPDATE and DELETE on schema tables run"
        }
        ast::Statement::StartTransaction { .. }
        | ast::Statement::Commit { .. }
        | ast::Statement::Rollback { .. } => "each statement is its own durable, signed commit",
        _ => "only SELECT, INSERT, UPDATE and DELETE on schema tables run",
    };
    unsupported(keyword, hint)
}

fn insert_statement(insert: ast::Insert) -> Result<Statement, SqlError> {
    let TableObject::TableName(name) = &insert.table else {
        return Err(unsupported("INSERT INTO a table function", "insert into a schema table"));
    };
    let table = quoted_table(name)?;
    if insert.returning.is_some() {
        return Err(unsupported("RETURNING", "run a SELECT after the write"));
    }
    if !insert.assignments.is_empty() {
        return Err(unsupported("INSERT … SET", "use INSERT INTO t (columns) VALUES (…)"));
    }
    let on_conflict = match (&insert.or, insert.replace_into, &insert.on) {
        (None, false, None) => OnConflict::Fail,
        (Some(SqliteOnConflict::Ignore), false, None) => OnConflict::Ignore,
        (Some(SqliteOnConflict::Replace), false, None) | (None, true, None) => OnConflict::Replace,
        (None, false, Some(OnInsert::OnConflict(conflict)))
            if matches!(conflict.action, OnConflictAction::DoNothing) =>
        {
            OnConflict::Ignore
        }
        _ => {
            return Err(unsupported(
                "this conflict clause",
                "use INSERT, INSERT OR IGNORE, INSERT OR REPLACE or ON CONFLICT DO NOTHING; for updates use UPDATE",
            ));
        }
    };
    let source = insert
        .source
        .ok_or_else(|| unsupported("INSERT without VALUES or SELECT", "give the rows to insert"))?;
    if let SetExpr::Values(values) = source.body.as_ref()
        && values.rows.is_empty()
    {
        return Err(unsupported("INSERT with no rows", "give at least one row"));
    }
    let columns = insert.columns.iter().map(last_part).collect::<Result<_, _>>()?;
    Ok(Statement::Insert { table, columns, source: source.to_string(), on_conflict })
}

fn update_statement(update: ast::Update) -> Result<Statement, SqlError> {
    if update.from.is_some() {
        return Err(unsupported("UPDATE … FROM", "use a subquery in SET or WHERE"));
    }
    if update.returning.is_some() {
        return Err(unsupported("RETURNING", "run a SELECT after the write"));
    }
    if update.or.is_some() || !update.order_by.is_empty() || update.limit.is_some() {
        return Err(unsupported("UPDATE OR / ORDER BY / LIMIT", "narrow the rows with WHERE"));
    }
    if !update.table.joins.is_empty() {
        return Err(unsupported("UPDATE of a join", "update one table at a time"));
    }
    let (table, alias) = target(&update.table.relation)?;
    let assignments = update
        .assignments
        .iter()
        .map(|assignment| match &assignment.target {
            ast::AssignmentTarget::ColumnName(column) => {
                Ok((last_part(column)?, assignment.value.to_string()))
            }
            ast::AssignmentTarget::Tuple(_) => Err(unsupported(
                "tuple assignment",
                "assign one column at a time: SET a = 1, b = 2",
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Statement::Update {
        table,
        alias,
        assignments,
        filter: update.selection.map(|e| e.to_string()),
    })
}

fn delete_statement(delete: ast::Delete) -> Result<Statement, SqlError> {
    if delete.returning.is_some() {
        return Err(unsupported("RETURNING", "run a SELECT before the delete"));
    }
    if delete.using.is_some()
        || !delete.tables.is_empty()
        || !delete.order_by.is_empty()
        || delete.limit.is_some()
    {
        return Err(unsupported(
            "DELETE with USING / ORDER BY / LIMIT",
            "narrow the rows with WHERE",
        ));
    }
    let from = match &delete.from {
        FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
    };
    let [only] = from.as_slice() else {
        return Err(unsupported("DELETE from several tables", "delete from one table at a time"));
    };
    if !only.joins.is_empty() {
        return Err(unsupported("DELETE of a join", "use a subquery in WHERE"));
    }
    let (table, alias) = target(&only.relation)?;
    Ok(Statement::Delete { table, alias, filter: delete.selection.map(|e| e.to_string()) })
}

/// The resolved table and alias of a write's target.
fn target(relation: &TableFactor) -> Result<(Name, String), SqlError> {
    match relation {
        TableFactor::Table { name, alias, .. } => {
            let table = quoted_table(name)?;
            let alias =
                alias.as_ref().map(|a| a.name.value.clone()).unwrap_or_else(|| local_name(&table));
            Ok((table, alias))
        }
        _ => Err(unsupported("writing to a subquery", "write to a schema table")),
    }
}

/// The name a resolved (rewritten) table reference holds.
fn quoted_table(name: &ObjectName) -> Result<Name, SqlError> {
    let text = last_part(name)?;
    Name::new(text.clone()).map_err(|_| SqlError::UnknownTable(text))
}

fn last_part(name: &ObjectName) -> Result<String, SqlError> {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => Ok(ident.value.clone()),
        _ => Err(unsupported(format!("name {name}"), "use plain identifiers")),
    }
}

/// `items` for `todo.items`.
pub fn local_name(table: &Name) -> String {
    table.as_str().rsplit('.').next().unwrap_or(table.as_str()).to_owned()
}

/// Names defined by `WITH` clauses anywhere in the statement.
fn cte_names(statement: &ast::Statement) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    struct Ctes<'a>(&'a mut BTreeSet<String>);
    impl ast::Visitor for Ctes<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                self.0
                    .extend(with.cte_tables.iter().map(|cte| cte.alias.name.value.to_lowercase()));
            }
            ControlFlow::Continue(())
        }
    }
    let _ = ast::Visit::visit(statement, &mut Ctes(&mut names));
    names
}

/// Rewrites table references to the view's names, recording them.
struct Resolver<'a> {
    tables: &'a BTreeSet<Name>,
    namespace: Option<&'a Name>,
    ctes: BTreeSet<String>,
    used: BTreeSet<Name>,
    error: Option<SqlError>,
}

impl Resolver<'_> {
    fn resolve(&self, name: &ObjectName) -> Result<Option<Name>, SqlError> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|part| match part {
                ObjectNamePart::Identifier(ident) => Ok(ident.value.to_lowercase()),
                ObjectNamePart::Function(_) => {
                    Err(unsupported(format!("name {name}"), "use plain identifiers"))
                }
            })
            .collect::<Result<_, _>>()?;
        let wanted = match parts.as_slice() {
            [single] if self.ctes.contains(single) => return Ok(None),
            [single] if single.contains('.') => single.clone(),
            [single] => {
                if let Some(own) =
                    self.namespace.and_then(|ns| Name::new(format!("{ns}.{single}")).ok())
                    && self.tables.contains(&own)
                {
                    return Ok(Some(own));
                }
                let candidates: Vec<&Name> =
                    self.tables.iter().filter(|t| local_name(t) == *single).collect();
                return match candidates.as_slice() {
                    [one] => Ok(Some((*one).clone())),
                    [] => Err(SqlError::UnknownTable(single.clone())),
                    many => Err(SqlError::AmbiguousTable {
                        name: single.clone(),
                        candidates: many.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
                    }),
                };
            }
            [namespace, table] => format!("{namespace}.{table}"),
            _ => return Err(SqlError::UnknownTable(name.to_string())),
        };
        match Name::new(wanted.clone()) {
            Ok(table) if self.tables.contains(&table) => Ok(Some(table)),
            _ => Err(SqlError::UnknownTable(wanted)),
        }
    }

    fn fail(&mut self, error: SqlError) -> ControlFlow<()> {
        self.error = Some(error);
        ControlFlow::Break(())
    }
}

fn view_name(table: &Name) -> ObjectName {
    ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote('"', table.as_str()))])
}

impl VisitorMut for Resolver<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // Table-valued functions: only the JSON ones, which read their
        // argument and nothing of the database (no pragma_* and the like).
        if let TableFactor::Table { name, args: Some(_), .. } = factor {
            let function = name.to_string().to_lowercase();
            if !TABLE_FUNCTIONS.contains(&function.as_str()) {
                return self.fail(unsupported(
                    format!("table-valued function {function}"),
                    "only json_each and json_tree may appear in FROM besides schema tables",
                ));
            }
            return ControlFlow::Continue(());
        }
        if !matches!(
            factor,
            TableFactor::Table { .. }
                | TableFactor::Derived { .. }
                | TableFactor::NestedJoin { .. }
        ) {
            return self.fail(unsupported(
                format!("FROM {factor}"),
                "read schema tables, subqueries and joins",
            ));
        }
        if let TableFactor::Table { name, alias, args: None, .. } = factor {
            match self.resolve(name) {
                Ok(Some(table)) => {
                    if alias.is_none() {
                        *alias = Some(TableAlias {
                            explicit: true,
                            name: Ident::new(local_name(&table)),
                            columns: Vec::new(),
                            at: None,
                        });
                    }
                    *name = view_name(&table);
                    self.used.insert(table);
                }
                Ok(None) => {}
                Err(error) => return self.fail(error),
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &mut ast::Statement) -> ControlFlow<()> {
        // An INSERT's target is not a table factor: resolve it here.
        if let ast::Statement::Insert(insert) = statement
            && let TableObject::TableName(name) = &mut insert.table
        {
            match self.resolve(name) {
                Ok(Some(table)) => {
                    *name = view_name(&table);
                    self.used.insert(table);
                }
                Ok(None) => {
                    return self.fail(unsupported(
                        "INSERT into a WITH table",
                        "insert into a schema table",
                    ));
                }
                Err(error) => return self.fail(error),
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        // namespace.table.column → table.column (the alias every table gets).
        if let Expr::CompoundIdentifier(idents) = expr
            && idents.len() == 3
            && let Ok(table) = Name::new(format!(
                "{}.{}",
                idents[0].value.to_lowercase(),
                idents[1].value.to_lowercase()
            ))
            && self.tables.contains(&table)
        {
            idents.remove(0);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> BTreeSet<Name> {
        ["todo.items", "todo.lists", "contacts.people", "contacts.items"]
            .into_iter()
            .map(|t| Name::new(t).unwrap())
            .collect()
    }

    fn todo() -> Name {
        Name::new("todo").unwrap()
    }

    fn select(sql: &str) -> (String, Vec<String>) {
        match parse(sql, &tables(), Some(&todo())).unwrap() {
            Statement::Select { sql, tables } => {
                (sql, tables.iter().map(|t| t.to_string()).collect())
            }
            other => panic!("not a select: {other:?}"),
        }
    }

    #[test]
    fn selects_are_rewritten_to_view_names() {
        let (sql, used) =
            select("SELECT title FROM todo.items WHERE done = false ORDER BY title LIMIT 5");
        assert_eq!(
            sql,
            r#"SELECT title FROM "todo.items" AS items WHERE done = false ORDER BY title LIMIT 5"#
        );
        assert_eq!(used, ["todo.items"]);
        let (sql, used) = select(
            "SELECT i.title, lists.name FROM items i LEFT JOIN todo.lists ON i.list = lists.id",
        );
        assert_eq!(
            sql,
            r#"SELECT i.title, lists.name FROM "todo.items" i LEFT JOIN "todo.lists" AS lists ON i.list = lists.id"#
        );
        assert_eq!(used, ["todo.items", "todo.lists"]);
        let (sql, _) = select("SELECT todo.items.title FROM todo.items");
        assert_eq!(sql, r#"SELECT items.title FROM "todo.items" AS items"#);
        let (sql, used) = select("WITH x AS (SELECT id FROM people) SELECT * FROM x");
        assert_eq!(
            sql,
            r#"WITH x AS (SELECT id FROM "contacts.people" AS people) SELECT * FROM x"#
        );
        assert_eq!(used, ["contacts.people"]);
    }

    #[test]
    fn unknown_and_ambiguous_tables_are_named() {
        assert_eq!(
            parse("SELECT * FROM nope", &tables(), None),
            Err(SqlError::UnknownTable("nope".into()))
        );
        assert_eq!(
            parse("SELECT * FROM todo.nope", &tables(), None),
            Err(SqlError::UnknownTable("todo.nope".into()))
        );
        assert!(matches!(
            parse("SELECT * FROM items", &tables(), None),
            Err(SqlError::AmbiguousTable { .. })
        ));
        // Within the todo namespace, `items` is todo.items.
        assert!(parse("SELECT * FROM items", &tables(), Some(&todo())).is_ok());
        assert!(matches!(
            parse("SELECT * FROM sqlite_master", &tables(), None),
            Err(SqlError::UnknownTable(_))
        ));
    }

    #[test]
    fn writes_are_decomposed() {
        let parsed = parse(
            "INSERT INTO todo.items (id, title) VALUES ('a', 'milk'), ('b', upper('x'))",
            &tables(),
            None,
        )
        .unwrap();
        assert_eq!(
            parsed,
            Statement::Insert {
                table: Name::new("todo.items").unwrap(),
                columns: vec!["id".into(), "title".into()],
                source: "VALUES ('a', 'milk'), ('b', upper('x'))".into(),
                on_conflict: OnConflict::Fail,
            }
        );
        let parsed = parse("UPDATE items SET done = true, title = title || '!' WHERE list IN (SELECT id FROM lists)", &tables(), Some(&todo())).unwrap();
        assert_eq!(
            parsed,
            Statement::Update {
                table: Name::new("todo.items").unwrap(),
                alias: "items".into(),
                assignments: vec![
                    ("done".into(), "true".into()),
                    ("title".into(), "title || '!'".into())
                ],
                filter: Some(r#"list IN (SELECT id FROM "todo.lists" AS lists)"#.into()),
            }
        );
        let parsed = parse("DELETE FROM todo.items WHERE done", &tables(), None).unwrap();
        assert_eq!(
            parsed,
            Statement::Delete {
                table: Name::new("todo.items").unwrap(),
                alias: "items".into(),
                filter: Some("done".into())
            }
        );
        for (sql, conflict) in [
            ("INSERT OR IGNORE INTO items VALUES (1)", OnConflict::Ignore),
            ("INSERT OR REPLACE INTO items VALUES (1)", OnConflict::Replace),
            ("REPLACE INTO items VALUES (1)", OnConflict::Replace),
            ("INSERT INTO items VALUES (1) ON CONFLICT DO NOTHING", OnConflict::Ignore),
        ] {
            match parse(sql, &tables(), Some(&todo())).unwrap() {
                Statement::Insert { on_conflict, .. } => assert_eq!(on_conflict, conflict, "{sql}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn statements_that_bypass_commits_are_refused_by_name() {
        for (sql, named) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("DROP TABLE todo.items", "DROP TABLE"),
            ("ATTACH DATABASE 'x.db' AS x", "ATTACH DATABASE"),
            ("PRAGMA foreign_keys = 1", "PRAGMA foreign_keys"),
            ("BEGIN", "BEGIN"),
            ("UPDATE items SET a = 1 RETURNING *", "RETURNING"),
            (
                "INSERT INTO items VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2",
                "this conflict clause",
            ),
        ] {
            match parse(sql, &tables(), Some(&todo())) {
                Err(SqlError::Unsupported { what, .. }) => {
                    assert!(what.starts_with(named), "{sql}: {what}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        for sql in [
            "SELECT * FROM pragma_table_info('todo.items')",
            "UPDATE items SET title = (SELECT name FROM pragma_table_info('x') LIMIT 1)",
        ] {
            assert!(
                matches!(parse(sql, &tables(), Some(&todo())), Err(SqlError::Unsupported { ref what, .. }) if what.starts_with("table-valued function pragma_table_info")),
                "{sql}"
            );
        }
        assert!(parse("SELECT value FROM json_each('[1,2]')", &tables(), None).is_ok());
        assert_eq!(parse("SELECT 1; SELECT 2", &tables(), None), Err(SqlError::StatementCount(2)));
        assert_eq!(parse("", &tables(), None), Err(SqlError::StatementCount(0)));
        assert!(matches!(parse("SELEKT", &tables(), None), Err(SqlError::Syntax(_))));
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(matches!(parse(&deep, &tables(), None), Err(SqlError::Syntax(_))));
        let long = format!("SELECT '{}'", "x".repeat(MAX_SQL_LEN));
        assert!(
            matches!(parse(&long, &tables(), None), Err(SqlError::TooLong(n)) if n == long.len())
        );
    }
}
