//! `live`: two `basic up` processes on loopback (TCP, no mDNS), the second
//! joined to the first with an invite. Measures how long a write through
//! node A's API takes to show in a live query (Server-Sent Events) on
//! node B's API, one write at a time, then the sustained rate of writes
//! from concurrent clients on A and how fast B keeps up.
//!
//! The nodes are this very executable started with [`NODE_ENV`] set, which
//! makes it run `basic::main()`: the `basic` command, built from the same
//! source (Cargo builds no binary of another package for `cargo run`).
//! Children are killed and temporary directories removed on every exit
//! path (guards).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::report::{Reporter, millis, per_second};

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// Set in a child's environment: the process runs `basic::main()`.
pub(crate) const NODE_ENV: &str = "BASIC_BENCH_NODE";
/// `RUST_LOG` for the nodes, if set (default `info`, as users run them).
const NODE_LOG_ENV: &str = "BASIC_BENCH_NODE_LOG";

/// Longest one command (`init`, `schema apply`…) may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node may take to start, or B to catch up with A.
pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// Longest one write may take to show on B before the bench gives up.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent clients writing in the sustained phase.
const CLIENTS: u64 = 4;

/// The table written on A and watched on B.
const SCHEMA: &str = r#"
namespace = "live"

[tables.events]
primary_key = ["id"]
[tables.events.columns]
id = "integer"
body = "text"
"#;
const INSERT: &str = "INSERT INTO live.events (id, body) VALUES (?, ?)";
const COUNT: &str = "SELECT count(*) FROM live.events";

pub(crate) fn run(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let (writes, warmup, sustain) =
        if quick { (30, 2, Duration::from_secs(1)) } else { (200, 5, Duration::from_secs(5)) };
    reporter.note("live: starting two nodes on loopback");
    let pair = Pair::start()?;
    measure(reporter, &pair, writes, warmup, sustain).map_err(|error| -> Error {
        format!("{error}\n{}{}", pair.a.log_tail(), pair.b.log_tail()).into()
    })
}

/// Two nodes: A, and B joined to it and dialling it.
struct Pair {
    // Field order: nodes (processes) go before their directories.
    a: Node,
    b: Node,
    _a_data: Data,
    _b_data: Data,
}

impl Pair {
    fn start() -> Result<Self, Error> {
        let a_data = Data::new()?;
        a_data.basic(&["init"])?;
        let schema = a_data.path().join("live.toml");
        std::fs::write(&schema, SCHEMA)?;
        a_data.basic(&["schema", "apply", &schema.display().to_string()])?;
        let a = a_data.up(&[])?;

        let invite = a.post("/v0/devices/invite", &json!({ "valid_minutes": 5 }))?;
        let code = invite["invite"].as_str().ok_or_else(|| format!("no invite in {invite}"))?;
        let b_data = Data::new()?;
        b_data.basic(&["init", "--join", code])?;
        let a_address = a.listen.first().ok_or("node A has no sync address")?.clone();
        let b = b_data.up(&[&a_address])?;
        Ok(Self { a, b, _a_data: a_data, _b_data: b_data })
    }
}

