//! Every byte between two real nodes: `basic up` A holds rows, B joins and
//! pulls them over libp2p (TCP, noise, yamux) on loopback; the TCP payload
//! bytes of every connection between them, both directions, are read from
//! the kernel (`ss -ti`: `bytes_acked`, `bytes_received`), so they include
//! the libp2p handshakes, identify, pings and the framing.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{AutomergeBytes, Error};
use crate::live::{self, Data};
use crate::report::{Comparison, Reporter, rounded};

const SCHEMA: &str = r#"
namespace = "wire"

[tables.rows]
primary_key = ["id"]
[tables.rows.columns]
id = "integer"
title = "text"
n = "integer"
done = "bool"
"#;
const COUNT: &str = "SELECT count(*) FROM wire.rows";

/// What crossed the loopback between A and B.
#[derive(Debug, Default, Clone, Copy)]
struct Tcp {
    /// Payload bytes A sent (acknowledged by B).
    a_to_b: u64,
    /// Payload bytes A received from B.
    b_to_a: u64,
    /// TCP segments both ways.
    segments: u64,
    /// Connections between them.
    connections: u64,
}

pub(crate) fn run(
    reporter: &Reporter,
    quick: bool,
    automerge: &AutomergeBytes,
) -> Result<(), Error> {
    if Command::new("ss").arg("-V").output().is_err() {
        reporter.note(
            "compare: `ss` (iproute2) is missing: the TCP bytes between two nodes are not measured",
        );
        return Ok(());
    }
    let (rows, single) = if quick { (5_000, 100) } else { (100_000, 5_000) };
    for (rows, per_commit, anchor) in
        [(rows, 1_000, automerge.per_row_1000), (single, 1, automerge.per_row_single)]
    {
        reporter.note(&format!(
            "compare: two real nodes, {rows} rows in commits of {per_commit}: filling A"
        ));
        let (tcp, seconds, commits) = two_nodes(rows, per_commit).map_err(|e| e.to_string())?;
        let bytes = (tcp.a_to_b + tcp.b_to_a) as f64;
        let shape = if per_commit == 1 {
            format!("{rows} single-row commits")
        } else {
            format!("{rows} rows, {per_commit} per commit")
        };
        reporter.compare(Comparison {
            figure: &format!(
                "wire bytes per row on first sync between two real nodes (TCP payload, both directions), {shape}"
            ),
            unit: "bytes/row",
            basic: bytes / rows as f64,
            anchor_name: "automerge-rs 0.12 sync messages (no transport)",
            anchor,
            extra: vec![
                ("a_to_b_bytes", tcp.a_to_b.into()),
                ("b_to_a_bytes", tcp.b_to_a.into()),
                ("tcp_segments", tcp.segments.into()),
                (
                    "with_ip_tcp_headers_bytes_per_row",
                    rounded((bytes + 52.0 * tcp.segments as f64) / rows as f64),
                ),
                ("connections", tcp.connections.into()),
                ("commits", commits.into()),
                ("rows_per_s_from_b_start", rounded(rows as f64 / seconds)),
            ],
        });
    }
    Ok(())
}

/// A with `rows` rows written through its API in statements of
/// `per_commit` rows; B joined, started and waited for until it holds them
/// all. Returns the TCP bytes between them, the seconds from starting B
/// until it held every row, and A's commits.
fn two_nodes(rows: u64, per_commit: u64) -> Result<(Tcp, f64, u64), live::Error> {
    let a_data = Data::new()?;
    a_data.basic(&["init"])?;
    let schema = a_data.path().join("wire.toml");
    std::fs::write(&schema, SCHEMA)?;
    a_data.basic(&["schema", "apply", &schema.display().to_string()])?;
    let a = a_data.up(&[])?;
    let mut commits = 0;
    for first in (0..rows).step_by(per_commit as usize) {
        let values: Vec<String> = (first..(first + per_commit).min(rows))
            .map(|i| format!("({i}, 'value-{i:014}', {i}, true)"))
            .collect();
        let answer = a.sql(
            &format!("INSERT INTO wire.rows (id, title, n, done) VALUES {}", values.join(", ")),
            json!([]),
        )?;
        commits += answer["commits"].as_array().map_or(0, Vec::len) as u64;
    }

    let invite = a.post("/v0/devices/invite", &json!({ "valid_minutes": 5 }))?;
    let code = invite["invite"].as_str().ok_or_else(|| format!("no invite in {invite}"))?;
    let b_data = Data::new()?;
    b_data.basic(&["init", "--join", code])?;
    let a_address = a.listen.first().ok_or("node A has no sync address")?.clone();
    let start = Instant::now();
    let b = b_data.up(&[&a_address])?;
    let held = |b: &live::Node| -> u64 {
        b.sql(COUNT, json!([])).ok().and_then(|r| r["rows"][0][0].as_u64()).unwrap_or(0)
    };
    let timeout = live::WAIT + Duration::from_secs(rows / 2_000);
    live::wait_for(&format!("B holds {rows} rows"), timeout, || Ok(held(&b) >= rows))
        .map_err(|e| format!("{e}\n{}{}", a.log_tail(), b.log_tail()))?;
    let seconds = start.elapsed().as_secs_f64();
    let (a_port, b_port) = (port(&a_address)?, port(b.listen.first().ok_or("B has no address")?)?);
    Ok((tcp_between(a_port, b_port)?, seconds, commits))
}

/// The TCP port of a multiaddress `/ip4/…/tcp/<port>/…`.
fn port(address: &str) -> Result<u16, live::Error> {
    let mut parts = address.split('/');
    while let Some(part) = parts.next() {
        if part == "tcp" {
            return Ok(parts.next().ok_or("no port")?.parse()?);
        }
    }
    Err(format!("no TCP port in {address}").into())
}

/// A's side of every established connection between A (listening on
/// `a_port`) and B (listening on `b_port`): the sockets whose local port is
/// A's (B dialled A) or whose remote port is B's (A dialled B).
fn tcp_between(a_port: u16, b_port: u16) -> Result<Tcp, live::Error> {
    let filter = format!("( sport = :{a_port} or dport = :{b_port} )");
    let output = Command::new("ss").args(["-tinH", "state", "established", &filter]).output()?;
    if !output.status.success() {
        return Err(format!("ss failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let mut tcp = Tcp::default();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name).and_then(|v| v.parse().ok()))
                .unwrap_or(0)
        };
        if line.contains("segs_out:") {
            tcp.connections += 1;
            tcp.a_to_b += field("bytes_acked:");
            tcp.b_to_a += field("bytes_received:");
            tcp.segments += field("segs_out:") + field("segs_in:");
        }
    }
    if tcp.connections == 0 {
        return Err("no connection between the two nodes".into());
    }
    Ok(tcp)
}
