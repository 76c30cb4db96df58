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
//!
//! What runs is what was checked: the rewritten statement is printed, and
//! the printed text must parse back to the same tree, else the statement
//! is refused ([`SqlError::Reprinted`]). The check here is the friendly
//! one; access is enforced again where SQLite resolves tables, by the
//! authorizer of every connection that runs a caller's SQL
//! ([`crate::sql::view::Gate`]).

pub(crate) mod live;
pub(crate) mod query;
pub(crate) mod schema;
pub(crate) mod view;
pub(crate) mod write;

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use basic_proto::Name;
use sqlparser::ast::{
    self, Expr, FromTable, Ident, InTarget, ObjectName, ObjectNamePart, OnConflictAction, OnInsert,
    Query, SetExpr, SqliteOnConflict, TableAlias, TableFactor, TableObject, VisitMut, VisitorMut,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::database::scope_of;

/// Table-valued functions allowed in `FROM`.
pub(crate) const TABLE_FUNCTIONS: [&str; 2] = ["json_each", "json_tree"];

/// Longest SQL statement accepted, in bytes.
pub(crate) const MAX_SQL_LEN: usize = 1 << 20;

/// Why a statement was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The statement text is longer than 1 MiB.
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
    /// A `WITH` name that could be mistaken for a table.
    #[error(
        "WITH name {0} is refused: it is a table's name or looks like one (no '.', no sqlite_, pragma_ or _ prefix); rename it"
    )]
    CteName(String),
    /// The printed statement does not parse back to what was checked, so
    /// SQLite would run something else.
    #[error(
        "the statement cannot be passed on unchanged (a string or name with a backslash before a quote, or two quotes in a row?): pass such values as ? parameters"
    )]
    Reprinted,
    /// The caller may not read or write a table the statement touches.
    #[error("may not {action} {table}: it is outside the caller's grants")]
    Denied {
        /// `read` or `write`.
        action: &'static str,
        /// The table.
        table: Name,
    },
}

/// Who runs a statement, and so which tables its SQL may read and write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The user (this device, the CLI, the owner token): every table.
    Owner,
    /// An app: the tables of the scopes it holds unrevoked grants on.
    App {
        /// Scopes it may read.
        readable: BTreeSet<Name>,
        /// Scopes it may write.
        writable: BTreeSet<Name>,
    },
}

impl Caller {
    /// Whether the caller may read `table`.
    pub fn may_read(&self, table: &Name) -> bool {
        match self {
            Caller::Owner => true,
            Caller::App { readable, .. } => readable.contains(&scope_of(table)),
        }
    }

    /// Whether the caller may write `table`.
    pub fn may_write(&self, table: &Name) -> bool {
        match self {
            Caller::Owner => true,
            Caller::App { writable, .. } => writable.contains(&scope_of(table)),
        }
    }
}

/// A checked statement and every table it reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The statement.
    pub statement: Statement,
    /// The schema tables it names, the written one included.
    pub tables: BTreeSet<Name>,
}

impl Checked {
    /// Fails unless `caller` may read every table the statement names and
    /// write the one it writes.
    pub(crate) fn authorize(&self, caller: &Caller) -> Result<(), SqlError> {
        if let Some(table) = self.tables.iter().find(|t| !caller.may_read(t)) {
            return Err(SqlError::Denied { action: "read", table: table.clone() });
        }
        match self.statement.written_table() {
            Some(table) if !caller.may_write(table) => {
                Err(SqlError::Denied { action: "write", table: table.clone() })
            }
            _ => Ok(()),
        }
    }
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

/// The shape of an `INSERT`'s `VALUES` made of bare `?` placeholders
/// only, `rows` rows of `width` each: its rows are the statement's
/// parameters, `width` at a time, with nothing to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamRows {
    /// Rows in the `VALUES`.
    pub rows: usize,
    /// Placeholders per row.
    pub width: usize,
}