fn measure(
    reporter: &Reporter,
    pair: &Pair,
    writes: u64,
    warmup: u64,
    sustain: Duration,
) -> Result<(), Error> {
    let (a, b) = (&pair.a, &pair.b);
    // B has the schema once the query works there.
    wait_for("the schema reaches B", WAIT, || Ok(b.sql(COUNT, json!([])).is_ok()))?;
    let mut counts = b.live(COUNT)?;
    counts.wait_for(0, WAIT)?;

    // (a) One write at a time: from just before A's request until B's live
    // query shows it.
    reporter.note(&format!("live: {warmup} warm-up writes, then {writes} timed writes"));
    let body = "x".repeat(100);
    let mut visible = Vec::new();
    let mut written = Vec::new();
    for id in 0..warmup + writes {
        let start = Instant::now();
        a.sql(INSERT, json!([id, body]))?;
        let acknowledged = start.elapsed();
        let seen = counts.wait_for(id + 1, VISIBLE_TIMEOUT)?;
        if id >= warmup {
            visible.push(seen.duration_since(start));
            written.push(acknowledged);
        }
    }
    let (visible, written) = (Percentiles::of(visible), Percentiles::of(written));
    reporter.result(
        "live",
        &[
            ("phase", "write on A, visible on B".into()),
            ("writes", writes.into()),
            ("p50_ms", millis(visible.p50)),
            ("p99_ms", millis(visible.p99)),
            ("max_ms", millis(visible.max)),
            ("api_write_p50_ms", millis(written.p50)),
            ("api_write_p99_ms", millis(written.p99)),
        ],
    );

    // (b) Concurrent clients writing on A for `sustain`; then until B
    // holds every row.
    reporter.note(&format!("live: {CLIENTS} clients writing for {sustain:?}"));
    let before = warmup + writes;
    let start = Instant::now();
    let deadline = start + sustain;
    let failed = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let api = a.clone_api();
            let body = body.clone();
            let failed = Arc::clone(&failed);
            std::thread::spawn(move || -> Result<u64, Error> {
                let mut done = 0;
                while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                    let id = 1_000_000 * (client + 1) + done;
                    if let Err(error) = api.sql(INSERT, json!([id, body])) {
                        failed.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for client in clients {
        total += client.join().map_err(|_| "a writing client panicked")??;
    }
    let wrote = start.elapsed();
    let caught_up = counts.wait_for(before + total, WAIT)?.duration_since(start);
    reporter.result(
        "live",
        &[
            ("phase", "sustained".into()),
            ("clients", CLIENTS.into()),
            ("commits", total.into()),
            ("written_per_s", per_second(total as f64, wrote.as_secs_f64())),
            ("replicated_per_s", per_second(total as f64, caught_up.as_secs_f64())),
            ("lag_after_last_ms", millis(caught_up.saturating_sub(wrote))),
        ],
    );
    Ok(())
}

/// The live query of the fixed-rate mode: a real `SELECT` of rows (not a
/// count), whose first cell is the newest id.
const NEWEST: &str = "SELECT id, body FROM live.events WHERE body <> '' ORDER BY id DESC LIMIT 10";

/// Live latency under a fixed write rate: one client writes on A on a fixed
/// schedule (`rate` per second; a late write is not made up by the next
/// ones, and its latency counts from its scheduled time), B runs a live
/// `SELECT` of the newest rows; each write's latency is from its scheduled
/// time until B's live query first shows its id. `samples` writes are
/// measured after `warmup` ones.
pub(crate) fn fixed_rate(reporter: &Reporter, quick: bool) -> Result<(), Error> {
    let (rate, samples, warmup) = if quick { (100.0, 200, 20) } else { (200.0, 10_000, 200) };
    reporter.note(&format!(
        "live: starting two nodes; {samples} writes at {rate}/s, seen through a live SELECT"
    ));
    let pair = Pair::start()?;
    measure_fixed_rate(reporter, &pair, rate, samples, warmup).map_err(|error| -> Error {
        format!("{error}\n{}{}", pair.a.log_tail(), pair.b.log_tail()).into()
    })
}

fn measure_fixed_rate(
    reporter: &Reporter,
    pair: &Pair,
    rate: f64,
    samples: u64,
    warmup: u64,
) -> Result<(), Error> {
    let (a, b) = (&pair.a, &pair.b);
    wait_for("the schema reaches B", WAIT, || Ok(b.sql(COUNT, json!([])).is_ok()))?;
    let mut newest = b.live(NEWEST)?;
    newest.wait_for(0, WAIT)?;
    let body = "x".repeat(100);
    let total = warmup + samples;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut scheduled = Vec::new();
    let mut acknowledged = Vec::new();
    let mut late = Duration::ZERO;
    for k in 0..total {
        let at = start + interval.mul_f64(k as f64);
        let now = Instant::now();
        match at.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            None => late = late.max(now - at),
        }
        let sent = Instant::now();
        a.sql(INSERT, json!([k + 1, body]))?;
        if k >= warmup {
            acknowledged.push(sent.elapsed());
        }
        scheduled.push(at);
    }
    let acknowledged = Percentiles::of(acknowledged);
    let seen = newest.collect_until(total, WAIT)?;
    // Write k (id k + 1) is visible at the first report of an id >= k + 1.
    let mut latencies = Vec::new();
    let mut event = 0;
    for (k, at) in scheduled.iter().enumerate() {
        let id = k as u64 + 1;
        while seen.get(event).is_some_and(|(value, _)| *value < id) {
            event += 1;
        }
        let (_, shown) = seen.get(event).ok_or("B never showed a write")?;
        if k as u64 >= warmup {
            latencies.push(shown.saturating_duration_since(*at));
        }
    }
    latencies.sort();
    let rank = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies.get(index).copied().unwrap_or_default()
    };
    reporter.result(
        "live",
        &[
            ("phase", "fixed write rate on A, visible on B through a live SELECT".into()),
            ("rate_per_s", rate.into()),
            ("samples", latencies.len().into()),
            ("select", NEWEST.into()),
            ("p50_ms", millis(rank(0.50))),
            ("p90_ms", millis(rank(0.90))),
            ("p99_ms", millis(rank(0.99))),
            ("p999_ms", millis(rank(0.999))),
            ("max_ms", millis(latencies.last().copied().unwrap_or_default())),
            ("writer_late_max_ms", millis(late)),
            ("api_write_p50_ms", millis(acknowledged.p50)),
            ("api_write_p99_ms", millis(acknowledged.p99)),
        ],
    );
    Ok(())
}

/// p50, p99 and max of a sample, by nearest rank.
struct Percentiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of(mut sample: Vec<Duration>) -> Self {
        sample.sort();
        let rank = |p: usize| {
            let index = (sample.len() * p).div_ceil(100).saturating_sub(1);
            sample.get(index).copied().unwrap_or_default()
        };
        Self { p50: rank(50), p99: rank(99), max: sample.last().copied().unwrap_or_default() }
    }
}

