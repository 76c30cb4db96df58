//! `first-sync`: a new device's first sync between two real `basic up`
//! processes over libp2p on loopback. Device A holds 1M rows of the bench
//! schema's `bench.items` (a 20-byte text, an integer and a bool, written
//! with `basic import`); device B joins with an invite and starts its node.
//! Measures the time from B's start until every row is queryable on B, and
//! the peak resident memory (`VmHWM`) of each node's process: B pulling, A
//! serving.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::fixture;
use crate::live::{Data, Error, Node, wait_for};
use crate::report::{Reporter, memory_kib, per_second};

const COUNT: &str = "SELECT count(*) FROM bench.items";

/// Longest the import into A may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest B may take to hold every row.
const SYNC_TIMEOUT: Duration = Duration::from_secs(900);

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let rows: u64 = if quick { 10_000 } else { 1_000_000 };
    let a_data = Data::new()?;
    a_data.basic(&["init"])?;
    let schema = a_data.path().join("bench.toml");
    std::fs::write(&schema, fixture::SCHEMA)?;
    a_data.basic(&["schema", "apply", &schema.display().to_string()])?;
    reporter.note(&format!("first-sync: importing {rows} rows into device A"));
    let file = a_data.path().join("rows.jsonl");
    write_import(&a_data.basic(&["export"])?, rows, &file)?;
    a_data.basic_within(&["import", &file.display().to_string()], IMPORT_TIMEOUT)?;
    std::fs::remove_file(&file)?;

    let a = a_data.up(&[])?;
    let invite = a.post("/v0/devices/invite", &json!({ "valid_minutes": 5 }))?;
    let code = invite["invite"].as_str().ok_or_else(|| format!("no invite in {invite}"))?;
    let b_data = Data::new()?;
    b_data.basic(&["init", "--join", code])?;
    let a_address = a.listen.first().ok_or("node A has no sync address")?.clone();
    reporter.note(&format!("first-sync: device B joins and pulls {rows} rows"));
    let start = Instant::now();
    let b = b_data.up(&[&a_address])?;
    let measured = (|| {
        wait_for("B holds every row", SYNC_TIMEOUT, || {
            std::thread::sleep(Duration::from_millis(100));
            Ok(count(&b) >= rows)
        })?;
        let seconds = start.elapsed().as_secs_f64();
        Ok::<_, Error>((seconds, status_mib(&b, "VmHWM")?, status_mib(&a, "VmHWM")?))
    })();
    let (seconds, b_peak, a_peak) = measured.map_err(|error| -> Error {
        format!("{error}\n{}{}", a.log_tail(), b.log_tail()).into()
    })?;
    reporter.result(
        "first-sync",
        &[
            ("rows", rows.into()),
            ("seconds", Json::from((seconds * 10.0).round() / 10.0)),
            ("rows_per_s", per_second(rows as f64, seconds)),
            ("new_device_peak_rss_mib", b_peak),
            ("serving_device_peak_rss_mib", a_peak),
        ],
    );
    Ok(())
}

/// Writes to `path` an import file: the header line of `export` (A's
/// database and schemas), then `rows` rows.
fn write_import(export: &str, rows: u64, path: &Path) -> Result<(), Error> {
    let header = export.lines().next().ok_or("`basic export` printed nothing")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{header}")?;
    for id in 0..rows {
        let row = json!({ "id": id, "title": format!("{id:020}"), "done": id % 3 == 0 });
        writeln!(out, "{}", json!({ "table": "bench.items", "row": row }))?;
    }
    out.flush()?;
    Ok(())
}

/// The rows B's API counts; 0 while it cannot tell (the schema has not
/// arrived yet).
fn count(node: &Node) -> u64 {
    node.sql(COUNT, json!([])).ok().and_then(|answer| answer["rows"][0][0].as_u64()).unwrap_or(0)
}

/// A memory figure of the node's process, in MiB.
fn status_mib(node: &Node, field: &str) -> Result<Json, Error> {
    let kib = memory_kib(&node.pid().to_string(), field)?;
    Ok(Json::from((kib as f64 / 1024.0).round()))
}