impl ParamRows {
    /// The shape of `source` (displayed as `text`), if it is `VALUES` of
    /// bare `?` and nothing else: no other expression, no `ROW`, no
    /// `ORDER BY` or `LIMIT`, every row as wide as the first.
    fn of(source: &Query, text: &str) -> Option<Self> {
        let SetExpr::Values(values) = source.body.as_ref() else { return None };
        let shape = Self { rows: values.rows.len(), width: values.rows.first()?.len() };
        let row = format!("({})", vec!["?"; shape.width].join(", "));
        let canonical = format!("VALUES {}", vec![row; shape.rows].join(", "));
        (shape.width > 0 && text == canonical).then_some(shape)
    }
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
        /// Whether `source` reads a table (a `SELECT … FROM`, a subquery,
        /// a table function): it then needs the view to hold every row
        /// written before it. `VALUES` of literals and parameters does not.
        reads_tables: bool,
        /// Set when `source` is `VALUES` of bare `?` placeholders only: its
        /// rows are then the parameters themselves, taken in order.
        param_rows: Option<ParamRows>,
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
    /// Whether evaluating it reads tables of the view (an `UPDATE` or
    /// `DELETE` always reads its own).
    pub fn reads_tables(&self) -> bool {
        match self {
            Statement::Insert { reads_tables, .. } => *reads_tables,
            Statement::Select { .. } | Statement::Update { .. } | Statement::Delete { .. } => true,
        }
    }

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
    check(sql, tables, namespace).map(|checked| checked.statement)
}

/// [`parse`], with the tables the statement names.
pub(crate) fn check(
    sql: &str,
    tables: &BTreeSet<Name>,
    namespace: Option<&Name>,
) -> Result<Checked, SqlError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(SqlError::TooLong(sql.len()));
    }
    let mut statements =
        Parser::parse_sql(&SQLiteDialect {}, sql).map_err(|e| SqlError::Syntax(e.to_string()))?;
    if statements.len() != 1 {
        return Err(SqlError::StatementCount(statements.len()));
    }
    let mut statement = statements.remove(0);
    if !matches!(
        statement,
        ast::Statement::Query(_)
            | ast::Statement::Insert(_)
            | ast::Statement::Update(_)
            | ast::Statement::Delete(_)
    ) {
        return Err(refuse(&statement));
    }
    let mut resolver =
        Resolver { tables, namespace, ctes: Vec::new(), used: BTreeSet::new(), error: None };
    let _ = statement.visit(&mut resolver);
    if let Some(error) = resolver.error {
        return Err(error);
    }
    let tables = resolver.used;
    let statement = match statement {
        ast::Statement::Query(query) => {
            let sql = query.to_string();
            reparses_to_query(&sql, &query)?;
            Statement::Select { sql, tables: tables.clone() }
        }
        ast::Statement::Insert(insert) => insert_statement(insert)?,
        ast::Statement::Update(update) => update_statement(update)?,
        ast::Statement::Delete(delete) => delete_statement(delete)?,
        other => return Err(refuse(&other)),
    };
    Ok(Checked { statement, tables })
}

/// Fails unless `text` parses back to exactly `query`.
///
/// Spans take no part in sqlparser's equality (`Ident`, `ValueWithSpan`
/// and `AttachedToken` compare without them), so this compares trees.
fn reparses_to_query(text: &str, query: &ast::Query) -> Result<(), SqlError> {
    match Parser::parse_sql(&SQLiteDialect {}, text).as_deref() {
        Ok([ast::Statement::Query(again)]) if **again == *query => Ok(()),
        _ => Err(SqlError::Reprinted),
    }
}

/// Fails unless `text` parses back to exactly `expr`, with nothing left.
fn reparses_to_expr(text: &str, expr: &Expr) -> Result<(), SqlError> {
    let dialect = SQLiteDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|_| SqlError::Reprinted)?;
    match parser.parse_expr() {
        Ok(again) if again == *expr && parser.peek_token().token == Token::EOF => Ok(()),
        _ => Err(SqlError::Reprinted),
    }
}

