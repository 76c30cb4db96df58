//! Running the real `basic` binary: one-shot commands and a node in the
//! background, each with a deadline; nodes are killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

#[path = "../../../tests/support/process.rs"]
mod process;
pub(crate) use process::Guard;
pub(crate) use process::answer;

/// Longest any one command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a node may take to start or stop.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// The examples directory.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
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

/// A data directory of its own.
pub struct Data {
    pub dir: tempfile::TempDir,
}

impl Data {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A data directory with a database and the todo schema applied.
    pub fn with_todo() -> Self {
        let data = Self::new();
        data.basic(&["init"]).ok();
        data.basic(&["schema", "apply", example("todo.toml").to_str().unwrap()]).ok();
        data
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        process::basic_command(None, Path::new(env!("CARGO_BIN_EXE_basic")), self.path(), args)
    }

    /// Runs `basic --data DIR ARGS…` to the end.
    pub fn basic(&self, args: &[&str]) -> Output {
        let mut child = Guard(self.command(args).spawn().expect("run basic"));
        let status = child
            .wait_for(COMMAND_TIMEOUT)
            .unwrap_or_else(|| panic!("basic {args:?} took more than {COMMAND_TIMEOUT:?}"));
        let mut stdout = String::new();
        let mut stderr = String::new();
        child.0.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        Output { status, stdout, stderr }
    }

    /// The owner token.
    pub fn owner_token(&self) -> String {
        std::fs::read_to_string(self.path().join("owner-token")).unwrap().trim().to_owned()
    }

    /// Starts `basic up` on a free loopback port and waits for its API.
    pub fn up(&self) -> Node {
        self.up_with(Stdio::null())
    }

    /// [`Data::up`], with the node's log (stderr) written to `log`.
    pub fn up_logged(&self, log: &Path) -> Node {
        self.up_with(std::fs::File::create(log).expect("log file").into())
    }

    fn up_with(&self, stderr: Stdio) -> Node {
        let mut command = self.command(&[
            "up",
            "--api",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ]);
        command.stdout(Stdio::null()).stderr(stderr);
        let child = Guard(command.spawn().expect("run basic up"));
        let api_file = self.path().join("api.json");
        let deadline = Instant::now() + NODE_TIMEOUT;
        let address = loop {
            assert!(Instant::now() < deadline, "basic up wrote no api.json");
            if let Ok(text) = std::fs::read_to_string(&api_file)
                && let Ok(info) = serde_json::from_str::<Json>(&text)
                && let Some(address) = info["address"].as_str()
            {
                break address.parse::<SocketAddr>().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let node = Node { child, address, token: self.owner_token(), api_file };
        // The API answers once it is written; check anyway.
        assert_eq!(node.get("/v0/health", None).0, 200);
        node
    }
}

impl Data {
    /// Starts `basic up ARGS…` (a pinning peer, say) and waits until
    /// `api.json` names an address it listens on for sync; returns it.
    pub fn start(&self, args: &[&str]) -> (Guard, String) {
        let mut command = self.command(&[&["up"], args].concat());
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = Guard(command.spawn().expect("run basic up"));
        let deadline = Instant::now() + NODE_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "basic up wrote no sync address in api.json");
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("basic up {args:?} exited: {status}");
            }
            if let Ok(text) = std::fs::read_to_string(self.path().join("api.json"))
                && let Ok(info) = serde_json::from_str::<Json>(&text)
                && let Some(address) = info["listen"][0].as_str()
            {
                return (child, address.to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running node.
pub struct Node {
    pub child: Guard,
    pub address: SocketAddr,
    pub token: String,
    pub api_file: PathBuf,
}

/// An HTTP client with the command deadline for each request.
pub fn agent() -> ureq::Agent {
    process::agent(COMMAND_TIMEOUT)
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// GET `path` with `token` (none: no Authorization header).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Json) {
        let mut request = agent().get(self.url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        answer(request.call())
    }

    /// POST raw `body` to `path` with `token`.
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
    pub fn sql(&self, token: &str, sql: &str) -> (u16, Json) {
        self.post("/v0/sql", Some(token), &serde_json::json!({ "sql": sql }))
    }

    /// Sends SIGTERM and waits for the node to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        terminate(&mut self.child)
    }
}

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn terminate(child: &mut Guard) -> ExitStatus {
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(sent.success());
    child.wait_for(NODE_TIMEOUT).expect("basic up did not stop on SIGTERM")
}
