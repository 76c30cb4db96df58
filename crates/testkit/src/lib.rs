//! The one end-to-end harness, for the node's tests (`node/tests`) and the
//! end-to-end suite (`tests/`): a real `basic` binary run in temporary data
//! directories, on loopback (or in a network namespace), every wait bounded
//! by a deadline, every child killed (and reaped) when dropped.
//!
//! Each test package names its own binary (Cargo gives a test the path of
//! a binary of its own package only):
//!
//! ```no_run
//! use basic_testkit::Data;
//! # const BASIC: &str = "basic";
//! // In a test: `const BASIC: &str = env!("CARGO_BIN_EXE_basic");`
//! let data = Data::with_todo(BASIC);
//! let node = data.up(&[]);
//! let (status, _) = node.sql_as(&node.token, "SELECT * FROM todo.lists", serde_json::json!([]));
//! assert_eq!(status, 200);
//! ```

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

/// A sync listening address on loopback, on a free TCP port.
pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// Longest any one command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node may take to start or stop.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a change may take to reach another node in these tests (the
/// product target is a second; this bound only stops a hung test).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// The examples directory's file `name`.
pub fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name).display().to_string()
}

/// Copies the files of `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    try_copy_dir(from, to)
        .unwrap_or_else(|error| panic!("copying {} to {}: {error}", from.display(), to.display()));
}

/// Copies the files of `from` into `to` as they all were at one moment,
/// as a crash would leave them, for a directory a running store may be
/// changing beside the caller (its thread writing out and compacting):
/// copies again until no file changed while it was copied.
pub fn copy_dir_at_rest(from: &Path, to: &Path) {
    for _ in 0..500 {
        let before = listing(from);
        let copied = try_copy_dir(from, to);
        if copied.is_ok() && before.is_some() && listing(from) == before {
            return;
        }
        let _ = std::fs::remove_dir_all(to);
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} kept changing while it was copied", from.display());
}

/// Each file under `dir` with its inode, length and modification time;
/// `None` if a file went while they were read.
fn listing(dir: &Path) -> Option<BTreeMap<PathBuf, (u64, u64, std::time::SystemTime)>> {
    use std::os::unix::fs::MetadataExt;
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let metadata = std::fs::metadata(&path).ok()?;
        if metadata.is_dir() {
            files.extend(listing(&path)?);
        } else {
            files.insert(path, (metadata.ino(), metadata.len(), metadata.modified().ok()?));
        }
    }
    Some(files)
}

/// [`copy_dir`], failing rather than panicking when a file goes.
fn try_copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            try_copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Every file under `dir` (recursively), with its bytes.
pub fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            let bytes = std::fs::read(&path).expect("read");
            files.insert(path, bytes);
        }
    }
    files
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed (and reaped) when dropped, so that a failing
/// test leaves no node running.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Guard {
    /// Waits for the process to end, at most `timeout`.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn terminate(child: &mut Guard) -> ExitStatus {
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(sent.success());
    child.wait_for(NODE_TIMEOUT).expect("basic up did not stop on SIGTERM")
}

/// `binary --data DIR ARGS…`, with the environment's data directory and log
/// level removed and the output captured; in a network namespace (`ip netns
/// exec NS …`, which execs the binary: the child's pid is the node's) or in
/// this process's own.
pub fn basic_command(
    namespace: Option<&str>,
    binary: &Path,
    data: &Path,
    args: &[&str],
) -> Command {
    let mut command = match namespace {
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace]).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("BASIC_DATA")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// An HTTP client that returns error statuses as answers, with the command
/// deadline for each whole request.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(COMMAND_TIMEOUT))
        .build()
        .new_agent()
}

