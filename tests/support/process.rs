//! Shared by the two end-to-end harnesses (`node/tests/common` and
//! `tests/tests/e2e/harness.rs`), included with `#[path]`: a child process
//! that is killed when dropped, and a plain HTTP client for node APIs.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// A child process, killed (and reaped) when dropped, so that a failing
/// test leaves no node running.
pub(crate) struct Guard(pub(crate) Child);

impl Guard {
    /// Waits for the process to end, at most `timeout`.
    pub(crate) fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

/// `binary --data DIR ARGS…`, with the environment's data directory and log
/// level removed and the output captured; in a network namespace (`ip netns
/// exec NS …`, which execs the binary: the child's pid is the node's) or in
/// this process's own.
pub(crate) fn basic_command(
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

/// An HTTP client that returns error statuses as answers, with `timeout`
/// for each whole request.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// The status and the JSON body (or the text, if it is not JSON).
pub(crate) fn answer(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, Json) {
    let mut response = response.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
}