/// `expr` printed, once it is known to parse back to itself.
fn printed(expr: &Expr) -> Result<String, SqlError> {
    let text = expr.to_string();
    reparses_to_expr(&text, expr)?;
    Ok(text)
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
    let text = source.to_string();
    reparses_to_query(&text, &source)?;
    let reads_tables = ast::visit_relations(&source, |_| ControlFlow::Break(())).is_break();
    let param_rows = ParamRows::of(&source, &text);
    Ok(Statement::Insert { table, columns, source: text, on_conflict, reads_tables, param_rows })
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
                Ok((last_part(column)?, printed(&assignment.value)?))
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
        filter: update.selection.as_ref().map(printed).transpose()?,
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
    Ok(Statement::Delete {
        table,
        alias,
        filter: delete.selection.as_ref().map(printed).transpose()?,
    })
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
pub(crate) fn local_name(table: &Name) -> String {
    table.as_str().rsplit('.').next().unwrap_or(table.as_str()).to_owned()
}

/// Rewrites table references to the view's names, recording them.
struct Resolver<'a> {
    tables: &'a BTreeSet<Name>,
    namespace: Option<&'a Name>,
    /// The `WITH` names in scope: one set per enclosing query.
    ctes: Vec<BTreeSet<String>>,
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
            [single] if self.in_scope(single) => return Ok(None),
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

    /// Whether `name` (lowercase) is a `WITH` name in scope.
    fn in_scope(&self, name: &str) -> bool {
        self.ctes.iter().any(|scope| scope.contains(name))
    }

    /// Refuses a `WITH` name that could be taken for a table: with a '.',
    /// a schema table's name (qualified or not), or a name SQLite or the
    /// view keeps for itself.
    fn check_cte_name(&self, name: &str) -> Result<(), SqlError> {
        let reserved = name.contains('.')
            || name.starts_with("sqlite_")
            || name.starts_with("pragma_")
            || name.starts_with('_')
            || TABLE_FUNCTIONS.contains(&name)
            || self.tables.iter().any(|t| t.as_str() == name || local_name(t) == name);
        if reserved { Err(SqlError::CteName(name.to_owned())) } else { Ok(()) }
    }
}

/// Refuses a query body SQLite would run as something other than a read
/// (`WITH … INSERT`), or that names a table out of the resolver's sight
/// (`TABLE t`).
fn check_body(body: &SetExpr) -> Result<(), SqlError> {
    match body {
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_body(left)?;
            check_body(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            Err(unsupported(
                "WITH before INSERT, UPDATE or DELETE",
                "put the WITH inside the statement's SELECT",
            ))
        }
        other => Err(unsupported(
            other.to_string().split_whitespace().next().unwrap_or("this query").to_owned(),
            "read schema tables with SELECT … FROM",
        )),
    }
}

fn view_name(table: &Name) -> ObjectName {
    ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote('"', table.as_str()))])
}

