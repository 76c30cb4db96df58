//! Durable means on the disk (protocol-spec/DECISIONS.md, D33), checked at
//! the level of system calls: a real `basic up` runs under `strace`, takes
//! writes through its HTTP API, and every answer to a write must come after
//! an `fdatasync` (or `fsync`) of the replica's write-ahead log that
//! started after the write's data reached that file (D43, D55: a write is
//! made durable through the log, `replica/lsm/basic.wal`, not by a write of
//! the LSM tree's tables).
//!
//! Linux only; skipped, with a message saying so, where `strace` is missing
//! or cannot trace (CI installs it).

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use basic_testkit::{Data, Guard, NODE_TIMEOUT};
use serde_json::{Value as Json, json};

/// The binary under test.
const BASIC: &str = env!("CARGO_BIN_EXE_basic");

/// Writes made through the API, each checked on its own.
const WRITES: usize = 10;

/// The system calls traced: reads of requests, answers, writes to and
/// syncs of files.
const TRACED: &str = "trace=read,recvfrom,write,writev,sendto,sendmsg,pwrite64,pwritev,fsync,fdatasync,sync_file_range";

#[test]
fn a_write_is_answered_only_after_its_log_is_fdatasynced() {
    if !strace_works() {
        eprintln!(
            "SKIPPED a_write_is_answered_only_after_its_log_is_fdatasynced: \
             `strace` is missing or cannot trace here (install it: apt-get install strace)"
        );
        return;
    }
    let data = Data::with_todo(BASIC);
    let trace = data.path().join("strace.txt");
    let node = TracedNode::start(&data, &trace);
    let token = data.owner_token();
    for i in 0..WRITES {
        let sql = format!("INSERT INTO todo.lists (id, name) VALUES ('durable-{i}', 'list {i}')");
        // A new connection for each write (a fresh agent).
        let response = basic_testkit::agent()
            .post(format!("http://{}/v0/sql", node.address))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(json!({ "sql": sql }).to_string());
        let (status, body) = basic_testkit::answer(response);
        assert_eq!(status, 200, "write {i}: {body}");
    }
    node.stop();

    let text = std::fs::read_to_string(&trace).expect("read the trace");
    let calls = parse(&text);
    let acks = check(&calls);
    if acks.len() != WRITES {
        let kept = std::env::temp_dir().join("basic-durability-strace.txt");
        let _ = std::fs::copy(&trace, &kept);
        panic!(
            "expected {WRITES} answers to writes in the trace, found {} (trace kept in {})",
            acks.len(),
            kept.display()
        );
    }
    let failures: Vec<&String> = acks.iter().filter_map(|ack| ack.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {WRITES} writes were answered before their data was synced:\n{}",
        failures.len(),
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    );
}

/// Whether `strace -f` can trace a process here.
fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `basic up` under `strace`, on loopback.
struct TracedNode {
    strace: Guard,
    /// The node's own process id (a child of strace), once known.
    pid: Option<u32>,
    address: String,
}