/// The status and the JSON body (or the text, if it is not JSON).
pub fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Json) {
    let mut response = response.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Output {
    /// Panics unless the command succeeded; returns its stdout.
    pub fn ok(self) -> String {
        assert!(self.status.success(), "command failed: {}{}", self.stdout, self.stderr);
        self.stdout
    }

    /// Panics unless the command failed with exit code 1; returns stderr.
    pub fn failed(self) -> String {
        assert_eq!(self.status.code(), Some(1), "expected failure: {}{}", self.stdout, self.stderr);
        self.stderr
    }
}

/// A data directory of its own, and the `basic` binary run on it.
#[derive(Debug)]
pub struct Data {
    /// The directory.
    pub dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Data {
    /// An empty data directory for `binary`.
    pub fn new(binary: impl AsRef<Path>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self { dir, binary: binary.as_ref().to_owned() }
    }

    /// A new database with the todo schema.
    pub fn with_todo(binary: impl AsRef<Path>) -> Self {
        let data = Self::new(binary);
        data.basic(&["init"]).ok();
        data.basic(&["schema", "apply", &example("todo.toml")]).ok();
        data
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The log of the nodes started here (`node.log`).
    pub fn log_path(&self) -> PathBuf {
        self.path().join("node.log")
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_in(None, args)
    }

    fn command_in(&self, namespace: Option<&str>, args: &[&str]) -> Command {
        basic_command(namespace, &self.binary, self.path(), args)
    }

    /// Runs `basic --data DIR ARGS…` to the end.
    pub fn basic(&self, args: &[&str]) -> Output {
        self.run(self.command(args), args, None)
    }

    /// Runs `basic --data DIR ARGS…` to the end with `input` on its
    /// standard input (not a terminal).
    pub fn basic_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut command = self.command(args);
        command.stdin(Stdio::piped());
        self.run(command, args, Some(input))
    }

    fn run(&self, mut command: Command, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Guard(command.spawn().expect("run basic"));
        if let Some(input) = input {
            let mut stdin = child.0.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        let status = child
            .wait_for(COMMAND_TIMEOUT)
            .unwrap_or_else(|| panic!("basic {args:?} took more than {COMMAND_TIMEOUT:?}"));
        let mut stdout = String::new();
        let mut stderr = String::new();
        child.0.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("stdout");
        child.0.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
        Output { status, stdout, stderr }
    }

    /// The owner token.
    pub fn owner_token(&self) -> String {
        std::fs::read_to_string(self.path().join("owner-token")).expect("token").trim().to_owned()
    }

    /// Starts `basic up` on loopback only (API on a free port, sync on TCP,
    /// no mDNS), dialling `peers`, and waits until it wrote its addresses.
    /// Its log goes to `node.log` in the data directory.
    pub fn up(&self, peers: &[&str]) -> Node {
        let mut args = vec!["up", "--api", "127.0.0.1:0", "--listen", LOOPBACK, "--no-mdns"];
        for peer in peers {
            args.extend(["--peer", peer]);
        }
        self.start(&args)
    }

    /// Starts a pinning peer of `database` here (`basic pinner init` done)
    /// on loopback only (sync on TCP, no mDNS) and waits for its address.
    pub fn pinner_up(&self, database: &str) -> Node {
        self.start(&["up", "--database", database, "--listen", LOOPBACK, "--no-mdns"])
    }

    /// The sync addresses in the running node's `api.json` now (it is
    /// rewritten when they change, e.g. on a relay reservation).
    pub fn listen_now(&self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(self.path().join("api.json")) else {
            return Vec::new();
        };
        let info: Json = serde_json::from_str(&text).unwrap_or_default();
        info["listen"]
            .as_array()
            .map(|listen| listen.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// Starts `basic ARGS…` as a node and waits for its `api.json`.
    pub fn start(&self, args: &[&str]) -> Node {
        self.start_in(None, args)
    }

    /// Starts `basic ARGS…` as a node in a network namespace (or this
    /// process's own) and waits for its `api.json`.
    pub fn start_in(&self, namespace: Option<&str>, args: &[&str]) -> Node {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut command = self.command_in(namespace, args);
        command
            .env("RUST_LOG", std::env::var("E2E_LOG").unwrap_or_else(|_| "info,basic=debug".into()))
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = Guard(command.spawn().expect("run basic up"));
        let pid = child.0.id();
        let api_file = self.path().join("api.json");
        let info = wait_for("basic up writes api.json", NODE_TIMEOUT, || {
            if let Ok(Some(status)) = child.0.try_wait() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                panic!("basic {args:?} exited: {status}; its log ends:\n{tail}");
            }
            let text = std::fs::read_to_string(&api_file).ok()?;
            let info: Json = serde_json::from_str(&text).ok()?;
            // A node killed with -9 leaves its api.json behind.
            (info["pid"].as_u64() == Some(u64::from(pid))).then_some(info)
        });
        let api = info["address"].as_str().map(|a| a.parse::<SocketAddr>().expect("address"));
        let listen: Vec<String> = info["listen"]
            .as_array()
            .expect("listen")
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let token = api.map(|_| self.owner_token()).unwrap_or_default();
        let node = Node { child, api, listen, token, api_file, log: self.log_path() };
        if node.api.is_some() {
            assert_eq!(node.get("/v0/health", None).0, 200);
        }
        node
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The process.
    pub child: Guard,
    /// Its API's address, if it serves one.
    pub api: Option<SocketAddr>,
    /// Its sync addresses, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// The owner token (empty without an API).
    pub token: String,
    /// Its `api.json`.
    pub api_file: PathBuf,
    log: PathBuf,
}

impl Node {
    /// Its first sync address.
    pub fn address(&self) -> &str {
        self.listen.first().expect("a sync address")
    }

    /// Its API's address.
    pub fn api_address(&self) -> SocketAddr {
        self.api.expect("a node with an API")
    }

    /// The URL of `path` on its API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api_address())
    }

    /// GET `path` with `token` (none: no Authorization header).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Json) {
        let mut request = agent().get(self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        answer(request.call())
    }

    /// GET `path` with the owner token.
    pub fn get_owner(&self, path: &str) -> (u16, Json) {
        self.get(path, Some(&self.token))
    }

    /// POST raw `body` to `path` with `token` (none: no Authorization).
    pub fn post_raw(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Json) {
        answer(self.send(path, token, body))
    }

    /// [`Node::post_raw`], with a transport failure as an error.
    pub fn try_post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Json), ureq::Error> {
        let response = self.send(path, token, body)?;
        Ok(answer(Ok(response)))
    }

    fn send(
        &self,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = agent().post(self.url(path)).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.send(body)
    }

    /// POST `body` as JSON to `path` with `token`.
    pub fn post(&self, path: &str, token: Option<&str>, body: &Json) -> (u16, Json) {
        self.post_raw(path, token, body.to_string().as_bytes())
    }

    /// DELETE `path` with `token`.
    pub fn delete(&self, path: &str, token: Option<&str>) -> (u16, Json) {
        let mut request = agent().delete(self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        answer(request.call())
    }

    /// Runs SQL with `token`.
    pub fn sql_as(&self, token: &str, sql: &str, params: Json) -> (u16, Json) {
        self.post("/v0/sql", Some(token), &json!({ "sql": sql, "params": params }))
    }

    /// Runs SQL as the owner; panics unless it succeeds.
    pub fn sql(&self, sql: &str, params: Json) -> Json {
        let (status, body) = self.sql_as(&self.token, sql, params);
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    /// The rows of a query as the owner.
    pub fn rows(&self, sql: &str) -> Json {
        self.sql(sql, json!([]))["rows"].clone()
    }

    /// Waits until `sql` returns `expected` rows; returns how long it took.
    pub fn wait_rows(&self, sql: &str, expected: &Json) -> Duration {
        let start = Instant::now();
        wait_for(&format!("{sql} returns {expected}"), SYNC_TIMEOUT, || {
            (self.rows(sql) == *expected).then_some(())
        });
        start.elapsed()
    }

    /// The node's status (`GET /v0/status`).
    pub fn status(&self) -> Json {
        let (status, body) = self.get_owner("/v0/status");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Kills the process at once (SIGKILL): no shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        terminate(&mut self.child)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.log.display(), self.log());
        }
    }
}