impl VisitorMut for Resolver<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        if let Err(error) = check_body(&query.body) {
            return self.fail(error);
        }
        let mut names = BTreeSet::new();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.to_lowercase();
                if let Err(error) = self.check_cte_name(&name) {
                    return self.fail(error);
                }
                names.insert(name);
            }
        }
        self.ctes.push(names);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &mut ast::Query) -> ControlFlow<()> {
        self.ctes.pop();
        ControlFlow::Continue(())
    }

    /// Every table name, wherever it stands, once rewritten: a schema
    /// table's view name, a `WITH` name in scope or a JSON table function.
    /// Anything else is a table the resolver did not see.
    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        let known = match relation.0.as_slice() {
            [ObjectNamePart::Identifier(ident)] => {
                let name = ident.value.to_lowercase();
                self.tables.iter().any(|t| t.as_str() == name)
                    || self.in_scope(&name)
                    || TABLE_FUNCTIONS.contains(&name.as_str())
            }
            _ => false,
        };
        if known {
            ControlFlow::Continue(())
        } else {
            self.fail(SqlError::UnknownTable(relation.to_string()))
        }
    }

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
        if let Expr::In { target: InTarget::Table { .. } | InTarget::Unnest(_), .. } = expr {
            return self.fail(unsupported("x IN table", "use x IN (SELECT column FROM table)"));
        }
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
    fn an_insert_reads_tables_only_if_its_source_names_one() {
        let reads = |sql: &str| parse(sql, &tables(), Some(&todo())).unwrap().reads_tables();
        assert!(!reads("INSERT INTO items (id, title) VALUES (?1, ?2), ('b', upper(?3))"));
        assert!(!reads("INSERT INTO items (id, title) SELECT 'a', 'b' || 'c'"));
        for sql in [
            "INSERT INTO items (id, title) VALUES ('a', (SELECT name FROM lists LIMIT 1))",
            "INSERT INTO items (id, title) VALUES ('a', EXISTS (SELECT 1 FROM items))",
            "INSERT INTO items SELECT * FROM items",
            "INSERT INTO items (id, title) SELECT key, value FROM json_each(?1)",
            "INSERT INTO items (id, title) SELECT 'a', t FROM (SELECT title AS t FROM items)",
            "INSERT INTO items (id, title) VALUES ('a', 'b') ON CONFLICT DO NOTHING",
        ] {
            let expected = !sql.contains("VALUES ('a', 'b')");
            assert_eq!(reads(sql), expected, "{sql}");
        }
        assert!(reads("UPDATE items SET title = 'x'") && reads("DELETE FROM items"));
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
                reads_tables: false,
                param_rows: None,
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

    /// Only a `VALUES` of bare `?` and nothing else is taken as the
    /// parameters themselves; anything SQLite would compute, reorder, cut
    /// or refuse is left to SQLite.
    #[test]
    fn an_insert_of_bare_placeholders_is_known_by_its_shape() {
        let shape = |sql: &str| match parse(sql, &tables(), Some(&todo())).unwrap() {
            Statement::Insert { param_rows, .. } => param_rows,
            other => panic!("{other:?}"),
        };
        let grid = |rows, width| Some(ParamRows { rows, width });
        assert_eq!(shape("INSERT INTO items (id, title) VALUES (?, ?)"), grid(1, 2));
        assert_eq!(shape("insert into items values (?)"), grid(1, 1));
        assert_eq!(shape("INSERT OR REPLACE INTO items VALUES (?,?),( ? , ? ),(?, ?)"), grid(3, 2));
        for computed in [
            "INSERT INTO items VALUES (?, 1)",
            "INSERT INTO items VALUES (?1, ?2)",
            "INSERT INTO items VALUES (?, ?2)",
            "INSERT INTO items VALUES (:id, :title)",
            "INSERT INTO items VALUES ($id)",
            "INSERT INTO items VALUES ((?))",
            "INSERT INTO items VALUES (-?)",
            "INSERT INTO items VALUES (?, ?), (?)",
            "INSERT INTO items VALUES (?) LIMIT 0",
            "INSERT INTO items VALUES (?) ORDER BY 1",
            "INSERT INTO items SELECT ?, ?",
            "INSERT INTO items SELECT id, title FROM lists",
        ] {
            assert_eq!(shape(computed), None, "{computed}");
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

    #[test]
    fn a_with_name_cannot_hide_a_table() {
        // The attack of issue 10: the CTE in the subquery made every
        // `"contacts.people"` of the statement look like it.
        for sql in [
            r#"SELECT * FROM "contacts.people" WHERE EXISTS (WITH "contacts.people" AS (SELECT 1) SELECT 1 FROM "contacts.people")"#,
            r#"WITH "contacts.people" AS (SELECT 1) SELECT 1"#,
            "WITH people AS (SELECT 1) SELECT * FROM people",
            "WITH LISTS AS (SELECT 1) SELECT 1",
            "WITH sqlite_master AS (SELECT 1) SELECT 1",
            "WITH pragma_table_list AS (SELECT 1) SELECT 1",
            "WITH _basic_meta AS (SELECT 1) SELECT 1",
            "WITH json_each AS (SELECT 1) SELECT 1",
        ] {
            let parsed = parse(sql, &tables(), Some(&todo()));
            assert!(matches!(parsed, Err(SqlError::CteName(_))), "{sql}: {parsed:?}");
        }
        // A WITH name is seen only where it is in scope.
        for sql in [
            "SELECT * FROM x WHERE EXISTS (WITH x AS (SELECT 1) SELECT 1 FROM x)",
            "SELECT (SELECT 1 FROM x) WHERE EXISTS (WITH x AS (SELECT 1) SELECT 1)",
            "SELECT * FROM (WITH x AS (SELECT 1) SELECT 1), x",
        ] {
            assert_eq!(
                parse(sql, &tables(), Some(&todo())),
                Err(SqlError::UnknownTable("x".into())),
                "{sql}"
            );
        }
        let (sql, used) = select(
            "WITH a AS (SELECT id FROM items), b AS (SELECT id FROM a) \
             SELECT * FROM b WHERE EXISTS (WITH c AS (SELECT 1 FROM a) SELECT 1 FROM c)",
        );
        assert_eq!(used, ["todo.items"], "{sql}");
        let (_, used) = select(
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x FROM r",
        );
        assert!(used.is_empty());
    }

    #[test]
    fn the_printed_statement_must_parse_back_to_what_was_checked() {
        // sqlparser prints `'\'''` (the text `\'`) without doubling the
        // quote, so SQLite would read the rest of the string as SQL.
        for sql in [
            r#"SELECT id FROM todo.lists WHERE name = '\''' || ' UNION SELECT name FROM "contacts.people" --'"#,
            r#"INSERT INTO todo.lists (id, name) SELECT id, name FROM todo.lists WHERE name = '\''' || ' UNION SELECT name, sql FROM sqlite_master --'"#,
            r#"UPDATE todo.lists SET name = '\''' || ' , id = 1 --'"#,
            r#"DELETE FROM todo.lists WHERE name = '\''' || ' OR 1 --'"#,
            // Two quotes inside a value are printed as one.
            "SELECT 'a'''''",
            r#"SELECT 1 AS "a\""" "#,
        ] {
            assert_eq!(parse(sql, &tables(), Some(&todo())), Err(SqlError::Reprinted), "{sql}");
        }
        // What prints faithfully passes, backslashes and quotes included.
        let (sql, _) = select(r"SELECT 'it''s', 'C:\', '\n' FROM lists");
        assert_eq!(sql, r#"SELECT 'it''s', 'C:\', '\n' FROM "todo.lists" AS lists"#);
        // Spans take no part in the comparison.
        let spaced = Parser::parse_sql(&SQLiteDialect {}, "SELECT   1 ,\n 'a'").unwrap();
        let tight = Parser::parse_sql(&SQLiteDialect {}, "SELECT 1, 'a'").unwrap();
        assert_eq!(spaced, tight);
    }

    #[test]
    fn tables_out_of_the_resolvers_sight_are_refused() {
        for (sql, named) in [
            (r#"SELECT 1 WHERE 'x' IN "contacts.people""#, "x IN table"),
            ("SELECT 1 WHERE 'x' IN contacts.people", "x IN table"),
            ("SELECT 1 WHERE 'x' NOT IN json_each('[1]')", "x IN table"),
            ("WITH a AS (SELECT 1) INSERT INTO items (id) SELECT 1 FROM a", "WITH before INSERT"),
            ("WITH a AS (SELECT 1) DELETE FROM items", "WITH before INSERT"),
            ("SELECT 1 UNION TABLE items", "TABLE"),
        ] {
            match parse(sql, &tables(), Some(&todo())) {
                Err(SqlError::Unsupported { what, .. }) => {
                    assert!(what.starts_with(named), "{sql}: {what}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_caller_is_held_to_its_scopes() {
        let app =
            Caller::App { readable: [todo()].into_iter().collect(), writable: BTreeSet::new() };
        let check = |sql: &str| check(sql, &tables(), Some(&todo())).unwrap().authorize(&app);
        assert_eq!(check("SELECT * FROM items"), Ok(()));
        assert_eq!(
            check("SELECT * FROM items WHERE id IN (SELECT id FROM contacts.people)"),
            Err(SqlError::Denied { action: "read", table: Name::new("contacts.people").unwrap() })
        );
        assert_eq!(
            check("INSERT INTO items (id) VALUES ('a')"),
            Err(SqlError::Denied { action: "write", table: Name::new("todo.items").unwrap() })
        );
        let checked = super::check("SELECT 1", &tables(), None).unwrap();
        assert_eq!(checked.authorize(&Caller::Owner), Ok(()));
    }
}
