//! Real `basic` processes on loopback: data directories in temp dirs,
//! nodes killed when dropped, every wait bounded by a deadline.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

#[path = "../../support/process.rs"]
mod process;
pub(crate) use process::Guard;
use process::answer;

/// Longest any one command may run.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node may take to start or stop.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a change may take to reach another node in these tests (the
/// product target is a second; this bound only stops a hung test).
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// The `basic` binary (built from the node's library by this package).
fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_basic-e2e-node")
}

/// The examples directory.
pub(crate) fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).display().to_string()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`.
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Panics unless the command succeeded; returns its stdout.
    pub(crate) fn ok(self) -> String {
        assert!(self.status.success(), "command failed: {}{}", self.stdout, self.stderr);
        self.stdout
    }

    /// Panics unless the command failed with exit code 1; returns stderr.
    pub(crate) fn failed(self) -> String {
        assert_eq!(self.status.code(), Some(1), "expected failure: {}{}", self.stdout, self.stderr);
        self.stderr
    }
}

/// A data directory of its own.
pub(crate) struct Data {
    pub(crate) dir: tempfile::TempDir,
}

impl Data {
    pub(crate) fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A new database with the todo schema.
    pub(crate) fn with_todo() -> Self {
        let data = Self::new();
        data.basic(&["init"]).ok();
        data.basic(&["schema", "apply", &example("todo.toml")]).ok();
        data
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> PathBuf {
        self.path().join("node.log")
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_in(None, args)
    }

    fn command_in(&self, namespace: Option<&str>, args: &[&str]) -> Command {
        process::basic_command(namespace, Path::new(binary()), self.path(), args)
    }

    /// Runs `basic --data DIR ARGS…` to the end.
    pub(crate) fn basic(&self, args: &[&str]) -> Output {
        let mut child = Guard(self.command(args).spawn().expect("run basic"));
        let status = child
            .wait_for(COMMAND_TIMEOUT)
            .unwrap_or_else(|| panic!("basic {args:?} took more than {COMMAND_TIMEOUT:?}"));
        let mut stdout = String::new();
        let mut stderr = String::new();
        child.0.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("stdout");
        child.0.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
        Output { status, stdout, stderr }
    }

    /// Runs `basic --data DIR ARGS…` to the end with `input` on its
    /// standard input (not a terminal).
    pub(crate) fn basic_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut command = self.command(args);
        command.stdin(Stdio::piped());
        let mut child = Guard(command.spawn().expect("run basic"));
        let mut stdin = child.0.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        drop(stdin);
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
    pub(crate) fn owner_token(&self) -> String {
        std::fs::read_to_string(self.path().join("owner-token")).expect("token").trim().to_owned()
    }

    /// Starts `basic up` on loopback only (API on a free port, sync on TCP,
    /// no mDNS), dialling `peers`, and waits until it wrote its addresses.
    /// Its log goes to `node.log` in the data directory.
    pub(crate) fn up(&self, peers: &[&str]) -> Node {
        let mut args =
            vec!["up", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"];
        for peer in peers {
            args.extend(["--peer", peer]);
        }
        self.start(&args)
    }

    /// The sync addresses in the running node's `api.json` now (it is
    /// rewritten when they change, e.g. on a relay reservation).
    pub(crate) fn listen_now(&self) -> Vec<String> {
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
    pub(crate) fn start(&self, args: &[&str]) -> Node {
        self.start_in(None, args)
    }

    /// Starts `basic ARGS…` as a node in a network namespace (or this
    /// process's own) and waits for its `api.json`.
    pub(crate) fn start_in(&self, namespace: Option<&str>, args: &[&str]) -> Node {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log file");
        let mut command = self.command_in(namespace, args);
        command
            .env("RUST_LOG", std::env::var("E2E_LOG").unwrap_or_else(|_| "info,basic=debug".into()))
            .stdout(Stdio::null())
            .stderr(log);
        let child = Guard(command.spawn().expect("run basic up"));
        let pid = child.0.id();
        let api_file = self.path().join("api.json");
        let info = wait_for("basic up writes api.json", NODE_TIMEOUT, || {
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
        let node = Node { child, api, listen, token, log: self.log() };
        if node.api.is_some() {
            assert_eq!(node.get("/v0/health").0, 200);
        }
        node
    }
}

/// A running node.
pub(crate) struct Node {
    pub(crate) child: Guard,
    pub(crate) api: Option<SocketAddr>,
    /// Its sync addresses, with `/p2p/<peer id>`.
    pub(crate) listen: Vec<String>,
    pub(crate) token: String,
    log: PathBuf,
}

fn agent() -> ureq::Agent {
    process::agent(COMMAND_TIMEOUT)
}

impl Node {
    /// Its first sync address.
    pub(crate) fn address(&self) -> &str {
        self.listen.first().expect("a sync address")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api.expect("a node with an API"))
    }

    /// GET `path` with the owner token.
    pub(crate) fn get(&self, path: &str) -> (u16, Json) {
        answer(
            agent()
                .get(self.url(path))
                .header("authorization", format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// GET `path` with no token.
    pub(crate) fn get_anonymous(&self, path: &str) -> (u16, Json) {
        answer(agent().get(self.url(path)).call())
    }

    /// POST raw `body` to `path` with `token` (none: no Authorization).
    pub(crate) fn post_raw(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Json) {
        let mut request = agent().post(self.url(path)).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        answer(request.send(body))
    }

    /// POST `body` as JSON with `token`.
    pub(crate) fn post(&self, path: &str, token: Option<&str>, body: &Json) -> (u16, Json) {
        self.post_raw(path, token, body.to_string().as_bytes())
    }

    /// Runs SQL with `token`.
    pub(crate) fn sql_as(&self, token: &str, sql: &str, params: Json) -> (u16, Json) {
        self.post("/v0/sql", Some(token), &json!({ "sql": sql, "params": params }))
    }

    /// Runs SQL as the owner; panics unless it succeeds.
    pub(crate) fn sql(&self, sql: &str, params: Json) -> Json {
        let (status, body) = self.sql_as(&self.token.clone(), sql, params);
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    /// The rows of a query as the owner.
    pub(crate) fn rows(&self, sql: &str) -> Json {
        self.sql(sql, json!([]))["rows"].clone()
    }

    /// Waits until `sql` returns `expected` rows; returns how long it took.
    pub(crate) fn wait_rows(&self, sql: &str, expected: &Json) -> Duration {
        let start = Instant::now();
        wait_for(&format!("{sql} returns {expected}"), SYNC_TIMEOUT, || {
            (self.rows(sql) == *expected).then_some(())
        });
        start.elapsed()
    }

    /// The node's status (`GET /v0/status`).
    pub(crate) fn status(&self) -> Json {
        let (status, body) = self.get("/v0/status");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Kills the process at once (SIGKILL): no shutdown, no flush.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        self.child.wait_for(NODE_TIMEOUT).expect("basic up did not stop on SIGTERM")
    }

    /// The node's log so far.
    pub(crate) fn log(&self) -> String {
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
