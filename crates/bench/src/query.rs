//! `query`: point lookups by primary key, indexed range scans and a
//! two-table join over 100k rows, through the full SQL path.

use std::time::{Duration, Instant};

use basic_proto::Value;
use rand::RngExt;

use crate::fixture;
use crate::report::{Reporter, per_second};

type Error = Box<dyn std::error::Error>;

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let (rows, duration) =
        if quick { (5_000, Duration::from_millis(300)) } else { (100_000, Duration::from_secs(3)) };
    let bench = fixture::open()?;
    let db = &bench.db;
    reporter.note(&format!("query: loading {rows} items and 1000 lists"));
    let lists: Vec<String> = (0..1000).map(|i| format!("({i}, 'list {i}')")).collect();
    db.execute(
        &format!("INSERT INTO bench.lists (id, name) VALUES {}", lists.join(", ")),
        &[],
        None,
    )?;
    for first in (0..rows).step_by(1000) {
        let values: Vec<String> = (first..first + 1000)
            .map(|i| format!("({i}, {}, '{:0>20}', {}, {i})", i % 1000, i * 31, i % 2))
            .collect();
        db.execute(
            &format!(
                "INSERT INTO bench.items (id, list_id, title, done, n) VALUES {}",
                values.join(", ")
            ),
            &[],
            None,
        )?;
    }
    let mut rng = rand::rng();
    let mut measure = |name: &str, sql: &str, expect: usize| -> Result<(), Error> {
        let start = Instant::now();
        let mut ops = 0u64;
        while start.elapsed() < duration {
            let at = rng.random_range(0..rows - 100);
            let params: Vec<Value> = match sql.matches('?').count() {
                1 => vec![Value::Integer(at)],
                _ => vec![Value::Integer(at), Value::Integer(at + 99)],
            };
            let result = db.query(sql, &params, None)?;
            if result.rows.len() != expect {
                return Err(format!("{name}: {} rows, expected {expect}", result.rows.len()).into());
            }
            ops += 1;
        }
        reporter.result(
            "query",
            &[
                ("query", name.into()),
                ("rows", rows.into()),
                ("ops_per_s", per_second(ops as f64, start.elapsed().as_secs_f64())),
            ],
        );
        Ok(())
    };
    measure("point_lookup", "SELECT * FROM bench.items WHERE id = ?", 1)?;
    measure("range_scan", "SELECT * FROM bench.items WHERE n BETWEEN ? AND ?", 100)?;
    measure(
        "join",
        "SELECT items.title, lists.name FROM bench.items JOIN bench.lists ON items.list_id = lists.id WHERE items.n BETWEEN ? AND ?",
        100,
    )?;
    Ok(())
}