impl TracedNode {
    fn start(data: &Data, trace: &std::path::Path) -> Self {
        let mut command = Command::new("strace");
        command
            .args(["-f", "-y", "-s", "256", "-e", TRACED, "-o"])
            .arg(trace)
            .arg(env!("CARGO_BIN_EXE_basic"))
            .arg("--data")
            .arg(data.path())
            .args(["up", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"])
            .env_remove("BASIC_DATA")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut node = Self {
            strace: Guard(command.spawn().expect("run strace basic up")),
            pid: None,
            address: String::new(),
        };
        let deadline = Instant::now() + NODE_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "basic up under strace wrote no api.json");
            if let Ok(Some(status)) = node.strace.0.try_wait() {
                panic!("strace basic up exited: {status}");
            }
            if let Ok(text) = std::fs::read_to_string(data.path().join("api.json"))
                && let Ok(info) = serde_json::from_str::<Json>(&text)
                && let (Some(address), Some(pid)) = (info["address"].as_str(), info["pid"].as_u64())
            {
                node.pid = u32::try_from(pid).ok();
                node.address = address.to_owned();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let health =
            basic_testkit::agent().get(format!("http://{}/v0/health", node.address)).call();
        assert_eq!(basic_testkit::answer(health).0, 200);
        node
    }

    /// Stops the node (SIGTERM) and waits for strace to finish the trace.
    fn stop(mut self) {
        let pid = self.pid.take().expect("the node's pid").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        self.strace.wait_for(NODE_TIMEOUT).expect("basic up under strace did not stop");
    }
}

impl Drop for TracedNode {
    fn drop(&mut self) {
        // Killing strace would leave the node running, detached: kill it first.
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// One system call: its name, its arguments as printed (from the first
/// one, which `-y` prints with its path), and the lines of the trace where
/// it began and where it returned.
#[derive(Debug)]
struct Call {
    name: String,
    args: String,
    start: usize,
    end: usize,
}

impl Call {
    /// The first argument: a descriptor with its path, e.g. `5</d/replica/lsm/basic.wal>`.
    fn fd(&self) -> &str {
        self.args.find('>').map_or(self.args.as_str(), |end| &self.args[..=end])
    }

    /// The path of the first argument's descriptor, e.g. `/d/replica/lsm/basic.wal`.
    fn file(&self) -> &str {
        let fd = self.fd();
        fd.find('<').map_or("", |open| fd[open + 1..].trim_end_matches('>'))
    }

    fn on_socket(&self) -> bool {
        self.fd().contains("<socket:")
    }

    /// Whether the call is on the replica's write-ahead log.
    fn on_log(&self) -> bool {
        self.file().ends_with("/replica/lsm/basic.wal")
    }

    /// The call's data as strace prints it (escaped, perhaps cut short):
    /// the first quoted string after the descriptor.
    fn data(&self) -> &str {
        let rest = &self.args[self.fd().len()..];
        let Some(open) = rest.find('"') else { return "" };
        let quoted = &rest[open + 1..];
        // The closing quote is the first one not escaped.
        let mut escaped = false;
        for (at, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => return &quoted[..at],
                _ => escaped = false,
            }
        }
        quoted
    }
}

/// The calls of an `strace -f -y` trace, joining `<unfinished ...>` and
/// `<... resumed>` halves by process id.
fn parse(trace: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: BTreeMap<&str, (String, String, usize)> = BTreeMap::new();
    for (index, line) in trace.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else { continue };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let name = resumed.split(' ').next().unwrap_or_default();
            // What a call reads is printed when it returns.
            let tail = resumed.split_once("resumed>").map_or("", |(_, tail)| tail);
            if let Some((pending_name, args, start)) = pending.remove(pid)
                && pending_name == name
            {
                let args = format!("{args}{tail}");
                calls.push(Call { name: pending_name, args, start, end: index });
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else { continue };
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        match args.strip_suffix(" <unfinished ...>") {
            Some(args) => {
                pending.insert(pid, (name.to_owned(), args.to_owned(), index));
            }
            None => calls.push(Call {
                name: name.to_owned(),
                args: args.to_owned(),
                start: index,
                end: index,
            }),
        }
    }
    calls
}

/// For each answer to `POST /v0/sql` found in the trace: `Ok` if, after
/// the request began to arrive and after the last write to the log
/// before the answer, an `fdatasync`/`fsync` of the log began and
/// returned before the answer began; `Err` with the lines that show
/// otherwise. A request may arrive in several reads: the reads on the
/// answer's socket since its previous answer are joined.
fn check(calls: &[Call]) -> Vec<Result<(), String>> {
    const SENDS: [&str; 4] = ["write", "writev", "sendto", "sendmsg"];
    const RECEIVES: [&str; 2] = ["read", "recvfrom"];
    let mut results = Vec::new();
    // Per socket: where its previous answer began.
    let mut previous: BTreeMap<&str, usize> = BTreeMap::new();
    for answer in calls.iter().filter(|c| {
        SENDS.contains(&c.name.as_str()) && c.on_socket() && c.data().starts_with("HTTP/1.1 ")
    }) {
        let since = previous.insert(answer.fd(), answer.start);
        let reads: Vec<&Call> = calls
            .iter()
            .filter(|c| {
                RECEIVES.contains(&c.name.as_str())
                    && c.fd() == answer.fd()
                    && c.end < answer.start
                    && since.is_none_or(|since| c.start > since)
            })
            .collect();
        let request: String = reads.iter().map(|c| c.data()).collect();
        let (Some(first), true, true) = (
            reads.first(),
            request.starts_with("POST /v0/sql "),
            answer.data().starts_with("HTTP/1.1 200"),
        ) else {
            continue;
        };
        let written = calls
            .iter()
            .filter(|c| {
                (c.name == "write" || c.name.starts_with("pwrite"))
                    && c.on_log()
                    && c.end > first.start
                    && c.end < answer.start
            })
            .max_by_key(|c| c.end);
        let Some(written) = written else {
            results.push(Err(format!(
                "lines {}–{}: no write to the log between the request and its answer",
                first.start + 1,
                answer.start + 1
            )));
            continue;
        };
        let synced = calls.iter().any(|c| {
            (c.name == "fdatasync" || c.name == "fsync")
                && c.file() == written.file()
                && c.start > written.end
                && c.end < answer.start
        });
        results.push(if synced {
            Ok(())
        } else {
            Err(format!(
                "line {}: answered after the data written at line {} without an fdatasync/fsync \
                 of the log in between",
                answer.start + 1,
                written.end + 1
            ))
        });
    }
    results
}

#[test]
fn the_trace_checker_tells_a_synced_answer_from_an_unsynced_one() {
    let synced = r#"9 recvfrom(18<socket:[1]>, "GET /v0/health HTTP/1.1\r\n", 25, 0, NULL, NULL) = 25
9 writev(18<socket:[1]>, [{iov_base="HTTP/1.1 200 OK\r\n", iov_len=17}], 1) = 17
10 recvfrom(18<socket:[1]>,  <unfinished ...>
12 fsync(6</d/replica/lsm/basic.wal>) = 0
10 <... recvfrom resumed>"PO", 2, 0, NULL, NULL) = 2
10 recvfrom(18<socket:[1]>, "ST /v0/sql HTTP/1.1\r\nH", 22, 0, NULL, NULL) = 22
11 write(5</d/replica/lsm/basic.wal>, "abc", 3 <unfinished ...>
12 fdatasync(6</d/replica/lsm/basic.wal> <unfinished ...>
11 <... write resumed>) = 3
13 sync_file_range(5</d/replica/lsm/keyspaces/1/tables/0>, 0, 3, SYNC_FILE_RANGE_WRITE) = 0
14 fdatasync(6</d/replica/lsm/basic.wal>) = 0
12 <... fdatasync resumed>) = 0
10 writev(18<socket:[1]>, [{iov_base="HTTP/1.1 200 OK\r\n", iov_len=17}], 1) = 17
"#;
    let results = check(&parse(synced));
    assert_eq!(results.len(), 1);
    assert!(results[0].is_ok(), "{results:?}");
    // The only sync began before the data was written: not enough.
    let unsynced = r#"10 recvfrom(18<socket:[1]>, "POST /v0/sql HTTP/1.1\r\nH", 24, 0, NULL, NULL) = 24
12 fsync(6</d/replica/lsm/basic.wal> <unfinished ...>
11 write(5</d/replica/lsm/basic.wal>, "abc", 3) = 3
12 <... fsync resumed>) = 0
11 sync_file_range(5</d/replica/lsm/keyspaces/1/tables/0>, 0, 3, SYNC_FILE_RANGE_WRITE) = 0
10 sendto(18<socket:[1]>, "HTTP/1.1 200 OK\r\n", 17, 0, NULL, 0) = 17
12 fsync(6</d/replica/lsm/basic.wal>) = 0
"#;
    let results = check(&parse(unsynced));
    assert_eq!(results.len(), 1);
    assert!(results[0].is_err(), "{results:?}");
    // A sync of the data file does not make what the log holds durable.
    let other_file = r#"10 recvfrom(18<socket:[1]>, "POST /v0/sql HTTP/1.1\r\nH", 24, 0, NULL, NULL) = 24
11 write(5</d/replica/lsm/basic.wal>, "abc", 3) = 3
12 fdatasync(6</d/replica/lsm/keyspaces/1/tables/0>) = 0
10 sendto(18<socket:[1]>, "HTTP/1.1 200 OK\r\n", 17, 0, NULL, 0) = 17
"#;
    let results = check(&parse(other_file));
    assert_eq!(results.len(), 1);
    assert!(results[0].is_err(), "{results:?}");
    // Nor does a sync of fjall's own journal.
    let other_journal = r#"10 recvfrom(18<socket:[1]>, "POST /v0/sql HTTP/1.1\r\nH", 24, 0, NULL, NULL) = 24
11 write(5</d/replica/lsm/basic.wal>, "abc", 3) = 3
12 fdatasync(6</d/replica/lsm/0.jnl>) = 0
10 sendto(18<socket:[1]>, "HTTP/1.1 200 OK\r\n", 17, 0, NULL, 0) = 17
"#;
    let results = check(&parse(other_journal));
    assert_eq!(results.len(), 1);
    assert!(results[0].is_err(), "{results:?}");
}