/// Polls `check` every 10 ms until it holds, for at most `timeout`.
pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    while !check()? {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?}: {what}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A child process, killed when dropped.
struct Guard(Child);

impl Guard {
    /// Waits for the process to end, at most `timeout`.
    fn wait_for(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(None)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A data directory of its own, removed when dropped.
pub(crate) struct Data {
    dir: tempfile::TempDir,
}

impl Data {
    pub(crate) fn new() -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        // The node refuses a data directory others may read.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Result<Command, Error> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(NODE_ENV, "1")
            .arg("--data")
            .arg(self.path())
            .args(args)
            .env_remove("BASIC_DATA")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        Ok(command)
    }

    /// Runs `basic --data DIR ARGS…` to the end; fails unless it succeeds.
    pub(crate) fn basic(&self, args: &[&str]) -> Result<String, Error> {
        self.basic_within(args, COMMAND_TIMEOUT)
    }

    /// [`Data::basic`] for a command that may take up to `timeout`.
    pub(crate) fn basic_within(&self, args: &[&str], timeout: Duration) -> Result<String, Error> {
        let mut child =
            Guard(self.command(args)?.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?);
        // Read while waiting: a full pipe would block the child.
        let out = drain(child.0.stdout.take().ok_or("no stdout")?);
        let error = drain(child.0.stderr.take().ok_or("no stderr")?);
        let status = child
            .wait_for(timeout)?
            .ok_or_else(|| format!("basic {args:?} took more than {timeout:?}"))?;
        let out = out.join().map_err(|_| "reading stdout panicked")?;
        let error = error.join().map_err(|_| "reading stderr panicked")?;
        if !status.success() {
            return Err(format!("basic {args:?} failed ({status}): {out}{error}").into());
        }
        Ok(out)
    }

    /// Starts `basic up` on loopback only (API on a free port, sync on
    /// TCP, no mDNS), dialling `peers`; returns once it wrote `api.json`
    /// and answers. Its log goes to `node.log` in the data directory.
    pub(crate) fn up(&self, peers: &[&str]) -> Result<Node, Error> {
        let mut args =
            vec!["up", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
        for peer in peers {
            args.extend(["--peer", peer]);
        }
        let log_path = self.path().join("node.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = self.command(&args)?;
        command
            .env("RUST_LOG", std::env::var(NODE_LOG_ENV).unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = Guard(command.spawn()?);
        let pid = u64::from(child.0.id());
        let api_file = self.path().join("api.json");
        let mut info = Json::Null;
        wait_for("basic up writes api.json", WAIT, || {
            if let Some(status) = child.0.try_wait()? {
                return Err(format!("basic up exited ({status})").into());
            }
            let Ok(text) = std::fs::read_to_string(&api_file) else { return Ok(false) };
            let Ok(read) = serde_json::from_str::<Json>(&text) else { return Ok(false) };
            info = read;
            Ok(info["pid"].as_u64() == Some(pid))
        })?;
        let api: SocketAddr =
            info["address"].as_str().ok_or_else(|| format!("no API in {info}"))?.parse()?;
        let listen = info["listen"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let token = std::fs::read_to_string(self.path().join("owner-token"))?.trim().to_owned();
        let node = Node { api: Api::new(api, token), listen, log: log_path, child };
        wait_for("the API answers", WAIT, || {
            Ok(node.api.agent.get(node.api.url("/v0/health")).call().is_ok())
        })?;
        Ok(node)
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// A running node.
pub(crate) struct Node {
    api: Api,
    /// Its sync addresses, with `/p2p/<peer id>`.
    pub(crate) listen: Vec<String>,
    log: PathBuf,
    child: Guard,
}

impl Node {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn clone_api(&self) -> Api {
        self.api.clone()
    }

    pub(crate) fn sql(&self, sql: &str, params: Json) -> Result<Json, Error> {
        self.api.sql(sql, params)
    }

    pub(crate) fn post(&self, path: &str, body: &Json) -> Result<Json, Error> {
        self.api.post(path, body)
    }

    /// Opens a live query whose first column of the first row is a count.
    fn live(&self, sql: &str) -> Result<Counts, Error> {
        let url = format!("{}?sql={}", self.api.url("/v0/live"), encode(sql));
        let response = self.api.agent.get(url).header("authorization", self.api.bearer()).call()?;
        if response.status() != 200 {
            return Err(format!("live query refused: {}", response.status()).into());
        }
        let reader = BufReader::new(response.into_body().into_reader());
        let (sender, receiver) = mpsc::channel();
        // Ends when the node goes away (end of stream) or `Counts` is dropped.
        std::thread::spawn(move || read_events(reader, &sender));
        Ok(Counts { receiver, last: None })
    }

    /// The end of its log, for an error report.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("---- end of {} ----\n{tail}\n", self.log.display())
    }
}

/// Reads `rows` events of an SSE stream; sends each first cell, with the
/// time it arrived.
fn read_events(reader: impl BufRead, sender: &mpsc::Sender<Result<(u64, Instant), String>>) {
    let mut event = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_owned();
        } else if let Some(data) = line.strip_prefix("data:") {
            let at = Instant::now();
            let sent = match event.as_str() {
                "rows" => {
                    let rows: Json = serde_json::from_str(data.trim()).unwrap_or_default();
                    // The first cell of the first row (0 for no rows).
                    let first = match rows["rows"].as_array() {
                        Some(all) if all.is_empty() => Some(0),
                        _ => rows["rows"][0][0].as_u64(),
                    };
                    match first {
                        Some(value) => sender.send(Ok((value, at))),
                        None => sender.send(Err(format!("unexpected rows: {rows}"))),
                    }
                }
                other => sender.send(Err(format!("live query event {other}: {data}"))),
            };
            if sent.is_err() {
                break;
            }
        }
    }
}

/// The counts a live query reports, as they arrive.
struct Counts {
    receiver: mpsc::Receiver<Result<(u64, Instant), String>>,
    last: Option<(u64, Instant)>,
}

impl Counts {
    /// When the count first reached `at_least` (waiting for it if needed).
    fn wait_for(&mut self, at_least: u64, timeout: Duration) -> Result<Instant, Error> {
        if let Some((count, at)) = self.last
            && count >= at_least
        {
            return Ok(at);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (count, at) = match self.receiver.recv_timeout(left) {
                Ok(event) => event?,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let seen = self.last.map_or(0, |(count, _)| count);
                    return Err(
                        format!("B showed {seen} rows, not {at_least}, after {timeout:?}").into()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("B's live query ended".into());
                }
            };
            self.last = Some((count, at));
            if count >= at_least {
                return Ok(at);
            }
        }
    }
}

impl Counts {
    /// Every value reported until one reaches `at_least`, with when it
    /// arrived (waiting at most `timeout` for it).
    fn collect_until(
        &mut self,
        at_least: u64,
        timeout: Duration,
    ) -> Result<Vec<(u64, Instant)>, Error> {
        let mut seen: Vec<(u64, Instant)> = self.last.into_iter().collect();
        let deadline = Instant::now() + timeout;
        while seen.last().is_none_or(|(value, _)| *value < at_least) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(left) {
                Ok(event) => seen.push(event?),
                Err(_) => {
                    let value = seen.last().map_or(0, |(value, _)| *value);
                    return Err(
                        format!("B showed {value}, not {at_least}, after {timeout:?}").into()
                    );
                }
            }
        }
        self.last = seen.last().copied();
        Ok(seen)
    }
}

/// A node's API as the owner; cheap to clone (shares its connections).
#[derive(Clone)]
struct Api {
    agent: ureq::Agent,
    address: SocketAddr,
    token: String,
}

impl Api {
    fn new(address: SocketAddr, token: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(2 * CLIENTS as usize)
            .build()
            .new_agent();
        Self { agent, address, token }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// POSTs `body`; fails unless the answer is 200.
    fn post(&self, path: &str, body: &Json) -> Result<Json, Error> {
        let mut response = self
            .agent
            .post(self.url(path))
            .header("authorization", self.bearer())
            .header("content-type", "application/json")
            .config()
            .timeout_global(Some(COMMAND_TIMEOUT))
            .build()
            .send(body.to_string())?;
        let status = response.status();
        let text = response.body_mut().read_to_string()?;
        if status != 200 {
            return Err(format!("POST {path}: {status} {text}").into());
        }
        Ok(serde_json::from_str(&text)?)
    }

    fn sql(&self, sql: &str, params: Json) -> Result<Json, Error> {
        self.post("/v0/sql", &json!({ "sql": sql, "params": params }))
    }
}

/// Percent-encodes `text` for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let sample: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let p = Percentiles::of(sample);
        assert_eq!(
            (p.p50, p.p99, p.max),
            (Duration::from_millis(100), Duration::from_millis(198), Duration::from_millis(200))
        );
        let one = Percentiles::of(vec![Duration::from_millis(7)]);
        assert_eq!((one.p50, one.p99), (Duration::from_millis(7), Duration::from_millis(7)));
    }

    #[test]
    fn query_strings_are_encoded() {
        assert_eq!(encode("SELECT count(*) FROM a.b"), "SELECT%20count%28%2A%29%20FROM%20a.b");
    }
}
