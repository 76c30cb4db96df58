//! The run's trace: every delivered frame and every event, hashed as it
//! happens, with the last lines kept for a failure report.

use std::collections::VecDeque;

/// Lines kept for the report of a failed run.
pub const TAIL_LINES: usize = 80;

/// A running BLAKE3 hash of the trace and its tail.
#[derive(Debug)]
pub struct Trace {
    hasher: blake3::Hasher,
    tail: VecDeque<String>,
    lines: u64,
    echo: bool,
}

impl Trace {
    /// An empty trace; `echo` prints every line to stderr as well.
    pub fn new(echo: bool) -> Self {
        Self { hasher: blake3::Hasher::new(), tail: VecDeque::new(), lines: 0, echo }
    }

    /// Records one line. Only deterministic facts may go in: virtual time,
    /// endpoints, frame kinds and sizes, outcomes — never commit bytes,
    /// which carry wall-clock stamps and OS-random nonces.
    pub fn record(&mut self, now: u64, line: impl Into<String>) {
        let line = format!("{now:>9} {}", line.into());
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.lines += 1;
        if self.echo {
            eprintln!("{line}");
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Lines recorded so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Hashes a frame's bytes into the trace (not into its readable tail).
    pub fn absorb(&mut self, frame: &[u8]) {
        self.hasher.update(&(frame.len() as u64).to_le_bytes());
        self.hasher.update(frame);
    }

    /// The hash of everything recorded so far, in hex.
    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    /// The last lines recorded.
    pub fn tail(&self) -> impl Iterator<Item = &String> {
        self.tail.iter()
    }
}
